"""GroupCommitter: many submitters, one blocking call per batch, results split back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hookhub.batching import CommitterClosed, GroupCommitter


class Recorder:
    """A batch function that records its batches and can be held inside a call."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on: int | None = None

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [i * 10 for i in items]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def committer(recorder: Recorder):
    c: GroupCommitter[int, int] = GroupCommitter(recorder, name="test-commit")
    yield c
    c.close(timeout=5)


async def hold_first_batch(
    recorder: Recorder, committer: GroupCommitter[int, int]
) -> asyncio.Task[list[int]]:
    """Start a batch and keep it inside the function, so everything submitted next queues up."""
    recorder.release.clear()
    first = asyncio.create_task(committer.submit([-1]))
    await asyncio.to_thread(recorder.entered.wait, 5)
    return first


async def test_each_submitter_gets_its_own_results_in_order(committer: GroupCommitter[int, int]):
    results = await asyncio.gather(
        committer.submit([1, 2]), committer.submit([3]), committer.submit([4, 5, 6])
    )
    assert results == [[10, 20], [30], [40, 50, 60]]


async def test_submissions_queued_during_a_commit_share_the_next_one(recorder, committer):
    first = await hold_first_batch(recorder, committer)
    rest = [asyncio.create_task(committer.submit([i])) for i in range(100)]
    await asyncio.sleep(0.05)
    recorder.release.set()

    assert await first == [-10]
    assert await asyncio.gather(*rest) == [[i * 10] for i in range(100)]
    assert recorder.batches == [[-1], list(range(100))]
    assert (committer.batches, committer.items) == (2, 101)


async def test_an_exception_reaches_every_waiter_of_that_batch_only(recorder, committer):
    first = await hold_first_batch(recorder, committer)
    recorder.fail_on = 3
    doomed = [asyncio.create_task(committer.submit([i])) for i in range(5)]
    await asyncio.sleep(0.05)
    recorder.release.set()

    assert await first == [-10]
    results = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    recorder.fail_on = None
    assert await committer.submit([7]) == [70]  # the thread survived


async def test_wrong_number_of_results_is_an_error():
    c: GroupCommitter[int, int] = GroupCommitter(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="results"):
        await c.submit([1, 2])
    c.close()


async def test_max_items_caps_a_batch_but_never_splits_a_submission(recorder):
    c: GroupCommitter[int, int] = GroupCommitter(recorder, max_items=10)
    first = await hold_first_batch(recorder, c)
    subs = [asyncio.create_task(c.submit(list(range(i * 6, i * 6 + 6)))) for i in range(4)]
    big = asyncio.create_task(c.submit(list(range(100, 125))))
    await asyncio.sleep(0.05)
    recorder.release.set()
    await asyncio.gather(first, big, *subs)
    c.close()
    assert [len(b) for b in recorder.batches] == [1, 12, 12, 25]


async def test_a_waiter_that_gives_up_does_not_disturb_the_others(recorder, committer):
    first = await hold_first_batch(recorder, committer)
    impatient = asyncio.create_task(committer.submit([1]))
    patient = asyncio.create_task(committer.submit([2]))
    await asyncio.sleep(0.05)
    impatient.cancel()
    recorder.release.set()
    await first
    assert await patient == [20]
    assert [1] in [b[:1] for b in recorder.batches]  # its item was still committed


async def test_close_commits_what_is_queued_then_refuses(recorder):
    c: GroupCommitter[int, int] = GroupCommitter(recorder)
    first = await hold_first_batch(recorder, c)
    queued = asyncio.create_task(c.submit([5]))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(asyncio.to_thread(c.close, 5))
    await asyncio.sleep(0.05)
    recorder.release.set()
    await closing
    assert await first == [-10]
    assert await queued == [50]
    assert c.closed
    with pytest.raises(CommitterClosed):
        await c.submit([6])


async def test_empty_submission_returns_at_once(committer):
    assert await committer.submit([]) == []
    assert committer.batches == 0


async def test_submitters_on_different_event_loops(committer):
    def other_loop() -> list[int]:
        return asyncio.run(committer.submit([9]))

    mine, theirs = await asyncio.gather(committer.submit([8]), asyncio.to_thread(other_loop))
    assert (mine, theirs) == ([80], [90])
