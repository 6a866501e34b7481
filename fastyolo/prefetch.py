"""Decode + resize one frame ahead on another thread, so that the host work overlaps the network.

While frame n is in the network, frame n+1 is read and resized on this thread (cv2 releases the
GIL in both, so the two really run side by side). The thread starts frame n+1 only once frame n
has been taken (`depth` 1), never earlier: a file source loses the decode from the critical path
without frames aging in a queue, and memory stays bounded. A live source has nothing to overlap
(its next frame has not arrived while this one is in the network) and would only pay the hand-off
between threads, so `fastyolo detect` reads cameras in series (bench/live_latency.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class Prefetcher(Generic[T]):
    """Calls `produce()` on a thread, `depth` results ahead; `get()` returns them in order, None at the end.

    At most `depth` results exist that `get()` has not returned, counting the one being produced:
    the thread begins a result only when `get()` has freed a slot. An exception in `produce` is
    raised by the `get` that would have returned its result. Use as a context manager (or call
    close()) so that the thread stops when the consumer stops early.
    """

    def __init__(self, produce: Callable[[], T | None], depth: int = 1, name: str = "fastyolo-prefetch"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._produce = produce
        self._queue: queue.Queue = queue.Queue()  # bounded by the slots
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _slot(self) -> bool:
        """Wait for the consumer to free a slot, unless stopped (polling, so close() never waits forever)."""
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.05):
                return True
        return False

    def _run(self) -> None:
        try:
            while self._slot():
                item = self._produce()
                if item is None:
                    break
                self._queue.put(item)
            else:
                return  # stopped
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._queue.put(exc)
            return
        self._queue.put(_END)

    def get(self) -> T | None:
        if self._done:
            return None
        item = self._queue.get()
        self._slots.release()  # the thread may start the next one now
        if item is _END:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch(items: Iterable[T], work: Callable[[T], object], depth: int = 1) -> Iterator[tuple[T, object]]:
    """(item, work(item)) for each item of `items`, the iteration and `work` running one item ahead on a thread."""
    iterator = iter(items)

    def produce() -> tuple[T, object] | None:
        item = next(iterator, _END)
        return None if item is _END else (item, work(item))

    with Prefetcher(produce, depth) as ahead:
        while (pair := ahead.get()) is not None:
            yield pair
