"""Micro-batching: concurrent callers share one batch run and each gets its own result."""

from __future__ import annotations

import threading
import time

from assist.batching import Batcher


class SlowFake:
    """Deterministic fake batch run: result = len(item); records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, items: list[str]) -> list[int]:
        self.batches.append(len(items))
        time.sleep(0.02)
        return [len(t) for t in items]


def test_single_caller_is_not_delayed() -> None:
    fake = SlowFake()
    b = Batcher(fake)
    assert b.submit("abc") == 3
    assert fake.batches == [1]


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    fake = SlowFake()
    b = Batcher(fake, max_batch=8)
    results: dict[int, int] = {}

    def call(i: int) -> None:
        results[i] = b.submit("x" * i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == i for i in range(1, 17))
    assert sum(fake.batches) == 16
    assert len(fake.batches) < 16 and max(fake.batches) <= 8


def test_errors_reach_every_waiting_caller() -> None:
    def broken(items: list[str]) -> list[int]:
        raise RuntimeError("model failed")

    b = Batcher(broken)
    try:
        b.submit("x")
    except RuntimeError as exc:
        assert "model failed" in str(exc)
    else:
        raise AssertionError("expected the model error")
    # the batcher is usable again afterwards (no stuck leader)
    b.run_batch = SlowFake()
    assert b.submit("ab") == 2
