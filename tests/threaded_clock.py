"""A test Clock that also takes the store writer's callFromThread calls."""

import queue
import time

from twisted.internet.task import Clock

T0 = 1_700_000_000.0


class ThreadedClock(Clock):
    """A Clock that accepts callFromThread from the store's writer thread and runs those
    calls on the test thread while the test waits for a Deferred."""

    def __init__(self):
        super().__init__()
        self.advance(T0)
        self._from_threads = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self._from_threads.put((f, args, kwargs))

    def wait(self, d, timeout=20):
        """Run thread calls until `d` fires; its result, or its failure."""
        outcome = []
        d.addBoth(outcome.append)
        deadline = time.monotonic() + timeout
        while not outcome:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("store write did not complete in time")
            try:
                f, args, kwargs = self._from_threads.get(timeout=left)
            except queue.Empty:
                continue
            f(*args, **kwargs)
        return outcome[0]
