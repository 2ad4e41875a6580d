"""One settings object for the whole system, read from ``KB_*`` environment variables.

Built once at the entry point (CLI, app factory, test fixture) and passed down; nothing here
is created at import time. Entry points build it with :meth:`Settings.from_env`, which refuses
unknown ``KB_*`` variables (a typo would otherwise be ignored silently) and turns invalid
values into :class:`~kb.errors.InvalidSettings`.

Every setting carries a description; the README's settings table is generated from them:
``python -m kb.settings --write README.md`` (or ``python -m kb.settings`` to print it).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from kb.errors import InvalidSettings

ENV_PREFIX = "KB_"
NESTED_DELIMITER = "__"

# ``KB_*`` variables read by something other than Settings; they are not settings, yet valid.
FOREIGN_VARIABLES: dict[str, str] = {
    "KB_TEST_DATABASE_URL": "PostgreSQL URL the test suite also runs against (tests only).",
    "KB_TEST_REDIS_URL": "Redis URL the shared rate-limit tests use (tests only).",
    "KB_TOKEN": "API token for `kb eval run --url` (the `--token` option).",
}

TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


class IndexSettings(BaseModel):
    """How approved text is chunked and indexed."""

    typo_tolerance: bool = Field(
        default=True,
        description="Mend misspelt question terms for BM25 and the coverage checks: a term "
                    "this index never uses (5+ letters, no digits) is read as the known term "
                    "one edit away that most passages use. Numbers are never changed.")
    expand_acronyms: bool = Field(
        default=True,
        description="Read an abbreviation a question uses (\"ETC\", as written) with the "
                    "long form this knowledge base defines for it (\"early termination "
                    "charge (ETC)\"), for BM25, the question vector and the coverage checks. "
                    "Only definitions found in approved text count.")
    chunk_max_chars: int = Field(
        default=1200, ge=1,
        description="Longest chunk of approved text indexed and served as one passage "
                    "(part of the index's collection name: changing it re-indexes).")
    embedder: Literal["onnx", "numpy"] = Field(
        default="onnx",
        description="How all-MiniLM-L6-v2 runs: ONNX Runtime (fast) or NumPy (reference); "
                    "same vectors.")
    query_precision: Literal["fp32", "int8"] = Field(
        default="int8",
        description="Precision of the questions' embedding with the ONNX embedder: int8 "
                    "(quantized weights) served 6-9% more questions per second (2 workers, "
                    "2 cores) at the same retrieval quality; documents are always float32, "
                    "so switching never re-indexes.")
    embedder_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime threads per forward pass; 0 = every core.")
    memory_search_max_chunks: int = Field(
        default=50_000, ge=0,
        description="Up to this many indexed chunk copies (a chunk counts once per audience "
                    "view it is stored in), each process also keeps the vectors in memory "
                    "(1.5 KB per chunk, and a few times that while a catalog loads) "
                    "and answers the dense query there: an exact search, faster than a "
                    "Chroma query; above it, or 0, Chroma's HNSW answers it.")
    hnsw_ef_search: int = Field(
        default=400, ge=1, description="Chroma HNSW search breadth (higher: better recall, "
                                       "slower queries).")
    hnsw_ef_construction: int = Field(
        default=200, ge=1, description="Chroma HNSW build breadth (used when a collection "
                                       "is created).")
    hnsw_max_neighbors: int = Field(
        default=32, ge=2, description="Chroma HNSW links per node (used when a collection "
                                      "is created).")
    follow_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often a server checks the database for "
        "approvals and retirements made by other processes (then re-indexes them).")
    max_lag_seconds: float = Field(
        default=30.0, gt=0, description="Longest a server keeps serving the previous approved "
        "version while its index catches up; beyond it the article is hidden and /readyz "
        "says not ready.")
    writer_lock_wait_seconds: float = Field(
        default=10.0, ge=0, description="How long a starting server waits for the embedded "
        "index's writer lock (held by another server or a CLI command) before giving up.")


class RetrievalSettings(BaseModel):
    """Hybrid retrieval tuning (measured on the demo, govt and cloud suites; see README)."""

    fusion: Literal["weighted", "rrf", "dense", "lexical", "zscore", "article"] = Field(
        default="article",
        description="How dense and BM25 hits combine. `article`: `weighted` plus "
                    "`article_support` x the second-best chunk of the same article version, "
                    "added to each of its chunks (ahead of `weighted` on the demo, govt and "
                    "cloud suites; docs/quality-baseline.md); `weighted`: dense_weight x "
                    "cosine + the rest x BM25 / best BM25; `rrf`: reciprocal rank fusion; "
                    "`zscore`: scores standardised per query (measured worse); `dense` / "
                    "`lexical`: one retriever alone (baselines).")
    dense_weight: float = Field(
        default=0.8, ge=0.0, le=1.0,
        description="Weight of the cosine score in `weighted` and `article` fusion (BM25 "
                    "gets the rest).")
    article_support: float = Field(
        default=0.15, ge=0.0, le=1.0,
        description="In `article` fusion, the share of an article's second-best chunk added "
                    "to each of its chunks' scores.")
    sentence_match: bool = Field(
        default=True,
        description="In `weighted`, `article` and `zscore` fusion, a passage's dense score is "
                    "the better of its own cosine and its closest sentence's (a question "
                    "about one fact of a long passage; docs/quality-baseline.md). Abstention "
                    "and answers still read the passage's own cosine.")
    rrf_k: int = Field(default=60, ge=1, description="The k of reciprocal rank fusion (`rrf`).")
    candidates: int = Field(
        default=40, ge=5, le=400,
        description="Hits each retriever returns before fusion (x4 when filtering by tags).")


class AnswerSettings(BaseModel):
    """Answer assembly and guardrails."""

    default_top_k: int = Field(
        default=3, ge=1, description="Passages returned when the request names no `top_k`.")
    max_top_k: int = Field(default=10, ge=1, description="Most passages one answer may return.")
    min_score: float = Field(
        default=0.3, description="Abstain when the best dense (cosine) similarity is lower.")
    min_coverage: float = Field(
        default=0.15,
        description="Abstain also when the top passage covers a smaller share of the "
                    "question's IDF-weighted terms.")
    diversity: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="After the top passage, a passage's fused score is lowered by this share "
                    "of the best passage's score for each passage of its article already "
                    "served, so another article scoring nearly as well is shown instead of a "
                    "further section of the same one (0: passages in score order). From 0.0 "
                    "to 1.0.")
    ambiguity_margin: float = Field(
        default=0.08,
        description="Cosine gap under which two policies compete for the same question.")
    withhold_stale_high_risk: bool = Field(
        default=True,
        description="Escalate instead of serving a stale high-risk article.")
    warn_stale: bool = Field(
        default=True, description="Serve stale low/medium-risk text with a `stale` warning.")
    escalate_without_approved_language: bool = Field(
        default=True,
        description="Escalate (`no_approved_language`) when a question matches a high-risk "
                    "article's plain text best and the answer would come from another "
                    "article (or from nothing good enough: then to that article's team, "
                    "not the default one); off: answer from that article. Either way, "
                    "that high-risk article's approved language leads the answer when it "
                    "ranks among the first `default_top_k` servable passages.")
    default_escalation_team: str = Field(
        default="support-tier2",
        description="Handoff team when the best-matching article names no `escalate_to`.")
    default_locale: str = Field(
        default="en",
        description="Locale of questions that name none (unless `detect_locale` reads "
                    "them as another), and the fallback for missing translations.")
    detect_locale: bool = Field(
        default=True,
        description="A question that names no locale is asked in the locale whose "
                    "texts (those the caller may see) use clearly more of its words than "
                    "the default locale's do: a share at least 30 points larger, with at "
                    "least two words the default locale's texts never use. A question "
                    "written in Spanish is answered from `es` articles when the knowledge "
                    "base has them. A caller who sees one locale's texts is asked in "
                    "that locale.")
    gap_similarity: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Cosine similarity at which unanswered "
        "questions count as one content gap in the review queue (grouped by meaning).")


class Settings(BaseSettings):
    """Canon settings.

    Every field can be set with ``KB_<NAME>``; nested ones with ``KB_ANSWER__MIN_SCORE``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER, extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path(".canon"),
        description="Where the SQLite database and the embedded index live.")
    database_url: str | None = Field(
        default=None,
        description="Database URL, e.g. `postgresql+psycopg://user@host:5432/canon`; "
                    "unset: SQLite `canon.db` in the data directory.")
    content_dir: Path = Field(default=Path("content"), description="The folder of articles.")
    chroma_url: str | None = Field(
        default=None,
        description="A Chroma server (`chroma run`) shared by workers and machines, e.g. "
                    "`http://chroma:8000`; unset: embedded under the data directory.")
    redis_url: str | None = Field(
        default=None,
        description="Redis shared by workers and machines for rate limits, e.g. "
                    "`redis://127.0.0.1:6379/0`; unset: each process counts its own.")
    allow_self_approval: bool = Field(
        default=False, description="`true` turns the four-eyes rule off.")
    assist_rate_per_minute: int = Field(
        default=600, ge=0, description="`/v1/assist` calls per API token per minute, shared "
                                       "by every worker when `KB_REDIS_URL` is set; "
                                       "0 = unlimited.")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest HTTP request body accepted "
        "(413); checked before the body is read, after the API token (401 without one).")
    max_article_bytes: int = Field(
        default=512 * 1024, ge=1024, description="Largest article file accepted.")
    now: datetime | None = Field(
        default=None, description="Pin the clock to this UTC date-time (ISO 8601) for demos, "
                                  "replays and tests; unset: the wall clock.")
    console_session_minutes: int = Field(
        default=480, ge=1, le=60 * 24 * 30, description="How long a web-console sign-in "
        "lasts (never longer than the API token it was made with).")
    user: str | None = Field(
        default=None, description="The user CLI commands act as when `--as` is not given.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="Server logs (`kb serve`): one JSON object per line, "
        "each with the request id (`X-Request-ID`), or readable text. Question text never "
        "appears in logs (it is kept redacted in the audit table).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe server log lines written (`info` includes "
        "one line per request).")
    index: IndexSettings = Field(default=IndexSettings(), description=IndexSettings.__doc__)
    retrieval: RetrievalSettings = Field(
        default=RetrievalSettings(), description=RetrievalSettings.__doc__)
    answer: AnswerSettings = Field(default=AnswerSettings(), description=AnswerSettings.__doc__)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this process, from ``KB_*`` environment variables.

        Raises :class:`InvalidSettings` for an unknown ``KB_*`` variable (with the closest
        valid name) or a value that does not validate.
        """
        check_environment(os.environ)
        try:
            return cls()
        except ValidationError as exc:
            raise InvalidSettings(_describe_errors(exc, os.environ)) from None
        except SettingsError as exc:  # e.g. KB_ANSWER='not json'
            raise InvalidSettings(f"invalid setting: {exc}; {_SEE_TABLE}") from None

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'canon.db').resolve()}"

    def fingerprint(self) -> str:
        """A short hash of every setting that changes answers (recorded with eval runs)."""
        payload = {
            "index": self.index.model_dump(),
            "retrieval": self.retrieval.model_dump(),
            "answer": self.answer.model_dump(),
        }
        raw = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


_SEE_TABLE = "see the settings table in README.md (or run `python -m kb.settings`)"


def _section(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _leaves(model: type[BaseModel], prefix: str = ENV_PREFIX) -> Iterator[tuple[str, FieldInfo]]:
    """``(environment variable, field)`` for every setting, in declaration order."""
    for name, field in model.model_fields.items():
        section = _section(field)
        if section is not None:
            yield from _leaves(section, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
        else:
            yield f"{prefix}{name.upper()}", field


def setting_names() -> list[str]:
    """Every environment variable that sets a setting (``KB_DATA_DIR``, ``KB_ANSWER__...``)."""
    return [name for name, _ in _leaves(Settings)]


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``KB_*`` variables that are neither settings nor known to other tools.

    Names compare case-insensitively, as pydantic-settings reads them. A whole section set as
    JSON (``KB_ANSWER='{"min_score": 0.2}'``) is accepted too.
    """
    valid = set(setting_names()) | set(FOREIGN_VARIABLES)
    sections = {f"{ENV_PREFIX}{name.upper()}" for name, field in Settings.model_fields.items()
                if _section(field) is not None}
    problems = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(ENV_PREFIX) or name in valid or name in sections:
            continue
        close = difflib.get_close_matches(name, sorted(valid - set(FOREIGN_VARIABLES)), n=1)
        hint = f"did you mean {close[0]}?" if close else _SEE_TABLE
        problems.append(f"unknown setting {key}; {hint}")
    if problems:
        raise InvalidSettings("; ".join(problems))


