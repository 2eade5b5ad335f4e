"""Batches whose SQL text does not change with their size.

SQLite keeps each connection's prepared statements in a cache keyed by their SQL text (Python's
`sqlite3`: 128 per connection), and a prepared statement's memory grows with its text: an `IN`
list of 500 parameters or a 1,000-row `VALUES` holds hundreds of KB. A batch rendered as one
statement per size (`IN` with n items, `INSERT` of n rows) put a new large statement in the
writer's cache for nearly every presence batch, and the server's memory grew with each reconnect
wave (docs/benchmarks.md, Soak). So rows are written by executemany, one statement whatever
their number, and `IN` lists are padded to one of a few sizes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

IN_CHUNK = 512  # items per `IN` list: far below SQLite's 32,766 parameters, even in pairs


def padded_size(n: int) -> int:
    """The size a batch of n is rendered at: the next power of two (0 stays 0)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def padded(values: Sequence[T]) -> list[T]:
    """`values` padded to the next power of two by repeating its last item, which changes no
    `IN` test: n items render one of log2(n) + 1 SQL texts instead of one per n."""
    items = list(values)
    return items + items[-1:] * (padded_size(len(items)) - len(items))


def in_lists(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """`values` in chunks of at most `size`, each padded: the `IN` lists of a big batch."""
    for i in range(0, len(values), size):
        yield padded(values[i : i + size])
