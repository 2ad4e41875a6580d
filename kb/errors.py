"""Every domain error Canon raises. Each says what happened and what to do next.

The API maps these to HTTP status codes in one table (``api/errors.py``) and the CLI to exit
codes in one place (``api/cli.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CanonError(Exception):
    """Base class: ``str(error)`` is a complete, user-facing sentence."""

    code = "canon_error"


class ArticleNotFound(CanonError):
    code = "article_not_found"

    def __init__(self, article_id: str) -> None:
        super().__init__(
            f"article '{article_id}' does not exist; run `kb status` to list articles "
            "or `kb sync` to import the content folder"
        )
        self.article_id = article_id


class VersionNotFound(CanonError):
    code = "version_not_found"

    def __init__(self, article_id: str, version: int, latest: int | None) -> None:
        hint = f"the latest is {latest}" if latest else "it has no versions"
        super().__init__(
            f"article '{article_id}' has no version {version} ({hint}); "
            f"see `kb history {article_id}`"
        )


class QueryNotFound(CanonError):
    code = "query_not_found"

    def __init__(self, query_id: str) -> None:
        super().__init__(f"no assist query with id '{query_id}'; copy the query_id from the "
                         "/v1/assist response")


class FlagNotFound(CanonError):
    code = "flag_not_found"

    def __init__(self, flag_id: int) -> None:
        super().__init__(f"no flag with id {flag_id}; list open flags in the review queue")


class UserNotFound(CanonError):
    code = "user_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no user '{name}'; list users with `kb users list` or add one with "
                         "`kb users add`")


class Unauthenticated(CanonError):
    code = "unauthenticated"


class NotApproved(CanonError):
    """The article has nothing approved to serve or review."""

    code = "not_approved"


class Conflict(CanonError):
    """The requested change would break a governance rule (already approved, superseded...)."""

    code = "conflict"


class ApprovalBlocked(Conflict):
    """Pre-approval findings block the approval; ``findings`` lists them."""

    code = "approval_blocked"

    def __init__(self, findings: list[dict[str, Any]]) -> None:
        kinds = sorted({str(f.get("kind")) for f in findings})
        super().__init__(
            f"approving would change approved answers ({len(findings)} findings: "
            f"{', '.join(kinds)}); fix the articles, or approve with force and a note saying "
            "why (an audited override)")
        self.findings = findings


class Forbidden(CanonError):
    """The actor may not do this (four-eyes rule, wrong team, wrong role)."""

    code = "forbidden"


class InvalidInput(CanonError):
    code = "invalid_input"


@dataclass(frozen=True)
class Problem:
    """One problem found in an article file."""

    path: str
    line: int
    field: str
    message: str
    fix: str
    severity: str = "error"  # "error" blocks the file; "warning" does not

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message} (fix: {self.fix})"


class InvalidArticle(CanonError):
    code = "invalid_article"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class InvalidSettings(InvalidInput):
    """A ``KB_*`` environment variable is unknown or has an invalid value."""

    code = "invalid_settings"


class IndexBusy(CanonError):
    """Another process is the embedded index's writer (a running server)."""

    code = "index_busy"


class Unavailable(CanonError):
    """A shared dependency (the database, the index server, Redis) does not answer."""

    code = "unavailable"
