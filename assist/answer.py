"""Answer assembly: approved text only, verbatim, with citations — or an escalation.

Nothing here generates or paraphrases. Every passage is ``version.text[start:end]`` of the
version the database serves *right now*, re-checked against the database (served version,
audience, risk) after retrieval; the index is only a way to find candidates.
"""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from assist.batching import Batcher
from assist.chunks import passage_sha256
from assist.index import ChunkIndex, caller_views, visible
from assist.redact import redact
from assist.retrieve import Candidate, candidate_count, retrieve
from kb import audit
from kb.governance import ServedInfo, governance_tick, served_info
from kb.models import ArticleVersion, utcnow
from kb.settings import Settings

ANSWERED, ESCALATE, NO_ANSWER = "answered", "escalate", "no_answer"
SHORTLIST = 15  # distinct articles re-checked against the database per question

_QUANTITY = re.compile(
    r"(?P<cur>[£€$])\s?(?P<amount>\d+(?:[.,]\d+)?)"
    r"|(?P<num>\d+(?:[.,]\d+)?)\s?(?P<unit>%|(?:business |working |calendar )?days?|weeks?|"
    r"months?|years?|hours?|minutes?)\b",
    re.I,
)


_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class Question:
    text: str
    audience: str
    caller: str = "anonymous"
    locale: str | None = None
    tags: frozenset[str] = frozenset()
    top_k: int | None = None


@dataclass(frozen=True)
class Citation:
    article_id: str
    title: str
    version: int
    content_sha256: str
    section: list[str]
    anchor: str
    start: int
    end: int
    passage_sha256: str
    owner: str
    approved_at: datetime
    last_reviewed: datetime
    risk: str
    locale: str


@dataclass(frozen=True)
class Passage:
    text: str
    score: float
    citation: Citation


@dataclass(frozen=True)
class Escalation:
    team: str
    reason: str  # no_answer | stale | ambiguous | no_approved_language
    question: str  # redacted
    found: list[dict[str, Any]]
    message: str


@dataclass
class AssistResult:
    query_id: str
    status: str
    passages: list[Passage] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    escalation: Escalation | None = None
    latency_ms: float = 0.0


