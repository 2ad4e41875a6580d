"""Canon as a llama-index retriever: governed, verbatim retrieval for llama-index apps.

    from assist.llama import CanonRetriever
    retriever = CanonRetriever.from_url("http://127.0.0.1:8000", token=TOKEN)
    nodes = retriever.retrieve("can I get a refund 20 days into an annual plan?")

or in process, over an :class:`~assist.answer.Assistant`::

    retriever = CanonRetriever.from_assistant(assistant, audience="vendor:acme")

Every node is one passage Canon served, through the same answer path as ``POST /v1/assist``
(audience scoping, served-version re-checks, risk and staleness rules, the query log):

- ``node.text`` is the approved text **verbatim** — ``version.text[start:end]`` of the served
  version; its sha256 is checked against the citation's ``passage_sha256`` on arrival;
- ``node.metadata`` is the full citation (:data:`CITATION_KEYS`) plus ``query_id``, ``status``
  and ``warnings`` (codes, e.g. ``["stale"]``; the messages are on :class:`CanonRetrieval`);
- an LLM prompt built from a node shows only :data:`LLM_METADATA_KEYS` next to the text (the
  rest is in ``excluded_llm_metadata_keys``); embedding text sees only the title and section;
- ``node.start_char_idx`` / ``end_char_idx`` are the span in the version, and the node's
  ``SOURCE`` relationship names the article version (``canon:<article_id>@<version>``).

When Canon does not answer (status ``escalate`` or ``no_answer``), ``retrieve`` returns no
nodes and the handoff (team, reason, redacted question, what was found, message) is available
as :attr:`CanonRetriever.last_escalation`. ``last_result`` / ``last_escalation`` belong to the
calling thread or asyncio task, so a retriever shared by threads or tasks never shows one
caller another caller's handoff. Where even that is too implicit (``asyncio.gather`` runs each
call in its own task), :meth:`CanonRetriever.assist` / :meth:`CanonRetriever.aassist` return a
:class:`CanonRetrieval` holding the nodes, the status, the warnings and the escalation.

Nothing here generates text or embeds anything: no llama-index LLM or embedding model is used,
and llama-index's global ``Settings`` are never read or set. The HTTP client is the standard
library's ``urllib`` (honouring the usual proxy variables); any client with an httpx-style
``post(url, json=..., headers=...)`` — an ``httpx.Client``, FastAPI's ``TestClient`` — can be
passed instead.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from pydantic import TypeAdapter

from assist.answer import ANSWERED, Assistant, AssistResult, Escalation, Question
from assist.chunks import passage_sha256
from kb.errors import CanonError, Forbidden, InvalidInput, Unauthenticated

__all__ = [
    "CITATION_KEYS",
    "EMBED_METADATA_KEYS",
    "LLM_METADATA_KEYS",
    "CanonRetrieval",
    "CanonRetriever",
    "HttpClient",
]

#: The citation of a served passage, as in ``POST /v1/assist``; all of them are node metadata.
CITATION_KEYS = ("article_id", "title", "version", "content_sha256", "section", "anchor",
                 "start", "end", "passage_sha256", "owner", "approved_at", "last_reviewed",
                 "risk", "locale")
#: Metadata shown to an LLM next to the passage: enough to cite it, nothing to paraphrase.
LLM_METADATA_KEYS = ("article_id", "title", "version", "section")
#: Metadata included when a node's content is embedded.
EMBED_METADATA_KEYS = ("title", "section")

_ESCALATION_FIELDS = tuple(f.name for f in fields(Escalation))
_RESULT_JSON: TypeAdapter[AssistResult] = TypeAdapter(AssistResult)

# Per thread / asyncio task: each retriever's latest result (weakly keyed, so it goes with the
# retriever). The mapping is replaced, never mutated, so contexts never share a change.
_LAST: ContextVar[weakref.WeakKeyDictionary[CanonRetriever, CanonRetrieval] | None] = (
    ContextVar("canon_last_retrieval", default=None))


@dataclass(frozen=True)
class CanonRetrieval:
    """One question's outcome: the nodes, or no nodes and the escalation handoff."""

    query_id: str
    status: str  # answered | escalate | no_answer
    nodes: list[NodeWithScore] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    escalation: Escalation | None = None

    @property
    def answered(self) -> bool:
        return self.status == ANSWERED


class HttpClient(Protocol):
    """What the HTTP path needs of an injected client (``httpx.Client``, ``TestClient``)."""

    def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Any: ...


Source = Callable[[str], Mapping[str, Any]]
"""Asks Canon one question; returns the ``POST /v1/assist`` response body as JSON data."""


