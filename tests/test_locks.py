"""Turns at the DuckDB file (`resources.locks.turn`): one writer or many readers among
glan's processes, a waiter in within milliseconds of the holder's end, shared by a
process's threads."""

import multiprocessing
import threading
import time

from resources.locks import turn


def _hold(path: str, shared: bool, seconds: float, holding, released) -> None:
    from pathlib import Path

    with turn(Path(path), shared, timeout_s=10):
        holding.set()
        time.sleep(seconds)
        released.value = time.time()


def holder(path, shared: bool, seconds: float):
    context = multiprocessing.get_context("spawn")
    holding, released = context.Event(), context.Value("d", 0.0)
    process = context.Process(target=_hold, args=(str(path), shared, seconds, holding, released))
    process.start()
    assert holding.wait(60)
    return process, released


def test_a_writer_waits_for_the_holder_and_gets_in_within_milliseconds(tmp_path):
    lock = tmp_path / ".glan.duckdb.lock"
    process, released = holder(lock, shared=False, seconds=0.5)
    with turn(lock, shared=False, timeout_s=10) as mine:
        got = time.time()
    process.join()
    assert mine
    assert 0 <= got - released.value < 0.3  # polled every 5 ms; a loaded machine may be slower to wake it


def test_readers_share_a_turn_and_a_writer_gives_up_after_its_timeout(tmp_path):
    lock = tmp_path / ".glan.duckdb.lock"
    process, _ = holder(lock, shared=True, seconds=1.5)
    start = time.monotonic()
    with turn(lock, shared=True, timeout_s=10) as reading:
        assert reading and time.monotonic() - start < 0.5  # beside the other reader
    with turn(lock, shared=False, timeout_s=0.3) as writing:
        assert not writing  # the caller then meets DuckDB's own lock and says who holds it
    process.join()


def test_a_processs_threads_share_its_turn(tmp_path):
    lock = tmp_path / ".glan.duckdb.lock"
    inside = threading.Event()

    def nested() -> None:
        with turn(lock, shared=False, timeout_s=1) as again:
            assert again
            inside.set()

    with turn(lock, shared=False, timeout_s=1) as mine:
        assert mine
        thread = threading.Thread(target=nested)
        thread.start()
        thread.join()
    assert inside.is_set()
    process, released = holder(lock, shared=False, seconds=0.1)  # given back when the last one left
    process.join()
    assert released.value > 0
