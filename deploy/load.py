"""Load test of a running Canon API: bounded in time and count, sent only to 127.0.0.1.

    # against a server you started (PID: `kb serve`'s, for the RSS of each worker)
    python deploy/load.py --url http://127.0.0.1:8000 --token "$TOKEN" --pid PID

    # or let it start `kb serve --workers N` with the current KB_* environment
    python deploy/load.py --serve --workers 2 --token "$TOKEN"

    # build a generated KB first (~N chunks) in the current KB_* environment; prints a token
    python deploy/load.py --setup --chunks 10000

Sends ``POST /v1/assist`` at a fixed concurrency (default 16) until ``--seconds`` (default
60, at most 600) or ``--max-requests`` (default 50,000) is reached, whichever comes first,
over keep-alive connections. Prints requests per second, p50/p95/p99 latency, the errors (by
status) and the resident memory (current and peak) of the server's master and each worker.
Refuses any URL whose host is not the loopback interface. A server under test should run
with ``KB_ASSIST_RATE_PER_MINUTE=0`` (``--serve`` sets it unless the environment does), or
the per-token limit answers 429s. ``--json`` prints the figures as
one JSON object as well.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_SECONDS = 600.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ROOT = Path(__file__).resolve().parent.parent
_TOPICS = """
account broadband router engineer refund invoice payment contract outage fibre
television device password delivery parcel complaint discount upgrade speed installation
appointment voucher credit bill tariff signal wifi cable modem customer agent transfer
notice period loyalty bundle subscription licence
"""
_WORDS = _TOPICS.split()
DEMO = ["Can a customer get a refund 20 days into an annual plan?",
        "How many devices can stream at the same time?",
        "What does a solid white light on the router mean?",
        "How do I reset a customer's password?",
        "When is a late payment fee charged?"]


def questions(n: int = 200, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = list(DEMO)
    while len(out) < n:
        a, b = rng.sample(_WORDS, 2)
        out.append(f"When the customer asks about {a} {b}, how many days are allowed?")
    return out


def check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host not in LOOPBACK:
        raise SystemExit(f"refusing {url}: the load script only sends to http://127.0.0.1")
    addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80)}
    if not addresses <= {"127.0.0.1", "::1"}:
        raise SystemExit(f"refusing {url}: {host} resolves to {sorted(addresses)}")
    return host, parts.port or 80


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_load(url: str, token: str, *, concurrency: int, seconds: float,
             max_requests: int) -> dict[str, Any]:
    host, port = check_loopback(url)
    bodies = [json.dumps({"question": q}).encode() for q in questions()]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + min(seconds, MAX_SECONDS)

    def take() -> bool:
        nonlocal sent
        with lock:
            if sent >= max_requests or time.monotonic() >= deadline:
                return False
            sent += 1
            return True

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        i = k
        while take():
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.perf_counter()
            try:
                conn.request("POST", "/v1/assist", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = statuses.get("200", 0)
    return {"requests": sum(statuses.values()), "ok": ok,
            "errors": sum(statuses.values()) - ok,
            "errors_by_status": {k: v for k, v in statuses.items() if k != "200"},
            "seconds": round(wall, 2), "concurrency": concurrency,
            "req_per_s": round(sum(statuses.values()) / wall, 1) if wall else 0.0,
            "p50_ms": round(pct(latencies, 50), 1), "p95_ms": round(pct(latencies, 95), 1),
            "p99_ms": round(pct(latencies, 99), 1),
            "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None}


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "PPid"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def processes(pid: int) -> list[dict[str, Any]]:
    """The server (``pid``) and its worker processes with their RSS (MB), from /proc."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _status(int(entry.name))
        if int(entry.name) != pid and st.get("PPid") != pid:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "resource_tracker" in cmd:
            continue
        role = "master" if int(entry.name) == pid else "worker"
        rows.append({"pid": int(entry.name), "role": role,
                     "rss_mb": round(st.get("VmRSS", 0) / 1024, 1),
                     "peak_rss_mb": round(st.get("VmHWM", 0) / 1024, 1)})
    rows.sort(key=lambda r: (r["role"] != "master", r["pid"]))
    if len(rows) == 1:
        rows[0]["role"] = "worker (single process)"
    return rows


