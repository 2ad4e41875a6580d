"""Canon against plain baselines on the same content, in one run.

- ``bm25``: Canon's pipeline with only the lexical retriever;
- ``dense``: Canon's pipeline with only the dense retriever;
- ``rrf``: Canon's pipeline with reciprocal rank fusion of the two retrievers;
- ``llama-index``: llama-index defaults — ``VectorStoreIndex`` over whole served documents
  with the default splitter and the same embedding model, top-10 nodes, no guardrails. The
  default splitter (1,024 tokens) keeps most articles as one node starting at the front
  matter, so it cannot point at a section: its section hit@1 is 0 by construction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from assist.answer import Assistant
from evals.metrics import CaseResult, summarize
from evals.runner import VerbatimChecker, expectation, in_process, run_suite
from evals.suites import Suite, load_suite
from evals.workspace import Workspace, known_articles, scratch_workspace
from kb.articles import parse_article
from kb.audience import visible
from kb.governance import served_numbers
from kb.models import ArticleVersion
from kb.settings import Settings

ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


def _variant(ws: Workspace, fusion: str) -> Assistant:
    settings = ws.settings.model_copy(update={
        "retrieval": ws.settings.retrieval.model_copy(update={"fusion": fusion})})
    return Assistant(engine=ws.engine, index=ws.assistant.index, settings=settings)


def llama_index_results(ws: Workspace, suite: Suite, default_audience: str,
                        progress: Callable[[int, int], None] | None = None) -> list[CaseResult]:
    """The llama-index default pipeline, judged with the same metrics."""
    from llama_index.core import Document, VectorStoreIndex

    from evals.llama_adapter import as_llama_index_embedding

    # The model is passed explicitly; llama-index's global Settings are neither set nor read
    # (no LLM is involved, and no default model is ever resolved, so nothing reaches OpenAI).
    embed = as_llama_index_embedding(ws.assistant.index.embedder)
    with Session(ws.engine) as s:
        served = served_numbers(s)
        versions = [v for v in s.exec(select(ArticleVersion)).all()
                    if served.get(v.article_id) == v.number]
    docs, sections = [], {}
    for v in versions:
        docs.append(Document(text=v.text, doc_id=v.article_id,
                             metadata={"article_id": v.article_id}))
        parsed = parse_article(v.text, path=v.article_id)
        sections[v.article_id] = (v.text, [(s.start, s.end, s.heading) for s in parsed.sections],
                                  list(v.meta.get("audience", [])))
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=10)
    results = []
    for i, case in enumerate(suite.cases, 1):
        audience = case.audience or default_audience
        t0 = time.perf_counter()
        nodes = [n for n in retriever.retrieve(case.question)
                 if visible(sections[n.node.metadata["article_id"]][2], audience)]
        latency = (time.perf_counter() - t0) * 1000
        ranked = tuple(n.node.metadata["article_id"] for n in nodes)
        top_section = None
        ok = True
        texts = []
        for j, n in enumerate(nodes):
            text, secs, _ = sections[n.node.metadata["article_id"]]
            start = getattr(n.node, "start_char_idx", None)
            body = n.node.get_content()
            texts.append(body)
            if start is None or text[start:start + len(body)] != body:
                ok = False
            if j == 0 and start is not None:
                top_section = next((h for s0, e0, h in reversed(secs) if s0 <= start), None)
        results.append(CaseResult(
            **expectation(case), status="answered" if nodes else "no_answer",
            ranked_articles=ranked, top_section=top_section,
            served_text="\n".join(texts[:3]), verbatim_ok=ok, latency_ms=latency))
        if progress:
            progress(i, len(suite.cases))
    return results


def run_bench(*, suite_path: Path, content: Path, settings: Settings, default_audience: str,
              progress: ProgressFactory) -> dict[str, dict[str, Any]]:
    """Metrics per system: canon, bm25, dense, rrf, llama-index."""
    columns: dict[str, dict[str, Any]] = {}
    with scratch_workspace(content, settings) as ws:
        suite = load_suite(suite_path, known_articles=known_articles(ws.engine))
        checker = VerbatimChecker(ws.engine)
        for name, assistant in (("canon", ws.assistant), ("bm25", _variant(ws, "lexical")),
                                ("dense", _variant(ws, "dense")), ("rrf", _variant(ws, "rrf"))):
            with progress(name) as update:
                runs = run_suite(suite, ask=in_process(assistant), checker=checker,
                                 default_audience=default_audience, progress=update)
            columns[name] = summarize([r.result for r in runs])
        with progress("llama-index") as update:
            columns["llama-index"] = summarize(
                llama_index_results(ws, suite, default_audience, update))
    return columns
