"""Answer assembly: approved text only, verbatim, with citations — or an escalation.

Nothing here generates or paraphrases. Every passage is ``version.text[start:end]`` of the
version the database serves *right now*, re-checked against the database (served version,
audience, risk) after retrieval; the index is only a way to find candidates.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from assist.batching import Batcher
from assist.calibration import Policy, confidence, policy_for
from assist.catalog import Catalog
from assist.chunks import Chunk, passage_sha256
from assist.gaps import MeaningGroups
from assist.index import ChunkIndex
from assist.redact import redact
from assist.retrieve import Candidate, candidate_count, rank
from assist.statements import (
    Clash,
    Ledger,
    Statement,
    chunk_statements,
    clashes,
    listed_together,
)
from assist.statements import conflicting as conflicting  # re-exported (moved)
from assist.statements import quantities as quantities  # re-exported (moved)
from kb import audit
from kb import tuning as tunings
from kb.articles import servable, stored_risk
from kb.audience import caller_views, visible
from kb.clock import Clock, system_clock
from kb.governance import ServedInfo, governance_tick, served_info
from kb.models import ArticleVersion
from kb.settings import AnswerSettings, Settings

log = logging.getLogger("canon.assist")

ANSWERED, ESCALATE, NO_ANSWER = "answered", "escalate", "no_answer"
SHORTLIST = 15  # distinct articles re-checked against the database per question


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
    # The tuning record whose settings decided this answer (None: the shipped settings).
    tuning_sha256: str | None = None


@dataclass(frozen=True)
class Evidence:
    """A question's retrieval hits before fusion (see :meth:`Assistant.evidence`)."""

    dense: list[tuple[str, float]]  # (chunk id, cosine), best first
    lexical: list[tuple[str, float]]  # (chunk id, BM25), best first
    chunks: dict[str, Chunk]  # the hits this caller may be served now
    coverage: dict[str, float]  # of each servable chunk (see ChunkIndex.coverage)
    article_coverage: dict[str, float]  # of each servable chunk's article version
    lexical_ceiling: float
    # hits this caller may see but never be served (high-risk plain text of served versions)
    unservable: dict[str, Chunk] = field(default_factory=dict)
    # cosine of the question to each hit's closest sentence (assist.sentences), where it has
    # sentence vectors
    sentences: dict[str, float] = field(default_factory=dict)


_Found = TypeVar("_Found")


def in_locale_or_default(cfg: AnswerSettings, locale: str, find: Callable[[str], _Found], *,
                         best: Callable[[_Found], float],
                         holds: Callable[[_Found], bool]) -> tuple[_Found, bool]:
    """The locale fallback, one rule for the answer path, ``kb eval tune``'s evidence and
    the approval check's simulation: what ``find`` finds in ``locale``; when that is not
    the default locale and nothing it found is close enough (``best``, read as
    :func:`assist.calibration.confidence` reads candidates, under ``answer.min_score``),
    what it finds in the default locale instead, if that ``holds`` anything. The second
    value says whether it fell back."""
    found = find(locale)
    if locale == cfg.default_locale or not best(found) < cfg.min_score:
        return found, False
    other = find(cfg.default_locale)
    return (other, True) if holds(other) else (found, False)


def asked_locale(index: ChunkIndex, cfg: AnswerSettings, text: str, locale: str | None,
                 views: Sequence[str], catalog: Catalog) -> str:
    """The locale a question is asked in under ``cfg`` (``answer.detect_locale``,
    ``answer.default_locale``): :meth:`assist.index.ChunkIndex.asked_locale`, the one rule
    for the answer path, the approval check's simulation and the content gaps' nearest
    article."""
    return index.asked_locale(text, locale, views=views, default=cfg.default_locale,
                              detect=cfg.detect_locale, catalog=catalog)