class _InProcess:
    """The in-process answer path: ``Assistant.ask``, serialised as the API serialises it."""

    def __init__(self, assistant: Assistant, *, audience: str, caller: str,
                 locale: str | None, tags: frozenset[str], top_k: int | None) -> None:
        self.assistant = assistant
        self.audience, self.caller = audience, caller
        self.locale, self.tags, self.top_k = locale, tags, top_k

    def __call__(self, question: str) -> Mapping[str, Any]:
        result = self.assistant.ask(Question(
            text=question, audience=self.audience, caller=self.caller, locale=self.locale,
            tags=self.tags, top_k=self.top_k))
        data: dict[str, Any] = _RESULT_JSON.dump_python(result, mode="json")
        return data


class _Http:
    """A running server's ``POST /v1/assist``, authenticated with a Bearer token."""

    def __init__(self, base_url: str, *, token: str, client: HttpClient | None,
                 timeout: float, locale: str | None, tags: frozenset[str],
                 top_k: int | None) -> None:
        self.url = base_url.rstrip("/") + "/v1/assist"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                         "Content-Type": "application/json"}
        self.client, self.timeout = client, timeout
        self.locale, self.tags, self.top_k = locale, tags, top_k

    def __call__(self, question: str) -> Mapping[str, Any]:
        body: dict[str, Any] = {"question": question}
        if self.locale is not None:
            body["locale"] = self.locale
        if self.tags:
            body["tags"] = sorted(self.tags)
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.client is not None:
            response = self.client.post(self.url, json=body, headers=dict(self._headers))
            status, payload = int(response.status_code), bytes(response.content)
        else:
            status, payload = self._urllib(body)
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = None
        if status != 200:
            raise _http_error(self.url, status, data, payload)
        if not isinstance(data, dict):
            raise CanonError(f"{self.url} answered 200 without a JSON object; check that the "
                             "URL points at a Canon server")
        return data

    def _urllib(self, body: dict[str, Any]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"),
                                         headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), bytes(exc.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CanonError(f"cannot reach Canon at {self.url} ({reason}); check the URL and "
                             "that the server is running (`kb serve`)") from exc


def _http_error(url: str, status: int, data: Any, payload: bytes) -> CanonError:
    """The domain error for a non-200 answer, with the server's own explanation."""
    detail: Any = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list):  # request validation: "field: message" per problem
        detail = "; ".join(_problem(d) for d in detail)
    if not detail:
        detail = payload[:200].decode("utf-8", "replace").strip() or "no details"
    if status == 401:
        return Unauthenticated(f"Canon at {url} rejected the API token (401): {detail}")
    if status == 403:
        return Forbidden(f"Canon at {url} refused the request (403): {detail}")
    if status == 422:
        return InvalidInput(f"Canon at {url} rejected the question (422): {detail}")
    return CanonError(f"Canon at {url} answered HTTP {status}: {detail}")


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(p) for p in item.get("loc") or () if p != "body")
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", item))


def _node(passage: Mapping[str, Any], *, query_id: str, status: str,
          warnings: Iterable[Mapping[str, str]]) -> NodeWithScore:
    citation = passage.get("citation") or {}
    missing = [k for k in CITATION_KEYS if k not in citation]
    if missing:
        raise CanonError(f"a served passage came without {', '.join(missing)} in its "
                         "citation; client and server versions disagree — upgrade the older")
    text = passage["text"]
    if passage_sha256(text) != citation["passage_sha256"]:
        raise CanonError(f"the passage of {citation['article_id']} v{citation['version']} "
                         f"[{citation['start']}:{citation['end']}] does not match its "
                         "passage_sha256: it was altered in transit; do not use it")
    article_id = citation["article_id"]
    metadata: dict[str, Any] = {k: citation[k] for k in CITATION_KEYS}
    metadata["query_id"] = query_id
    metadata["status"] = status
    metadata["warnings"] = [w["code"] for w in warnings
                            if w.get("article_id") in (None, article_id)]
    source = f"canon:{article_id}@{citation['version']}"
    node = TextNode(
        id_=f"{source}:{citation['start']}-{citation['end']}",
        text=text,
        metadata=metadata,
        excluded_llm_metadata_keys=[k for k in metadata if k not in LLM_METADATA_KEYS],
        excluded_embed_metadata_keys=[k for k in metadata if k not in EMBED_METADATA_KEYS],
        start_char_idx=citation["start"],
        end_char_idx=citation["end"],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(
            node_id=source, hash=citation["content_sha256"])},
    )
    return NodeWithScore(node=node, score=float(passage["score"]))