def _describe_errors(exc: ValidationError, environ: Mapping[str, str]) -> str:
    values = {k.upper(): v for k, v in environ.items()}
    parts = []
    for error in exc.errors():
        name = ENV_PREFIX + NESTED_DELIMITER.join(str(p) for p in error["loc"]).upper()
        shown = f"{name}={values[name]!r}" if name in values else name
        parts.append(f"invalid setting {shown}: {error['msg']}")
    return "; ".join(parts) + f"; {_SEE_TABLE}"


# --- the README table ----------------------------------------------------------------------


def _format_default(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def _constraints(field: FieldInfo) -> str:
    args = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    if args:
        return " One of " + ", ".join(f"`{a}`" for a in args) + "."
    bounds: dict[str, Any] = {}
    for m in field.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(m, getattr(annotated_types, kind.capitalize())):
                bounds[kind] = getattr(m, kind)
    if set(bounds) == {"ge", "le"}:
        return f" From {bounds['ge']} to {bounds['le']}."
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    said = ", ".join(f"{words[k]} {v}" for k, v in bounds.items())
    return f" {said[0].upper()}{said[1:]}." if said else ""


def settings_table() -> str:
    """The Markdown table of every setting: variable, default, meaning (ends with a newline)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in _leaves(Settings):
        if not field.description:
            raise ValueError(f"setting {name} has no description; add Field(description=...)")
        meaning = (field.description + _constraints(field)).replace("|", "\\|")
        lines.append(f"| `{name}` | {_format_default(field.default)} | {meaning} |")
    return "\n".join(lines) + "\n"


def with_settings_table(readme: str) -> str:
    """``readme`` with the generated table between the settings-table marker comments."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {TABLE_START} ... {TABLE_END} block")
    head = readme[:start + len(TABLE_START)]
    return f"{head}\n{settings_table()}{readme[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kb.settings`` prints the table; ``--write README.md`` updates the file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stdout.write(settings_table())
        return 0
    if len(args) == 2 and args[0] == "--write":
        path = Path(args[1])
        path.write_text(with_settings_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stderr.write("usage: python -m kb.settings [--write README.md]\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
