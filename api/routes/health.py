"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlmodel import Session

from api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "A check failed."}})
def readyz(request: Request, response: Response) -> ReadyOut:
    """The database answers and the index and embedding model are loaded."""
    checks: dict[str, str] = {}
    try:
        with Session(request.app.state.engine) as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:  # reported, not swallowed: the probe says what is wrong
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        catalog = request.app.state.assistant.index.catalog()
        checks["index"] = f"ok ({len(catalog.chunks)} chunks)"
    except Exception as exc:
        checks["index"] = f"error: {type(exc).__name__}"
    ready = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if ready else 503
    return ReadyOut.model_validate({"status": "ready" if ready else "not ready", **checks})
