"""``GET /metrics``: Prometheus text format (api/metrics.py says what is counted).

Not in the OpenAPI (it is not JSON, and scrapers need no schema). Like /healthz and /readyz
it needs no token: serve it on an internal network, as usual for Prometheus.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.metrics import Metrics
from assist.follower import index_lag
from kb.governance import statuses

router = APIRouter(tags=["health"])


def _refresh(request: Request, metrics: Metrics) -> None:
    """Index size and lag and the stale count, read now. A part that cannot be read keeps
    its last value; /readyz names what is wrong."""
    state = request.app.state
    now = state.clock()
    with Session(state.engine) as session:
        metrics.stale.set(sum(1 for s in statuses(session, now=now)
                              if s.freshness is not None and s.freshness.stale
                              and s.served_version is not None))
        assistant = getattr(state, "assistant", None)
        if assistant is not None:
            metrics.index_chunks.set(len(assistant.index.catalog().chunks))
            lag = index_lag(session, assistant.index, now=now, check=False)
            metrics.index_lag.set(lag.seconds)
            metrics.index_behind.set(len(lag.behind))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    await run_in_threadpool(_refresh, request, m)
    body, content_type = m.render()
    return Response(body, media_type=content_type)
