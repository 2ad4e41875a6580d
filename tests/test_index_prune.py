"""Old index generations are pruned (issue 12): every collection prefix but the current one
and the previous one is dropped, by `kb index prune` and after every whole-index refresh of
the CLI, with real Chroma (embedded, and a `chroma run` server in the slow variant).

A generation is the collection set of one prefix (model, chunking parameters, layout); an
upgrade that changes the prefix leaves the previous set behind for a server of the previous
release and for a rollback. Embedded Chroma also leaves the folder of every deleted
collection on disk, which the prune removes.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from assist.chunks import Chunk
from assist.runtime import make_index
from assist.store import (
    ChromaStore,
    drop_generation,
    list_generations,
    make_chroma_client,
    prune_plan,
    remove_orphan_segments,
)
from kb.settings import IndexSettings, Settings

from .conftest import cli_env
from .servers import chroma_server


def _chunk(article_id: str, version: int = 1) -> Chunk:
    return Chunk(article_id=article_id, version=version, content_sha256="0" * 64, start=0,
                 end=10, heading_path=("T",), anchor="t", approved=False, title="T",
                 audience=("internal", "vendors"), locale="en", risk="low", tags=(),
                 text=f"text of {article_id}")


def _fill(client: Any, prefix: str, n: int = 3) -> ChromaStore:
    """A generation of ``n`` chunks (two views each) under ``prefix``, stamped now."""
    store = ChromaStore(client=client, settings=IndexSettings(), prefix=prefix)
    chunks = [_chunk(f"art-{i}") for i in range(n)]
    vectors = np.random.default_rng(len(prefix)).random((n, 8)).astype(np.float32)
    store.upsert(chunks, vectors)
    store.bump()
    return store


def _segment_folders(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.is_dir()}


def test_plan_keeps_current_and_previous_and_drops_the_rest(tmp_path: Path) -> None:
    client = make_chroma_client(tmp_path, None)
    for prefix in ("canon-m-c600-k1-l1", "canon-m-c800-k1-l2", "canon-m-c1200-k1-l2"):
        _fill(client, prefix)
    gens = list_generations(client)
    assert [g.prefix for g in gens] == ["canon-m-c1200-k1-l2", "canon-m-c800-k1-l2",
                                        "canon-m-c600-k1-l1"]  # most recently written first
    assert all(g.chunks == 6 and len(g.collections) == 3 for g in gens)  # 2 views + state

    kept, dropped = prune_plan(gens, "canon-m-c1200-k1-l2")
    assert [g.prefix for g in kept] == ["canon-m-c1200-k1-l2", "canon-m-c800-k1-l2"]
    assert [g.prefix for g in dropped] == ["canon-m-c600-k1-l1"]
    # Rolled back to the middle release: the newest is its "previous" and stays.
    kept, dropped = prune_plan(gens, "canon-m-c800-k1-l2")
    assert [g.prefix for g in kept] == ["canon-m-c1200-k1-l2", "canon-m-c800-k1-l2"]
    kept, dropped = prune_plan(gens, "canon-m-c1200-k1-l2", keep_previous=False)
    assert [g.prefix for g in kept] == ["canon-m-c1200-k1-l2"]
    assert len(dropped) == 2
    # A current generation with nothing written yet is kept as well.
    kept, _ = prune_plan(gens, "canon-new-c1200-k1-l2")
    assert [g.prefix for g in kept] == ["canon-m-c1200-k1-l2"]


def test_drop_removes_collections_and_the_folders_chroma_leaves(tmp_path: Path) -> None:
    client = make_chroma_client(tmp_path, None)
    old = _fill(client, "canon-m-c600-k1-l1")
    current = _fill(client, "canon-m-c1200-k1-l2")
    path = tmp_path / "chroma"
    before = _segment_folders(path)
    assert before, "embedded Chroma keeps a folder per vector segment"

    (gen_old,) = [g for g in list_generations(client) if g.prefix == old.prefix]
    drop_generation(client, gen_old)
    assert [g.prefix for g in list_generations(client)] == [current.prefix]
    assert _segment_folders(path) == before  # Chroma leaves the deleted ones on disk
    folders, size = remove_orphan_segments(path)
    assert folders >= 1 and size > 0
    left = _segment_folders(path)
    assert left < before
    assert remove_orphan_segments(path) == (0, 0)

    # What remains is intact, in this client and in a new one (a restarted server).
    for c in (client, make_chroma_client(tmp_path, None)):
        store = ChromaStore(client=c, settings=IndexSettings(), prefix=current.prefix)
        assert len(store.contents().chunks) == 3
        hits = store.query(np.ones((1, 8), dtype=np.float32), [(("internal",), "en", 3)],
                           sizes={("internal", "en"): 3})
        assert len(hits[0]) == 3


def _current_prefix(settings: Settings) -> str:
    return make_index(settings, embedder=None).prefix  # the embedder loads lazily


def _kb(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli_app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.stdout


def test_kb_index_prune_reports_and_drops_old_generations(settings: Settings) -> None:
    env = cli_env(settings)
    client = make_chroma_client(settings.data_dir, None)
    current = _current_prefix(settings)
    for prefix in ("canon-old-c600-k1-l1", "canon-prev-c800-k1-l2", current):
        _fill(client, prefix)
    _kb(env, "users", "bootstrap", "admin")

    dry = json.loads(_kb(env, "index", "prune", "--dry-run", "--json", "--as", "admin"))
    assert dry["current"] == current and dry["dry_run"] is True
    assert [g["prefix"] for g in dry["kept"]] == [current, "canon-prev-c800-k1-l2"]
    assert [g["prefix"] for g in dry["dropped"]] == ["canon-old-c600-k1-l1"]
    assert len(list_generations(client)) == 3  # nothing dropped

    status = json.loads(_kb(env, "index", "status", "--json"))
    assert status["other_generations"] == ["canon-prev-c800-k1-l2", "canon-old-c600-k1-l1"]

    text = _kb(env, "index", "prune", "--as", "admin")
    assert "kept    " + current + " (current" in text
    assert "previous" in text and "dropped canon-old-c600-k1-l1" in text
    assert "folder(s) of deleted collections" in text
    assert [g.prefix for g in list_generations(client)] == [current, "canon-prev-c800-k1-l2"]
    assert "nothing to prune" in _kb(env, "index", "prune", "--as", "admin")

    _kb(env, "index", "prune", "--all", "--as", "admin")
    assert [g.prefix for g in list_generations(client)] == [current]
    _kb(env, "users", "add", "ev", "--role", "evaluator", "--as", "admin")
    _kb(env, "index", "prune", "--as", "ev", code=7)  # admins only


def test_a_whole_index_refresh_prunes_generations_older_than_the_previous(
        settings: Settings) -> None:
    """`kb sync` (and approve, rebuild) refreshes the whole index, then drops what is older
    than the previous generation; the previous one stays."""
    env = cli_env(settings)
    client = make_chroma_client(settings.data_dir, None)
    for prefix in ("canon-old-c600-k1-l1", "canon-prev-c800-k1-l2"):
        _fill(client, prefix)
    _kb(env, "users", "bootstrap", "admin")
    _kb(env, "users", "add", "writer", "--role", "owner", "--team", "billing-knowledge",
        "--as", "admin")
    result = CliRunner().invoke(cli_app, ["sync", "--as", "writer"], env=env)
    assert result.exit_code == 0, result.output  # empty content folder: nothing to embed
    assert "dropped 1 old generation(s): canon-old-c600-k1-l1" in result.output
    prefixes = {g.prefix for g in list_generations(client)}
    assert prefixes == {_current_prefix(settings), "canon-prev-c800-k1-l2"}


def test_prune_is_refused_while_a_server_holds_the_embedded_index(settings: Settings) -> None:
    from assist.follower import IndexLock

    env = cli_env(settings)
    _kb(env, "users", "bootstrap", "admin")
    lock = IndexLock.for_index(settings.data_dir, None)
    assert lock.acquire(timeout=0)
    try:
        _kb(env, "index", "prune", "--as", "admin", code=8)
        _kb(env, "index", "prune", "--dry-run", "--as", "admin")  # a report only: allowed
    finally:
        lock.release()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the HTTP client's pooled sockets
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_prune_on_a_chroma_server_keeps_the_generation_a_running_reader_serves(
        tmp_path: Path, settings: Settings) -> None:
    """A reader of the previous generation (a server of the previous release) keeps
    answering while the new release's CLI prunes; only older generations go."""
    with chroma_server(tmp_path / "chroma-server") as url:
        env = cli_env(settings, KB_CHROMA_URL=url)
        client = make_chroma_client(settings.data_dir, url)
        _fill(client, "canon-old-c600-k1-l1")
        previous = _fill(client, "canon-prev-c800-k1-l2")
        current = _current_prefix(settings)
        _fill(client, current)
        reader = ChromaStore(client=make_chroma_client(settings.data_dir, url),
                             settings=IndexSettings(), prefix=previous.prefix)
        ask = (np.ones((1, 8), dtype=np.float32), [(("vendors",), "en", 3)])
        assert len(reader.query(*ask, sizes={("vendors", "en"): 3})[0]) == 3

        _kb(env, "users", "bootstrap", "admin")
        data = json.loads(_kb(env, "index", "prune", "--json", "--as", "admin"))
        assert [g["prefix"] for g in data["dropped"]] == ["canon-old-c600-k1-l1"]
        assert data["orphan_folders"] == 0  # the server's disk is the server's
        assert len(reader.query(*ask, sizes={("vendors", "en"): 3})[0]) == 3
        assert reader.generation() != "0"

        _kb(env, "index", "prune", "--all", "--as", "admin")
        assert [g.prefix for g in list_generations(client)] == [current]
        # The HTTP clients' pooled sockets are closed here, where their warnings are
        # ignored, not in whichever test the garbage collector runs next.
        del client, reader, previous
        gc.collect()
