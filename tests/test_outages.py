"""Issue 12: the production shape end to end, and its dependencies going away while it serves.

`kb serve --workers 2` runs against PostgreSQL (a private database, reached through a TCP
proxy the test can cut), a real Chroma server (`chroma run`, stopped and restarted on the
same port and folder) and a real Redis (a private `redis-server`, stopped and restarted).
The shared PostgreSQL service and the machine's Redis on 6379 are never touched.

For each dependency in turn: while it is away, ``/readyz`` answers 503 and names it in
``missing``, ``/v1/assist`` answers 503 ``unavailable`` with a reason naming it (never a 500,
never a passage); when it is back, both workers serve again by themselves, and what they
serve is the approved text, byte for byte, never the pending edit.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .conftest import article_text
from .servers import (
    PG_URL,
    Proxy,
    free_port,
    http,
    pg_database,
    redis_available,
    run_kb,
    setup_world,
    start_chroma,
    start_redis,
    start_server,
    stop,
    wait_http,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (KB_TEST_DATABASE_URL)"),
    pytest.mark.skipif(not redis_available(), reason="needs redis-server"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

QUESTION = "how many days does a customer have to ask for a refund on an annual plan?"
APPROVED = """\
# Refunds for annual plans
## Eligibility
Customers on an annual plan can ask for a full refund within 30 days of the purchase date.
"""
PENDING = """\
# Refunds for annual plans
## Eligibility
Customers on an annual plan can ask for a full refund within 45 days of the purchase date.
"""


def _until(what: str, probe: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def _ask(base: str, token: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = http("POST", f"{base}/v1/assist", token=token,
                           body={"question": QUESTION}, timeout=60)
    assert status != 500, body
    return status, body


def _check_served(body: dict[str, Any], approved_sha: str, approved_text: str) -> None:
    """Only approved text: the passage is a span of the approved version, byte for byte."""
    assert body["status"] == "answered", body
    for p in body["passages"]:
        c = p["citation"]
        assert (c["article_id"], c["version"]) == ("refund-window", 1), c
        assert c["content_sha256"] == approved_sha
        assert approved_text[c["start"]:c["end"]] == p["text"]
        assert "45 days" not in p["text"]


def test_dependencies_go_away_and_come_back(tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    chroma_bin = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma_bin
    cport, rport, port = free_port(), free_port(), free_port()
    chroma = start_chroma(chroma_bin, tmp_path / "chroma", cport)
    redis = start_redis(rport)
    server: subprocess.Popen[bytes] | None = None
    try:
        with pg_database() as pg_url, Proxy(sa.engine.make_url(pg_url).port or 5432) as proxy:
            url = sa.engine.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
            env = {"KB_DATA_DIR": str(tmp_path / ".canon"), "KB_CONTENT_DIR": str(content),
                   "KB_DATABASE_URL": url.render_as_string(hide_password=False),
                   "KB_CHROMA_URL": f"http://127.0.0.1:{cport}",
                   "KB_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
                   "KB_INDEX__FOLLOW_SECONDS": "0.3"}
            tokens = setup_world(env, content, {"refund-window": article_text(
                "refund-window", owner="team-a", audience=["internal", "vendors"],
                body=APPROVED)})
            # A pending edit that must never be served, through every outage.
            (content / "refund-window.md").write_text(article_text(
                "refund-window", owner="team-a", audience=["internal", "vendors"],
                body=PENDING), encoding="utf-8")
            run_kb(env, "sync", "--as", "writer")
            engine = sa.create_engine(pg_url)
            with engine.connect() as conn:
                approved_text, approved_sha = conn.execute(sa.text(
                    "SELECT text, content_sha256 FROM article_version WHERE "
                    "article_id = 'refund-window' AND number = 1")).one()
            engine.dispose()
            assert hashlib.sha256(approved_text.encode()).hexdigest() == approved_sha

            server = start_server(env, port=port, workers=2, log_path=tmp_path / "serve.log")
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", server)
            token = tokens["ev"]

            def ready() -> bool:
                return all(http("GET", f"{base}/readyz")[0] == 200 for _ in range(4))

            def serving() -> bool:
                results = [_ask(base, token) for _ in range(4)]  # both workers, most likely
                if all(s == 200 for s, _ in results):
                    for _, body in results:
                        _check_served(body, approved_sha, approved_text)
                    return True
                return False

            _until("ready at start", ready, 120)
            assert serving()

            def away(name: str, reason: str) -> None:
                def not_ready() -> bool:
                    status, body, _ = http("GET", f"{base}/readyz")
                    return status == 503 and name in body["missing"]

                _until(f"/readyz names {name}", not_ready)
                status, body, _ = http("GET", f"{base}/readyz")
                assert body["status"] == "not ready" and body[name].startswith("error:"), body
                for _ in range(6):
                    status, body = _ask(base, token)
                    assert status == 503, body
                    assert body["error"] == "unavailable" and reason in body["detail"], body
                    assert "passages" not in body

            def back() -> None:
                _until("ready again", ready)
                _until("serving again", serving)

            stop(redis)  # our own redis-server, not the machine's
            away("rate_limits", "Redis")
            redis = start_redis(rport)
            back()

            stop(chroma)
            # The workers' catalogs hold the vectors (index.memory_search_max_chunks): they
            # keep answering, the approved text only, while /readyz says the index is away.
            _until("/readyz names index", lambda: (
                (r := http("GET", f"{base}/readyz"))[0] == 503 and "index" in r[1]["missing"]))
            for _ in range(6):
                status, body = _ask(base, token)
                assert status == 200, body
                _check_served(body, approved_sha, approved_text)
            chroma = start_chroma(chroma_bin, tmp_path / "chroma", cport)
            back()

            proxy.cut()
            away("database", "database")
            proxy.restore()
            back()

            assert server.poll() is None  # no worker died on the way
            log = (tmp_path / "serve.log").read_text(encoding="utf-8")
            assert "Traceback" not in log, log[-3000:]
    finally:
        if server is not None:
            stop(server)
        stop(chroma)
        stop(redis)
        with warnings.catch_warnings():  # the in-process CLI's Chroma HTTP client leaves
            warnings.simplefilter("ignore")  # keep-alive sockets to the garbage collector
            gc.collect()
