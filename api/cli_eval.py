"""`kb eval ...`: run suites, store and compare runs, gate on regressions, bench baselines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from api.cli_common import Ctx, JsonOpt, err, fail, get_ctx, out, print_json
from evals.suites import SUITES_DIR
from kb.errors import CanonError, InvalidInput

eval_app = typer.Typer(no_args_is_help=True, help="Answer-accuracy suites and regression gates.")


METRIC_ORDER = ["cases", "hit@1", "hit@3", "hit@5", "passage_hit@3", "passage_hit@5",
                "mrr@10", "section_hit@1",
                "contains_accuracy", "abstention_precision", "abstention_recall",
                "abstention_f1", "false_abstention", "wrong_answer_rate", "consistency",
                "consistency_article",
                "verbatim", "latency_p50_ms", "latency_p95_ms"]


META_SHOWN = 400  # characters of a case's meta shown in text output (--json has all of it)


def _meta(meta: dict[str, Any] | None) -> str:
    """A case's meta as one line of compact JSON, cut at META_SHOWN characters."""
    text = json.dumps(meta or {}, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= META_SHOWN else text[:META_SHOWN - 1] + "…"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _suite(name: str, known: set[str] | None) -> Any:
    from evals.suites import find_suite, load_suite

    return load_suite(find_suite(name, suites_dir=SUITES_DIR), known_articles=known)


def run(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help="Suite name in evals/suites (e.g. demo) or a path to a .yaml/.yml/.jsonl suite file")],
    content: Annotated[Path | None, typer.Option("--content", help="Run on this folder of articles in a scratch workspace (bootstrapped and indexed) instead of the configured database.")] = None,
    as_audience: Annotated[str, typer.Option("--as-audience", help="Audience for cases that name none.")] = "internal",
    url: Annotated[str | None, typer.Option("--url", help="Ask a running server instead of in process (cases run as --token's caller).")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="KB_TOKEN", help="API token for --url.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full run (metrics + cases) to this file.")] = None,
    gate: Annotated[Path | None, typer.Option("--gate", help="Gate file: exit 1 if a floor or tolerance is broken.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Run id to compare against for max_drop (default: the previous run of this suite).")] = None,
    label: Annotated[str, typer.Option("--label")] = "",
) -> None:
    """Run every case through the /v1/assist code path, store the run, print the metrics."""
    from sqlmodel import Session

    from evals import gates, runner, store

    c = get_ctx(ctx)
    try:
        if content is not None:
            from evals.workspace import scratch_workspace

            with scratch_workspace(content, c.settings) as ws:
                row = _run(c, suite, ws.engine, runner.in_process(ws.assistant), as_audience,
                            label)
        else:
            if url and not token:
                raise InvalidInput("--url needs an API token: pass --token or set KB_TOKEN")
            ask = (runner.over_http(url, token=token or "") if url
                   else runner.in_process(c.assistant))
            row = _run(c, suite, c.engine, ask, as_audience, label)
    except CanonError as exc:
        fail(exc)
    _print_metrics({"canon": row.metrics}, title=f"eval run {row.id} — suite {row.suite}")
    if json_out:
        json_out.write_text(json.dumps({"id": row.id, "suite": row.suite,
                                        "metrics": row.metrics, "content": row.content,
                                        "settings_hash": row.settings_hash,
                                        "tuning_sha256": row.tuning_sha256,
                                        "git_commit": row.git_commit, "cases": row.cases},
                                       indent=2, default=str))
        out.print(f"wrote {json_out}")
    if gate is None:
        return
    with Session(c.engine) as s:
        previous = None
        if baseline:
            previous = store.get_run(s, baseline).metrics
        else:
            prior = [r for r in store.list_runs(s, suite=row.suite) if r.id != row.id]
            previous = prior[0].metrics if prior else None
    try:
        failures = gates.check_gate(gates.load_gate(gate), row.metrics, previous)
    except CanonError as exc:
        fail(exc)
    if failures:
        for f in failures:
            err.print(f"[red]gate failed:[/red] {f}")
        raise typer.Exit(1)
    out.print(f"[green]gate passed[/green] ({gate})")


def _run(c: Ctx, suite_name: str, engine: Engine, ask: Any, audience: str,
         label: str) -> Any:
    from sqlmodel import Session

    from evals import runner, store
    from evals.workspace import known_articles

    suite = _suite(suite_name, known_articles(engine))
    checker = runner.VerbatimChecker(engine)
    with _progress(f"suite {suite.name}") as update:
        runs = runner.run_suite(suite, ask=ask, checker=checker, default_audience=audience,
                                progress=update)
    # The tuning each answer says decided it (None: the shipped settings): one for the
    # whole run, or the run measured two policies and is not stored.
    used = sorted({r.response.get("tuning_sha256") or "" for r in runs})
    if len(used) > 1:
        raise InvalidInput(
            "the tuning record in use changed during the run (answers came from "
            + " and ".join(f"tuning {h[:12]}" if h else "the shipped settings" for h in used)
            + "): nothing stored; run the suite again")
    with Session(c.engine, expire_on_commit=False) as s, Session(engine) as content_session:
        row = store.save_run(s, suite=suite, runs=runs, settings_hash=c.settings.fingerprint(),
                             content_session=content_session, code_dir=SUITES_DIR,
                             label=label, tuning_sha256=used[0] or None if used else None)
    return row


