"""A parallel build's run processes share one cap on requests in flight (`resources.inflight`),
tested with real processes from the build's worker pools and a real semaphore."""

import asyncio
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from glan_assets.workers import shared_int, shared_semaphore, worker_pool
from resources import inflight
from tests.spans import max_overlap


def _requests(n: int, hold_s: float) -> tuple[list[tuple[float, float]], int]:
    """In a worker: `n` requests of `hold_s` each through the build's cap; each one's span while
    it held a permit, and the permits the process still holds at the end."""
    spans = []

    async def one(cap: inflight.SharedCap) -> None:
        async with cap:
            start = time.time()
            await asyncio.sleep(hold_s)
            spans.append((start, time.time()))

    async def main() -> None:
        cap = inflight.SharedCap(inflight.installed())
        await asyncio.gather(*(one(cap) for _ in range(n)))

    asyncio.run(main())
    return spans, inflight.installed().held.value


def _hold_and_die(n: int) -> None:
    async def main() -> None:
        cap = inflight.SharedCap(inflight.installed())
        for _ in range(n):
            await cap.__aenter__()
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())


def run_in_workers(semaphore, *jobs: tuple) -> list:
    """Each job (fn, args) in a worker process of its own, all at once, sharing `semaphore`."""
    pools = [worker_pool(1, setup=inflight.install, setup_args=(semaphore, shared_int())) for _ in jobs]
    try:
        futures = [pool.submit(fn, *args) for pool, (fn, *args) in zip(pools, jobs)]
        return [f.result(timeout=60) for f in futures]
    finally:
        for pool in pools:
            pool.shutdown()


def test_a_run_alone_takes_the_whole_total():
    """The other runs are between levels: one run's step fills the endpoint by itself."""
    [(spans, held)] = run_in_workers(shared_semaphore(8), (_requests, 40, 0.05))
    assert len(spans) == 40
    assert max_overlap(spans) == 8
    assert held == 0


def test_runs_at_once_fill_the_total_and_never_exceed_it():
    semaphore = shared_semaphore(6)
    results = run_in_workers(semaphore, (_requests, 30, 0.05), (_requests, 30, 0.05))
    spans = [s for spans, _ in results for s in spans]
    assert len(spans) == 60
    assert max_overlap(spans) == 6
    assert [held for _, held in results] == [0, 0]
    assert semaphore.get_value() == 6


def test_waiters_that_give_up_leave_every_permit():
    """A step that fails cancels its requests, some of them waiting for a permit."""
    semaphore, held = shared_semaphore(3), shared_int()
    cap = inflight.SharedCap(inflight.Shared(semaphore, held))

    async def hold() -> None:
        async with cap:
            await asyncio.sleep(10)

    async def main() -> None:
        tasks = [asyncio.create_task(hold()) for _ in range(10)]
        await asyncio.sleep(0.2)
        assert held.value == 3 and semaphore.get_value() == 0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    time.sleep(0.7)  # the feeder thread notices the closed loop
    assert (held.value, semaphore.get_value()) == (0, 3)


def test_a_killed_runs_permits_come_back_to_the_build():
    semaphore, held = shared_semaphore(5), shared_int()
    with worker_pool(1, setup=inflight.install, setup_args=(semaphore, held)) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(_hold_and_die, 4).result(timeout=60)
    assert semaphore.get_value() == 1
    assert inflight.Shared(semaphore, held).give_back_held() == 4
    assert semaphore.get_value() == 5
