"""The "no policy drift" guard: what approving a version would change in the answers.

Nothing is written anywhere: the new version's servable chunks (for ``risk: high`` articles
only its ``::: approved`` blocks) are compared with everything the index holds, and the
chunks the index would hold for it are put in place of the article's indexed chunks in a
simulated ranking (which, as the answer path, serves only servable ones). Three kinds of
findings block the approval until it is forced with a note:

- ``conflict``: a statement the version changes (an amount, a duration, a percentage) now
  clashes with served text of another article — the same thing with another value — or
  another article still states the value it replaces for the same thing (drift). See
  :mod:`assist.statements`. Every indexed chunk counts, approved block or not.
- ``expectation_broken``: an eval-suite case that expects this article passes with the
  served version and fails with the new one (another article would answer, nothing would,
  the section changes, or a ``contains`` phrase is gone).
- ``stops_answering``: the article answers a probe question today (a suite question or one
  of its own headings) but would not with the new version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assist.acronyms import defined
from assist.answer import (
    ANSWERED,
    ESCALATE,
    NO_ANSWER,
    SHORTLIST,
    Assistant,
    asked_locale,
    disagreement,
    in_locale_or_default,
    lacks_approved_language,
    lead_language_first,
    lead_would_answer,
    serve_order,
)
from assist.calibration import confidence
from assist.catalog import STOPWORDS, LexicalTokenizer
from assist.chunks import Chunk, chunk_version
from assist.retrieve import Candidate, candidate_count, fuse, lead_of, order, uses_sentences
from assist.sentences import SentenceVectors
from assist.statements import (
    Clash,
    Ledger,
    Statement,
    changes,
    chunk_statements,
    clashes,
    drifts,
)
from kb.audience import INTERNAL, caller_views, chunk_views, visible
from kb.models import ArticleVersion

EVAL_TOP_K = 10  # passages a suite case is scored on (as `kb eval run` asks)
BM25_K1, BM25_B = 1.5, 0.75  # the index's BM25 parameters (bm25s defaults)


@dataclass(frozen=True)
class Finding:
    kind: str  # conflict (values or abbreviations) | expectation_broken | stops_answering
    question: str  # the probe question or suite question; for a conflict, where it is
    other_article: str | None
    new_text: str | None
    other_text: str | None
    message: str
    case_id: str | None = None  # expectation_broken: the suite case

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Expectation:
    """An eval-suite case that expects this article (``evals.suites.Case``, as ``assist``
    sees it)."""

    id: str
    question: str
    articles: tuple[str, ...]
    sections: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    answerable: bool = True
    audience: str | None = None
    locale: str | None = None


def probe_questions(version: ArticleVersion, chunks: Sequence[Chunk],
                    suite_questions: Sequence[str]) -> list[str]:
    headings = {" ".join(dict.fromkeys((c.title, *c.heading_path))) for c in chunks}
    return list(dict.fromkeys([*suite_questions, *sorted(headings)]))


def indexed_chunks(assistant: Assistant, version: ArticleVersion) -> list[Chunk]:
    """The chunks of ``version`` the index would hold (for ``risk: high``, the plain text
    too: it finds the article but is never served)."""
    return chunk_version(article_id=version.article_id, version=version.number,
                         content_sha256=version.content_sha256, text=version.text,
                         max_chars=assistant.settings.index.chunk_max_chars)


def check_approval(
    assistant: Assistant, *, version: ArticleVersion, served: ArticleVersion | None,
    suite_questions: Sequence[str] = (), expectations: Sequence[Expectation] = (),
    default_audience: str = INTERNAL,
) -> list[Finding]:
    """Findings for approving ``version`` while ``served`` is served (nothing is written)."""
    new_indexed = indexed_chunks(assistant, version)
    old_indexed = indexed_chunks(assistant, served) if served is not None else []
    # Statements: every indexed chunk counts, approved block or not (as for the other
    # articles, see statement_conflicts).
    findings = statement_conflicts(assistant, article_id=version.article_id,
                                   old=old_indexed, new=new_indexed)
    findings += acronym_conflicts(assistant, article_id=version.article_id,
                                  old=old_indexed, new=new_indexed)
    findings += _stops_answering(assistant, version, served,
                                 [c for c in new_indexed if c.servable], suite_questions)
    if served is not None and expectations:
        # The simulated ranking sees what the index would hold; serving filters it.
        findings += broken_expectations(assistant, article_id=version.article_id,
                                        old=old_indexed, new=new_indexed,
                                        expectations=expectations,
                                        default_audience=default_audience)
    return findings


# --- conflicting statements -------------------------------------------------------------------


def statement_conflicts(assistant: Assistant, *, article_id: str, old: Sequence[Chunk],
                        new: Sequence[Chunk]) -> list[Finding]:
    """``conflict`` findings: statements of ``new`` that ``old`` does not make and that
    clash with, or leave behind, statements of every other indexed article (same locale)."""
    catalog = assistant.index.catalog()
    idf = catalog.idf
    locales = {c.locale for c in new}
    others: dict[str, list[Statement]] = {}
    for c in catalog.chunks:
        if c.article_id != article_id and c.locale in locales:
            others.setdefault(c.article_id, []).extend(chunk_statements(c))
    where = {s: " > ".join(dict.fromkeys((c.title, *c.heading_path)))
             for c in new for s in chunk_statements(c)}
    old_statements = [s for c in old for s in chunk_statements(c)]
    new_statements = [s for c in new for s in chunk_statements(c)]
    findings: list[Finding] = []
    for was, now in changes(old_statements, new_statements):
        for other, statements in others.items():
            found = drifts(was, now, statements, idf) if was is not None else []
            found += clashes([now], statements, idf=idf, directed=True,
                             around=new_statements)
            if found:
                findings.append(_conflict(where[now], other, found[0]))
    return findings


def _conflict(where: str, other: str, clash: Clash) -> Finding:
    new, theirs = clash.a, clash.b
    if clash.was is not None:
        message = (f"this version changes {clash.was.label} to {new.label}, but '{other}' "
                   f"still states {theirs.label} for the same thing: update both articles "
                   "or force with a note")
    else:
        message = (f"this version states {new.label} where '{other}' states {theirs.label} "
                   "for the same thing: align the two articles or force with a note")
    return Finding("conflict", where, other, new.sentence, theirs.sentence, message)


def acronym_conflicts(assistant: Assistant, *, article_id: str, old: Sequence[Chunk],
                      new: Sequence[Chunk]) -> list[Finding]:
    """``conflict`` findings: an abbreviation ``new`` defines ("extra traffic cost (ETC)")
    that another indexed article defines otherwise ("early termination charge (ETC)"),
    unless the served version (``old``) already did. Questions read an abbreviation with
    the knowledge base's one definition of it (:mod:`assist.acronyms`), so two meanings
    change what agents' shorthand finds."""
    if not assistant.settings.index.expand_acronyms:
        return []
    mine = defined((c.text for c in new), stop=STOPWORDS)
    if not mine:
        return []
    before = defined((c.text for c in old), stop=STOPWORDS)
    texts: dict[str, list[str]] = {}
    for c in assistant.index.catalog().chunks:
        if c.article_id != article_id:
            texts.setdefault(c.article_id, []).append(c.text)
    findings = []
    for other, chunk_texts in sorted(texts.items()):
        theirs = defined(chunk_texts, stop=STOPWORDS)
        for abbr, long in sorted(mine.items()):
            if abbr in theirs and theirs[abbr] != long and before.get(abbr) != long:
                findings.append(Finding(
                    "conflict", abbr, other, f"{long} ({abbr})", f"{theirs[abbr]} ({abbr})",
                    f"this version defines {abbr} as '{long}' where '{other}' defines it as "
                    f"'{theirs[abbr]}': questions that say {abbr} would find either; use one "
                    "meaning or spell this one out, or force with a note"))
    return findings


