"""``kb eval draft``: a suite to review, drafted from the questions agents really asked.

``kb eval tune`` calibrates best on an evaluator's own labelled questions, in the words agents
use. Typing a few hundred of them is the slow part; the query log already holds them
(redacted, with what was served and how agents flagged it). A draft turns the most asked
distinct questions into suite cases:

- answered and not flagged as wrong, outdated or missing: ``answerable: true``, expecting the
  top served article and section;
- answered but flagged so: ``answerable: true`` with no expectation (the evaluator names the
  right article);
- escalated or not answered: ``answerable: false``.

Every case carries ``draft: true``, and the suite loader refuses a draft case until someone
has checked it and deleted the key: a suite whose expectations are the system's own answers
would only measure that the system agrees with itself. ``meta`` keeps where each case came
from (query id, when, how often, status, the passages served, the flags), never scored.

Questions are grouped by their wording (case, spacing and trailing punctuation ignored),
within one audience and locale. The eval runner's in-process questions are left out; a gate
run against a server (``kb eval run --url``) asks as its token's user, so give gates a user
of their own and leave it out too (``exclude``, ``--exclude-caller``). Questions and flag
comments are redacted again on the way out, as the review queue shows them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from assist.chunks import chunk_version
from kb.errors import InvalidInput
from kb.models import ArticleVersion, Flag, QueryLog
from kb.redact import redact

# Callers of the eval runner and the tuner (evals/runner.py, evals/tune.py): their questions
# come from suites already.
EVAL_CALLERS = frozenset({"eval", "eval-tune"})
# A flag with one of these reasons says the served answer is not the right one.
NOT_RIGHT = frozenset({"wrong", "outdated", "missing"})
DEFAULT_LIMIT = 300
SERVED_SHOWN = 3  # passages of the newest answer kept in a case's meta
_SPACE = re.compile(r"\s+")
_QUOTES = "\"'\u201c\u201d\u2018\u2019"  # straight and curly quotes


def wording(question: str) -> str:
    """The key two askings of one question share: casefolded, spaces collapsed, trailing
    punctuation and quotes dropped."""
    return _SPACE.sub(" ", question.casefold()).strip().strip(_QUOTES).rstrip("?!. ").strip()


@dataclass
class _Asked:
    newest: str  # the newest asking's query id
    times: int = 0
    flags: list[Flag] = field(default_factory=list)  # on any asking


@dataclass(frozen=True)
class Draft:
    cases: list[dict[str, Any]]
    rows: int  # query-log rows read (the excluded callers' left out)
    distinct: int  # distinct questions among them


BATCH = 2000  # query-log rows read at a time: memory stays flat on a log of any size


def draft_suite(session: Session, *, max_chars: int, since: datetime | None = None,
                limit: int = DEFAULT_LIMIT, exclude: Iterable[str] = ()) -> Draft:
    """The ``limit`` most asked distinct questions since ``since`` (ties: the most recently
    asked first), as draft cases; questions of the eval runner and of the ``exclude``
    callers (a gate's user, say) are left out. ``max_chars``: the index's chunk size, to
    name the section each served passage came from.

    The log is read a batch at a time, four columns only (a count per distinct wording);
    only the chosen questions' rows are then read whole."""
    if limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {limit}")
    skipped = sorted(EVAL_CALLERS | set(exclude))
    where: list[ColumnElement[bool]] = [col(QueryLog.caller).not_in(skipped)]
    if since is not None:
        where.append(col(QueryLog.at) >= since)
    columns = select(QueryLog.id, QueryLog.question, QueryLog.audience, QueryLog.locale) \
        .where(*where).order_by(col(QueryLog.at).desc(), col(QueryLog.id)) \
        .execution_options(yield_per=BATCH)
    asked: dict[tuple[str, str, str], _Asked] = {}
    rows = 0
    for qid, question, audience, locale in session.exec(columns):
        rows += 1
        key = (wording(question), audience, locale)
        if key[0]:
            asked.setdefault(key, _Asked(qid)).times += 1
    # Newest first (the order read), then the most asked first; the sort is stable.
    chosen = dict(sorted(asked.items(), key=lambda kv: -kv[1].times)[:limit])
    newest: dict[str, QueryLog] = {}
    for ids in _batches([a.newest for a in chosen.values()]):
        newest.update((r.id, r) for r in session.exec(
            select(QueryLog).where(col(QueryLog.id).in_(ids))))
    # Flags are few next to askings: read them all (within the window), with the wording
    # of the question each was raised on.
    flagged = select(Flag, QueryLog.question, QueryLog.audience, QueryLog.locale).join(
        QueryLog, col(QueryLog.id) == col(Flag.query_id)).where(*where).order_by(col(Flag.id))
    for flag, question, audience, locale in session.exec(flagged):
        entry = chosen.get((wording(question), audience, locale))
        if entry is not None:
            entry.flags.append(flag)
    sections = _Sections(session, max_chars)
    return Draft([_case(newest[a.newest], a, sections) for a in chosen.values()], rows,
                 len(asked))


def _batches(ids: Sequence[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


class _Sections:
    """The section heading of a served passage, as a suite names it (the last heading of its
    path; the title for text before the first heading)."""

    def __init__(self, session: Session, max_chars: int) -> None:
        self.session = session
        self.max_chars = max_chars
        self._spans: dict[tuple[str, int], list[tuple[int, int, str]]] = {}

    def of(self, article_id: str, version: int, start: int) -> str | None:
        key = (article_id, version)
        if key not in self._spans:
            v = self.session.exec(select(ArticleVersion).where(
                ArticleVersion.article_id == article_id,
                ArticleVersion.number == version)).first()
            self._spans[key] = [] if v is None else [
                (c.start, c.end, c.section)
                for c in chunk_version(article_id=article_id, version=version,
                                       content_sha256=v.content_sha256, text=v.text,
                                       max_chars=self.max_chars)]
        return next((h for s, e, h in self._spans[key] if s <= start < e), None)


def _case(row: QueryLog, a: _Asked, sections: _Sections) -> dict[str, Any]:
    served = [{**{k: p[k] for k in ("article_id", "version", "start", "end")},
               "section": sections.of(p["article_id"], p["version"], p["start"])}
              for p in row.served[:SERVED_SHOWN]]
    not_right = [f for f in a.flags if f.reason in NOT_RIGHT]
    case: dict[str, Any] = {
        "id": "log-" + hashlib.sha256(
            "\x1f".join((wording(row.question), row.audience, row.locale)).encode()
        ).hexdigest()[:12],
        # stored redacted; redacted again on the way out, as the review queue does, for rows
        # kept before the redactor improved (redaction is idempotent)
        "question": redact(row.question),
        "answerable": row.status == "answered",
        "audience": row.audience,
        "locale": row.locale,
        "draft": True,
    }
    if row.status == "answered" and served and not not_right:
        top = served[0]
        case["expect"] = {"articles": [top["article_id"]],
                          **({"section": top["section"]} if top["section"] else {})}
    case["meta"] = {
        "source": "query-log", "query_id": row.id, "asked_at": row.at.isoformat(),
        "asked": a.times, "status": row.status, "reason": row.reason,
        "escalate_to": row.escalate_to, "served": served,
        "flags": [{"reason": f.reason, "comment": redact(f.comment)} for f in a.flags],
        "review": _review(row.status, served, not_right),
    }
    return case


def _review(status: str, served: list[dict[str, Any]], not_right: list[Flag]) -> str:
    """What the evaluator should check before deleting ``draft: true``."""
    if status != "answered":
        return ("no approved answer was served: keep 'answerable: false' if the knowledge "
                "base does not answer this; otherwise set it to true and name the article "
                "under expect.articles")
    if not_right:
        reasons = ", ".join(sorted({f.reason for f in not_right}))
        return (f"an agent flagged the answer ({reasons}): name the article that does "
                "answer it under expect.articles, or set 'answerable: false'")
    if not served:
        return "answered with no passage recorded: name the article under expect.articles"
    return ("the expectation is what was served: confirm the article and section answer "
            "the question, or correct them")


def write_draft(draft: Draft, out: Path, *, force: bool = False) -> None:
    """Write the cases as JSONL; an existing file is kept unless ``force``."""
    check_target(out, force=force)
    text = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in draft.cases)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror or exc}") from exc


def check_target(out: Path, *, force: bool = False) -> None:
    """Refuse a path a draft cannot, or must not, be written to (checked before any work)."""
    if out.suffix != ".jsonl":
        raise InvalidInput(f"{out}: a draft is written as JSONL; name the file *.jsonl")
    if out.is_dir():
        raise InvalidInput(f"{out} is a folder: name a file, e.g. {out / 'draft.jsonl'}")
    if out.exists() and not force:
        raise InvalidInput(f"{out} exists: choose another path, or pass --force to replace "
                           "it (a reviewed draft would be lost)")
    if not out.parent.is_dir():
        raise InvalidInput(f"{out.parent} does not exist: create the folder first, or name "
                           "a file in an existing one")
