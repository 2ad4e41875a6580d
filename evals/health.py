"""Knowledge-health metrics, computed from the governance database and the query log.

Definitions (also in the README):

- **states**: number of articles per governance state (draft, pending, approved,
  approved+pending, retired).
- **freshness.within_cadence**: share of served articles whose last approval or verified
  review is within their `review_every`; **overdue_by_owner**: overdue served articles per
  owner; **due_14d**: served articles falling due in the next 14 days.
- **ownership.unowned**: articles whose owner is empty or a placeholder (unknown, tbd, none,
  unassigned, nobody).
- **usage**: citations per article in the last 7 and 30 days (a citation = one passage served
  by /v1/assist); **never_cited**: served articles never cited.
- **outcomes_30d**: share of assist calls answered / escalated / no_answer in the last 30
  days; **top_gaps**: the most frequent no_answer questions (redacted, grouped by meaning when
  a grouper is given, as in the owners' queue, else by normalised
  wording).
- **flags**: open flags; median hours from flag to resolution.
- **approval_lag_hours**: median hours from a version's creation to its approval.
- **duplicates**: pairs of served chunks from different articles (translations excluded)
  whose word 5-gram Jaccard similarity is at least 0.8.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlmodel import Session, col, select

from assist.chunks import chunk_version
from assist.gaps import GapGrouper, merge_by_meaning
from kb.governance import served_numbers, statuses
from kb.models import Approval, ArticleVersion, Flag, HealthSnapshot, QueryLog, utcnow

PLACEHOLDER_OWNERS = {"", "unknown", "tbd", "none", "unassigned", "nobody", "n/a"}
_WORD = re.compile(r"\w+")


def _norm_question(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _shingles(text: str, n: int = 5) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(tuple(words[i:i + n])) for i in range(max(1, len(words) - n + 1))}


def duplicate_sections(session: Session, *, threshold: float = 0.8) -> list[dict[str, Any]]:
    """Near-identical chunks of served versions across articles (candidate pairs via shared
    shingles), high-risk plain text included: staff read it, and the index holds it."""
    served = served_numbers(session)
    chunks = []
    translation: dict[str, str] = {}
    for v in session.exec(select(ArticleVersion)).all():
        if served.get(v.article_id) != v.number:
            continue
        extra = v.meta.get("extra") or {}
        if extra.get("translation_of"):
            translation[v.article_id] = extra["translation_of"]
        for c in chunk_version(article_id=v.article_id, version=v.number,
                               content_sha256=v.content_sha256, text=v.text):
            if len(_WORD.findall(c.text)) >= 8:
                chunks.append(c)
    sh = [_shingles(c.text) for c in chunks]
    postings: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(sh):
        for h in s:
            postings[h].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for ids in postings.values():
        if len(ids) > 50:
            continue  # boilerplate phrase; not evidence of a duplicate
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                shared[(ids[x], ids[y])] += 1
    pairs = []
    for (i, j), n in shared.items():
        ca, cb = chunks[i], chunks[j]
        if ca.article_id == cb.article_id or translation.get(ca.article_id) == cb.article_id \
                or translation.get(cb.article_id) == ca.article_id:
            continue
        jaccard = n / len(sh[i] | sh[j])
        if jaccard >= threshold:
            pairs.append({"a": {"article_id": ca.article_id, "anchor": ca.anchor},
                          "b": {"article_id": cb.article_id, "anchor": cb.anchor},
                          "similarity": round(jaccard, 3)})
    return sorted(pairs, key=lambda p: -p["similarity"])


def knowledge_health(session: Session, *, now: datetime | None = None,
                     group_gaps: GapGrouper | None = None) -> dict[str, Any]:
    now = now or utcnow()
    rows = statuses(session, now=now)
    states = Counter(r.state for r in rows)
    served_rows = [r for r in rows if r.freshness is not None]
    overdue = [r for r in served_rows if r.freshness and r.freshness.stale]
    overdue_by_owner: dict[str, list[str]] = defaultdict(list)
    for r in overdue:
        overdue_by_owner[r.owner].append(r.id)
    due_14d = [r.id for r in served_rows if r.freshness and not r.freshness.stale
               and r.freshness.due_at <= now + timedelta(days=14)]

    logs = session.exec(select(QueryLog).where(col(QueryLog.at) >= now - timedelta(days=30))).all()
    cited_7: Counter[str] = Counter()
    cited_30: Counter[str] = Counter()
    for q in logs:
        for s in q.served:
            cited_30[s["article_id"]] += 1
            if q.at >= now - timedelta(days=7):
                cited_7[s["article_id"]] += 1
    ever = {s["article_id"] for q in session.exec(select(QueryLog.served)).all() for s in q}
    outcomes = Counter(q.status for q in logs)
    gaps = merge_by_meaning(
        Counter(_norm_question(q.question) for q in logs if q.status == "no_answer"), group_gaps)

    flags = session.exec(select(Flag)).all()
    resolve_hours = [(f.resolved_at - f.created_at).total_seconds() / 3600 for f in flags
                     if f.resolved_at is not None]
    created: dict[tuple[str, int], datetime] = {
        (a, n): at for a, n, at in session.exec(
            select(ArticleVersion.article_id, ArticleVersion.number, ArticleVersion.created_at))
    }
    lags = [(a.at - created[(a.article_id, a.version_number)]).total_seconds() / 3600
            for a in session.exec(select(Approval)).all()
            if (a.article_id, a.version_number) in created]
    total = len(logs)
    return {
        "at": now.isoformat(),
        "articles": len(rows),
        "states": dict(sorted(states.items())),
        "freshness": {
            "served": len(served_rows),
            "within_cadence": (len(served_rows) - len(overdue)) / len(served_rows)
            if served_rows else None,
            "overdue": len(overdue),
            "overdue_by_owner": {k: sorted(v) for k, v in sorted(overdue_by_owner.items())},
            "due_14d": sorted(due_14d),
        },
        "ownership": {"unowned": sorted(r.id for r in rows
                                        if r.owner.strip().lower() in PLACEHOLDER_OWNERS)},
        "usage": {
            "citations_7d": dict(cited_7.most_common()),
            "citations_30d": dict(cited_30.most_common()),
            "never_cited": sorted(r.id for r in served_rows if r.id not in ever),
        },
        "outcomes_30d": {
            "queries": total,
            **{k: (outcomes.get(k, 0) / total if total else None)
               for k in ("answered", "escalate", "no_answer")},
            "top_gaps": [{"question": q, "count": n} for q, n in gaps.most_common(10)],
        },
        "flags": {
            "open": sum(1 for f in flags if f.status == "open"),
            "resolved": len(resolve_hours),
            "median_hours_to_resolve": median(resolve_hours) if resolve_hours else None,
        },
        "approval_lag_hours": median(lags) if lags else None,
        "duplicates": duplicate_sections(session),
    }


def save_snapshot(session: Session, metrics: dict[str, Any]) -> HealthSnapshot:
    row = HealthSnapshot(metrics=metrics)
    session.add(row)
    session.commit()
    return row
