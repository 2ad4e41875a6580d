"""Sentence vectors: a passage is as close to a question as its closest sentence.

One vector per passage averages everything the passage says; a question about one fact in
a long passage (a fee in a table row, a deadline in the third sentence) matches that fact's
sentence better than the whole. So each passage of two or more sentences also keeps a vector
per sentence (:func:`assist.chunks.sentence_texts`: title and heading path, then the
sentence), stored with the passage in the index, and Canon's fusion reads a passage's dense
score as the better of its own cosine and its best sentence's (:func:`assist.retrieve.fuse`).
The passage's own cosine still decides abstention and is what answers report.

Vectors are kept as int8 with one scale per sentence (a quarter of float32; cosines move by
about 0.01), packed in one text value per passage (:func:`pack`), so they travel with the
passage through every store, Chroma server included, and a passage and its sentences are
written and deleted together. :class:`SentenceVectors` holds a whole catalog's in one matrix
and scores the candidates of one question in a few vectorised steps.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def quantize(vectors: NDArray[np.float32]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Each row as int8 and its scale (row ~= int8 * scale)."""
    scale = np.abs(vectors).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def pack(vectors: NDArray[np.float32]) -> str:
    """Sentence vectors (rows) as one ASCII value: the scales (float32), then the int8 rows
    (rows that are not finite are left out; "" when none is left)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors[np.isfinite(vectors).all(axis=1)]  # a broken row never hides the rest
    if not len(vectors):
        return ""
    q, scale = quantize(vectors)
    return base64.b64encode(scale.tobytes() + q.tobytes()).decode("ascii")


def unpack(value: str, dim: int) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """The inverse of :func:`pack`; a value that does not hold whole rows of ``dim`` raises
    ``ValueError``."""
    raw = base64.b64decode(value.encode("ascii"), validate=True)
    k, rest = divmod(len(raw), 4 + dim)
    if rest or not k:
        raise ValueError(f"sentence vectors of {len(raw)} bytes are not rows of {dim}")
    scale = np.frombuffer(raw[:4 * k], dtype=np.float32)
    q = np.frombuffer(raw[4 * k:], dtype=np.int8).reshape(k, dim)
    return q, scale


class SentenceVectors:
    """The sentence vectors of every passage of a catalog, by passage position."""

    def __init__(self, packed: Sequence[str | None], dim: int) -> None:
        rows: list[NDArray[np.int8]] = []
        scales: list[NDArray[np.float32]] = []
        self.start = np.zeros(len(packed), dtype=np.int64)
        self.count = np.zeros(len(packed), dtype=np.int64)
        at = 0
        for i, value in enumerate(packed):
            if not value or not isinstance(value, str):
                continue  # none, or not ours (written by another tool): no sentences
            try:
                q, s = unpack(value, dim)
            except ValueError:
                continue  # unreadable: the passage keeps its own vector only
            rows.append(q)
            scales.append(s)
            self.start[i], self.count[i] = at, len(s)
            at += len(s)
        self.matrix = (np.concatenate(rows) if rows
                       else np.zeros((0, dim), dtype=np.int8))
        self.scale = np.concatenate(scales) if scales else np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def best_by_id(self, vector: NDArray[np.float32], ids: Sequence[str],
                   positions: Sequence[int]) -> dict[str, float]:
        """:meth:`best` keyed by the passages' ids (``ids[i]`` is at ``positions[i]``), for
        the passages that have sentence vectors only."""
        best = self.best(vector, positions)
        found = np.flatnonzero(~np.isnan(best))  # (this runs on every question)
        return dict(zip([ids[i] for i in found.tolist()], best[found].tolist(), strict=True))

    def best(self, vector: NDArray[np.float32],
             positions: Sequence[int]) -> NDArray[np.float64]:
        """For each passage position: the cosine of ``vector`` (unit length) to its closest
        sentence, NaN for a passage with no sentence vectors."""
        pos = np.asarray(positions, dtype=np.int64)
        out = np.full(len(pos), np.nan)
        counts = np.zeros(len(pos), dtype=np.int64)
        # A catalog built without sentence vectors has none.
        known = (pos >= 0) & (pos < len(self.count))
        counts[known] = self.count[pos[known]]
        has = counts > 0
        if not has.any():
            return out
        counts = counts[has]
        starts = self.start[pos[has]]
        # Row numbers of every sentence of those passages, passage after passage.
        ends = np.cumsum(counts)
        rows = np.arange(ends[-1]) - np.repeat(ends - counts, counts) + np.repeat(starts, counts)
        sims = (self.matrix[rows].astype(np.float32) @ vector.astype(np.float32)) * self.scale[rows]
        out[has] = np.maximum.reduceat(sims, ends - counts)
        return out
