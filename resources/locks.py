"""One process at a time: an exclusive `flock` on a file, for setup that processes must not
race, and turns at a file many processes open (the DuckDB file)."""

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# This process's turns, by (pid, path): [open lock file, holders]. A turn is taken once per
# process and shared by its threads, as DuckDB shares one open database between them.
_TURNS: dict[tuple[int, str], list] = {}
_GATES: dict[tuple[int, str], threading.Lock] = {}  # one thread of a process takes a turn at a time
_TURNS_LOCK = threading.Lock()


@contextmanager
def turn(path: Path, shared: bool, timeout_s: float, poll_s: float = 0.005) -> Iterator[bool]:
    """This process's turn at a file that one writer or many readers may open at a time (as
    DuckDB allows): an exclusive `flock` on `path`, or a shared one for `shared`. A waiter
    tries every `poll_s`, so it has its turn within milliseconds of the last holder's end
    (a waiter backing off to a second sleeps through turns it could have had). Yields False,
    without the turn, after `timeout_s`: the caller finds who holds the file itself."""
    key = (os.getpid(), str(path))
    with _TURNS_LOCK:
        gate = _GATES.setdefault(key, threading.Lock())
    with gate:
        with _TURNS_LOCK:
            held = _TURNS.get(key)
            if held is not None:
                held[1] += 1
        if held is None and (fh := _flock(path, shared, timeout_s, poll_s)) is not None:
            with _TURNS_LOCK:
                held = _TURNS[key] = [fh, 1]
    try:
        yield held is not None
    finally:
        if held is not None:
            with _TURNS_LOCK:
                held[1] -= 1
                if held[1] == 0:
                    del _TURNS[key]
                    fcntl.flock(held[0], fcntl.LOCK_UN)
                    held[0].close()


def _flock(path: Path, shared: bool, timeout_s: float, poll_s: float):
    """The open lock file, locked; None after `timeout_s`, or where this process may not
    create it (a reader of a directory it cannot write)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")
    except OSError:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.close()
                return None
            time.sleep(poll_s)
