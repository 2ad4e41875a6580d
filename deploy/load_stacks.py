"""Both deployment stacks under the same load, in one run: the figures of docs/deploy.md.

    python deploy/load_stacks.py                      # 10k chunks, 60 s per run
    python deploy/load_stacks.py --seconds 300        # the 5-minute runs
    python deploy/load_stacks.py --chunks 600 --seconds 5 --workers 1   # a quick check

For each stack it builds its own world, runs ``deploy/load.py --serve`` against it, and
removes it afterwards:

- ``embedded``: SQLite and the embedded Chroma index in a temporary folder (one server
  process: an embedded index has one writer, so only ``--workers 1`` runs here);
- ``scaled``: a new PostgreSQL database on ``--pg-admin-url`` (dropped afterwards), a
  ``chroma run`` server and a private ``redis-server`` on free loopback ports (or
  ``--redis-url``), with ``kb serve --workers N`` for each N of ``--workers``.

Every run is bounded in time (``--seconds``, at most 600) and sends only to 127.0.0.1. The
summary is one table: req/s, p50/p95/p99, errors, RSS per worker, and, for the scaled stack,
the throughput of N workers over one worker measured in this run. ``KB_*`` settings in the
environment apply to every server of the run, except the five that say where data lives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOAD = Path(__file__).resolve().parent / "load.py"
# Where a run's data lives: always the run's own. Other KB_* settings (for example
# KB_INDEX__QUERY_PRECISION) pass through to every server of the run.
WORLD = ("KB_DATA_DIR", "KB_CONTENT_DIR", "KB_DATABASE_URL", "KB_CHROMA_URL", "KB_REDIS_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if not chroma:
        raise SystemExit("the chroma CLI (it comes with chromadb) is not installed")
    port = free_port()
    proc = subprocess.Popen([chroma, "run", "--path", str(path), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "chroma run")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed: pass --redis-url redis://HOST:PORT/DB")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    name = f"canon_load_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"cannot create a database on {admin_url}: {exc.orig}; pass "
                         "--pg-admin-url with a role that may CREATE DATABASE") from None
    url = sa.engine.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(env: dict[str, str], *args: str) -> str:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT) + os.pathsep
            + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(LOAD), *args], env=full, capture_output=True,
                          text=True)
    if done.returncode not in (0, 1):  # 1: the run had errors, still a result
        raise SystemExit(f"load.py {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return done.stdout


def measure(env: dict[str, str], token: str, workers: int, args: argparse.Namespace,
            stack: str) -> dict[str, Any]:
    print(f"[{stack}] {workers} worker(s): {args.seconds:.0f} s at concurrency "
          f"{args.concurrency} ...", flush=True)
    out = run(env, "--serve", "--workers", str(workers), "--token", token,
              "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
              "--json")
    lines = out.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    result: dict[str, Any] = json.loads(lines[-1])
    return {"stack": stack, **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", default="embedded,scaled",
                    help="Comma-separated: embedded, scaled (default both).")
    ap.add_argument("--workers", default="1,2",
                    help="Worker counts for the scaled stack (default 1,2).")
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--pg-admin-url", default=os.environ.get(
        "KB_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL role allowed to create the run's database.")
    ap.add_argument("--redis-url", help="Use this Redis instead of a private redis-server.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    if unknown := set(stacks) - {"embedded", "scaled"}:
        ap.error(f"unknown stack(s) {sorted(unknown)}: use embedded and/or scaled")
    workers = sorted({int(w) for w in args.workers.split(",")})
    if not 0 < args.seconds <= 600 or min(workers) < 1:
        ap.error("--seconds must be in (0, 600] and --workers positive")
    for key in WORLD:  # a stray KB_DATABASE_URL must not point a run at a real deployment
        os.environ.pop(key, None)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="canon-stacks-") as tmp:
        if "embedded" in stacks:
            env = {"KB_DATA_DIR": f"{tmp}/embedded", "KB_CONTENT_DIR": f"{tmp}/content-e"}
            print(f"[embedded] building ~{args.chunks} chunks ...", flush=True)
            token = run(env, "--setup", "--chunks", str(args.chunks)).strip().splitlines()[-1]
            rows.append(measure(env, token, 1, args, "embedded"))
        if "scaled" in stacks:
            with pg_database(args.pg_admin_url) as db, chroma_server(Path(tmp) / "chroma") as \
                    chroma, redis_server(args.redis_url) as redis:
                env = {"KB_DATA_DIR": f"{tmp}/scaled", "KB_CONTENT_DIR": f"{tmp}/content-s",
                       "KB_DATABASE_URL": db, "KB_CHROMA_URL": chroma, "KB_REDIS_URL": redis}
                print(f"[scaled] building ~{args.chunks} chunks ...", flush=True)
                token = run(env, "--setup", "--chunks", str(args.chunks)).strip().splitlines()[-1]
                for n in workers:
                    rows.append(measure(env, token, n, args, "scaled"))
    one = next((r["req_per_s"] for r in rows if r["stack"] == "scaled" and r["workers"] == 1),
               None)
    print("\n| Stack | Workers | req/s | p50 | p95 | p99 | Errors | RSS per worker (peak) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ws = [p for p in r["processes"] if p["role"] != "master"]
        rss = " / ".join(f"{p['rss_mb']:.0f}" for p in ws) + " MB (" + " / ".join(
            f"{p['peak_rss_mb']:.0f}" for p in ws) + ")"
        name = ("SQLite + embedded index" if r["stack"] == "embedded"
                else "PostgreSQL + Chroma server + Redis")
        print(f"| {name} | {r['workers']} | {r['req_per_s']} | {r['p50_ms']:.0f} ms | "
              f"{r['p95_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['errors']} | {rss} |")
    for r in rows:
        if r["stack"] == "scaled" and one and r["workers"] > 1:
            print(f"scaled: {r['workers']} workers give {r['req_per_s'] / one:.2f}x the "
                  "throughput of one, in this run")
    if args.json:
        print(json.dumps(rows))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
