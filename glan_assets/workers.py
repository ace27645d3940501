"""Worker processes that die with the process that started them.

A pool's idle workers block on their call queue, which does not notice a parent that was
killed (no `with` block exit, no atexit), so they would wait forever. On Linux each worker
watches its starter through a pidfd and kills itself when the starter is gone.

Workers come from a fork server, never from a fork of the caller: `glan build` starts them
from several threads while others read the Dagster instance, and a child forked while
another thread held SQLite's lock waited on it forever (a build of 200 disciplines hung
after 11 runs). The fork server is single-threaded and imports `preload` once, so a worker
starts in milliseconds with the modules its work needs. A worker's parent is the fork
server, which lives as long as any worker does, so the kernel's parent-death signal
cannot be what ends them.
"""

import multiprocessing
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor


def _context():
    return multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")


def worker_pool(
    max_workers: int, preload: Sequence[str] = (), setup: Callable | None = None, setup_args: tuple = ()
) -> ProcessPoolExecutor:
    """A process pool whose workers are killed when this process dies, however it dies, and
    run `setup(*setup_args)` when they start (where a semaphore from `shared_semaphore` can
    be handed over: it cannot go with a task)."""
    context = _context()
    if sys.platform != "linux":
        return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, initializer=setup, initargs=setup_args)
    # Read when the server starts, once per process. A worker runs the caller's main module
    # again (as `__mp_main__`); preloaded by name too, its imports are already there. Under
    # `python -m`, preloading `__main__` alone imports nothing, and every worker imported the
    # CLI's modules itself: 2.4 s of CPU each, ten at once, before a build's first request.
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    context.set_forkserver_preload(["__main__", *([main_spec.name] if main_spec else []), *preload])
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=context, initializer=_start_worker,
        initargs=(os.getpid(), setup, setup_args),
    )


def shared_semaphore(value: int):
    """A semaphore that this process's worker pools' workers can share (given through `setup`)."""
    return _context().BoundedSemaphore(value)


def shared_int():
    """An integer in memory shared with a worker (given through `setup`); its own lock is the caller's."""
    return _context().RawValue("i", 0)


def _start_worker(starter_pid: int, setup: Callable | None, setup_args: tuple) -> None:
    _die_with_starter(starter_pid)
    if setup is not None:
        setup(*setup_args)


def _die_with_starter(starter_pid: int) -> None:
    try:
        pidfd = os.pidfd_open(starter_pid)
    except ProcessLookupError:  # gone before the worker could watch it
        os._exit(1)
    threading.Thread(target=_kill_self_when_gone, args=(pidfd,), name="glan-starter-watch", daemon=True).start()


def _kill_self_when_gone(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once the process has exited
    # SIGKILL, not SIGTERM: during a run Dagster turns SIGTERM into an interrupt of the run,
    # after which the worker would wait for the next task again.
    os.kill(os.getpid(), signal.SIGKILL)
