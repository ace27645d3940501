"""Worker processes that die with the process that started them.

A pool's idle workers block on their call queue, which does not notice a parent that was
killed (no `with` block exit, no atexit), so they would wait forever. On Linux the kernel
signals each worker when its parent dies.
"""

import ctypes
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_pool(max_workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers are killed when this process dies, however it dies."""
    if sys.platform != "linux":
        return ProcessPoolExecutor(max_workers=max_workers)
    return ProcessPoolExecutor(max_workers=max_workers, initializer=_die_with_parent, initargs=(os.getpid(),))


def _die_with_parent(parent_pid: int) -> None:
    # SIGKILL, not SIGTERM: during a run Dagster turns SIGTERM into an interrupt of the run,
    # after which the worker would wait for the next task again.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died before prctl, and then no signal comes. Asked by pid, not
    # getppid(): with the forkserver start method a worker's parent is the fork server.
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        os._exit(1)
