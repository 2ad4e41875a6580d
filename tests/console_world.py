"""A demo knowledge base behind a real `kb serve`, for the web console's browser tests.

Built once per test module: the demo content synced and approved as of a pinned clock
(``KB_NOW``: the tests tell the same story on any date), the demo users with API tokens, a
pending edit of `refunds-annual-plans` that contradicts its suite expectations, and a seeded
query log (with flags) for the dashboard. The server indexes the approved text as it starts.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from kb import audit, db
from kb.demo import bootstrap
from kb.identity import add_user, create_token
from kb.models import EvalRun, Flag
from kb.settings import Settings
from kb.sync import sync_folder

from .kbs import DEMO_CONTENT
from .servers import free_port, stop

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
USERS = {
    "acme-agent": {"role": "agent", "audiences": ["vendor:acme"]},
    "globex-agent": {"role": "agent", "audiences": ["vendor:globex"]},
    "billing-owner": {"role": "owner", "teams": ["billing-knowledge"]},
    "risk-approver": {"role": "approver", "teams": ["billing-knowledge", "retention-team"]},
    "cx-lead": {"role": "evaluator"},
}
CONFLICTING_EDIT = ("within 30 days of the start date", "within 45 days of the start date")


@dataclass
class World:
    base: str
    settings: Settings
    engine: Engine
    tokens: dict[str, str]
    content: Path
    server: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)


def seed_query_log(session: Session, *, now: datetime, rows: int = 600,
                   seed: int = 11) -> None:
    """Assist calls over the last 60 days from two vendors and staff (with some flags)."""
    rng = random.Random(seed)
    audiences = ["vendor:acme", "vendor:globex", "internal"]
    articles = ["refunds-annual-plans", "billing-bill-explained", "tv-device-limits",
                "account-password-reset", "outages-area-check"]
    gaps = ["can i pay with crypto", "is there a student discount", "do you sell phones"]
    entries: list[dict[str, object]] = []
    for i in range(rows):
        at = now - timedelta(days=rng.uniform(0, 60))
        status = rng.choices(["answered", "escalate", "no_answer"], [0.75, 0.1, 0.15])[0]
        art = rng.choice(articles)
        served = ([{"article_id": art, "version": 1, "start": 0, "end": 10,
                    "passage_sha256": "0" * 64}] if status == "answered" else [])
        entries.append({
            "id": f"seed-{i:05d}", "at": at, "caller": "seed",
            "audience": rng.choice(audiences), "locale": "en",
            "question": rng.choice(gaps) if status == "no_answer" else f"q {art}",
            "status": status, "reason": None if status == "answered" else "seed",
            "escalate_to": "support-tier2", "served": served,
            "latency_ms": rng.uniform(20, 90)})
    session.commit()
    with session.get_bind().connect() as conn:  # type: ignore[union-attr]
        audit.record_queries(conn, entries)  # the log and its roll-ups, as the server does
    for i, q in enumerate(entries[:40]):
        if q["status"] != "answered":
            continue
        created = q["at"] + timedelta(minutes=5)  # type: ignore[operator]
        session.add(Flag(query_id=str(q["id"]), article_id=None, owner="support-tier2",
                         reason="unclear", created_by="seed", created_at=created,
                         status="resolved" if i % 2 else "open",
                         resolved_by="seed" if i % 2 else None,
                         resolved_at=created + timedelta(hours=6 + i) if i % 2 else None,
                         resolution="fixed" if i % 2 else None))
    for n, (hit1, mrr) in enumerate([(0.78, 0.83), (0.81, 0.85), (0.82, 0.87)]):
        session.add(EvalRun(id=f"run{n}", at=now - timedelta(days=20 - 8 * n), suite="demo",
                            suite_sha256="0" * 64, settings_hash="0" * 64, label=f"r{n}",
                            metrics={"cases": 90, "hit@1": hit1, "hit@5": 0.95,
                                     "mrr@10": mrr, "section_hit@1": hit1 - 0.2,
                                     "abstention_f1": 0.9 + n / 100}, cases=[]))
    session.commit()


def wait_ready(base: str, proc: subprocess.Popen[bytes], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kb serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{base}/readyz not ready within {seconds} s")


def start_world(root: Path, log: Path) -> World:
    content = root / "content"
    shutil.copytree(DEMO_CONTENT, content)
    settings = Settings(data_dir=root / ".canon", database_url=f"sqlite:///{root}/canon.db",
                        content_dir=content)
    engine = db.open_engine(settings)
    tokens: dict[str, str] = {}
    with Session(engine, expire_on_commit=False) as s:
        bootstrap(s, root=content, now=NOW, author="writer@brightwave.example",
                  approver="lead@brightwave.example")
        for name, spec in USERS.items():
            add_user(s, name=name, role=spec["role"], teams=spec.get("teams", ()),
                     audiences=spec.get("audiences", ()), by="test")
            tokens[name] = create_token(s, user=name, expires_in=None, by="test", now=NOW)[1]
        article = content / "refunds" / "refunds-annual-plans.md"
        article.write_text(article.read_text(encoding="utf-8").replace(*CONFLICTING_EDIT),
                           encoding="utf-8")
        sync_folder(s, root=content, author="billing-owner", now=NOW + timedelta(hours=1))
        seed_query_log(s, now=NOW)
    port = free_port()
    env = {"KB_DATA_DIR": str(settings.data_dir), "KB_CONTENT_DIR": str(content),
           "KB_DATABASE_URL": settings.resolved_database_url, "KB_NOW": NOW.isoformat(),
           "KB_INDEX__FOLLOW_SECONDS": "0.5"}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port",
             str(port)], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
    except AssertionError:
        stop(server)
        raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
    return World(base=base, settings=settings, engine=engine, tokens=tokens, content=content,
                 server=server, env=env)