# --- questions the article answers today ------------------------------------------------------


def _stops_answering(assistant: Assistant, version: ArticleVersion,
                     served: ArticleVersion | None, new_chunks: Sequence[Chunk],
                     suite_questions: Sequence[str]) -> list[Finding]:
    if served is None:
        return []
    index = assistant.index
    cfg = assistant.settings.answer
    questions = probe_questions(version, new_chunks, suite_questions)
    if not questions:
        return []
    catalog = index.catalog()  # one catalog throughout, as a question reads one
    qv = index.embed_questions(questions, catalog)  # as the answer path embeds questions
    nv = index.embedder.embed([c.embedding_text() for c in new_chunks]) if new_chunks else None
    locale = new_chunks[0].locale if new_chunks else "en"
    findings: list[Finding] = []
    for qi, question in enumerate(questions):
        hits = index.dense(qv[qi], views=(INTERNAL,), locale=locale, n=20, catalog=catalog)
        current = [(c, s) for cid, s in hits
                   if (c := index.chunk(cid, catalog)) is not None and c.servable]
        before_top = current[0][0].article_id if current else None
        rivals = [(c, s) for c, s in current if c.article_id != version.article_id]
        new_sim, new_best = -1.0, None
        if nv is not None:
            sims = nv @ qv[qi]
            j = int(np.argmax(sims))
            new_sim, new_best = float(sims[j]), new_chunks[j]
        rival, rival_sim = rivals[0] if rivals else (None, -1.0)
        answered_before = before_top == version.article_id
        answers_after = new_best is not None and new_sim >= cfg.min_score and (
            rival is None or rival_sim - new_sim <= cfg.ambiguity_margin)
        if answered_before and not answers_after:
            findings.append(Finding(
                "stops_answering", question, rival.article_id if rival else None,
                new_best.text if new_best else None, rival.text if rival else None,
                "the article answers this today but would not after this version"))
    return findings


