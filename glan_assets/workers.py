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
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor


def worker_pool(max_workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """A process pool whose workers are killed when this process dies, however it dies."""
    if sys.platform != "linux":
        return ProcessPoolExecutor(max_workers=max_workers)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *preload])  # read when the server starts, once per process
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=context, initializer=_die_with_starter, initargs=(os.getpid(),)
    )


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
