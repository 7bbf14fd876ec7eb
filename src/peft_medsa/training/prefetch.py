"""A prefetching loader: a background thread prepares the next micro-batches while the current one trains.

The micro-batches are a pure function of their index (:mod:`peft_medsa.training.sampling`), so loading ahead
changes nothing the training sees: the same items come back in the same order, and a resumed run simply starts the
thread at its first micro-batch. Reading (Arrow, image decoding) and resizing release the GIL for most of their time,
so one thread overlaps them with the model's compute without another process or a copy of the dataset.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class Prefetcher:
    """Iterates ``load(i)`` for ``i`` in ``range(start, stop)``, computed up to ``depth`` items ahead in a thread.

    Args:
        load: ``load(i)`` -> item; an exception is raised again by the iterator at the item where it occurred.
        start: First index.
        stop: One past the last index.
        depth: Items prepared ahead; ``0`` loads synchronously in the caller's thread.

    Use as a context manager (or call :meth:`close`) so that the thread stops when the loop ends early.
    """

    def __init__(self, load: Callable[[int], Any], start: int, stop: int, depth: int = 2) -> None:
        self.load, self.start, self.stop, self.depth = load, start, stop, depth
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None
        if depth > 0 and start < stop:
            self._thread = threading.Thread(target=self._work, name="medsa-prefetch", daemon=True)
            self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        for i in range(self.start, self.stop):
            try:
                item = (i, self.load(i), None)
            except BaseException as error:  # handed to the consumer, which raises it
                self._put((i, None, error))
                return
            if not self._put(item):
                return
        self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        if self._thread is None:
            for i in range(self.start, self.stop):
                yield self.load(i)
            return
        while True:
            got = self._queue.get()
            if got is _DONE:
                return
            _, item, error = got
            if error is not None:
                raise error
            yield item

    def close(self) -> None:
        """Stops the thread (it finishes the item it is loading)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Prefetcher"]
