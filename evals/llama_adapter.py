"""Canon's embedder as a llama-index ``BaseEmbedding``, for the "llama-index defaults" baseline.

The benchmark (``evals.baselines``) builds llama-index's default pipeline over the same served
documents with the *same* embedding model Canon uses, so the comparison measures the pipeline
and not the model. This adapter is benchmark plumbing only: Canon's answer path never goes
through llama-index embeddings. Apps that want Canon *from* llama-index use
``assist.llama.CanonRetriever`` instead.

The adapter is passed to llama-index explicitly (``embed_model=...``); llama-index's global
``Settings`` are neither set nor read, so nothing can fall back to a networked default model.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from assist.index import Embedder

__all__ = ["CanonEmbedding", "as_llama_index_embedding"]


class CanonEmbedding(BaseEmbedding):
    """A llama-index embedding model backed by a Canon :class:`~assist.index.Embedder`."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(model_name=embedder.model_name, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "CanonEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return [float(v) for v in self._embedder.embed_query(query)]

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(v) for v in self._embedder.embed_query(text)]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [[float(v) for v in row] for row in self._embedder.embed(texts)]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._get_text_embeddings(texts)


def as_llama_index_embedding(embedder: Embedder) -> CanonEmbedding:
    """Wrap ``embedder`` as a llama-index ``BaseEmbedding``."""
    return CanonEmbedding(embedder)
