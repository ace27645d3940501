"""`shared_cap`: a parallel build's runs share GLAN_MAX_CONCURRENCY × workers in flight."""

from resources.llm import shared_cap


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
