"""`shared_cap` and `WideningCap`: a parallel build's runs share GLAN_MAX_CONCURRENCY × workers in flight."""

import asyncio

from resources.llm import WideningCap, shared_cap


def test_runs_at_once_each_get_their_share():
    assert shared_cap(32, workers=8, partitions=10, finished=0) == 32
    assert shared_cap(32, workers=8, partitions=10, finished=2) == 32


def test_the_last_runs_take_the_finished_runs_shares():
    assert shared_cap(32, workers=8, partitions=10, finished=8) == 128
    assert shared_cap(32, workers=8, partitions=10, finished=9) == 256
    assert shared_cap(32, workers=8, partitions=10, finished=10) == 256  # never divides by zero


def test_never_above_the_total_whatever_order_the_caps_were_taken_in():
    per_run, workers, partitions = 25, 8, 13
    for finished in range(partitions + 1):
        running = min(workers, partitions - finished)  # at most this many runs are unfinished and started
        # each running run took its cap when at least as many were unfinished: at most today's cap
        assert running * shared_cap(per_run, workers, partitions, finished) <= per_run * workers


async def most_in_flight(cap: WideningCap, tasks: int) -> int:
    in_flight = most = 0

    async def request():
        nonlocal in_flight, most
        async with cap:
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    await asyncio.gather(*(request() for _ in range(tasks)))
    return most


def test_a_steps_cap_widens_while_it_runs_when_the_build_allows_more():
    shares = iter([2] * 5 + [6] * 100)  # the others finish after a few requests
    cap = WideningCap(2, lambda: next(shares), every_s=0)
    assert asyncio.run(most_in_flight(cap, 30)) == 6 and cap.cap == 6


def test_a_steps_cap_never_narrows_and_without_a_build_stays_put():
    assert asyncio.run(most_in_flight(WideningCap(4, lambda: 1, every_s=0), 20)) == 4
    assert asyncio.run(most_in_flight(WideningCap(3), 20)) == 3


def test_the_build_is_asked_at_most_once_a_period():
    asked = []
    cap = WideningCap(2, lambda: asked.append(1) or 2, every_s=3600)
    asyncio.run(most_in_flight(cap, 20))
    assert asked == []