def _print_metrics(columns: dict[str, dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key in METRIC_ORDER:
        table.add_row(key, *(_fmt(m.get(key)) for m in columns.values()))
    out.print(table)


def compare(ctx: typer.Context, run_a: str, run_b: str, as_json: JsonOpt = False) -> None:
    """Metric deltas between two stored runs and the cases that flipped."""
    from sqlmodel import Session

    from evals import store

    c = get_ctx(ctx)
    with Session(c.engine) as s:
        try:
            a, b = store.get_run(s, run_a), store.get_run(s, run_b)
        except CanonError as exc:
            fail(exc)
    cmp = store.compare(a, b)
    if as_json:
        print_json({"a": a.id, "b": b.id, "deltas": cmp.deltas, "flipped": cmp.flipped})
        return
    table = Table(title=f"{a.id} -> {b.id}", title_justify="left")
    for col in ("metric", a.id, b.id, "delta"):
        table.add_column(col, justify="right")
    for key in METRIC_ORDER:
        if key in cmp.deltas:
            va, vb, d = cmp.deltas[key]
            table.add_row(key, _fmt(va), _fmt(vb), "" if d is None else f"{d:+.3f}")
    out.print(table)
    for f in cmp.flipped:
        mark = ("[green]fixed[/green]" if f["is_correct"] and not f["was_correct"] else
                "[red]broke[/red]" if f["was_correct"] and not f["is_correct"] else "changed")
        out.print(f"{mark} {f['case_id']}: {f['before']} -> {f['after']}")
        if f.get("meta"):
            out.print(f"  meta: {_meta(f['meta'])}", markup=False, highlight=False)
    out.print(f"{len(cmp.flipped)} cases flipped")


def list_(ctx: typer.Context, suite: Annotated[str | None, typer.Option("--suite")] = None,
          as_json: JsonOpt = False) -> None:
    """Stored runs, newest first."""
    from sqlmodel import Session

    from evals import store

    c = get_ctx(ctx)
    with Session(c.engine) as s:
        rows = store.list_runs(s, suite=suite)
    if as_json:
        print_json([{"id": r.id, "at": r.at, "suite": r.suite, "label": r.label,
                     "metrics": r.metrics} for r in rows])
        return
    for r in rows:
        m = r.metrics
        out.print(f"{r.id}  {r.at:%Y-%m-%d %H:%M}  {r.suite:<12} hit@1 {_fmt(m.get('hit@1'))}  "
                  f"hit@5 {_fmt(m.get('hit@5'))}  mrr@10 {_fmt(m.get('mrr@10'))}  "
                  f"section_hit@1 {_fmt(m.get('section_hit@1'))}  {r.label}")


def bench(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help="Suite name in evals/suites (e.g. demo) or a path to a .yaml/.yml/.jsonl suite file")] = "demo",
    content: Annotated[Path | None, typer.Option("--content", help="Folder of articles (default: KB_CONTENT_DIR)")] = None,
    as_audience: Annotated[str, typer.Option("--as-audience")] = "internal",
    as_json: JsonOpt = False,
) -> None:
    """Canon vs BM25 alone, dense alone, RRF and llama-index defaults, on the same content."""
    from evals.baselines import run_bench

    c = get_ctx(ctx)
    try:
        columns = run_bench(suite_path=_suite_path(suite), content=content or c.settings.content_dir,
                            settings=c.settings, default_audience=as_audience,
                            progress=_progress)
    except CanonError as exc:
        fail(exc)
    if as_json:
        print_json(columns)
        return
    _print_metrics(columns, title=f"suite {suite}: Canon vs baselines")