# --- suite expectations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the answer path would do for a question (simulated)."""

    status: str  # answered | escalate | no_answer
    passages: tuple[Chunk, ...]
    clash: Clash | None = None  # escalate: the two statements that disagree
    # escalate: the high-risk text that matches best, with no approved language for it
    lead: Chunk | None = None

    @property
    def top(self) -> Chunk | None:
        return self.passages[0] if self.passages else None


def broken_expectations(assistant: Assistant, *, article_id: str, old: Sequence[Chunk],
                        new: Sequence[Chunk], expectations: Sequence[Expectation],
                        default_audience: str = INTERNAL) -> list[Finding]:
    """``expectation_broken`` findings: cases that pass with ``old`` in place of the
    article's indexed chunks and fail with ``new``."""
    if not expectations:
        return []
    sim = Simulation(assistant)
    # As the answer path embeds questions (int8 by default), so the simulation and a live
    # answer agree on borderline cases.
    qv = assistant.index.embed_questions([e.question for e in expectations], sim.catalog)
    findings: list[Finding] = []
    for e, vector in zip(expectations, qv, strict=True):
        audience = e.audience or default_audience
        before = sim.ask(e.question, vector, audience=audience, locale=e.locale,
                         article_id=article_id, chunks=old)
        if failure(e, before) is not None:
            continue  # failing today: not this version's doing
        after = sim.ask(e.question, vector, audience=audience, locale=e.locale,
                        article_id=article_id, chunks=new)
        why = failure(e, after)
        if why is None:
            continue
        top = after.top
        findings.append(Finding(
            "expectation_broken", e.question,
            top.article_id if top is not None and top.article_id != article_id else None,
            top.text if top is not None else None,
            before.top.text if before.top is not None else None,
            f"suite case '{e.id}' passes today but would fail with this version: {why}",
            case_id=e.id))
    return findings


def failure(e: Expectation, outcome: Outcome) -> str | None:
    """Why ``outcome`` fails the case, as a suite run scores it (None: it passes)."""
    answered = outcome.status == ANSWERED
    if not e.answerable:
        return "it would be answered although the case expects an escalation" if (
            answered) else None
    if not answered:
        if outcome.clash is not None:
            return (f"it would be escalated as ambiguous ({outcome.clash.a.label} vs "
                    f"{outcome.clash.b.label})")
        if outcome.lead is not None:
            return (f"it would be escalated: it matches high-risk '{outcome.lead.article_id}' "
                    "best, whose approved language does not answer it")
        return "it would not be answered (no approved answer)"
    top = outcome.top
    assert top is not None
    if e.articles and top.article_id not in e.articles:
        return f"'{top.article_id}' would answer it instead of {', '.join(e.articles)}"
    if e.sections:
        section = top.section
        if section.strip().casefold() not in {s.strip().casefold() for s in e.sections}:
            return f"the answer would come from section '{section}', not '{e.sections[0]}'"
    served = "\n".join(c.text for c in outcome.passages).casefold()
    missing = [p for p in e.contains if p.casefold() not in served]
    if missing:
        return ("the served text would no longer contain "
                + ", ".join(f"'{p}'" for p in missing))
    return None


