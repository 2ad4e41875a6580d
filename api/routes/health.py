"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlmodel import Session

from api.schemas import HealthOut, ReadyOut
from assist.follower import index_lag
from kb.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "A check failed."}})
def readyz(request: Request, response: Response) -> ReadyOut:
    """The database answers, the index and embedding model are loaded, and the index is
    within ``max_lag_seconds`` of what the database serves (approvals and retirements made
    by any process); ``index_behind`` lists the articles it has not caught up with, and
    ``missing`` names every check that failed (``database``, ``index``, ``rate_limits``...)."""
    checks: dict[str, str] = {}
    try:
        with Session(request.app.state.engine) as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:  # reported, not swallowed: the probe says what is wrong
        checks["database"] = f"error: the database does not answer ({type(exc).__name__})"
    try:
        # Asks the store for its generation: a Chroma server that went away shows here.
        catalog = request.app.state.assistant.index.catalog(check=True)
        checks["index"] = f"ok ({len(catalog.chunks)} chunks)"
    except Unavailable as exc:
        checks["index"] = f"error: {exc}"
    except Exception as exc:
        checks["index"] = f"error: {type(exc).__name__}"
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        checks["rate_limits"] = limiter.ping()
    lag_info: dict[str, object] = {}
    follower = getattr(request.app.state, "follower", None)
    try:
        with Session(request.app.state.engine) as session:
            lag = index_lag(session, request.app.state.assistant.index,
                            now=request.app.state.clock(), check=False)
        bound = request.app.state.settings.index.max_lag_seconds
        lag_info = {"index_lag_seconds": round(lag.seconds, 3), "index_behind": lag.behind}
        if follower is not None and follower.last_error:
            checks["index_follower"] = f"error: {follower.last_error}"
        checks["index_lag"] = (f"ok ({len(lag.behind)} articles behind, {lag.seconds:.1f} s)"
                               if lag.seconds <= bound else
                               f"error: {len(lag.behind)} articles not served for "
                               f"{lag.seconds:.0f} s (bound {bound:.0f} s): "
                               f"{', '.join(lag.behind[:10])}")
    except Exception as exc:
        checks["index_lag"] = f"error: {type(exc).__name__}"
    missing = [name for name, v in checks.items() if not v.startswith("ok")]
    response.status_code = 503 if missing else 200
    return ReadyOut.model_validate({"status": "not ready" if missing else "ready", **checks,
                                    "missing": missing, **lag_info})