def _retrieval(data: Mapping[str, Any]) -> CanonRetrieval:
    """A ``POST /v1/assist`` body as nodes (answered) or an escalation (anything else)."""
    status, query_id = str(data["status"]), str(data["query_id"])
    warnings = [dict(w) for w in data.get("warnings") or []]
    raw = data.get("escalation")
    escalation = Escalation(**{k: raw[k] for k in _ESCALATION_FIELDS}) if raw else None
    nodes = [] if status != ANSWERED else [
        _node(p, query_id=query_id, status=status, warnings=warnings)
        for p in data.get("passages") or []]
    return CanonRetrieval(query_id=query_id, status=status, nodes=nodes, warnings=warnings,
                          escalation=escalation)


def _question(query: str | QueryBundle) -> str:
    text = (query.query_str if isinstance(query, QueryBundle) else query).strip()
    if not text:
        raise InvalidInput("the question is blank; send the agent's question")
    return text


class CanonRetriever(BaseRetriever):
    """A llama-index retriever over Canon's governed answer path.

    Build it with :meth:`from_url` (a running server, Bearer token) or :meth:`from_assistant`
    (in process). See the module docstring for what nodes carry and how escalations surface.
    """

    def __init__(self, source: Source, *, callback_manager: CallbackManager | None = None,
                 verbose: bool = False) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._source = source

    @classmethod
    def from_url(cls, base_url: str, *, token: str, client: HttpClient | None = None,
                 timeout: float = 30.0, locale: str | None = None,
                 tags: Iterable[str] = (), top_k: int | None = None,
                 callback_manager: CallbackManager | None = None) -> CanonRetriever:
        """Ask a Canon server (``base_url`` as ``http://host:port``) with an API token.

        The token decides the audience, exactly as for any other API caller. ``client``
        replaces the standard-library HTTP client (e.g. ``httpx.Client()`` or a FastAPI
        ``TestClient``).
        """
        if not token:
            raise Unauthenticated("pass an API token (create one with "
                                  "`kb tokens create --user NAME`)")
        source = _Http(base_url, token=token, client=client, timeout=timeout, locale=locale,
                       tags=frozenset(t.lower() for t in tags), top_k=top_k)
        return cls(source, callback_manager=callback_manager)

    @classmethod
    def from_assistant(cls, assistant: Assistant, *, audience: str,
                       caller: str = "llama-index", locale: str | None = None,
                       tags: Iterable[str] = (), top_k: int | None = None,
                       callback_manager: CallbackManager | None = None) -> CanonRetriever:
        """Ask the in-process answer path as ``audience`` (e.g. ``"internal"``,
        ``"vendor:acme"``); ``caller`` is the name recorded in the query log."""
        if not audience:
            raise InvalidInput("say which audience the retriever answers for, e.g. "
                               "audience='vendor:acme' or audience='internal'")
        source = _InProcess(assistant, audience=audience, caller=caller, locale=locale,
                            tags=frozenset(t.lower() for t in tags), top_k=top_k)
        return cls(source, callback_manager=callback_manager)

    # --- results with their handoff ----------------------------------------------------

    def assist(self, query: str | QueryBundle) -> CanonRetrieval:
        """Ask Canon; the nodes together with the status, warnings and any escalation."""
        return self._remember(_retrieval(self._source(_question(query))))

    async def aassist(self, query: str | QueryBundle) -> CanonRetrieval:
        """:meth:`assist` without blocking the event loop (the call runs in a worker thread)."""
        data = await asyncio.to_thread(self._source, _question(query))
        return self._remember(_retrieval(data))

    @property
    def last_result(self) -> CanonRetrieval | None:
        """This thread's (or asyncio task's) latest result from this retriever."""
        last = _LAST.get()
        return last.get(self) if last is not None else None

    @property
    def last_escalation(self) -> Escalation | None:
        """The handoff of this thread's (or task's) latest question, if Canon escalated."""
        result = self.last_result
        return result.escalation if result is not None else None

    def _remember(self, result: CanonRetrieval) -> CanonRetrieval:
        last = _LAST.get()
        mine: weakref.WeakKeyDictionary[CanonRetriever, CanonRetrieval] = (
            weakref.WeakKeyDictionary(last) if last is not None else weakref.WeakKeyDictionary())
        mine[self] = result
        _LAST.set(mine)
        return result

    # --- llama-index ---------------------------------------------------------------------

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.assist(query_bundle).nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return (await self.aassist(query_bundle)).nodes
