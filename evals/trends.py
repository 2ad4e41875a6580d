"""The health dashboard's figures over time, from aggregate queries.

The query log can hold millions of rows, so nothing here scans it whole: outcomes and
citations come from the daily roll-ups kept with every query-log write
(:func:`kb.audit.add_to_rollups`); gaps read only the window's unanswered questions through
the ``(status, at)`` index. Flags, approvals and articles are small tables.

Every figure is for the ``days`` before ``now`` (UTC days), so the same log tells the same
story on any date when ``now`` is pinned.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from statistics import median
from typing import Any

from sqlmodel import Session, col, func, select

from assist.gaps import GapGrouper, merge_by_meaning
from kb.console_models import CitationRollup, QueryRollup
from kb.governance import statuses
from kb.models import Approval, ArticleVersion, EvalRun, Flag, QueryLog

OUTCOMES = ("answered", "escalate", "no_answer")
_WORD = re.compile(r"\w+")


def _norm(question: str) -> str:
    return " ".join(_WORD.findall(question.lower()))


@dataclass
class Series:
    name: str
    points: Sequence[tuple[date, float | None]]


@dataclass
class Trends:
    since: date
    until: date
    days: list[date]
    weeks: list[date]
    outcomes: list[Series]  # share of calls per day
    volume: list[Series]  # calls per day
    freshness: list[Series]  # share within cadence per week
    overdue_by_owner: list[tuple[str, int]]
    flags_open: list[Series]
    flags_resolve_hours: list[Series]
    approval_lag_hours: list[Series]
    gaps: list[tuple[str, int]]
    citations: list[tuple[str, int]]
    never_cited: list[str]
    vendors: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


def _days(until: date, n: int) -> list[date]:
    return [until - timedelta(days=n - 1 - i) for i in range(n)]


def _week_of(d: date) -> date:
    return d - timedelta(days=d.weekday())


def _rates(counts: dict[str, int]) -> dict[str, float | None]:
    total = sum(counts.values())
    return {k: (counts.get(k, 0) / total if total else None) for k in OUTCOMES}


def _med(values: list[float]) -> float | None:
    return round(median(values), 1) if values else None


def trends(session: Session, *, now: datetime, days: int = 28,
           top: int = 10, group_gaps: GapGrouper | None = None) -> Trends:
    until = now.date()
    day_list = _days(until, days)
    since = day_list[0]
    start = datetime.combine(since, time.min, tzinfo=now.tzinfo)
    weeks = sorted({_week_of(d) for d in day_list})

    # Outcomes per day and per vendor per week, from the roll-up.
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    per_vendor: dict[str, dict[date, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for day, audience, status, n in session.exec(
        select(QueryRollup.day, QueryRollup.audience, QueryRollup.status,
               func.sum(QueryRollup.n))
        .where(col(QueryRollup.day) >= since.isoformat(),
               col(QueryRollup.day) <= until.isoformat())
        .group_by(col(QueryRollup.day), col(QueryRollup.audience), col(QueryRollup.status))
    ).all():
        d = date.fromisoformat(day)
        per_day[d][status] += int(n)
        if audience.startswith("vendor:"):
            per_vendor[audience][_week_of(d)][status] += int(n)
    outcomes = [Series(k, [(d, _rates(per_day[d])[k]) for d in day_list]) for k in OUTCOMES]
    volume = [Series("calls", [(d, float(sum(per_day[d].values()))) for d in day_list])]

    # Freshness: the served articles' share within cadence at the start of each week.
    fresh_points = []
    for w in weeks:
        at = datetime.combine(w, time.min, tzinfo=now.tzinfo)
        served = [s for s in statuses(session, now=at) if s.freshness is not None]
        ok = sum(1 for s in served if s.freshness and not s.freshness.stale)
        fresh_points.append((w, ok / len(served) if served else None))
    current = [s for s in statuses(session, now=now) if s.freshness is not None]
    overdue = Counter(s.owner for s in current if s.freshness and s.freshness.stale)
    fresh_points.append((until, (len(current) - sum(overdue.values())) / len(current)
                         if current else None))

    # Flags: open at the end of each day; median hours to resolve, by week resolved.
    flag_rows = session.exec(select(Flag.created_at, Flag.resolved_at, Flag.query_id)).all()
    open_points = []
    for d in day_list:
        end = datetime.combine(d + timedelta(days=1), time.min, tzinfo=now.tzinfo)
        open_points.append((d, float(sum(1 for c, r, _ in flag_rows
                                         if c < end and (r is None or r >= end)))))
    resolve: dict[date, list[float]] = defaultdict(list)
    for c, r, _ in flag_rows:
        if r is not None and r >= start:
            resolve[_week_of(r.date())].append((r - c).total_seconds() / 3600)
    # Approval lag: median hours from a version's creation to its approval, by week.
    lag: dict[date, list[float]] = defaultdict(list)
    for approved_at, created_at in session.exec(
        select(Approval.at, ArticleVersion.created_at)
        .join(ArticleVersion, (col(ArticleVersion.article_id) == col(Approval.article_id))
              & (col(ArticleVersion.number) == col(Approval.version_number)))
        .where(col(Approval.at) >= start)
    ).all():
        lag[_week_of(approved_at.date())].append((approved_at - created_at).total_seconds()
                                                 / 3600)

    # Gaps: unanswered questions in the window, grouped by wording...
    gap_rows = session.exec(
        select(QueryLog.audience, QueryLog.question, func.count())
        .where(QueryLog.status == "no_answer", col(QueryLog.at) >= start)
        .group_by(col(QueryLog.audience), col(QueryLog.question))
    ).all()
    gaps: Counter[str] = Counter()
    vendor_gaps: dict[str, Counter[str]] = defaultdict(Counter)
    for audience, question, n in gap_rows:
        gaps[_norm(question)] += int(n)
        if audience.startswith("vendor:"):
            vendor_gaps[audience][_norm(question)] += int(n)
    # ... then by meaning, as the owners' queue groups them.
    gaps = merge_by_meaning(gaps, group_gaps)
    vendor_gaps = defaultdict(Counter, {a: merge_by_meaning(c, group_gaps)
                                        for a, c in vendor_gaps.items()})

    # Citations per article in the window (roll-up); never cited: served, no citation ever.
    cited = session.exec(
        select(CitationRollup.article_id, func.sum(CitationRollup.n))
        .where(col(CitationRollup.day) >= since.isoformat())
        .group_by(col(CitationRollup.article_id))
        .order_by(func.sum(CitationRollup.n).desc())
    ).all()
    ever = set(session.exec(select(CitationRollup.article_id).distinct()).all())

    # Flags raised per vendor in the window (flags are few; their queries by primary key).
    vendor_flags: Counter[str] = Counter()
    recent = [q for c, _, q in flag_rows if c >= start]
    if recent:
        for audience, n in session.exec(
            select(QueryLog.audience, func.count()).where(col(QueryLog.id).in_(recent))
            .group_by(col(QueryLog.audience))
        ).all():
            vendor_flags[audience] += int(n)

    vendors = {}
    for audience in sorted(set(per_vendor) | set(vendor_gaps) | {
            a for a in vendor_flags if a.startswith("vendor:")}):
        by_week = per_vendor.get(audience, {})
        totals: Counter[str] = Counter()
        for counts in by_week.values():
            totals.update(counts)
        vendors[audience] = {
            "series": [Series(k, [(w, _rates(by_week.get(w, Counter()))[k]) for w in weeks])
                       for k in OUTCOMES],
            "calls": sum(totals.values()), "rates": _rates(totals),
            "flags": vendor_flags.get(audience, 0),
            "top_gaps": vendor_gaps.get(audience, Counter()).most_common(3),
        }

    return Trends(
        since=since, until=until, days=day_list, weeks=weeks, outcomes=outcomes,
        volume=volume, freshness=[Series("within cadence", fresh_points)],
        overdue_by_owner=sorted(overdue.items(), key=lambda kv: (-kv[1], kv[0])),
        flags_open=[Series("open flags", open_points)],
        flags_resolve_hours=[Series("median hours to resolve",
                                    [(w, _med(resolve.get(w, []))) for w in weeks])],
        approval_lag_hours=[Series("median approval lag",
                                   [(w, _med(lag.get(w, []))) for w in weeks])],
        gaps=gaps.most_common(top),
        citations=[(a, int(n)) for a, n in cited],
        never_cited=sorted(s.id for s in current if s.id not in ever),
        vendors=vendors,
    )


EVAL_METRICS = ("hit@1", "hit@5", "mrr@10", "section_hit@1", "abstention_f1",
                "false_abstention", "contains_accuracy")


def run_metric(run: EvalRun, name: str) -> float | None:
    value = run.metrics.get(name)
    return float(value) if isinstance(value, int | float) else None


def eval_trends(session: Session, *, limit: int = 60) -> dict[str, list[Series]]:
    """Per suite: a series per metric over the stored runs, oldest first."""
    runs = session.exec(select(EvalRun).order_by(col(EvalRun.at).desc()).limit(limit)).all()
    by_suite: dict[str, list[EvalRun]] = defaultdict(list)
    for r in reversed(runs):
        by_suite[r.suite].append(r)
    out = {}
    for suite, rs in by_suite.items():
        series = [Series(name, [(r.at.date(), run_metric(r, name)) for r in rs])
                  for name in EVAL_METRICS]
        out[suite] = [s for s in series if any(v is not None for _, v in s.points)]
    return out
