"""Governance, in one import: what is served, the review clock, the governance acts and the
state they leave. The rules live in the modules named after them; this one re-exports them.

- :mod:`kb.serving`: which version is served (the one rule), the governance clock
- :mod:`kb.freshness`: when a served version falls due for review
- :mod:`kb.approvals`: approve, review, retire (storage primitives; the faces call
  :mod:`kb.workflows`)
- :mod:`kb.status`: articles and versions, statuses, what is stale, history, diff
"""

from __future__ import annotations

from kb.approvals import BulkApproval, approve, approve_all, check_approvable, retire, review
from kb.freshness import Freshness, clock, freshness
from kb.serving import (
    ServedInfo,
    governance_tick,
    pending_versions,
    served_info,
    served_map,
    served_numbers,
    served_version,
)
from kb.status import (
    ArticleStatus,
    diff,
    get_article,
    get_version,
    history,
    stale_articles,
    statuses,
)

__all__ = [
    "ArticleStatus",
    "BulkApproval",
    "Freshness",
    "ServedInfo",
    "approve",
    "approve_all",
    "check_approvable",
    "clock",
    "diff",
    "freshness",
    "get_article",
    "get_version",
    "governance_tick",
    "history",
    "pending_versions",
    "retire",
    "review",
    "served_info",
    "served_map",
    "served_numbers",
    "served_version",
    "stale_articles",
    "statuses",
]
