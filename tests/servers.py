"""Real servers for the production-shape tests: `kb serve`, `chroma run`, `redis-server`, a
throwaway PostgreSQL database, and a TCP proxy that can cut a dependency off and bring it
back. Everything listens on 127.0.0.1 and is stopped by the test that started it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PG_URL = os.environ.get("KB_TEST_DATABASE_URL")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, *, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 30,
         ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body or {}, headers) of one request."""
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, got = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, dict(exc.headers)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"raw": raw.decode("utf-8", "replace")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}, got


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None,
              seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (e.g. /readyz 503 while a dependency is away)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child Python process: this worktree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"})
    env.update(extra)
    return env


def kb_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


@contextmanager
def chroma_server(path: Path, port: int | None = None) -> Iterator[str]:
    """A real `chroma run` on loopback; yields its URL."""
    chroma_bin = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma_bin, "the chroma CLI comes with chromadb"
    port = port or free_port()
    proc = start_chroma(chroma_bin, path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def start_chroma(chroma_bin: str, path: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([chroma_bin, "run", "--path", str(path), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc)
    return proc


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


@contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private `redis-server` (no persistence) on loopback; yields (URL, process)."""
    port = port or free_port()
    proc = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop(proc)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc
        time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"redis-server on port {port} did not start")


@contextmanager
def pg_database() -> Iterator[str]:
    """A private, empty PostgreSQL database on the test server (KB_TEST_DATABASE_URL),
    dropped afterwards: these tests never touch the shared ``test`` database's contents."""
    assert PG_URL, "KB_TEST_DATABASE_URL is not set"
    name = f"canon_prod_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = urllib.parse.urlsplit(PG_URL)
    try:
        yield urllib.parse.urlunsplit(url._replace(path=f"/{name}"))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Proxy:
    """A TCP proxy on loopback in front of ``target``: :meth:`cut` closes every connection
    and refuses new ones (the dependency is "away"), :meth:`restore` lets them through again.
    The real service is never stopped."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Proxy:
        self._listen()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._listener = s

    def cut(self) -> None:
        """Close every connection and stop listening (connections are refused)."""
        self._open.clear()
        with self._lock:
            for c in self._conns:
                with suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def restore(self) -> None:
        with self._lock:
            self._listen()
        self._open.set()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._open.wait(0.1):
                continue
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def start_server(env: dict[str, str], *, port: int, workers: int = 1,
                 log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """`kb serve` as a child process (stderr to ``log_path`` when given)."""
    err = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(kb_command("serve", "--port", str(port), "--workers",
                                           str(workers)),
                                env=python_env(env), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    finally:
        if log_path:
            assert not isinstance(err, int)
            err.close()


def run_kb(env: dict[str, str], *args: str, code: int | None = 0,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real `kb` CLI in a child process."""
    done = subprocess.run(kb_command(*args), env=python_env(env), capture_output=True,
                          text=True, timeout=timeout)
    if code is not None:
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def setup_world(env: dict[str, str], content: Path, articles: dict[str, str]) -> dict[str, str]:
    """Users (admin, writer/owner, lead and lead2/approvers, ev/evaluator), the articles
    synced and approved (indexed by the CLI). Returns API tokens by user."""
    from typer.testing import CliRunner

    from api.cli import app as cli_app

    runner = CliRunner()

    def kb(*args: str) -> str:
        result = runner.invoke(cli_app, list(args), env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    for art_id, text in articles.items():
        (content / f"{art_id}.md").write_text(text, encoding="utf-8")
    kb("users", "bootstrap", "admin")
    kb("users", "add", "writer", "--role", "owner", "--team", "team-a", "--as", "admin")
    kb("users", "add", "lead", "--role", "approver", "--team", "team-a", "--as", "admin")
    kb("users", "add", "lead2", "--role", "approver", "--team", "team-a", "--as", "admin")
    kb("users", "add", "ev", "--role", "evaluator", "--as", "admin")
    tokens = {u: kb("tokens", "create", "--user", u, "--as", "admin").strip()
              for u in ("ev", "lead", "lead2", "admin")}
    kb("sync", "--as", "writer")
    kb("approve", "--all", "--as", "lead")
    return tokens