def serve_order(valid: Sequence[Candidate], *, top_k: int, min_score: float,
                withheld: Callable[[Candidate], bool] = lambda c: False,
                diversity: float = 0.0) -> list[Candidate]:
    """The candidates an answer serves: the first one as ranked (the top passage), then
    those close enough to the question (cosine at least ``min_score``; only the top passage
    may stand on lexical evidence alone), never ``withheld`` ones, never two overlapping
    spans of one article, at most ``top_k``.

    ``diversity`` (``answer.diversity``, a share of the best candidate's fused score; the
    share makes it mean the same for every fusion's scale): after the top passage, each
    candidate competes with its fused score lowered by ``diversity`` x that best score for
    every passage of its article already chosen, so a further section of an article
    served already gives way to another article's passage scoring nearly as well. The top
    passage never changes, nor, for a list ranked best first, the order in which articles
    first appear (an article's first passage carries no penalty). 0 serves in the given
    order."""
    if top_k < 1:
        return []
    eligible = [c for i, c in enumerate(valid)
                if not (i and (c.dense is None or c.dense < min_score)) and not withheld(c)]
    chosen: list[Candidate] = []

    def overlaps(c: Candidate) -> bool:
        return any(o.chunk.article_id == c.chunk.article_id and o.chunk.start < c.chunk.end
                   and c.chunk.start < o.chunk.end for o in chosen)

    unit = max((c.score for c in eligible), default=0.0)
    if not (diversity > 0.0 and 0.0 < unit < math.inf) or len(eligible) < 2:
        for c in eligible:
            if not overlaps(c):
                chosen.append(c)
                if len(chosen) >= top_k:
                    break
        return chosen
    penalty = diversity * unit
    chosen.append(eligible[0])
    per_article = {eligible[0].chunk.article_id: 1}
    # The penalty is the same for all of an article's passages, so only its best remaining
    # one can be the next pick: each article's passages best first (ties as ranked), and
    # each pick compares one head per article.
    queues: dict[str, list[tuple[float, int, Candidate]]] = {}
    for i, c in enumerate(eligible[1:], 1):
        queues.setdefault(c.chunk.article_id, []).append((-c.score, i, c))
    for queue in queues.values():
        queue.sort(key=lambda item: (item[0], item[1]), reverse=True)  # popped from the end
    while len(chosen) < top_k and queues:
        best_article, best_key = "", (-math.inf, 0)
        for article, queue in queues.items():
            neg_score, i, _ = queue[-1]
            key = (-neg_score - penalty * per_article.get(article, 0), -i)
            if key > best_key:
                best_article, best_key = article, key
        queue = queues[best_article]
        c = queue.pop()[2]
        if not queue:
            del queues[best_article]
        if overlaps(c):
            continue
        chosen.append(c)
        per_article[best_article] = per_article.get(best_article, 0) + 1
    return chosen


def _section(title: str, heading_path: Sequence[str]) -> list[str]:
    """A citation's section: the article title, then the headings under it."""
    section = list(heading_path)
    return section if section and section[0] == title else [title, *section]


def _found_entry(article_id: str, title: str, version: int, section: list[str], anchor: str,
                 score: float) -> dict[str, Any]:
    """One article in a handoff's ``found``: where it is, never its text."""
    return {"article_id": article_id, "title": title, "version": version, "section": section,
            "anchor": anchor, "score": score}


def lacks_approved_language(lead: Candidate | None, valid: Sequence[Candidate],
                            answer: AnswerSettings) -> bool:
    """The question's best match is the plain text of a ``risk: high`` article (``lead``:
    indexed to find the article, never served), and the answer would come from another
    article. High-risk topics are answered only in approved policy language: this one has
    none for the question, so it escalates (``no_approved_language``) instead of serving
    a neighbouring article's text (unless ``answer.escalate_without_approved_language`` is
    off)."""
    return (answer.escalate_without_approved_language and lead is not None and bool(valid)
            and valid[0].chunk.article_id != lead.chunk.article_id)


