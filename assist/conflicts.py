"""The "no policy drift" guard: what approving a version would change in the answers.

Before a version is approved, each probe question (the eval-suite questions that cite the
article, plus the article's own headings) is asked of the index *with the new version in
place*. Two findings block the approval until it is forced with a note:

- ``conflict``: another approved article answers the question about as well and states the
  same policy with different numbers;
- ``stops_answering``: the article answers the question today but would not with the new
  version (another article would come first, or nothing good enough is left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assist.answer import Assistant, conflicting, word_overlap
from assist.chunks import Chunk, chunk_version
from assist.index import INTERNAL
from kb.models import ArticleVersion


@dataclass(frozen=True)
class Finding:
    kind: str  # conflict | stops_answering
    question: str
    other_article: str | None
    new_text: str | None
    other_text: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def probe_questions(version: ArticleVersion, chunks: Sequence[Chunk],
                    suite_questions: Sequence[str]) -> list[str]:
    headings = {" ".join(dict.fromkeys((c.title, *c.heading_path))) for c in chunks}
    return list(dict.fromkeys([*suite_questions, *sorted(headings)]))


def check_approval(
    assistant: Assistant, *, version: ArticleVersion, served_version: int | None,
    suite_questions: Sequence[str] = (),
) -> list[Finding]:
    """Findings for approving ``version`` (nothing is written anywhere)."""
    index = assistant.index
    cfg = assistant.settings.answer
    new_chunks = chunk_version(article_id=version.article_id, version=version.number,
                               content_sha256=version.content_sha256, text=version.text,
                               max_chars=assistant.settings.index.chunk_max_chars)
    if new_chunks and new_chunks[0].risk == "high":
        new_chunks = [c for c in new_chunks if c.approved]
    questions = probe_questions(version, new_chunks, suite_questions)
    if not questions:
        return []
    qv = index.embedder.embed(questions)
    nv = index.embedder.embed([c.embedding_text() for c in new_chunks]) if new_chunks else None
    findings: list[Finding] = []
    for qi, question in enumerate(questions):
        others = [(index.chunk(cid), sim) for cid, sim in index.dense(
            qv[qi], views=(INTERNAL,), locale=new_chunks[0].locale if new_chunks else "en", n=20)]
        current = [(c, s) for c, s in others if c is not None]
        before_top = current[0][0].article_id if current else None
        rivals = [(c, s) for c, s in current if c.article_id != version.article_id]
        new_sim, new_best = -1.0, None
        if nv is not None:
            sims = nv @ qv[qi]
            j = int(np.argmax(sims))
            new_sim, new_best = float(sims[j]), new_chunks[j]
        rival, rival_sim = rivals[0] if rivals else (None, -1.0)
        if new_best is not None and rival is not None and new_best.approved and rival.approved:
            close = new_sim - rival_sim <= cfg.ambiguity_margin
            if close and rival_sim >= cfg.min_score and word_overlap(
                    new_best.text, rival.text) >= cfg.ambiguity_overlap / 2 and conflicting(
                    new_best.text, rival.text):
                findings.append(Finding(
                    "conflict", question, rival.article_id, new_best.text, rival.text,
                    f"'{rival.article_id}' also answers this with different approved "
                    "language; align the two articles or force with a note"))
                continue
        answered_before = before_top == version.article_id
        answers_after = new_best is not None and new_sim >= cfg.min_score and (
            rival is None or rival_sim - new_sim <= cfg.ambiguity_margin)
        if served_version is not None and answered_before and not answers_after:
            findings.append(Finding(
                "stops_answering", question, rival.article_id if rival else None,
                new_best.text if new_best else None, rival.text if rival else None,
                "the article answers this today but would not after this version"))
    return findings
