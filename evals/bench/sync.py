"""Benchmark: full sync and no-change re-sync of a generated N-article folder.

    python -m evals.bench.sync --articles 10000 [--database-url URL]

Prints wall-clock seconds for each phase and the per-article cost. Target: a no-change
re-sync of 10,000 articles in at most 5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from kb import db
from kb.settings import Settings
from kb.sync import sync_folder

TOPICS = ["billing", "refunds", "cancellations", "outages", "privacy", "access", "delivery"]


def generate(root: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        days = rng.choice([14, 30, 60, 90])
        folder = root / topic / f"{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        paras = "\n\n".join(
            f"Rule {j}: customers on plan {rng.randint(1, 9)} may request this within "
            f"{days} days; agents confirm the account first." for j in range(6)
        )
        risk = rng.choice(["low", "medium", "high"])
        approved = "\n::: approved\nThe policy allows this within " f"{days} days.\n:::\n"
        (folder / f"{topic}-{i:05d}.md").write_text(
            f"---\nid: {topic}-{i:05d}\ntitle: {topic.title()} rule {i}\nowner: team-{i % 9}\n"
            f"review_every: {days}d\nrisk: {risk}\naudience: [internal, vendors]\n---\n"
            f"# {topic.title()} rule {i}\nOverview.\n\n## Eligibility\n{paras}\n"
            f"{approved}\n## Steps\n1. Verify.\n2. Apply.\n",
            encoding="utf-8",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=10_000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "content"
        t0 = time.perf_counter()
        generate(root, args.articles)
        print(f"generated {args.articles} articles in {time.perf_counter() - t0:.2f}s")
        settings = Settings(data_dir=Path(tmp) / ".canon", database_url=args.database_url)
        engine = db.open_engine(settings)
        from sqlmodel import Session

        with Session(engine, expire_on_commit=False) as s:
            t0 = time.perf_counter()
            rep = sync_folder(s, root=root, author="bench")
            full = time.perf_counter() - t0
        print(f"full sync:        {full:7.2f}s  ({full / args.articles * 1000:.2f} ms/article, "
              f"{len(rep.created)} created, {len(rep.errors)} errors)")
        for attempt in (1, 2):
            with Session(engine, expire_on_commit=False) as s:
                t0 = time.perf_counter()
                rep = sync_folder(s, root=root, author="bench")
                again = time.perf_counter() - t0
            print(f"no-change resync #{attempt}: {again:6.2f}s  ({rep.unchanged} unchanged, "
                  f"{len(rep.created) + len(rep.updated)} new versions)  target <= 5 s")
        edited = sorted(root.rglob("*.md"))[:100]
        for p in edited:
            p.write_text(p.read_text() + "\nEdited.\n")
        with Session(engine, expire_on_commit=False) as s:
            t0 = time.perf_counter()
            rep = sync_folder(s, root=root, author="bench")
            inc = time.perf_counter() - t0
        print(f"resync, 100 edited: {inc:6.2f}s  ({len(rep.updated)} new pending versions)")
        engine.dispose()


if __name__ == "__main__":
    main()