def draft(
    ctx: typer.Context,
    out_path: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="Where to write the draft suite (JSONL).")],
    days: Annotated[int | None, typer.Option("--days", min=1, max=36500, help="Only questions asked in the last N days (default: the whole log).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many cases: the most asked distinct questions first.")] = 300,
    exclude_caller: Annotated[list[str] | None, typer.Option("--exclude-caller", help="Leave out this user's questions (repeatable): the user a gate runs `kb eval run --url` as, say.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT.jsonl if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Draft a suite from the questions agents asked (the query log), to review and then tune
    on (`kb eval tune`).

    Each case expects what was served (or, unanswered, an escalation) and carries
    'draft: true': suites refuse draft cases until someone has checked each one against the
    knowledge base and deleted the key (meta.review says what to check)."""
    from datetime import timedelta

    from evals.draft import check_target, draft_suite, write_draft

    c = get_ctx(ctx)
    try:
        check_target(out_path, force=force)  # before any work
        since = c.clock() - timedelta(days=days) if days else None
        with c.session() as session:
            made = draft_suite(session, max_chars=c.settings.index.chunk_max_chars,
                               since=since, limit=limit, exclude=exclude_caller or ())
        write_draft(made, out_path, force=force)
    except CanonError as exc:
        fail(exc)
    counts = {"cases": len(made.cases),
              "answered": sum(1 for k in made.cases if "expect" in k),
              "answer_flagged": sum(1 for k in made.cases
                                    if k["answerable"] and "expect" not in k),
              "not_answered": sum(1 for k in made.cases if not k["answerable"]),
              "distinct_questions": made.distinct, "log_rows": made.rows,
              "path": str(out_path)}
    if as_json:
        print_json(counts)
        return
    out.print(f"wrote {counts['cases']} draft cases to {out_path} "
              f"(from {made.distinct} distinct questions in {made.rows} logged answers): "
              f"{counts['answered']} answered, {counts['answer_flagged']} flagged as not "
              f"right, {counts['not_answered']} not answered")
    out.print("review each case, delete its 'draft: true', then: "
              f"kb eval tune {out_path} --as <evaluator>")


def _suite_path(name: str) -> Path:
    from evals.suites import find_suite

    try:
        return find_suite(name, suites_dir=SUITES_DIR)
    except InvalidInput as exc:
        fail(exc)


def register(app: typer.Typer) -> None:
    eval_app.command("run")(run)
    eval_app.command("compare")(compare)
    eval_app.command("list")(list_)
    eval_app.command("bench")(bench)
    eval_app.command("draft")(draft)
    from api import cli_tune

    cli_tune.register(eval_app)
    app.add_typer(eval_app, name="eval")
    app.command()(health)
    app.command()(report)


def health(ctx: typer.Context, as_json: JsonOpt = False,
           save: Annotated[bool, typer.Option("--save/--no-save", help="Store a snapshot for trends.")] = True) -> None:
    """Knowledge health: freshness, ownership, usage, outcomes, flags, approval lag, duplicates."""
    from sqlmodel import Session

    from evals.health import knowledge_health, save_snapshot

    c = get_ctx(ctx)
    with Session(c.engine) as s:
        data = knowledge_health(s, now=c.clock(), group_gaps=c.assistant.gaps)
        if save:
            save_snapshot(s, data)
    if as_json:
        print_json(data)
        return
    f = data["freshness"]
    out.print(f"articles: {data['articles']}  states: {data['states']}")
    out.print(f"freshness: {f['served']} served, within cadence "
              f"{_fmt(f['within_cadence'])}, {f['overdue']} overdue, {len(f['due_14d'])} due "
              "in 14 days")
    for owner, ids in f["overdue_by_owner"].items():
        out.print(f"  overdue for {owner}: {', '.join(ids)}")
    out.print(f"ownership: {len(data['ownership']['unowned'])} articles without a valid owner")
    u = data["usage"]
    out.print(f"usage: {sum(u['citations_30d'].values())} citations in 30 days; "
              f"{len(u['never_cited'])} served articles never cited")
    o = data["outcomes_30d"]
    out.print(f"outcomes (30 days, {o['queries']} queries): answered {_fmt(o['answered'])}, "
              f"escalated {_fmt(o['escalate'])}, no answer {_fmt(o['no_answer'])}")
    for g in o["top_gaps"][:5]:
        out.print(f"  gap x{g['count']}: {g['question']}")
    fl = data["flags"]
    out.print(f"flags: {fl['open']} open; median hours to resolve "
              f"{_fmt(fl['median_hours_to_resolve'])}")
    out.print(f"approval lag: median {_fmt(data['approval_lag_hours'])} hours")
    out.print(f"duplicates: {len(data['duplicates'])} near-identical section pairs")


def report(ctx: typer.Context,
           out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.html and report.md")] = Path("report")) -> None:
    """Write a self-contained HTML (and Markdown) report: latest run, trends, overdue table."""
    from sqlmodel import Session, col, select

    from evals.health import knowledge_health
    from evals.report import write_report
    from kb.models import EvalRun, HealthSnapshot

    c = get_ctx(ctx)
    with Session(c.engine) as s:
        runs = s.exec(select(EvalRun).order_by(col(EvalRun.at))).all()
        snaps = s.exec(select(HealthSnapshot).order_by(col(HealthSnapshot.at))).all()
        data = knowledge_health(s, now=c.clock(), group_gaps=c.assistant.gaps)
    for path in write_report(out_dir, runs, snaps, data):
        out.print(f"wrote {path}")
