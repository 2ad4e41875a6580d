"""``/metrics`` in the Prometheus text format, through prometheus-client.

What it counts:

- ``canon_http_requests_total{route, method, status}`` and
  ``canon_http_request_duration_seconds{route, method}`` (a histogram): every request, by
  route template (``/v1/articles/{article_id}``: ids never become labels), including the
  401/413 the body limit answers before a route runs;
- ``canon_assist_outcomes_total{status, reason, audience}``: answered / escalate /
  no_answer, with the escalation reason (``none`` when answered);
- ``canon_approval_duration_seconds``: approvals through the API, checks included;
- ``canon_index_chunks``, ``canon_index_lag_seconds``, ``canon_index_behind_articles`` and
  ``canon_stale_articles``: read from the database and the index when scraped.

With several workers (``kb serve --workers N``) prometheus-client runs in multiprocess mode:
``PROMETHEUS_MULTIPROC_DIR`` names a directory every worker writes its samples to (``kb
serve`` creates one when it is unset), and whichever worker answers the scrape sums them.
The metric objects belong to the app (:class:`Metrics`, built by the app factory), never to
the module.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "RequestMetrics", "multiprocess_dir"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """The app's metrics. In multiprocess mode they are registered nowhere (their samples go
    to the shared directory) and a scrape collects every worker's files; otherwise they live
    in this app's own registry (two apps in one process never collide)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=reg, multiprocess_mode="livemostrecent")

        self.requests = Counter("canon_http_requests", "HTTP requests by route template, "
                                "method and status.", ["route", "method", "status"],
                                registry=reg)
        self.latency = Histogram("canon_http_request_duration_seconds", "HTTP request "
                                 "latency by route template and method.", ["route", "method"],
                                 buckets=_LATENCY_BUCKETS, registry=reg)
        self.outcomes = Counter("canon_assist_outcomes", "Assist decisions by status, "
                                "escalation reason and audience.",
                                ["status", "reason", "audience"], registry=reg)
        self.approvals = Histogram("canon_approval_duration_seconds", "Approvals through the "
                                   "API, checks included.", buckets=(*_LATENCY_BUCKETS, 30.0),
                                   registry=reg)
        self.index_chunks = gauge("canon_index_chunks",
                                  "Chunks in the index (high-risk plain text included).")
        self.index_lag = gauge("canon_index_lag_seconds", "How long the oldest change the "
                               "index has not caught up with has been waiting.")
        self.index_behind = gauge("canon_index_behind_articles", "Articles whose served "
                                  "version the index has not caught up with.")
        self.stale = gauge("canon_stale_articles", "Served articles past their review date.")

    def assist_outcome(self, *, status: str, reason: str | None, audience: str) -> None:
        self.outcomes.labels(status=status, reason=reason or "none", audience=audience).inc()

    def render(self) -> tuple[bytes, str]:
        """The scrape: every worker's samples in multiprocess mode, else this app's."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request (outermost, so refusals
    made before a route runs are counted too)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(route=template, method=method,
                                         status=str(status)).inc()
            self.metrics.latency.labels(route=template, method=method).observe(
                time.perf_counter() - started)
