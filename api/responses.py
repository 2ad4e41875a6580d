"""The error responses each route declares in the OpenAPI, built in one place.

Who sends which body:

- ``{"detail": str}`` (:class:`~api.schemas.AuthErrorOut`): api/auth.py (401, a role's 403,
  429) and the HTTP layer (400 an unparsable body, 413 a body over ``KB_MAX_BODY_BYTES``);
- ``{"error", "detail": str}`` (:class:`~api.schemas.ErrorOut`): the domain's refusals in
  api/errors.py (403 team/four-eyes, 404, 409, 422 ``invalid_input``, 503 ``unavailable``);
- ``{"detail": [issues]}`` (:class:`~api.schemas.RequestInvalidOut`): FastAPI's validation.
"""

from __future__ import annotations

from typing import Any

from api.schemas import AuthErrorOut, ErrorOut, RequestInvalidOut

Responses = dict[int | str, dict[str, Any]]

__all__ = ["Responses", "declare"]


def declare(*, auth: bool = True, role: str | None = None, forbidden: str | None = None,
            body: bool = False, params: bool = False, not_found: str | None = None,
            conflict: str | None = None, invalid_input: str | None = None,
            rate_limited: bool = False, extra: Responses | None = None) -> Responses:
    """Every error status a route can answer, with its body model and a description.

    ``role``: the 403 of a role that may not act (api/auth.py); ``forbidden``: the domain's
    403 (a team or the four-eyes rule). ``body``: the route reads a JSON body (400, 413,
    422); ``params``: it validates path or query parameters (422). Every route that reads
    the database may answer 503 while the database is unreachable.
    """
    out: Responses = {}
    if body:
        out[400] = {"model": AuthErrorOut,
                    "description": "The body is not UTF-8 JSON, or its Content-Length is "
                                   "invalid."}
    if auth:
        out[401] = {"model": AuthErrorOut,
                    "description": "No API token, or an invalid, expired or revoked one."}
    if role or forbidden:
        model: Any = (AuthErrorOut | ErrorOut if role and forbidden
                      else AuthErrorOut if role else ErrorOut)
        out[403] = {"model": model, "description": " ".join(d for d in (role, forbidden) if d)}
    if not_found:
        out[404] = {"model": ErrorOut, "description": not_found}
    if conflict:
        out[409] = {"model": ErrorOut, "description": conflict}
    if body:
        out[413] = {"model": AuthErrorOut,
                    "description": "The body is larger than `KB_MAX_BODY_BYTES` (checked "
                                   "after the token: without a valid one the answer is 401)."}
    if body or params or invalid_input:
        described = "The request does not match the declared parameters or body."
        out[422] = {"model": RequestInvalidOut | ErrorOut if invalid_input else RequestInvalidOut,
                    "description": described + (f" `invalid_input`: {invalid_input}"
                                                if invalid_input else "")}
    if rate_limited:
        out[429] = {"model": AuthErrorOut,
                    "description": "The token's rate limit is reached; see `Retry-After`."}
    out[503] = {"model": ErrorOut,
                "description": "A dependency (the database, the index) is unavailable "
                               "(`unavailable`); retry shortly."}
    for code, spec in (extra or {}).items():
        out[code] = spec
    return out