def serve(workers: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The per-token rate limit would turn a load test into a test of the limit: off unless
    # the environment sets it.
    env = {"KB_ASSIST_RATE_PER_MINUTE": "0", **os.environ, "KB_LOG_LEVEL": "warning",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "serve",
                             "--host", "127.0.0.1", "--port", str(port), "--workers",
                             str(workers)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kb serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("kb serve did not get ready within 300 s")


def setup(chunks: int) -> str:
    """A generated KB of ~``chunks`` chunks plus the demo content, synced, approved and
    indexed in the current KB_* environment; returns an evaluator's API token."""
    import tempfile

    from typer.testing import CliRunner

    sys.path.insert(0, str(ROOT))
    from api.cli import app
    from evals.bench.assist import generate

    content = Path(os.environ.get("KB_CONTENT_DIR") or tempfile.mkdtemp(prefix="canon-load-"))
    content.mkdir(parents=True, exist_ok=True)
    generate(content, max(1, chunks // 6))
    runner = CliRunner()

    def kb(*args: str) -> str:
        result = runner.invoke(app, list(args), env={"KB_CONTENT_DIR": str(content)})
        if result.exit_code != 0:
            raise SystemExit(f"kb {' '.join(args)}: {result.output}")
        return result.stdout

    kb("users", "bootstrap", "load-admin")
    kb("users", "add", "load-writer", "--role", "owner", "--as", "load-admin",
       *[arg for i in range(7) for arg in ("--team", f"team-{i}")])  # the generator's owners
    kb("users", "add", "load-ev", "--role", "evaluator", "--as", "load-admin")
    kb("sync", "--as", "load-writer")
    kb("approve", "--all", "--as", "load-admin")
    return kb("tokens", "create", "--user", "load-ev", "--as", "load-admin").strip()


def report(result: dict[str, Any], procs: list[dict[str, Any]], label: str) -> None:
    print(f"{label}: {result['requests']} requests in {result['seconds']} s at concurrency "
          f"{result['concurrency']}: {result['req_per_s']} req/s, p50 {result['p50_ms']} ms, "
          f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}"
          + (f" {result['errors_by_status']}" if result["errors"] else ""))
    for p in procs:
        print(f"  {p['role']} pid {p['pid']}: RSS {p['rss_mb']} MB (peak {p['peak_rss_mb']} MB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="A running server (http://127.0.0.1:PORT).")
    ap.add_argument("--token", default=os.environ.get("KB_TOKEN"),
                    help="API token (default: KB_TOKEN).")
    ap.add_argument("--pid", type=int, help="The server's pid (for RSS per worker).")
    ap.add_argument("--serve", action="store_true", help="Start kb serve for the run.")
    ap.add_argument("--workers", type=int, default=1, help="With --serve: workers.")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-requests", type=int, default=50_000)
    ap.add_argument("--warmup", type=float, default=3.0, help="Seconds of unmeasured load.")
    ap.add_argument("--setup", action="store_true", help="Build a generated KB and exit.")
    ap.add_argument("--chunks", type=int, default=10_000, help="With --setup: KB size.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.setup:
        print(setup(args.chunks))
        return 0
    if not args.token:
        ap.error("--token (or KB_TOKEN) is required")
    if args.seconds <= 0 or args.seconds > MAX_SECONDS or args.max_requests <= 0:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}] and --max-requests positive")
    proc = None
    if args.serve:
        proc, url = serve(args.workers)
        pid: int | None = proc.pid
    else:
        if not args.url:
            ap.error("--url or --serve is required")
        url, pid = args.url, args.pid
    try:
        if args.warmup > 0:
            run_load(url, args.token, concurrency=args.concurrency, seconds=args.warmup,
                     max_requests=args.max_requests)
        result = run_load(url, args.token, concurrency=args.concurrency, seconds=args.seconds,
                          max_requests=args.max_requests)
        procs = processes(pid) if pid else []
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    label = f"{url} ({args.workers} workers)" if args.serve else url
    report(result, procs, label)
    if args.json:
        print(json.dumps({**result, "processes": procs, "workers": args.workers}))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
