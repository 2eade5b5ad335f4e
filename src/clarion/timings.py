"""Durations counted into fixed buckets: what a Prometheus histogram needs, at the cost of a
bisect and two increments per observation (no lock, no labels object on the hot path)."""

from __future__ import annotations

from bisect import bisect_left

# Seconds: 1 ms to 10 s, the range of handshakes and publishes worth telling apart.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Timings:
    """Per label (a transport, a step): counts per bucket, a total and a sum."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, label: str, seconds: float) -> None:
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.buckets) + 1)
            self.sums[label] = 0.0
        counts[bisect_left(self.buckets, seconds)] += 1
        self.sums[label] += seconds

    def cumulative(self, label: str) -> list[tuple[str, int]]:
        """Prometheus' `le` buckets, `+Inf` last."""
        total, out = 0, []
        for bound, n in zip((*self.buckets, float("inf")), self.counts[label], strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out

    def quantile(self, label: str, q: float) -> float | None:
        """The upper bound of the bucket holding quantile `q` (as coarse as the buckets)."""
        return quantile(self.buckets, self.counts.get(label) or [], q)


def quantile(buckets: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """Of counts per bucket (the last one beyond the last bound): the upper bound of the bucket
    holding quantile `q`, the last bound for the overflow; None without a count."""
    if not counts or not sum(counts):
        return None
    rank, seen = q * sum(counts), 0
    for bound, n in zip((*buckets, buckets[-1]), counts, strict=True):
        seen += n
        if seen >= rank:
            return bound
    return buckets[-1]
