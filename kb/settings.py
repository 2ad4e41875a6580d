"""One settings object for the whole system, read from ``KB_*`` environment variables.

Built once at the entry point (CLI, app factory, test fixture) and passed down; nothing here
is created at import time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IndexSettings(BaseModel):
    """How approved text is chunked and indexed."""

    chunk_max_chars: int = 1200
    # How all-MiniLM-L6-v2 runs: ONNX Runtime (fast) or NumPy (reference); same vectors.
    embedder: Literal["onnx", "numpy"] = "onnx"
    embedder_threads: int = Field(default=0, ge=0)  # ONNX Runtime threads; 0 = every core
    hnsw_ef_search: int = 400
    hnsw_ef_construction: int = 200
    hnsw_max_neighbors: int = 32


class RetrievalSettings(BaseModel):
    """Hybrid retrieval tuning (chosen on the demo eval suite; see README)."""

    fusion: Literal["weighted", "rrf", "dense", "lexical"] = "weighted"
    dense_weight: float = Field(default=0.8, ge=0.0, le=1.0)
    rrf_k: int = 60
    candidates: int = Field(default=40, ge=5, le=400)


class AnswerSettings(BaseModel):
    """Answer assembly and guardrails."""

    default_top_k: int = 3
    max_top_k: int = 10
    min_score: float = 0.3  # abstain when the best dense similarity is lower
    min_coverage: float = 0.15  # ...or when the top passage holds too little of the question
    ambiguity_margin: float = 0.08  # cosine gap under which two policies compete
    ambiguity_overlap: float = 0.5  # word overlap above which two policies say "the same"
    withhold_stale_high_risk: bool = True
    warn_stale: bool = True
    default_escalation_team: str = "support-tier2"
    default_locale: str = "en"


class Settings(BaseSettings):
    """Canon settings.

    Every field can be set with ``KB_<NAME>``; nested ones with ``KB_ANSWER__MIN_SCORE``.
    """

    model_config = SettingsConfigDict(
        env_prefix="KB_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Path(".canon")
    database_url: str | None = None
    content_dir: Path = Path("content")
    chroma_url: str | None = None  # a Chroma server; default: embedded under data_dir
    allow_self_approval: bool = False
    assist_rate_per_minute: int = Field(default=600, ge=0)  # per API token; 0 = unlimited
    max_article_bytes: int = Field(default=512 * 1024, ge=1024)
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    answer: AnswerSettings = AnswerSettings()

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'canon.db').resolve()}"

    def fingerprint(self) -> str:
        """A short hash of every setting that changes answers (recorded with eval runs)."""
        payload = {
            "index": self.index.model_dump(),
            "retrieval": self.retrieval.model_dump(),
            "answer": self.answer.model_dump(),
        }
        raw = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]
