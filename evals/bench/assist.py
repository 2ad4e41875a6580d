"""Benchmark the answer path on the demo KB scaled to ~10,000 chunks.

    python -m evals.bench.assist [--chunks 10000] [--queries 300] [--skip-server]

Prints, in one run:
- ingest: pure embedding time of every chunk and sentence vector vs a full index build
  (chunk + embed + Chroma writes), and their ratio (target <= 1.25);
- the floor: one query embedding + one Chroma query, p50/p95 (the answer path itself
  searches in memory up to index.memory_search_max_chunks; the first lines say which);
- the answer path (what /v1/assist runs server-side, audit write included) p50/p95 at
  concurrency 1, and the ratio of its p50 to the floor's (target <= 1.3; p95 <= 25 ms);
- `kb serve` on 127.0.0.1 with one worker at concurrency 8: req/s and p50/p99 (target >= 150
  req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from sqlmodel import Session, select

print = functools.partial(print, flush=True)
ROOT = Path(__file__).resolve().parents[2]
_WORDS = (
    "account broadband router engineer refund invoice payment contract outage fibre "
    "television device password delivery parcel complaint discount upgrade speed "
    "installation appointment voucher credit direct debit bill tariff region signal "
    "wifi cable socket modem exchange customer agent queue transfer notice period "
    "loyalty bundle channel subscription sport cinema kids licence priority fault"
)
WORDS = _WORDS.split()


def generate(root: Path, n_articles: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    for i in range(n_articles):
        topic = rng.sample(WORDS, 3)
        title = f"{topic[0].title()} {topic[1]} guide {i}"
        audience = "[internal, vendors]" if rng.random() < 0.6 else "[internal]"
        sections = []
        for j in range(5):
            words = " ".join(rng.choice(WORDS) for _ in range(55))
            sections.append(f"## {rng.choice(WORDS).title()} {topic[2]} step {j}\n"
                            f"When the customer asks about {topic[0]} {topic[1]}, {words}. "
                            f"Allow {rng.randint(2, 60)} days.\n")
        (root / f"gen-{i:05d}.md").write_text(
            f"---\nid: gen-{i:05d}\ntitle: {title}\nowner: team-{i % 7}\nreview_every: 1y\n"
            f"audience: {audience}\n---\n# {title}\nOverview of {topic[0]} and {topic[1]}.\n\n"
            + "\n".join(sections), encoding="utf-8")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, bodies: list[dict[str, str]], concurrency: int,
               seconds: float, token: str) -> tuple[int, list[float], float]:
    import httpx

    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    stop = time.perf_counter() + seconds
    count = 0

    async def worker(k: int) -> None:
        nonlocal count
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            i = k
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.post("/v1/assist", json=bodies[i % len(bodies)],
                                      headers=headers)
                latencies.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                count += 1
                i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return count, latencies, time.perf_counter() - t0


def wrk_load(url: str, bodies: list[dict[str, str]], concurrency: int,
             seconds: float, token: str) -> tuple[float, float, float] | None:
    """(req/s, p50 ms, p99 ms) measured by wrk (a C load generator), if installed."""
    import json
    import re

    if shutil.which("wrk") is None:
        return None
    lua = Path(tempfile.mkdtemp()) / "assist.lua"
    items = ", ".join("[==[" + json.dumps(b) + "]==]" for b in bodies)
    lua.write_text(
        "local bodies = {" + items + "}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n  return wrk.format('POST', '/v1/assist', "
        "{['Content-Type']='application/json', ['Authorization']='Bearer " + token + "'}, "
        "bodies[(i % #bodies) + 1])\nend\n")
    res = subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{int(seconds)}s",
                          "--latency", "-s", str(lua), url], capture_output=True, text=True,
                         check=True)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", res.stdout, re.M)
        assert m, res.stdout
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    rps = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
    assert rps and "Non-2xx" not in res.stdout, res.stdout
    return float(rps.group(1)), ms("50"), ms("99")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-pure", action="store_true",
                    help="skip the pure-embedding baseline (faster reruns)")
    ap.add_argument("--workdir", type=Path,
                    help="build the scaled KB in this folder and keep it (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: reuse the KB and index built there by an earlier run")
    args = ap.parse_args()
    if args.reuse and not args.workdir:
        ap.error("--reuse needs --workdir")

    from assist import indexer
    from assist.chunks import chunk_version
    from assist.runtime import make_assistant
    from kb import db, governance
    from kb.governance import served_numbers
    from kb.identity import add_user, create_token
    from kb.models import ArticleVersion
    from kb.settings import Settings
    from kb.sync import sync_folder

    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="canon-bench-"))
    content = tmp / "content"
    reuse = args.reuse and (tmp / "token.txt").is_file()
    if not reuse:
        shutil.rmtree(tmp / ".canon", ignore_errors=True)
        shutil.rmtree(content, ignore_errors=True)
        shutil.copytree(ROOT / "content", content)
        generated = content / "generated"
        generated.mkdir()
        generate(generated, max(0, (args.chunks - 300) // 6))
    settings = Settings(data_dir=tmp / ".canon", content_dir=content)
    engine = db.open_engine(settings)
    with Session(engine, expire_on_commit=False) as s:
        if reuse:
            token = (tmp / "token.txt").read_text().strip()
        else:
            sync_folder(s, root=content, author="bench-writer")
            governance.approve_all(s, approver="bench-approver")
            # The load runs as an evaluator (answers scoped to the internal audience).
            add_user(s, name="bench-evaluator", role="evaluator", by="bench")
            _, token = create_token(s, user="bench-evaluator", expires_in=None, by="bench")
        served = served_numbers(s)
        chunks = []
        for v in s.exec(select(ArticleVersion)).all():
            if served.get(v.article_id) == v.number:
                chunks.extend(chunk_version(article_id=v.article_id, version=v.number,
                                            content_sha256=v.content_sha256, text=v.text))
    print(f"knowledge base: {len(served)} served articles, {len(chunks)} chunks, "
          f"{sum(len(c.sentence_texts()) for c in chunks)} sentence vectors")

    assistant = make_assistant(settings, engine)
    emb = assistant.index.embedder
    emb.embed(["warm up"])
    t0 = time.perf_counter()
    sentences = [t for c in chunks for t in c.sentence_texts()]
    if not args.skip_pure and not reuse:
        # Everything the index embeds: each passage, and each sentence of a passage of two
        # or more (assist.sentences).
        emb.embed([c.embedding_text() for c in chunks] + sentences, batch_size=64)
    pure = time.perf_counter() - t0
    with Session(engine) as s:
        t0 = time.perf_counter()
        if not reuse:
            indexer.rebuild(s, assistant.index)
        ingest = time.perf_counter() - t0
    if reuse:
        print(f"ingest: reusing the index in {tmp}")
    else:
        (tmp / "token.txt").write_text(token)
        if args.skip_pure:
            print(f"ingest: full index build {ingest:.1f}s (pure embedding not measured)")
        else:
            print(f"ingest: pure embedding {pure:.1f}s ({len(chunks) / pure:.0f} chunks/s, "
                  f"sentences included), "
                  f"full index build {ingest:.1f}s, ratio {ingest / pure:.2f} "
                  "(target <= 1.25)")

    suite = yaml.safe_load((ROOT / "evals/suites/demo.yaml").read_text())
    questions = [c["question"] for c in suite][: args.queries]
    index = assistant.index
    cat = index.catalog()
    print("dense search on the answer path: " + (
        f"in memory, exact ({cat.vectors.shape[1]} vectors, {cat.vectors.nbytes / 1e6:.1f} MB; "
        "index.memory_search_max_chunks)" if cat.vectors is not None
        else "Chroma HNSW (over index.memory_search_max_chunks)"))
    col = index.store.collection("internal", "en", create=False)
    assert col is not None
    from assist.answer import Question

    def floor_once(q: str) -> float:
        t = time.perf_counter()
        vec = emb.embed_queries([q])[0]  # as the answer path embeds (query_precision)
        col.query(query_embeddings=[vec], n_results=settings.retrieval.candidates,
                  include=["distances"])
        return (time.perf_counter() - t) * 1000

    def path_once(q: str) -> float:
        t = time.perf_counter()
        assistant.ask(Question(text=q, audience="internal", caller="bench"))
        return (time.perf_counter() - t) * 1000

    for q in questions[:20]:  # warm up both
        floor_once(q)
        path_once(q)
    # Interleaved (in alternating order, so neither gains from the other's warm caches),
    # so drift in the machine's speed touches floor and path alike.
    floor, path = [], []
    for rnd in range(2):
        for i, q in enumerate(questions):
            if (i + rnd) % 2:
                floor.append(floor_once(q))
                path.append(path_once(q))
            else:
                path.append(path_once(q))
                floor.append(floor_once(q))
    f50, p50, p95 = pct(floor, 50), pct(path, 50), pct(path, 95)
    print(f"floor (embed + 1 Chroma query): p50 {f50:.2f} ms, p95 {pct(floor, 95):.2f} ms")
    print(f"answer path, concurrency 1:     p50 {p50:.2f} ms, p95 {p95:.2f} ms; "
          f"p50/floor {p50 / f50:.2f} (target <= 1.3), p95 target <= 25 ms")

    if not args.skip_server:
        port = free_port()
        env = {**os.environ, "KB_DATA_DIR": str(settings.data_dir),
               "KB_CONTENT_DIR": str(content), "KB_ASSIST_RATE_PER_MINUTE": "0"}
        # The server logs every request: to a file, never to an unread pipe (a full pipe
        # would block the server mid-request).
        server_log = (tmp / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
            stdout=subprocess.DEVNULL, stderr=server_log)
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            bodies = [{"question": q} for q in questions]
            asyncio.run(load(url, bodies, 8, 3.0, token))  # warm up
            measured = wrk_load(url, bodies, 8, args.seconds, token)
            if measured is not None:
                rps, p50c, p99c = measured
                print(f"kb serve, 1 worker, concurrency 8 (wrk): {rps:.0f} req/s, p50 "
                      f"{p50c:.1f} ms, p99 {p99c:.1f} ms (target >= 150 req/s)")
            n, lat, wall = asyncio.run(load(url, bodies, 8, args.seconds, token))
            print(f"kb serve, 1 worker, concurrency 8 (httpx client in Python): "
                  f"{n / wall:.0f} req/s, p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms")
        finally:
            server.terminate()
            server.wait(timeout=30)
            server_log.close()
    engine.dispose()
    if args.workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
