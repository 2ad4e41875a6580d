"""The owners' review queue: what needs a knowledge owner's attention, most urgent first.

Items, in order of urgency class (then oldest first):

1. ``stale`` high-risk articles (withheld from agents until reviewed);
2. open ``flag`` s from agents (with the query, the served span and the reason);
3. ``stale`` low/medium-risk articles (served with a warning);
4. ``pending`` versions awaiting approval;
5. content ``gap`` s: questions that ended in ``no_answer``, or escalated because a high-risk
   article has no approved language for them (``no_approved_language``, on that article's
   team's desk), or whose answer an agent flagged as wrong or missing, grouped by meaning
   (or wording), each with its size (``flagged``: how many of them were flags), examples
   and nearest article;
6. articles ``due_soon`` (within 14 days).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, and_, col, or_, select

from kb.governance import statuses
from kb.models import ArticleVersion, Flag, QueryLog, utcnow
from kb.redact import redact

GAP_REASONS = ("wrong", "missing")  # flags that say the knowledge base lacks the answer
GapGrouper = Callable[[list[str]], Sequence[int]]  # a group number per question
NearestArticle = Callable[[str], dict[str, Any] | None]

_WORD = re.compile(r"\w+")
_STOP_WORDS = ("a an the to of for and or is are can do does i my we our you your it on in "
               "with what how when will be")
_STOP = frozenset(_STOP_WORDS.split())


def gap_key(question: str) -> str:
    """Similar wording -> the same key: lowercase content words, sorted."""
    words = {w for w in _WORD.findall(question.lower()) if w not in _STOP and not w.isdigit()}
    return " ".join(sorted(words))


def _days(now: datetime, then: datetime) -> float:
    return round((now - then).total_seconds() / 86400, 1)


def review_queue(
    session: Session, *, teams: Sequence[str] | None = None, now: datetime | None = None,
    due_within: timedelta = timedelta(days=14), group_gaps: GapGrouper | None = None,
    nearest: NearestArticle | None = None,
) -> list[dict[str, Any]]:
    """Queue items for articles owned by ``teams`` (None: every team).

    Gaps are grouped by ``group_gaps`` (a group number per question: by meaning, from the
    answer layer) or, without one, by normalised wording; ``nearest`` names the served
    article closest to each gap."""
    now = now or utcnow()
    team_set = None if teams is None else set(teams)

    def mine(owner: str) -> bool:
        return team_set is None or owner in team_set

    items: list[tuple[int, float, dict[str, Any]]] = []
    rows = [s for s in statuses(session, now=now) if mine(s.owner)]
    for s in rows:
        f = s.freshness
        if f is not None and f.stale:
            items.append((0 if s.risk == "high" else 2, -_days(now, f.due_at), {
                "kind": "stale", "article_id": s.id, "title": s.title, "owner": s.owner,
                "risk": s.risk, "due_at": f.due_at.isoformat(), "age_days": _days(now, f.due_at),
                "withheld": s.risk == "high"}))
        elif f is not None and f.due_at <= now + due_within:
            items.append((5, _days(now, f.due_at), {
                "kind": "due_soon", "article_id": s.id, "title": s.title, "owner": s.owner,
                "risk": s.risk, "due_at": f.due_at.isoformat(), "age_days": 0.0}))
        if s.pending_version is not None and s.state != "draft":
            v = session.exec(select(ArticleVersion).where(
                ArticleVersion.article_id == s.id, ArticleVersion.number == s.pending_version)
            ).one()
            items.append((3, -_days(now, v.created_at), {
                "kind": "pending", "article_id": s.id, "title": s.title, "owner": s.owner,
                "version": v.number, "author": v.author, "created_at": v.created_at.isoformat(),
                "age_days": _days(now, v.created_at)}))
    flag_query = select(Flag, QueryLog.question).join(
        QueryLog, col(QueryLog.id) == col(Flag.query_id)).where(Flag.status == "open")
    for flag, question in session.exec(flag_query).all():
        if not mine(flag.owner):
            continue
        span = None
        if flag.article_id is not None and flag.start is not None:
            v = session.exec(select(ArticleVersion).where(
                ArticleVersion.article_id == flag.article_id,
                ArticleVersion.number == flag.version_number)).one()
            span = v.text[flag.start:flag.end]
        items.append((1, -_days(now, flag.created_at), {
            "kind": "flag", "flag_id": flag.id, "article_id": flag.article_id,
            "version": flag.version_number, "owner": flag.owner, "reason": flag.reason,
            # Stored redacted; redacted again on the way out for rows kept before the
            # redactor improved (redaction is idempotent).
            "comment": redact(flag.comment), "query_id": flag.query_id,
            "question": redact(question),
            "span": {"start": flag.start, "end": flag.end, "text": span},
            "created_at": flag.created_at.isoformat(), "age_days": _days(now, flag.created_at)}))
    # A gap: a question with no answer (or no approved language to answer it with), or
    # whose answer an agent flagged as wrong or missing.
    demand: list[tuple[QueryLog, str, bool]] = [
        (q, q.escalate_to or "support-tier2", False)
        for q in session.exec(select(QueryLog).where(or_(
            QueryLog.status == "no_answer",
            # Both terms on the indexed status column: no scan of the whole log.
            and_(QueryLog.status == "escalate",
                 QueryLog.reason == "no_approved_language")))).all()]
    seen = {q.id for q, _, _ in demand}
    for q, owner in session.exec(
        select(QueryLog, Flag.owner).join(Flag, col(Flag.query_id) == col(QueryLog.id))
        .where(col(Flag.reason).in_(GAP_REASONS))
    ).all():
        if q.id not in seen:
            seen.add(q.id)
            demand.append((q, owner, True))
    demand = sorted((d for d in demand if team_set is None or d[1] in team_set),
                    key=lambda d: (d[0].at, d[0].id))
    questions = [q.question for q, _, _ in demand]
    keys: list[Any] = (list(group_gaps(questions)) if group_gaps is not None
                       else [gap_key(text) for text in questions])
    gaps: dict[tuple[str, Any], dict[str, Any]] = {}
    for (q, team, flagged), key in zip(demand, keys, strict=True):
        g = gaps.setdefault((team, key), {
            "kind": "gap", "question": q.question, "team": team, "count": 0, "flagged": 0,
            "first_at": q.at, "last_at": q.at, "examples": []})
        g["count"] += 1
        g["flagged"] += int(flagged)
        g["first_at"], g["last_at"] = min(g["first_at"], q.at), max(g["last_at"], q.at)
        if len(g["examples"]) < 3 and q.question not in g["examples"]:
            g["examples"].append(q.question)
    for g in gaps.values():
        age = _days(now, g["first_at"])
        g.update(first_at=g["first_at"].isoformat(), last_at=g["last_at"].isoformat(),
                 age_days=age)
        if nearest is not None:
            g["nearest_article"] = nearest(g["question"])
        items.append((4, -g["count"] - age / 1000, g))
    items.sort(key=lambda t: (t[0], t[1]))
    return [item for _, _, item in items]
