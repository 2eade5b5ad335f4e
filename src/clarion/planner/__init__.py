"""The publish planner: pure decisions over loaded facts (no SQL, no clock, no I/O).

The store loads the facts a batch of drafts needs (`wants` says which), calls `plan` with them
and `now`, and writes what the plan says in the same transaction; see docs/architecture.md.
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
from clarion.planner.plan import Plan, plan

__all__ = [
    "PUSHED",
    "Collapsible",
    "Facts",
    "Plan",
    "Prior",
    "SharedCollapsible",
    "Subscriber",
    "Wants",
    "digest_draft",
    "plan",
    "summaries",
    "wants",
]
