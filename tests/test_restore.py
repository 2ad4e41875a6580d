"""Issue 12: backup and restore as docs/deploy.md says, onto an empty index.

A PostgreSQL database is dumped (``pg_dump -Fc``) with its content folder copied, restored
into a new database (``pg_restore``) with a fresh data directory: no index at all. Then

- ``kb index rebuild`` rebuilds the index from the database alone (every served version,
  nothing pending), and
- a server started on the restored database with another empty index repairs it at start
  and serves each article's approved text, byte for byte, never the pending edit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import article_text
from .servers import (
    PG_URL,
    free_port,
    http,
    pg_database,
    run_kb,
    setup_world,
    start_server,
    stop,
    wait_http,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (KB_TEST_DATABASE_URL)"),
    pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                       reason="needs pg_dump and pg_restore"),
]

REFUNDS = "# Refunds\n## Eligibility\nAnnual plans can be refunded within 30 days of purchase.\n"
ROUTER = "# Router lights\n## Meaning\nA solid white light on the Hub 3 router means it works.\n"


def _libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def test_restore_onto_an_empty_index_rebuilds_it_from_the_database(tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    with pg_database() as source_url, pg_database() as restored_url:
        env = {"KB_DATA_DIR": str(tmp_path / "live"), "KB_CONTENT_DIR": str(content),
               "KB_DATABASE_URL": source_url}
        tokens = setup_world(env, content, {
            "refund-window": article_text("refund-window", owner="team-a", body=REFUNDS),
            "router-lights": article_text("router-lights", owner="team-a", body=ROUTER)})
        (content / "refund-window.md").write_text(article_text(
            "refund-window", owner="team-a", body=REFUNDS.replace("30 days", "45 days")),
            encoding="utf-8")
        run_kb(env, "sync", "--as", "writer")  # v2 pending: must never be served

        # Backup: the database (custom format) and the content folder.
        dump = tmp_path / "canon.dump"
        subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(dump), _libpq(source_url)],
                       check=True, timeout=120)
        shutil.copytree(content, tmp_path / "content-backup")
        # Restore into an empty database, with an empty data directory (no index).
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d",
                        _libpq(restored_url), str(dump)], check=True, timeout=120)
        restored = {"KB_DATA_DIR": str(tmp_path / "restored"),
                    "KB_CONTENT_DIR": str(tmp_path / "content-backup"),
                    "KB_DATABASE_URL": restored_url}
        status = json.loads(run_kb(restored, "index", "status", "--json").stdout)
        assert status["indexed_articles"] == 0 and status["served_articles"] == 2

        run_kb(restored, "index", "rebuild", "--as", "admin")
        status = json.loads(run_kb(restored, "index", "status", "--json").stdout)
        assert status["indexed_articles"] == 2 and status["out_of_date"] == [], status
        asked = json.loads(run_kb(restored, "ask", "how long can annual plans be refunded?",
                                  "--as", "ev", "--json").stdout)
        assert asked["passages"][0]["citation"]["version"] == 1
        assert "30 days" in asked["passages"][0]["text"]

        # Startup repair: a server on the restored database and another empty index.
        engine = sa.create_engine(restored_url)
        with engine.connect() as conn:
            texts = dict(conn.execute(sa.text(
                "SELECT article_id, text FROM article_version WHERE number = 1")).all())
        engine.dispose()
        port = free_port()
        server = start_server({**restored, "KB_DATA_DIR": str(tmp_path / "restored-2")},
                              port=port)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/healthz", server)
            code, ready, _ = http("GET", f"{base}/readyz")
            assert code == 200, ready
            for question, article in (("how long can annual plans be refunded?",
                                       "refund-window"),
                                      ("what does a solid white router light mean?",
                                       "router-lights")):
                code, body, _ = http("POST", f"{base}/v1/assist", token=tokens["ev"],
                                     body={"question": question})
                assert code == 200 and body["status"] == "answered", body
                top = body["passages"][0]
                c = top["citation"]
                assert (c["article_id"], c["version"]) == (article, 1)
                assert texts[article][c["start"]:c["end"]] == top["text"]
                assert "45 days" not in top["text"]
        finally:
            stop(server)
