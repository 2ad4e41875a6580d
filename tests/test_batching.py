"""Query micro-batching: concurrent callers share forward passes and get their own vector."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from assist.batching import BatchingEmbedder


class SlowFake:
    """Deterministic fake: vector = one-hot of len(text); records batch sizes."""

    model_name = "fake"
    dim = 64

    def __init__(self) -> None:
        self.batches: list[int] = []

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> NDArray[np.float32]:
        self.batches.append(len(texts))
        time.sleep(0.02)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % self.dim] = 1.0
        return out

    def embed_query(self, text: str) -> NDArray[np.float32]:
        return self.embed([text])[0]


def test_single_caller_is_not_delayed() -> None:
    fake = SlowFake()
    b = BatchingEmbedder(fake)
    assert b.embed_query("abc")[3] == 1.0
    assert fake.batches == [1]


def test_concurrent_callers_share_batches_and_get_their_own_vectors() -> None:
    fake = SlowFake()
    b = BatchingEmbedder(fake, max_batch=8)
    results: dict[int, NDArray[np.float32]] = {}

    def call(i: int) -> None:
        results[i] = b.embed_query("x" * i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(int(np.argmax(results[i])) == i for i in range(1, 17))
    assert sum(fake.batches) == 16
    assert len(fake.batches) < 16 and max(fake.batches) <= 8


def test_errors_reach_every_waiting_caller() -> None:
    class Broken(SlowFake):
        def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> NDArray[np.float32]:
            raise RuntimeError("model failed")

    b = BatchingEmbedder(Broken())
    try:
        b.embed_query("x")
    except RuntimeError as exc:
        assert "model failed" in str(exc)
    else:
        raise AssertionError("expected the model error")
    # the batcher is usable again afterwards (no stuck leader)
    b.inner = SlowFake()
    assert b.embed_query("ab")[2] == 1.0
