"""Build the answer path's parts from settings (called by the CLI and the app factory)."""

from __future__ import annotations

import os

from sqlalchemy import Engine

from assist.answer import Assistant
from assist.embedder import MiniLMEmbedder
from assist.index import ChunkIndex, Embedder
from assist.store import make_chroma_client
from kb.clock import Clock, clock_for
from kb.settings import Settings


def offline_environment() -> None:
    """Make sure no library tries the network (model hubs, telemetry)."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("ANONYMIZED_TELEMETRY", "False"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def make_index(settings: Settings, embedder: Embedder | None = None) -> ChunkIndex:
    offline_environment()
    client = make_chroma_client(settings.data_dir, settings.chroma_url)
    if embedder is None:
        embedder = MiniLMEmbedder(backend=settings.index.embedder,
                                  threads=settings.index.embedder_threads,
                                  query_precision=settings.index.query_precision)
    return ChunkIndex(client=client, embedder=embedder, settings=settings.index)


def make_assistant(settings: Settings, engine: Engine, index: ChunkIndex | None = None,
                   clock: Clock | None = None) -> Assistant:
    return Assistant(engine=engine, index=index or make_index(settings), settings=settings,
                     clock=clock or clock_for(settings.now))
