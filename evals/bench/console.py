"""Benchmark the web console's server-side render times on the demo KB.

    python -m evals.bench.console [--rows 1000000] [--repeat 20]

Prints p50/p95 (ms, in-process through the ASGI app, no network) of:
- the answer panel: POST /ui/ask against POST /v1/assist with the same question (the
  panel's overhead is the difference; target <= 10 ms);
- the review queue, an article page, a diff and the agent's article view (target < 100 ms);
- the health dashboard over a query log of ``--rows`` rows (target < 1 s), written the way
  the answer path writes it (the log and its daily roll-ups).
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from assist import indexer
from assist.runtime import make_assistant, make_index
from kb import audit, db
from kb.clock import fixed_clock
from kb.demo import DEMO_AS_OF, bootstrap
from kb.identity import add_user, create_token
from kb.settings import Settings

print = functools.partial(print, flush=True)
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "customer cancelled their annual plan 20 days in, can they get a refund?"


def _times(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm: caches, compiled statements
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def _seed(engine: Any, rows: int, now: Any) -> float:
    rng = random.Random(7)
    audiences = ["vendor:acme", "vendor:globex", "vendor:initech", "internal"]
    articles = [f"article-{i}" for i in range(80)]
    questions = [f"unanswered question number {i}" for i in range(2000)]
    start = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for i in range(rows):
        status = rng.choices(["answered", "escalate", "no_answer"], [0.75, 0.1, 0.15])[0]
        served = ([{"article_id": rng.choice(articles), "version": 1, "start": 0, "end": 1,
                    "passage_sha256": "0" * 64}] if status == "answered" else [])
        batch.append({"id": f"b{i:08d}", "at": now - timedelta(seconds=rng.uniform(0, 90 * 86400)),
                      "caller": "bench", "audience": rng.choice(audiences), "locale": "en",
                      "question": rng.choice(questions) if status == "no_answer" else "q",
                      "status": status, "reason": None, "escalate_to": "support-tier2",
                      "served": served, "latency_ms": 30.0})
        if len(batch) == 5000:
            with engine.connect() as conn:
                audit.record_queries(conn, batch)
            batch = []
    if batch:
        with engine.connect() as conn:
            audit.record_queries(conn, batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="canon-bench-console-"))
    try:
        content = tmp / "content"
        shutil.copytree(ROOT / "content", content)
        settings = Settings(data_dir=tmp / ".canon", database_url=f"sqlite:///{tmp}/canon.db",
                            content_dir=content, assist_rate_per_minute=0)
        clock = fixed_clock(datetime.combine(DEMO_AS_OF, dtime(12), tzinfo=UTC))
        engine = db.open_engine(settings)
        with Session(engine, expire_on_commit=False) as s:
            bootstrap(s, root=content, now=clock(), author="writer", approver="lead")
            tokens = {}
            for name, role, kw in (("agent", "agent", {"audiences": ["vendor:acme"]}),
                                   ("owner", "owner", {"teams": ["billing-knowledge"]}),
                                   ("approver", "approver", {"teams": ["billing-knowledge"]})):
                add_user(s, name=name, role=role, by="bench", **kw)
                tokens[name] = create_token(s, user=name, expires_in=None, by="bench",
                                            now=clock())[1]
        assistant = make_assistant(settings, engine, make_index(settings), clock=clock)
        with Session(engine) as s:
            indexer.refresh(s, assistant.index, max_chars=settings.index.chunk_max_chars)
        app = create_app(settings, assistant=assistant, clock=clock)

        shared = TestClient(app)
        shared.__enter__()  # one app, one lifespan: the embedded index has one server

        def client(user: str) -> tuple[TestClient, str]:
            c = shared
            c.cookies.clear()
            page = c.get("/ui/sign-in").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            c.post("/ui/sign-in", data={"token": tokens[user], "csrf_token": csrf})
            token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/ui").text)
            return c, token.group(1)  # type: ignore[union-attr]

        agent, csrf = client("agent")
        bearer = {"Authorization": f"Bearer {tokens['agent']}"}
        api = _times(lambda: agent.post("/v1/assist", json={"question": QUESTION},
                                        headers=bearer), args.repeat)
        panel = _times(lambda: agent.post("/ui/ask", data={"question": QUESTION,
                                                           "csrf_token": csrf}),
                       args.repeat)
        print(f"/v1/assist                       p50 {api[0]:7.1f} ms  p95 {api[1]:7.1f} ms")
        print(f"/ui/ask (answer panel)           p50 {panel[0]:7.1f} ms  p95 {panel[1]:7.1f} ms"
              f"  overhead p50 {panel[0] - api[0]:+.1f} ms (target <= 10)")
        read = _times(lambda: agent.get("/ui/read/refunds-annual-plans"), args.repeat)
        print(f"/ui/read/<id> (agent)            p50 {read[0]:7.1f} ms  p95 {read[1]:7.1f} ms")
        owner, _ = client("owner")
        for label, path in (("/ui/desk (review queue)", "/ui/desk"),
                            ("/ui/desk/articles/<id>", "/ui/desk/articles/refunds-annual-plans"),
                            ("/ui/desk/articles/<id>/diff", "/ui/desk/articles/"
                             "refunds-annual-plans/diff?from=1&to=1"),
                            ("/ui/desk/search", "/ui/desk/search?q=refund")):
            assert owner.get(path).status_code == 200, path
            p50, p95 = _times(lambda p=path: owner.get(p), args.repeat)  # type: ignore[misc]
            print(f"{label:32} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (target < 100)")
        seconds = _seed(engine, args.rows, clock())
        print(f"seeded {args.rows:,} query-log rows (with roll-ups) in {seconds:.0f} s")
        approver, _ = client("approver")
        assert approver.get("/ui/health").status_code == 200
        p50, p95 = _times(lambda: approver.get("/ui/health"), max(5, args.repeat // 4))
        print(f"/ui/health over {args.rows:,} rows  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms"
              "  (target < 1000)")
        shared.__exit__(None, None, None)
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