def lead_language_first(lead: Candidate | None, valid: Sequence[Candidate],
                        answer: AnswerSettings) -> list[Candidate]:
    """``valid`` with the approved language of the ``lead``'s article first, when the
    question's best match is a ``risk: high`` article's plain text (``lead``) and that
    article's approved language is among the passages an answer of the default length
    shows in score order (:func:`serve_order` without ``diversity``,
    ``answer.default_top_k`` and ``answer.min_score``; the same whatever ``top_k`` a
    request asks for): it is the approved answer to the topic
    the question matched best, so it leads instead of a neighbour's text (and
    :func:`lacks_approved_language` does not escalate; it still does for a topic whose
    approved language would not be shown). The article's passages keep their order among
    themselves, and so do the rest. Applied by the answer path, ``kb eval tune`` and the
    approval check alike."""
    if lead is None or not valid or valid[0].chunk.article_id == lead.chunk.article_id:
        return list(valid)
    article = lead.chunk.article_id
    # By score alone (no `diversity`): which passage leads, and so whether a high-risk
    # topic escalates, is never loosened by making room for other articles.
    shown = serve_order(valid, top_k=answer.default_top_k, min_score=answer.min_score)
    if not any(c.chunk.article_id == article for c in shown):
        return list(valid)
    return ([c for c in valid if c.chunk.article_id == article]
            + [c for c in valid if c.chunk.article_id != article])


def lead_would_answer(policy: Policy, lead: Candidate | None, valid: Sequence[Candidate], *,
                      coverage: Callable[[Candidate], float],
                      article_coverage: Callable[[Candidate], float],
                      lexical_ceiling: Callable[[], float]) -> bool:
    """When nothing servable is good enough to answer (``policy`` abstains on ``valid``):
    would the ``lead`` (a high-risk article's plain text ranked above every servable
    passage) answer, were it approved language? Then the question is that article's
    topic, and it escalates to that article's team (``no_approved_language``) rather than
    to no one in particular; an off-topic question whose best match is weak still ends in
    ``no_answer``."""
    return (policy.answer.escalate_without_approved_language and lead is not None
            and not policy.abstains([lead, *valid], coverage=coverage,
                                    article_coverage=article_coverage,
                                    lexical_ceiling=lexical_ceiling))


def disagreement(valid: Sequence[Candidate], served: Sequence[Candidate], *, margin: float,
                 idf: Mapping[str, float] | None,
                 related: Callable[[str, str], bool] = lambda a, b: a == b,
                 statements_of: Callable[[str], Sequence[Statement]] = lambda a: (),
                 ) -> tuple[Candidate, Candidate, Clash] | None:
    """Two passages of unrelated articles that state different values for the same thing
    (see :mod:`assist.statements`): the top candidate, or another passage to be ``served``,
    and a runner-up about as close to the question as the top (similarity within
    ``margin``), or any two of the passages to be ``served``.
    All served text counts, not only ``::: approved`` blocks. ``related(a, b)``: one
    article and its translations never disagree. ``statements_of(article_id)``: all its
    statements (an article listing both values as options excuses the difference)."""
    if not valid:
        return None
    top = valid[0]
    top_sim = top.dense if top.dense is not None else top.score
    close = [c for c in valid[1:]
             if top_sim - (c.dense if c.dense is not None else c.score) <= margin]
    # The top passage may state a value in a table row while the passage served next to it
    # says it in a sentence: every served passage is held against the close runners-up.
    heads = [top, *(p for p in served if p is not top)]
    pairs = [(h, c) for h in heads for c in close if c is not h]
    pairs += [(p, q) for i, p in enumerate(served) for q in served[i + 1:]]
    seen: set[tuple[str, str]] = set()
    for p, q in pairs:
        if (p.chunk.id, q.chunk.id) in seen or related(p.chunk.article_id, q.chunk.article_id):
            continue
        seen.add((p.chunk.id, q.chunk.id))
        found = clashes(chunk_statements(p.chunk), chunk_statements(q.chunk), idf=idf)
        if found:  # the rest of the two articles may list both values as options
            around = [*statements_of(p.chunk.article_id), *statements_of(q.chunk.article_id)]
            found = [c for c in found if not listed_together(c, around, idf)]
        if found:
            return p, q, found[0]
    return None


