"""Content gaps by meaning: questions nobody could answer, grouped by what they ask.

"What's the weather tomorrow" and "what will the weather be" share hardly a word but mean
the same; owners should see one gap with two examples, not two gaps. Questions are embedded
with the answer path's model and grouped greedily: each joins the group whose centroid is
closest if the cosine similarity reaches ``threshold``, else starts a new group. Each group
also names the nearest served article, so the owner sees where the answer probably belongs.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assist.index import ChunkIndex
from kb.audience import INTERNAL

_CACHE = 20_000  # question vectors kept between calls (questions repeat)

GapGrouper = Callable[[Sequence[str]], Sequence[int]]


def merge_by_meaning(counts: Mapping[str, int], group: GapGrouper | None) -> Counter[str]:
    """``counts`` of questions, merged by meaning when ``group`` is given (a group number per
    question, e.g. :class:`MeaningGroups`): each gap is named by its most asked wording and
    counts every question of its group."""
    if group is None or len(counts) < 2:
        return Counter(counts)
    questions = list(counts)
    members: dict[int, list[str]] = {}
    for q, g in zip(questions, group(questions), strict=True):
        members.setdefault(g, []).append(q)
    merged: Counter[str] = Counter()
    for qs in members.values():
        name = max(qs, key=lambda q: (counts[q], -len(q)))
        merged[name] = sum(counts[q] for q in qs)
    return merged


class MeaningGroups:
    """Groups questions by meaning and finds each group's nearest article (thread-safe
    enough for the queue: the cache only ever gains identical values)."""

    def __init__(self, index: ChunkIndex, *, threshold: float, locale: str = "en",
                 detect_locale: bool = True) -> None:
        self.index = index
        self.threshold = threshold
        self.locale = locale
        self.detect_locale = detect_locale  # answer.detect_locale, as the answer path reads it
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()

    def _embed(self, questions: Sequence[str]) -> NDArray[np.float32]:
        missing = [q for q in dict.fromkeys(questions) if q not in self._vectors]
        if missing:
            for q, v in zip(missing, self.index.embedder.embed(missing), strict=True):
                self._vectors[q] = v
            while len(self._vectors) > _CACHE:
                self._vectors.popitem(last=False)
        dim = self.index.embedder.dim
        return np.stack([self._vectors[q] for q in questions]) if questions else np.zeros(
            (0, dim), dtype=np.float32)

    def __call__(self, questions: Sequence[str]) -> list[int]:
        """A group number for each question (same number, same meaning)."""
        vectors = self._embed(questions)
        sums: list[NDArray[np.float32]] = []
        labels: list[int] = []
        for v in vectors:
            best, best_sim = -1, self.threshold
            for g, total in enumerate(sums):
                sim = float(v @ (total / np.linalg.norm(total)))
                if sim >= best_sim:
                    best, best_sim = g, sim
            if best < 0:
                sums.append(v.astype(np.float32).copy())
                labels.append(len(sums) - 1)
            else:
                sums[best] = sums[best] + v
                labels.append(best)
        return labels

    def nearest(self, question: str) -> dict[str, Any] | None:
        """The served article closest to the question (any audience staff may see), in the
        locale the question's words read as (:meth:`ChunkIndex.question_locale`), else in
        the default locale (``detect_locale`` off: the default locale only)."""
        vector = self._embed([question])[0]
        catalog = self.index.catalog()
        asked = self.index.asked_locale(question, None, views=(INTERNAL,), default=self.locale,
                                        detect=self.detect_locale, catalog=catalog)
        for locale in dict.fromkeys((asked, self.locale)):
            for cid, score in self.index.dense(vector, views=(INTERNAL,), locale=locale, n=3,
                                               catalog=catalog):
                chunk = self.index.chunk(cid, catalog)
                if chunk is not None:
                    return {"article_id": chunk.article_id, "title": chunk.title,
                            "section": list(chunk.heading_path), "score": round(score, 3)}
        return None
