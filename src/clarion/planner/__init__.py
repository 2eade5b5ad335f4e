"""The publish planner: pure decisions over loaded facts (no SQL, no clock, no I/O).

The store loads the facts a batch of drafts needs (`wants` says which), calls `decide` with them
and `now`, advances the stream heads by the seqs the batch takes, `number`s the batch from
the old heads, and writes what the plan says in the same transaction; see docs/architecture.md.
"""

from clarion.planner.digest import digest_draft, summaries
from clarion.planner.facts import (
    PUSHED,
    Collapsible,
    Facts,
    Prior,
    SharedCollapsible,
    Subscriber,
    Wants,
    wants,
)
from clarion.planner.plan import Decided, Plan, decide, number, plan

__all__ = [
    "PUSHED",
    "Collapsible",
    "Decided",
    "Facts",
    "Plan",
    "Prior",
    "SharedCollapsible",
    "Subscriber",
    "Wants",
    "decide",
    "digest_draft",
    "number",
    "plan",
    "summaries",
    "wants",
]
