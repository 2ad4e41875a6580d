"""deploy/load.py: loopback only, bounded in count and time, errors and percentiles right."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("canon_load", ROOT / "deploy" / "load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = 0

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        type(self).seen += 1
        status = 503 if type(self).seen % 10 == 0 else 200
        body = b'{"status":"answered"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_refuses_anything_but_loopback(load: ModuleType) -> None:
    for url in ("http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:8000"):
        with pytest.raises(SystemExit, match="only sends to"):
            load.check_loopback(url)
    assert load.check_loopback("http://127.0.0.1:8123") == ("127.0.0.1", 8123)


def test_bounded_by_count_with_errors_and_percentiles(load: ModuleType, server: str) -> None:
    _Handler.seen = 0
    result = load.run_load(server, "t", concurrency=4, seconds=30, max_requests=100)
    assert result["requests"] == 100 and _Handler.seen == 100
    assert result["errors"] == 10 and result["errors_by_status"] == {"503": 10}
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert load.pct([1.0, 2.0, 3.0, 4.0, 100.0], 50) == 3.0


def test_bounded_by_time(load: ModuleType, server: str) -> None:
    result = load.run_load(server, "t", concurrency=2, seconds=0.5, max_requests=10**9)
    assert result["seconds"] < 3 and result["requests"] > 0
    procs = load.processes(__import__("os").getpid())
    assert procs and procs[0]["rss_mb"] > 0


@pytest.mark.slow
def test_both_stacks_in_one_run_reduced(tmp_path: Path) -> None:
    """deploy/load_stacks.py, the reduced form CI runs: each stack built from nothing,
    loaded with 0 errors, and its PostgreSQL database dropped afterwards."""
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    from tests.servers import PG_URL, redis_available

    if not PG_URL or not redis_available():
        pytest.skip("needs KB_TEST_DATABASE_URL and redis-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env["KB_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/never"  # must be ignored
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "load_stacks.py"), "--chunks", "120",
         "--seconds", "2", "--concurrency", "2", "--workers", "1,2", "--pg-admin-url", PG_URL],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")
            and "Stack" not in line]
    assert [r.split("|")[1:3] for r in rows] == [
        [" SQLite + embedded index ", " 1 "],
        [" PostgreSQL + Chroma server + Redis ", " 1 "],
        [" PostgreSQL + Chroma server + Redis ", " 2 "]]
    assert all(r.split("|")[7].strip() == "0" for r in rows)  # errors
    assert "scaled: 2 workers give" in done.stdout
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        left = conn.execute(sa.text(
            "SELECT datname FROM pg_database WHERE datname LIKE 'canon_load_%'")).all()
    engine.dispose()
    assert left == []