class Simulation:
    """The answer path's ranking and decision with one article's indexed chunks replaced by
    others (a version not yet indexed), computed beside the index without writing to it:
    dense similarities of the replacement chunks are exact cosines, their BM25 scores use
    the index's statistics. Freshness is left out (approving a version does not change it)."""

    def __init__(self, assistant: Assistant) -> None:
        self.index = assistant.index
        self.settings = assistant.settings
        # The retrieval and abstention the answer path uses now (tuning included).
        with assistant.engine.connect() as conn:
            self.policy = assistant.follow(conn)
        self.catalog = self.index.catalog()
        self._tokenize = LexicalTokenizer()
        self._avgdl: float | None = None
        self._vectors: dict[str, NDArray[np.float32]] = {}
        self._sentences: dict[str, str | None] = {}  # packed sentence vectors, by chunk id
        self._ledger = Ledger()
        self._article_id = ""
        self._chunks: Sequence[Chunk] = ()

    def ask(self, question: str, vector: NDArray[np.float32], *, audience: str,
            locale: str | None, article_id: str, chunks: Sequence[Chunk]) -> Outcome:
        cfg = self.settings.answer
        locale = asked_locale(self.index, cfg, question, locale,
                              caller_views(audience, self.index.views(self.catalog)),
                              self.catalog)
        self._article_id, self._chunks = article_id, chunks
        (candidates, lead), _ = in_locale_or_default(
            cfg, locale, lambda loc: self._candidates(question, vector, audience, loc,
                                                      article_id, chunks),
            best=lambda found: confidence(found[0]), holds=lambda found: bool(found[0]))
        return self._decide(question, candidates, {c.id for c in chunks}, lead)

    def _candidates(self, question: str, vector: NDArray[np.float32], audience: str,
                    locale: str, article_id: str, chunks: Sequence[Chunk],
                    ) -> tuple[list[Candidate], Candidate | None]:
        retrieval = self.policy.retrieval
        views = caller_views(audience, self.index.views(self.catalog))
        n = candidate_count(retrieval, frozenset())
        own = sum(c.article_id == article_id for c in self.catalog.chunks)
        mine = [c for c in chunks if c.locale == locale and visible(c.audience, audience)
                and chunk_views(c.audience) & set(views)]
        by_id = {c.id: c for c in mine}
        self._embed(mine)
        dense: list[tuple[str, float]] = []
        lexical: list[tuple[str, float]] = []
        if retrieval.fusion != "lexical":
            hits = self.index.dense(vector, views=views, locale=locale, n=n + own,
                                    catalog=self.catalog)
            dense = [(cid, s) for cid, s in hits if not cid.startswith(f"{article_id}|")]
            dense += [(c.id, float(self._vector(c) @ vector)) for c in mine]
            dense = sorted(dense, key=lambda t: -t[1])[:n]
        if retrieval.fusion != "dense":
            hits = self.index.lexical(question, views=views, locale=locale, n=n + own,
                                      catalog=self.catalog)
            lexical = [(cid, s) for cid, s in hits if not cid.startswith(f"{article_id}|")]
            lexical += [(c.id, s) for c in mine if (s := self._bm25(question, c)) > 0]
            lexical = sorted(lexical, key=lambda t: -t[1])[:n]
        sentences = None
        if uses_sentences(retrieval):
            ids = dict.fromkeys(cid for cid, _ in [*dense, *lexical] if cid not in by_id)
            sentences = self.index.sentence_scores(vector, ids, self.catalog)
            sentences.update(self._sentence_scores(mine, vector))
        # As the answer path (assist.retrieve.rank): the shortlist of what may be served,
        # and the unservable text ranked above all of it.
        out, unservable = order(fuse(dense, lexical, retrieval, sentences),
                                lambda cid: by_id.get(cid) or self.index.chunk(cid, self.catalog),
                                articles=SHORTLIST)
        lead = lead_of(unservable)
        return lead_language_first(lead, out, self.settings.answer), lead

    def _statements_of(self, article_id: str) -> Sequence[Statement]:
        if article_id == self._article_id:
            return [s for c in self._chunks for s in chunk_statements(c)]
        return self._ledger.of(article_id, generation=self.catalog.generation,
                               chunks=self.catalog.chunks)

    def _decide(self, question: str, valid: list[Candidate], replaced: set[str],
                lead: Candidate | None = None) -> Outcome:
        cfg = self.settings.answer

        def coverage(c: Candidate) -> float:
            return self._coverage(question, c.chunk, replaced)

        def article_coverage(c: Candidate) -> float:
            return self._article_coverage(question, c.chunk, replaced)

        def lexical_ceiling() -> float:
            return self.catalog.lexical_ceiling(self._terms(question))

        if self.policy.abstains(valid, coverage=coverage, article_coverage=article_coverage,
                                lexical_ceiling=lexical_ceiling):
            # As the answer path: the topic of a high-risk article with no approved
            # language for it goes to that article's team.
            if lead_would_answer(self.policy, lead, valid, coverage=coverage,
                                 article_coverage=article_coverage,
                                 lexical_ceiling=lexical_ceiling):
                assert lead is not None
                return Outcome(ESCALATE, (), lead=lead.chunk)
            return Outcome(NO_ANSWER, ())
        if lacks_approved_language(lead, valid, cfg):
            assert lead is not None
            return Outcome(ESCALATE, (), lead=lead.chunk)
        chosen = serve_order(valid, top_k=min(EVAL_TOP_K, cfg.max_top_k),
                             min_score=cfg.min_score, diversity=cfg.diversity)
        rival = disagreement(valid, chosen, margin=cfg.ambiguity_margin, idf=self.catalog.idf,
                             statements_of=self._statements_of)
        if rival is not None:
            return Outcome(ESCALATE, (rival[0].chunk, rival[1].chunk), rival[2])
        return Outcome(ANSWERED, tuple(c.chunk for c in chosen))

    def _terms(self, question: str) -> list[str]:
        """The question's terms as the answer path reads them (typos mended)."""
        return self.index.query_terms(question, self.catalog)

    def _embed(self, chunks: Sequence[Chunk]) -> None:
        missing = [c for c in chunks if c.id not in self._vectors]
        if missing:
            vectors = self.index.embedder.embed([c.embedding_text() for c in missing])
            self._vectors.update(zip([c.id for c in missing], vectors, strict=True))

    def _sentence_scores(self, chunks: Sequence[Chunk],
                         vector: NDArray[np.float32]) -> dict[str, float]:
        """Cosine of ``vector`` to each replacement chunk's closest sentence, from the
        sentence vectors the index would store for it."""
        missing = [c for c in chunks if c.id not in self._sentences]
        if missing:
            self._sentences.update(zip([c.id for c in missing],
                                       self.index.sentence_vectors(missing), strict=True))
        store = SentenceVectors([self._sentences[c.id] for c in chunks], self.index.embedder.dim)
        return store.best_by_id(vector, [c.id for c in chunks], range(len(chunks)))

    def _vector(self, chunk: Chunk) -> NDArray[np.float32]:
        return self._vectors[chunk.id]

    def _avg_doc_len(self) -> float:
        if self._avgdl is None:
            lengths = [len(self._tokenize(c.lexical_text()) or ["_"])
                       for c in self.catalog.chunks]
            self._avgdl = float(np.mean(lengths)) if lengths else 1.0
        return self._avgdl

    def _bm25(self, question: str, chunk: Chunk) -> float:
        """The chunk's BM25 score as the index would give it (Lucene variant, the index's
        IDF and mean document length); query words the index has never seen count 0."""
        doc = self._tokenize(chunk.lexical_text()) or ["_"]
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / self._avg_doc_len())
        score = 0.0
        for t in self._terms(question):
            tf = doc.count(t)
            if tf and t in self.catalog.idf:
                score += self.catalog.idf[t] * tf / (tf + norm)
        return score

    def _coverage(self, question: str, chunk: Chunk, replaced: set[str]) -> float:
        if chunk.id not in replaced:
            return self.index.coverage(question, chunk.id, self.catalog)
        asked, alternatives = self.index.coverage_terms(question, self.catalog)
        return self.catalog.covered(asked, set(self._tokenize(chunk.lexical_text())),
                                    alternatives)

    def _article_coverage(self, question: str, chunk: Chunk, replaced: set[str]) -> float:
        """As :meth:`assist.index.ChunkIndex.article_coverage`; a replacement chunk's article
        is the version being approved (its servable chunks)."""
        if chunk.id not in replaced:
            return self.index.article_coverage(question, chunk.id, self.catalog)
        terms = {t for c in self._chunks for t in self._tokenize(c.lexical_text())}
        asked, alternatives = self.index.coverage_terms(question, self.catalog)
        return self.catalog.covered(asked, terms, alternatives)