def quantities(text: str) -> set[tuple[str, str]]:
    """(unit, value) pairs such as ('day', '30') or ('£', '25') in a passage."""
    out = set()
    for m in _QUANTITY.finditer(text):
        if m.group("cur"):
            out.add((m.group("cur"), m.group("amount").replace(",", ".")))
        else:
            unit = m.group("unit").lower().split()[-1].rstrip("s") or "%"
            out.add((unit, m.group("num").replace(",", ".")))
    return out


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the words of two passages, numbers left out: high when two
    policies make the same statement (possibly with different numbers)."""
    wa = {w for w in _WORDS.findall(a.lower()) if not w.isdigit()}
    wb = {w for w in _WORDS.findall(b.lower()) if not w.isdigit()}
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


def conflicting(a: str, b: str) -> bool:
    """Two policy passages state different values for the same unit (e.g. 30 vs 14 days)."""
    qa, qb = quantities(a), quantities(b)
    for unit in {u for u, _ in qa} & {u for u, _ in qb}:
        va = {v for u, v in qa if u == unit}
        vb = {v for u, v in qb if u == unit}
        if not va & vb:
            return True
    return False


class Assistant:
    """The answer path behind ``POST /v1/assist`` and ``kb eval run``."""

    def __init__(self, *, engine: Engine, index: ChunkIndex, settings: Settings) -> None:
        self.engine = engine
        self.index = index
        self.settings = settings
        self._texts: dict[tuple[str, int, str], str] = {}  # versions are immutable
        # Served-version facts, valid while the database's governance clock is unchanged.
        self._served: dict[str, ServedInfo | None] = {}
        self._tick: int | None = None
        # Query-log rows of concurrent answers are committed together (group commit): each
        # caller still returns only once its own row is stored.
        self._audit: Batcher[dict[str, Any], None] = Batcher(self._write_audit, max_batch=64)
        self._side = ThreadPoolExecutor(max_workers=4, thread_name_prefix="canon-lexical")

    def _write_audit(self, entries: list[dict[str, Any]]) -> list[None]:
        with self.engine.connect() as conn:
            audit.record_queries(conn, entries)
        return [None] * len(entries)

    # --- helpers ------------------------------------------------------------------------

    def _served_infos(self, conn: Connection, article_ids: list[str]) -> dict[str, ServedInfo]:
        """What the database serves now for these articles.

        One tiny query reads the governance clock; only if it moved (an approval, review or
        retirement committed) or an article was never looked up are the facts re-read.
        """
        tick = governance_tick(conn)
        if tick != self._tick:
            self._served, self._tick = {}, tick
        missing = [a for a in article_ids if a not in self._served]
        if missing:
            with Session(bind=conn) as session:
                found = served_info(session, article_ids=missing)
            for a in missing:
                self._served[a] = found.get(a)
        now = utcnow()
        return {a: info.at(now) for a in article_ids
                if (info := self._served.get(a)) is not None}

    def _version_texts(self, conn: Connection, keys: set[tuple[str, int, str]]) -> None:
        missing = [k for k in keys if k not in self._texts]
        if not missing:
            return
        with Session(bind=conn) as session:
            rows = session.exec(
                select(ArticleVersion).where(
                    col(ArticleVersion.article_id).in_({a for a, _, _ in missing}))
            ).all()
        for v in rows:
            self._texts[(v.article_id, v.number, v.content_sha256)] = v.text

    def _valid(self, c: Candidate, info: ServedInfo | None, audience: str) -> bool:
        """The authoritative re-check of a candidate against the database."""
        if info is None or c.chunk.version != info.version:
            return False  # not served any more (retired / superseded / index lagging)
        if c.chunk.content_sha256 != info.content_sha256:
            return False
        if not visible(info.meta.get("audience", []), audience):
            return False
        if info.meta.get("risk") == "high" and not c.chunk.approved:
            return False
        text = self._texts.get((info.article_id, info.version, info.content_sha256))
        return text is not None and text[c.chunk.start:c.chunk.end] == c.chunk.text

    def _passage(self, c: Candidate, info: ServedInfo) -> Passage:
        text = self._texts[(info.article_id, info.version, info.content_sha256)]
        body = text[c.chunk.start:c.chunk.end]
        meta = info.meta
        title = meta.get("title", c.chunk.title)
        section = list(c.chunk.heading_path)
        if not section or section[0] != title:
            section = [title, *section]
        return Passage(
            text=body,
            score=round(c.score, 4),
            citation=Citation(
                article_id=info.article_id, title=title, version=info.version,
                content_sha256=info.content_sha256, section=section, anchor=c.chunk.anchor,
                start=c.chunk.start, end=c.chunk.end, passage_sha256=passage_sha256(body),
                owner=meta.get("owner", ""), approved_at=info.approved_at,
                last_reviewed=info.freshness.anchor, risk=meta.get("risk", "low"),
                locale=meta.get("locale", "en"),
            ),
        )

    def _found(self, passages: list[Passage]) -> list[dict[str, Any]]:
        return [
            {"article_id": p.citation.article_id, "title": p.citation.title,
             "version": p.citation.version, "section": p.citation.section,
             "anchor": p.citation.anchor, "score": p.score}
            for p in passages
        ]

    def _escalation(self, reason: str, team: str | None, question: str,
                    found: list[Passage], message: str) -> Escalation:
        return Escalation(team=team or self.settings.answer.default_escalation_team,
                          reason=reason, question=question, found=self._found(found),
                          message=message)

    # --- the answer path ---------------------------------------------------------------

    def ask(self, q: Question) -> AssistResult:
        t0 = time.perf_counter()
        cfg = self.settings.answer
        query_id = uuid.uuid4().hex
        locale = q.locale or cfg.default_locale
        top_k = max(1, min(q.top_k or cfg.default_top_k, cfg.max_top_k))
        redacted = redact(q.text)
        views = caller_views(q.audience, self.index.views())
        n = candidate_count(self.settings.retrieval, q.tags)
        # BM25 runs on another core while the question is embedded and Chroma searched.
        lexical = None if self.settings.retrieval.fusion == "dense" else self._side.submit(
            self.index.lexical, q.text, views=views, locale=locale, n=n)
        vector, dense = self.index.search(q.text, views=views, locale=locale, n=n)
        result = AssistResult(query_id=query_id, status=NO_ANSWER)

        candidates = self._candidates(q.text, vector, views, locale, q.tags, dense=dense,
                                      lexical=lexical.result() if lexical else None)
        if locale != cfg.default_locale and self._confidence(candidates) < cfg.min_score:
            fallback = self._candidates(q.text, vector, views, cfg.default_locale, q.tags)
            if fallback:
                result.warnings.append({
                    "code": "locale_fallback",
                    "message": f"no approved answer in '{locale}'; showing "
                               f"'{cfg.default_locale}' text"})
                candidates = fallback

        # Only the best few articles can reach the answer; check those against the database.
        shortlist = list(dict.fromkeys(c.chunk.article_id for c in candidates))[:SHORTLIST]
        listed = set(shortlist)
        candidates = [c for c in candidates if c.chunk.article_id in listed]
        with self.engine.connect() as conn:
            infos = self._served_infos(conn, shortlist)
            self._version_texts(conn, {(i.article_id, i.version, i.content_sha256)
                                          for i in infos.values()})
            valid = [c for c in candidates
                     if self._valid(c, infos.get(c.chunk.article_id), q.audience)]
            self._decide(result, valid, infos, redacted, top_k, q.text)
        result.latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        self._audit.submit(dict(
            id=query_id, at=utcnow(), caller=q.caller, audience=q.audience, locale=locale,
            question=redacted, status=result.status,
            reason=result.escalation.reason if result.escalation else None,
            escalate_to=result.escalation.team if result.escalation else None,
            served=[{"article_id": p.citation.article_id, "version": p.citation.version,
                     "content_sha256": p.citation.content_sha256,
                     "start": p.citation.start, "end": p.citation.end,
                     "passage_sha256": p.citation.passage_sha256}
                    for p in result.passages],
            latency_ms=result.latency_ms,
        ))
        return result

    def _candidates(self, text: str, vector: Any, views: tuple[str, ...], locale: str,
                    tags: frozenset[str], *, dense: list[tuple[str, float]] | None = None,
                    lexical: list[tuple[str, float]] | None = None) -> list[Candidate]:
        return retrieve(self.index, question=text, vector=vector, views=views, locale=locale,
                        settings=self.settings.retrieval, tags=tags, dense=dense,
                        lexical=lexical)

    def _confidence(self, candidates: list[Candidate]) -> float:
        """How close the best evidence is to the question (max cosine similarity)."""
        dense = [c.dense for c in candidates if c.dense is not None]
        if dense:
            return max(dense)
        return 1.0 if candidates else 0.0

    def _decide(self, result: AssistResult, valid: list[Candidate],
                infos: dict[str, ServedInfo], question: str, top_k: int,
                raw_question: str = "") -> None:
        cfg = self.settings.answer
        weak = not valid or self._confidence(valid) < cfg.min_score or (
            self.settings.retrieval.fusion != "dense"
            and self.index.coverage(raw_question, valid[0].chunk.id) < cfg.min_coverage)
        if weak:
            best = valid[0] if valid else None
            team = None
            if best is not None and self._confidence(valid) >= cfg.min_score:
                team = infos[best.chunk.article_id].meta.get("escalate_to")
            result.status = NO_ANSWER
            result.escalation = self._escalation(
                "no_answer", team, question,
                [self._passage(best, infos[best.chunk.article_id])] if best and team else [],
                "No approved answer for this question: escalate with this handoff.")
            return

        top = valid[0]
        top_info = infos[top.chunk.article_id]
        if (top_info.freshness.stale and top_info.meta.get("risk") == "high"
                and cfg.withhold_stale_high_risk):
            result.status = ESCALATE
            result.escalation = self._escalation(
                "stale", top_info.meta.get("escalate_to"), question,
                [self._passage(top, top_info)],
                f"The approved policy '{top_info.meta.get('title')}' is overdue for review "
                f"(due {top_info.freshness.due_at:%Y-%m-%d}) and is withheld: escalate.")
            return

        rival = self._rival(top, valid, infos)
        if rival is not None:
            result.status = ESCALATE
            result.escalation = self._escalation(
                "ambiguous", top_info.meta.get("escalate_to"), question,
                [self._passage(top, top_info),
                 self._passage(rival, infos[rival.chunk.article_id])],
                "Two approved policies give different answers to this question: escalate "
                "rather than choose.")
            return

        seen: list[tuple[str, int, int]] = []
        for c in valid:
            info = infos[c.chunk.article_id]
            if c is not top and (c.dense is None or c.dense < cfg.min_score):
                continue  # only the best passage may stand on lexical evidence alone
            if info.freshness.stale and info.meta.get("risk") == "high":
                continue  # never serve stale high-risk text, even lower down
            span = (c.chunk.article_id, c.chunk.start, c.chunk.end)
            if any(a == span[0] and s < span[2] and span[1] < e for a, s, e in seen):
                continue
            seen.append(span)
            result.passages.append(self._passage(c, info))
            if info.freshness.stale and cfg.warn_stale:
                result.warnings.append({
                    "code": "stale", "article_id": info.article_id,
                    "message": f"'{info.meta.get('title')}' was due for review on "
                               f"{info.freshness.due_at:%Y-%m-%d}; check with "
                               f"{info.meta.get('owner')} if in doubt"})
            if len(result.passages) >= top_k:
                break
        result.status = ANSWERED

    def _rival(self, top: Candidate, valid: list[Candidate],
               infos: dict[str, ServedInfo]) -> Candidate | None:
        """A runner-up from another article, about as close to the question (cosine within
        ``ambiguity_margin``), whose approved language makes the same statement (word overlap
        at least ``ambiguity_overlap``) with different numbers."""
        margin = self.settings.answer.ambiguity_margin
        overlap = self.settings.answer.ambiguity_overlap
        if not top.chunk.approved:
            return None
        top_meta = infos[top.chunk.article_id].meta
        related = {top.chunk.article_id, (top_meta.get("extra") or {}).get("translation_of")}
        top_sim = top.dense if top.dense is not None else top.score
        for c in valid[1:]:
            sim = c.dense if c.dense is not None else c.score
            if top_sim - sim > margin:
                continue
            if c.chunk.article_id in related or not c.chunk.approved:
                continue
            other = (infos[c.chunk.article_id].meta.get("extra") or {}).get("translation_of")
            if other == top.chunk.article_id:
                continue
            if (word_overlap(top.chunk.text, c.chunk.text) >= overlap
                    and conflicting(top.chunk.text, c.chunk.text)):
                return c
        return None
