"""store/holes.py's bucket arithmetic: which hole buckets a count sums for a range."""

from __future__ import annotations

from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from clarion.store import holes


def summed(lo: int, hi: int) -> list[int] | None:
    """The fine buckets that `hidden_params`' bounds make a count sum (each coarse bucket
    expanded to its fine ones), or None when the range is scanned alone."""
    split, p = holes.hidden_params("w", lo, hi)
    if not split:
        return None
    top = 1 << holes.COARSE_BITS
    fine = list(range(p["wbf"] + 1, p["wx1"]))
    for stored in range(p["wcl"], p["wch"] + 1):
        index = -1 - stored
        fine += range(index * top, (index + 1) * top)
    fine += range(p["wx2"] + 1, p["wbl"])
    return fine


def check(lo: int, length: int) -> None:
    hi = lo + length
    first, last = holes.bucket(lo + 1), holes.bucket(hi)
    got = summed(lo, hi)
    if first == last:
        assert got is None
        return
    assert got is not None and sorted(got) == list(range(first + 1, last))


@given(st.integers(0, 5_000_000), st.integers(1, 5_000_000))
def test_a_range_sums_each_whole_bucket_once(lo: int, length: int) -> None:
    """Fine buckets at the ends, coarse ones where they fit: together exactly the fine buckets
    wholly inside the range, each once; the partial ones at its ends are scanned instead."""
    check(lo, length)


@given(st.integers(0, 400), st.integers(1, 400))
def test_the_same_with_tiny_buckets(lo: int, length: int) -> None:
    with mock.patch.object(holes, "BUCKET_BITS", 1), mock.patch.object(holes, "COARSE_BITS", 1):
        check(lo, length)


def test_a_long_range_sums_few_rows() -> None:
    """A window over a million seqs sums 29 coarse rows and 47 fine ones (per type), where
    fine buckets alone were 975."""
    split, p = holes.hidden_params("w", 0, 1_000_000)
    assert split
    assert p["wch"] - p["wcl"] + 1 == 29
    assert (p["wx1"] - p["wbf"] - 1) + (p["wbl"] - p["wx2"] - 1) == 47
