"""Who may be served what: the audience rule and the views it partitions the index into.

An article's ``audience`` names labels: ``internal`` (staff), ``vendors`` (every vendor's
agents) and ``vendor:<name>`` (one vendor's agents only). A caller asks as one audience:
``internal``, ``vendors`` or ``vendor:<name>``. The index stores a chunk once in each *view*
its audience names, and a caller queries only the views it may see; :func:`visible` is the
authoritative rule, re-checked before a passage leaves the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

INTERNAL, VENDORS = "internal", "vendors"


def visible(audience: Sequence[str], caller_audience: str) -> bool:
    """The authoritative audience rule (also used to re-check before serving)."""
    if caller_audience == INTERNAL:
        return INTERNAL in audience
    if caller_audience.startswith("vendor:"):
        return VENDORS in audience or caller_audience in audience
    if caller_audience == VENDORS:
        return VENDORS in audience
    return False


def caller_views(audience: str, views: Iterable[str]) -> tuple[str, ...]:
    """The views a caller queries: staff ``internal``; a vendor's agent the shared
    ``vendors`` view plus its own vendor view when one exists; anyone else nothing."""
    if audience == INTERNAL:
        return (INTERNAL,)
    if audience == VENDORS:
        return (VENDORS,)
    if audience.startswith("vendor:"):
        return (VENDORS, audience) if audience in set(views) else (VENDORS,)
    return ()


def chunk_views(audience: Sequence[str]) -> set[str]:
    """The views a chunk with this audience is stored in (one per audience label)."""
    return {a for a in audience if a in (INTERNAL, VENDORS) or a.startswith("vendor:")}
