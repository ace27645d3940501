"""The requests in flight that a parallel `glan build`'s run processes share.

A build of W runs at a time may have GLAN_MAX_CONCURRENCY × W requests in flight. Each run
capped at its own GLAN_MAX_CONCURRENCY left its share unused whenever it was between levels
(committing a level, starting the next step) or in a narrow level, while other runs held
hundreds of requests waiting. Here the build holds one semaphore of the whole total, given to
each run's process when it starts; every LLM step takes a permit per request from it, so
whichever runs have requests to send fill the endpoint, and together they never exceed the total.

Each process counts the permits it holds in a shared integer, so when a run's process dies
(killed), the build gives its permits back instead of losing them for the rest of the build.
"""

import asyncio
import threading
from collections import deque

# Set in a run's process when it starts (`install`); None elsewhere: each step caps itself.
_shared: "Shared | None" = None


class Shared:
    """One build's semaphore and this process's count of the permits it holds."""

    def __init__(self, semaphore, held):
        self.semaphore, self.held = semaphore, held
        self._count = threading.Lock()  # every step's loop and feeder thread in the process change `held`

    def took(self) -> None:
        """Count a permit this process has acquired."""
        with self._count:
            self.held.value += 1

    def release(self) -> None:
        with self._count:
            self.held.value -= 1
        self.semaphore.release()

    def give_back_held(self) -> int:
        """Release what a dead process held; call only once it is gone."""
        n = self.held.value
        for _ in range(n):
            self.semaphore.release()
        self.held.value = 0
        return n


def install(semaphore, held) -> None:
    """In a run's process, before its run: its steps take permits from the build's semaphore."""
    global _shared
    _shared = Shared(semaphore, held)


def installed() -> "Shared | None":
    return _shared


class SharedCap:
    """`async with cap:` holds one of the build's permits. A permit free now is taken at once;
    otherwise one thread per process waits on the semaphore and hands permits to this event
    loop's waiters in order, so waiting never blocks the loop."""

    def __init__(self, shared: Shared):
        self._shared = shared
        self._waiters: deque[asyncio.Future] = deque()
        self._feeding = False  # a feeder thread is running (read and written on the loop only)

    async def __aenter__(self) -> None:
        if not self._waiters and self._shared.semaphore.acquire(False):
            self._shared.took()
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if not self._feeding:
            self._feeding = True
            threading.Thread(target=self._feed, args=(loop,), name="glan-inflight", daemon=True).start()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a permit as it was cancelled
                self._shared.release()
            raise

    async def __aexit__(self, *exc) -> None:
        self._shared.release()

    def _feed(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take one permit at a time and hand it over on the loop, until no waiter is left."""
        handed = threading.Event()
        more = [True]

        def hand() -> None:  # on the loop
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
            else:
                self._shared.release()  # every waiter gave up: the permit goes back
            more[0] = bool(self._waiters)
            self._feeding = more[0]
            handed.set()

        while more[0]:
            self._shared.semaphore.acquire()
            self._shared.took()
            handed.clear()
            try:
                loop.call_soon_threadsafe(hand)
            except RuntimeError:  # the loop is closed: nobody is left to hand it to
                self._shared.release()
                return
            while not handed.wait(0.5):
                if loop.is_closed() and not handed.is_set():  # closed before `hand` ran
                    self._shared.release()
                    return
