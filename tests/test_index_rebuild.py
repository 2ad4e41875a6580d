"""`kb index rebuild` on a Chroma server rebuilds the live collections in place: processes
reading the index (servers of every machine) keep finding every article throughout.

Real Chroma server (`chroma run`), real model, real SQLite database.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from api.cli import app as cli_app
from assist import indexer
from assist.embedder import MiniLMEmbedder
from assist.store import ChromaStore, make_chroma_client
from kb import approvals

from .conftest import cli_env, write_article
from .kbs import BuiltKB, build_kb
from .servers import chroma_server

_EMBEDDER = MiniLMEmbedder()
ARTICLES = {f"topic-{i}": f"# Topic {i}\n## Rules\nRule number {i} says the fee is £{i}.\n"
            for i in range(6)}


def _content(root: Path) -> Path:
    content = root / "articles"
    for art_id, body in ARTICLES.items():
        write_article(content, art_id, title=art_id.replace("-", " ").title(),
                      audience=["internal", "vendors"], body=body)
    return content


def _seen_by_a_reader(kb: BuiltKB, url: str) -> tuple[list[int], ChromaStore]:
    """Spy on the index's writes: before each one, count what another process's reader
    finds in the live collection (0 when it is gone or empty)."""
    reader = ChromaStore(client=make_chroma_client(kb.settings.data_dir, url),
                         settings=kb.settings.index, prefix=kb.assistant.index.prefix)
    vector = _EMBEDDER.embed_query("what is the fee of topic 3")[None, :]
    seen: list[int] = []
    store = kb.assistant.index.store
    upsert = store.upsert

    def spied(*args: Any, **kwargs: Any) -> None:
        try:
            hits = reader.query(vector, [(("internal",), "en", 20)],
                                sizes={("internal", "en"): 20})[0]
        except Exception:  # a dropped collection: the reader finds nothing
            hits = []
        seen.append(len(hits))
        upsert(*args, **kwargs)

    store.upsert = spied  # type: ignore[method-assign]
    return seen, reader


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the HTTP client's pooled sockets
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rebuild_on_a_chroma_server_never_empties_the_live_index(tmp_path: Path) -> None:
    with chroma_server(tmp_path / "chroma-server") as url:
        kb = build_kb(tmp_path / "kb", content=_content(tmp_path), embedder=_EMBEDDER,
                      chroma_url=url)
        index = kb.assistant.index
        before = index.manifest()
        assert set(before) == set(ARTICLES)
        with Session(kb.engine, expire_on_commit=False) as s:
            approvals.retire(s, article_id="topic-5", by="lead")  # not re-indexed yet

        seen, reader = _seen_by_a_reader(kb, url)
        with Session(kb.engine) as s:
            report = indexer.rebuild(s, index, in_place=True)
        assert seen and min(seen) > 0, seen  # every write found the live index whole
        assert report.removed == ["topic-5"]
        index._checked_at = 0.0
        assert index.manifest() == {a: n for a, n in before.items() if a != "topic-5"}
        hits = index.dense(_EMBEDDER.embed_query("fee of topic 3"), views=("internal",),
                           locale="en", n=10)
        assert {cid.split("|")[0] for cid, _ in hits} == set(ARTICLES) - {"topic-5"}

        # The CLI rebuilds in place on a Chroma server, and says how to drop instead.
        env = cli_env(kb.settings, KB_CHROMA_URL=url)
        runner = CliRunner()
        assert runner.invoke(cli_app, ["users", "bootstrap", "root"], env=env).exit_code == 0
        seen.clear()
        result = runner.invoke(cli_app, ["index", "rebuild", "--as", "root"], env=env)
        assert result.exit_code == 0, result.output
        assert "5 articles indexed" in result.output and "dropping" not in result.output
        index._checked_at = 0.0
        assert set(index.manifest()) == set(ARTICLES) - {"topic-5"}

        # The drop-and-refill rebuild is what a reader must not see: the same spy finds
        # the live index empty (so the check above can fail).
        seen.clear()
        with Session(kb.engine) as s:
            indexer.rebuild(s, index, in_place=False)
        assert seen and min(seen) == 0, seen
        # The HTTP clients' pooled sockets are closed here, where their warnings are
        # ignored, not in whichever test the garbage collector runs next.
        kb.engine.dispose()
        del kb, index, reader
        gc.collect()
