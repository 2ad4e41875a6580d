"""Micro-batching under concurrency, with no timer and no added latency.

With one caller, work runs at once in the caller's thread (no hand-off, no wait). When
several requests arrive together, the first becomes the *leader* and runs everything queued
in one batch (one forward pass of the model, one Chroma query per collection), while the
others wait for their own result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``submit(item)`` runs ``run_batch`` over whatever concurrent callers queued."""

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *,
                 max_batch: int = 16) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[tuple[T, Future[R]]] = []
        self._leading = False

    def submit(self, item: T) -> R:
        fut: Future[R] = Future()
        with self._cond:
            self._pending.append((item, fut))
            while self._leading and not fut.done():
                self._cond.wait()
            if fut.done():
                return fut.result()
            self._leading = True
        try:
            while not fut.done():
                with self._cond:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                try:
                    results = self.run_batch([i for i, _ in batch])
                except BaseException as exc:
                    for _, f in batch:
                        f.set_exception(exc)
                    raise
                for (_, f), res in zip(batch, results, strict=True):
                    f.set_result(res)
                with self._cond:
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return fut.result()

