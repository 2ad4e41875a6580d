"""kb serve --workers N: each worker's embedder gets its share of the cores."""

from __future__ import annotations

import os

import pytest

from api.cli_assist import _share_cores
from kb.settings import Settings


@pytest.mark.parametrize(("cores", "workers", "expected"), [(2, 2, "1"), (8, 2, "4"),
                                                            (2, 4, "1"), (3, 2, "1")])
def test_workers_split_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, workers: int,
                                 expected: str) -> None:
    monkeypatch.delenv("KB_INDEX__EMBEDDER_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    _share_cores(workers, threads=0)
    assert os.environ["KB_INDEX__EMBEDDER_THREADS"] == expected
    # ... and the workers' settings read it.
    assert Settings.from_env().index.embedder_threads == int(expected)


def test_an_explicit_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_INDEX__EMBEDDER_THREADS", "3")
    _share_cores(2, threads=3)
    assert os.environ["KB_INDEX__EMBEDDER_THREADS"] == "3"
