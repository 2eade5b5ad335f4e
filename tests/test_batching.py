"""Group commit: callers arriving during a flush share the next one, bounded by weight."""

from __future__ import annotations

import asyncio

import pytest

from clarion.batching import Batcher, gathering


async def test_callers_arriving_during_a_flush_share_the_next_batch() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await gate.wait()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert [await r for r in rest] == [20, 30, 40]
    assert batches == [[1], [2, 3, 4]]


@pytest.mark.parametrize(
    ("turns", "expected"), [(0, [[1, 2, 3], [4], [5, 6]]), (4, [[1, 2, 3], [4, 5, 6]])]
)
async def test_under_load_callers_a_few_loop_turns_behind_join_the_next_batch(
    turns: int, expected: list[list[int]]
) -> None:
    """With several callers in flight, those the last write answered come back a moment after
    it ends: the next batch waits a few loop turns for them rather than leaving alone."""
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await gate.wait()
        return items

    batcher: Batcher[int, int] = Batcher(flush, gather_turns=turns)
    first = asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)))

    async def late(i: int) -> int:
        await first  # answered by the first write, then back with a new item
        await asyncio.sleep(0)
        return await batcher.submit(i)

    await asyncio.sleep(0)
    during = asyncio.ensure_future(batcher.submit(4))  # arrived while the write ran
    after = [asyncio.ensure_future(late(i)) for i in (5, 6)]
    await asyncio.sleep(0)
    gate.set()
    assert [await during, *[await a for a in after]] == [4, 5, 6]
    assert batches == expected


async def test_with_one_caller_at_a_time_nothing_waits() -> None:
    """No concurrent load (a last batch of one): a batch is written at once, however many
    turns the batcher may gather for."""
    assert not gathering(last=1, waiting=1)
    assert not gathering(last=0, waiting=1)
    assert not gathering(last=4, waiting=4)
    assert gathering(last=15, waiting=1)


async def test_batches_are_cut_by_weight_and_a_heavy_item_goes_alone() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[None]:
        batches.append(items)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(flush, max_weight=10, weight=lambda n: n)
    await asyncio.gather(*(batcher.submit(n) for n in (4, 4, 4, 50, 1)))
    assert batches == [[4, 4, 4], [50], [1]]


async def test_a_bad_item_fails_alone_and_its_neighbours_are_written() -> None:
    """A write the database refuses because of one item is retried item by item."""
    batches: list[list[str]] = []

    async def flush(items: list[str]) -> list[str]:
        batches.append(items)
        if "bad" in items:
            raise ValueError("invalid byte sequence")
        return [i.upper() for i in items]

    batcher: Batcher[str, str] = Batcher(flush)
    results = await asyncio.gather(
        *(batcher.submit(i) for i in ("a", "bad", "b")), return_exceptions=True
    )
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], ValueError)
    assert batches == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


async def test_a_store_that_is_down_fails_every_caller_then_recovers() -> None:
    down = True

    async def flush(items: list[str]) -> list[str]:
        if down:
            raise RuntimeError("disk full")
        return items

    batcher: Batcher[str, str] = Batcher(flush)
    results = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    down = False
    assert await batcher.submit("c") == "c"


@pytest.mark.parametrize("n", [1, 7])
async def test_results_match_their_callers(n: int) -> None:
    async def flush(items: list[int]) -> list[int]:
        return [-i for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_weight=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(n))) == [-i for i in range(n)]