class Assistant:
    """The answer path behind ``POST /v1/assist`` and ``kb eval run``."""

    def __init__(self, *, engine: Engine, index: ChunkIndex, settings: Settings,
                 clock: Clock = system_clock) -> None:
        self.engine = engine
        self.index = index
        self.settings = settings
        # The governance clock as last read, and the policy read with it: the settings, with
        # the tuning record in use applied (re-read whenever the clock moves; see follow).
        self._followed: tuple[int | None, Policy] = (None, policy_for(settings, None))
        self._follow_lock = threading.Lock()
        self.clock = clock  # freshness and the query log read time only from here
        self.max_lag_seconds = settings.index.max_lag_seconds
        # Unanswered questions grouped by meaning, for the owners' queue.
        self.gaps = MeaningGroups(index, threshold=settings.answer.gap_similarity,
                                  locale=settings.answer.default_locale,
                                  detect_locale=settings.answer.detect_locale)
        self._texts: dict[tuple[str, int, str], str] = {}  # versions are immutable
        # Served-version facts, valid while the database's governance clock is unchanged.
        self._served: dict[str, ServedInfo | None] = {}
        # Query-log rows of concurrent answers are committed together (group commit): each
        # caller still returns only once its own row is stored.
        self._audit: Batcher[dict[str, Any], None] = Batcher(self._write_audit, max_batch=64)
        self._side = ThreadPoolExecutor(max_workers=4, thread_name_prefix="canon-lexical")

    def _write_audit(self, entries: list[dict[str, Any]]) -> list[None]:
        with self.engine.connect() as conn:
            audit.record_queries(conn, entries)
        return [None] * len(entries)

    # --- helpers ------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The retrieval and abstention in use: the settings, with the tuning record in use
        applied (as of the last :meth:`follow`)."""
        return self._followed[1]

    def follow(self, conn: Connection) -> Policy:
        """Catch up with the database: one tiny query reads the governance clock; if it
        moved (an approval, review, retirement or tuning change committed by any process),
        the served facts are dropped and the tuning in use is re-read.

        The clock reading and the policy read after it are kept as one pair, swapped under
        a lock: questions on other threads follow at the same time, and a pair read before
        a change must never end up beside a clock reading taken after it (the stale policy
        would stay until the clock next moved). Whichever pair lands last, a newer clock
        differs from its reading, so the next question reads again."""
        tick = governance_tick(conn)
        if tick == self._followed[0]:
            return self._followed[1]
        policy = policy_for(self.settings, tunings.active(conn))
        if policy.problem is not None:
            log.error("%s", policy.problem)  # once per move of the clock, per process
        with self._follow_lock:
            self._served = {}
            self._followed = (tick, policy)
        return policy

    def _follow_now(self) -> Policy:
        """:meth:`follow` on a connection of its own (the answer path runs it on a side
        thread while the question is embedded and searched)."""
        with self.engine.connect() as conn:
            return self.follow(conn)

    def _served_infos(self, article_ids: list[str]) -> dict[str, ServedInfo]:
        """What the database serves now for these articles (re-read only when
        :meth:`follow` saw the governance clock move, or for an article never looked up;
        the database is asked only then).

        One cache object is read and written: if the clock moves while the database is
        asked (another request's :meth:`follow` replaced the cache), what was read before
        that change lands in the discarded cache, never in the new one."""
        cache = self._served
        missing = [a for a in article_ids if a not in cache]
        if missing:
            with self.engine.connect() as conn, Session(bind=conn) as session:
                found = served_info(session, article_ids=missing, now=self.clock())
            for a in missing:
                cache[a] = found.get(a)
        now = self.clock()
        return {a: info.at(now) for a in article_ids
                if (info := cache.get(a)) is not None}

    def _as_indexed(self, infos: dict[str, ServedInfo],
                    candidates: list[Candidate]) -> dict[str, ServedInfo]:
        """While this server's index has not caught up with a new approval (made by any
        process), keep serving the previously approved version instead of hiding the article
        (and serving another in its place) — for at most ``max_lag_seconds``. The index holds
        one version per article, so an article's candidates all name the same version."""
        out = dict(infos)
        now = self.clock()
        for c in candidates:
            info = out.get(c.chunk.article_id)
            prev = info.previous if info is not None else None
            if (info is None or prev is None or c.chunk.version == info.version
                    or c.chunk.version != prev.version
                    or c.chunk.content_sha256 != prev.content_sha256):
                continue
            if (now - info.approved_at).total_seconds() <= self.max_lag_seconds:
                out[c.chunk.article_id] = prev
        return out

    def _version_texts(self, keys: set[tuple[str, int, str]]) -> None:
        """Load the texts of these versions not read before (versions are immutable)."""
        missing = [k for k in keys if k not in self._texts]
        if not missing:
            return
        wanted = set(missing)
        # Plain columns of the wanted versions only (no ORM objects: this runs on the
        # answer path whenever an article is seen for the first time).
        with self.engine.connect() as conn, Session(bind=conn) as session:
            rows = session.exec(
                select(
                    ArticleVersion.article_id, ArticleVersion.number,
                    ArticleVersion.content_sha256, ArticleVersion.text)
                .where(col(ArticleVersion.article_id).in_({a for a, _, _ in missing}),
                       col(ArticleVersion.number).in_({n for _, n, _ in missing}))
            ).all()
        for article_id, number, sha, text in rows:
            if (article_id, number, sha) in wanted:
                self._texts[(article_id, number, sha)] = text

    def _valid(self, c: Candidate, info: ServedInfo | None, audience: str) -> bool:
        """The authoritative re-check of a candidate against the database."""
        return self._current(c.chunk, info, audience) and self._servable(c.chunk, info)

    def _current(self, chunk: Chunk, info: ServedInfo | None, audience: str) -> bool:
        """Is ``chunk`` text of the version the database serves now, to this audience?"""
        if info is None or chunk.version != info.version:
            return False  # not served any more (retired / superseded / index lagging)
        if chunk.content_sha256 != info.content_sha256:
            return False
        if not visible(info.meta.get("audience", []), audience):
            return False
        text = self._texts.get((info.article_id, info.version, info.content_sha256))
        return text is not None and text[chunk.start:chunk.end] == chunk.text

    @staticmethod
    def _servable(chunk: Chunk, info: ServedInfo | None) -> bool:
        """May this current chunk be served? Never the plain text of a high-risk article
        (it only finds the article), by the index's metadata and the database's alike."""
        return info is not None and chunk.servable and servable(
            risk=stored_risk(info.meta), approved=chunk.approved)

    def _lead(self, unservable: list[tuple[int, Candidate]], candidates: list[Candidate],
              valid: list[Candidate], infos: dict[str, ServedInfo],
              audience: str) -> Candidate | None:
        """The unservable candidate that ranks above every valid one, if the database
        serves it to this caller now (its facts are added to ``infos``), else None: the
        first hit the database lets this caller see, when it may not be served. As
        ``kb eval tune`` reads it (:func:`evals.tune.ranked_with_lead`, on evidence already
        checked against the database)."""
        first = candidates.index(valid[0]) if valid else len(candidates)
        for above, u in unservable:
            if above > first:
                break
            article_id = u.chunk.article_id
            info = self._as_indexed(self._served_infos([article_id]), [u]).get(article_id)
            if info is not None:
                self._version_texts({(info.article_id, info.version, info.content_sha256)})
            if self._current(u.chunk, info, audience) and not self._servable(u.chunk, info):
                assert info is not None
                infos[article_id] = info
                return u
        return None

    def _passage(self, c: Candidate, info: ServedInfo) -> Passage:
        text = self._texts[(info.article_id, info.version, info.content_sha256)]
        body = text[c.chunk.start:c.chunk.end]
        meta = info.meta
        title = meta.get("title", c.chunk.title)
        section = _section(title, c.chunk.heading_path)
        return Passage(
            text=body,
            score=round(c.score, 4),
            citation=Citation(
                article_id=info.article_id, title=title, version=info.version,
                content_sha256=info.content_sha256, section=section, anchor=c.chunk.anchor,
                start=c.chunk.start, end=c.chunk.end, passage_sha256=passage_sha256(body),
                owner=meta.get("owner", ""), approved_at=info.approved_at,
                last_reviewed=info.freshness.anchor, risk=stored_risk(meta),
                locale=meta.get("locale", "en"),
            ),
        )

    def _found(self, passages: list[Passage]) -> list[dict[str, Any]]:
        return [_found_entry(p.citation.article_id, p.citation.title, p.citation.version,
                             p.citation.section, p.citation.anchor, p.score)
                for p in passages]

    def _escalation(self, reason: str, team: str | None, question: str,
                    found: list[dict[str, Any]], message: str) -> Escalation:
        return Escalation(team=team or self.settings.answer.default_escalation_team,
                          reason=reason, question=question, found=found, message=message)

    # --- the answer path ---------------------------------------------------------------

    def _locale(self, q: Question, views: Sequence[str], catalog: Catalog) -> str:
        return asked_locale(self.index, self.settings.answer, q.text, q.locale, views,
                            catalog)

    def ask(self, q: Question) -> AssistResult:
        t0 = time.perf_counter()
        cfg = self.settings.answer
        query_id = uuid.uuid4().hex
        top_k = max(1, min(q.top_k or cfg.default_top_k, cfg.max_top_k))
        redacted = redact(q.text)
        # One catalog from start to end: a newer one may come in on another thread meanwhile.
        catalog = self.index.catalog()
        views = caller_views(q.audience, self.index.views(catalog))
        locale = self._locale(q, views, catalog)
        n = candidate_count(self.settings.retrieval, q.tags)
        # BM25, and the look at the governance clock (what the database serves, the tuning
        # in use), run on another core while the question is embedded and Chroma searched.
        # Both start after the question arrived, so the answer reflects every approval
        # committed before it.
        following = self._side.submit(self._follow_now)
        lexical = None if self.settings.retrieval.fusion == "dense" else self._side.submit(
            self.index.lexical, q.text, views=views, locale=locale, n=n, catalog=catalog)
        vector, dense = self.index.search(q.text, views=views, locale=locale, n=n,
                                          catalog=catalog)
        result = AssistResult(query_id=query_id, status=NO_ANSWER)

        policy = following.result()
        result.tuning_sha256 = policy.tuning_sha256
        found = lexical.result() if lexical else None
        (candidates, unservable), fell_back = in_locale_or_default(
            cfg, locale, lambda loc: self._candidates(
                policy, q.text, vector, views, loc, q.tags, catalog,  # hits found already
                dense=dense if loc == locale else None,
                lexical=found if loc == locale else None),
            best=lambda got: confidence(got[0]), holds=lambda got: bool(got[0]))
        if fell_back:
            result.warnings.append({
                "code": "locale_fallback",
                "message": f"no approved answer in '{locale}'; showing "
                           f"'{cfg.default_locale}' text"})

        # Only the best few articles (the shortlist) can reach the answer; retrieval kept
        # their candidates only. Check those against the database.
        shortlist = list(dict.fromkeys(c.chunk.article_id for c in candidates))
        infos = self._as_indexed(self._served_infos(shortlist), candidates)
        self._version_texts({(i.article_id, i.version, i.content_sha256)
                             for i in infos.values()})
        valid = [c for c in candidates
                 if self._valid(c, infos.get(c.chunk.article_id), q.audience)]
        lead = self._lead(unservable, candidates, valid, infos, q.audience)
        valid = lead_language_first(lead, valid, cfg)
        self._decide(policy, result, valid, infos, redacted, top_k, q.text, lead=lead,
                     catalog=catalog)
        result.latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        self._audit.submit(dict(
            id=query_id, at=self.clock(), caller=q.caller, audience=q.audience, locale=locale,
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

    def evidence(self, q: Question) -> Evidence:
        """What the answer path finds for ``q`` before fusion: the dense and lexical hits
        and which of their chunks the database lets this caller be served now (the same
        re-check as :meth:`ask`). ``kb eval tune`` ranks and decides on it under many
        settings without asking again. Nothing is logged."""
        cat = self.index.catalog()
        views = caller_views(q.audience, self.index.views(cat))
        locale = self._locale(q, views, cat)

        def best(found: Evidence) -> float:  # as confidence() reads the candidates
            cosines = [s for cid, s in found.dense if cid in found.chunks]
            return max(cosines) if cosines else float(
                any(cid in found.chunks for cid, _ in found.lexical))

        return in_locale_or_default(
            self.settings.answer, locale, lambda loc: self._evidence_in(q, views, loc, cat),
            best=best, holds=lambda found: bool(found.chunks))[0]

    def _evidence_in(self, q: Question, views: tuple[str, ...], locale: str,
                     cat: Catalog) -> Evidence:
        n = candidate_count(self.settings.retrieval, q.tags)
        vector, dense = self.index.search(q.text, views=views, locale=locale, n=n, catalog=cat)
        lexical = self.index.lexical(q.text, views=views, locale=locale, n=n, catalog=cat)
        hits = list(dict.fromkeys([cid for cid, _ in dense] + [cid for cid, _ in lexical]))
        found = {cid: c for cid in hits if (c := self.index.chunk(cid, cat)) is not None
                 and (not q.tags or q.tags & set(c.tags))}
        articles = list(dict.fromkeys(c.article_id for c in found.values()))
        self._follow_now()
        infos = self._served_infos(articles)
        self._version_texts({(i.article_id, i.version, i.content_sha256)
                             for i in infos.values()})
        current = {cid: c for cid, c in found.items()
                   if self._current(c, infos.get(c.article_id), q.audience)}
        chunks = {cid: c for cid, c in current.items()
                  if self._servable(c, infos.get(c.article_id))}
        return Evidence(dense=dense, lexical=lexical, chunks=chunks,
                        unservable={cid: c for cid, c in current.items() if cid not in chunks},
                        coverage={cid: self.index.coverage(q.text, cid, cat) for cid in chunks},
                        article_coverage={cid: self.index.article_coverage(q.text, cid, cat)
                                          for cid in chunks},
                        lexical_ceiling=self.index.lexical_ceiling(q.text, cat),
                        sentences=self.index.sentence_scores(vector, hits, cat))

    def _candidates(self, policy: Policy, text: str, vector: Any, views: tuple[str, ...],
                    locale: str, tags: frozenset[str], catalog: Catalog, *,
                    dense: list[tuple[str, float]] | None = None,
                    lexical: list[tuple[str, float]] | None = None,
                    ) -> tuple[list[Candidate], list[tuple[int, Candidate]]]:
        return rank(self.index, question=text, vector=vector, views=views, locale=locale,
                    settings=policy.retrieval, tags=tags, dense=dense, lexical=lexical,
                    articles=SHORTLIST, catalog=catalog)

    def _lacks_approved_language(self, result: AssistResult, lead: Candidate,
                                 info: ServedInfo, question: str) -> None:
        """Escalate ``no_approved_language`` to the team of ``lead``'s high-risk article.
        The handoff names the article and section, never the unservable text."""
        title = info.meta.get("title", lead.chunk.title)
        result.status = ESCALATE
        result.escalation = self._escalation(
            "no_approved_language", info.meta.get("escalate_to"), question,
            [_found_entry(info.article_id, title, info.version,
                          _section(title, lead.chunk.heading_path), lead.chunk.anchor,
                          round(lead.score, 4))],
            f"This question is about '{title}', a high-risk policy, and its approved "
            "language does not answer it: escalate rather than answer from another "
            "article.")

    def _decide(self, policy: Policy, result: AssistResult, valid: list[Candidate],
                infos: dict[str, ServedInfo], question: str, top_k: int,
                raw_question: str = "", *, lead: Candidate | None = None,
                catalog: Catalog) -> None:
        cfg = self.settings.answer

        def coverage(c: Candidate) -> float:
            return self.index.coverage(raw_question, c.chunk.id, catalog)

        def article_coverage(c: Candidate) -> float:
            return self.index.article_coverage(raw_question, c.chunk.id, catalog)

        def lexical_ceiling() -> float:
            return self.index.lexical_ceiling(raw_question, catalog)

        weak = policy.abstains(valid, coverage=coverage, article_coverage=article_coverage,
                               lexical_ceiling=lexical_ceiling)
        if weak and lead_would_answer(policy, lead, valid, coverage=coverage,
                                      article_coverage=article_coverage,
                                      lexical_ceiling=lexical_ceiling):
            assert lead is not None
            self._lacks_approved_language(result, lead, infos[lead.chunk.article_id],
                                          question)
            return
        if weak:
            best = valid[0] if valid else None
            team = None
            if best is not None and confidence(valid) >= cfg.min_score:
                team = infos[best.chunk.article_id].meta.get("escalate_to")
            result.status = NO_ANSWER
            result.escalation = self._escalation(
                "no_answer", team, question,
                self._found([self._passage(best, infos[best.chunk.article_id])]
                            if best and team else []),
                "No approved answer for this question: escalate with this handoff.")
            return

        if lacks_approved_language(lead, valid, cfg):
            assert lead is not None
            self._lacks_approved_language(result, lead, infos[lead.chunk.article_id],
                                          question)
            return

        top = valid[0]
        top_info = infos[top.chunk.article_id]
        if (top_info.freshness.stale and stored_risk(top_info.meta) == "high"
                and cfg.withhold_stale_high_risk):
            result.status = ESCALATE
            result.escalation = self._escalation(
                "stale", top_info.meta.get("escalate_to"), question,
                self._found([self._passage(top, top_info)]),
                f"The approved policy '{top_info.meta.get('title')}' is overdue for review "
                f"(due {top_info.freshness.due_at:%Y-%m-%d}) and is withheld: escalate.")
            return

        def withheld(c: Candidate) -> bool:  # never serve stale high-risk text, even lower
            info = infos[c.chunk.article_id]
            return info.freshness.stale and stored_risk(info.meta) == "high"

        chosen = serve_order(valid, top_k=top_k, min_score=cfg.min_score, withheld=withheld,
                             diversity=cfg.diversity)
        rival = self._rival(top, valid, infos, chosen, catalog=catalog)
        if rival is not None:
            a, b, clash = rival
            a_info, b_info = infos[a.chunk.article_id], infos[b.chunk.article_id]
            result.status = ESCALATE
            result.escalation = self._escalation(
                "ambiguous", a_info.meta.get("escalate_to") or top_info.meta.get("escalate_to"),
                question, self._found([self._passage(a, a_info), self._passage(b, b_info)]),
                f"Two approved articles state different values for the same thing "
                f"('{a_info.meta.get('title')}': {clash.a.label}; "
                f"'{b_info.meta.get('title')}': {clash.b.label}): escalate rather than "
                "choose.")
            return

        for c in chosen:
            info = infos[c.chunk.article_id]
            result.passages.append(self._passage(c, info))
            if info.freshness.stale and cfg.warn_stale:
                result.warnings.append({
                    "code": "stale", "article_id": info.article_id,
                    "message": f"'{info.meta.get('title')}' was due for review on "
                               f"{info.freshness.due_at:%Y-%m-%d}; check with "
                               f"{info.meta.get('owner')} if in doubt"})
        result.status = ANSWERED

    _ledger: Ledger | None = None  # statements of every indexed article (built on first use)

    def _rival(self, top: Candidate, valid: list[Candidate], infos: dict[str, ServedInfo],
               served: Sequence[Candidate] = (), *, catalog: Catalog,
               ) -> tuple[Candidate, Candidate, Clash] | None:
        """Two passages that must not be served together: from unrelated articles, stating
        different values for the same thing — the top passage and a runner-up about as
        close to the question (within ``ambiguity_margin``), or two of those ``served``.
        Statements are extracted once per chunk (cached by text and headings)."""
        assert not valid or valid[0] is top

        def translation_of(article_id: str) -> str:
            extra = infos[article_id].meta.get("extra") or {}
            return str(extra.get("translation_of") or article_id)

        # (the newest catalog if Chroma found a chunk the question's catalog does not hold)
        catalog = self.index.holding([c.chunk.id for c in valid], catalog)
        ledger = self._ledger = self._ledger or Ledger()

        def statements_of(article_id: str) -> Sequence[Statement]:
            return ledger.of(article_id, generation=catalog.generation, chunks=catalog.chunks)

        return disagreement(valid, served, margin=self.settings.answer.ambiguity_margin,
                            idf=catalog.idf, statements_of=statements_of,
                            related=lambda a, b: translation_of(a) == translation_of(b))
