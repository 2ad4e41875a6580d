"""`kb eval tune`, `kb eval tunings`, `kb eval use-tuning`: fit, list and switch this knowledge
base's tuning records (see evals/tune.py and kb/tuning.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.cli_common import AsUser, JsonOpt, fail, get_ctx, out, print_json
from kb.errors import CanonError, InvalidInput


def tune(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help="Suite name in evals/suites (e.g. demo) or a path to a .yaml/.yml/.jsonl suite file: your own labelled questions, answerable and not")],
    folds: Annotated[int, typer.Option("--folds", help="k of the k-fold cross-validation.")] = 5,
    max_false_abstention: Annotated[float, typer.Option("--max-false-abstention", help="The operating point: the largest share of answerable questions you accept to see escalated (0.05 = 5%).")] = 0.05,
    content: Annotated[Path | None, typer.Option("--content", help="Tune on this folder of articles in a scratch workspace and only report (nothing is stored).")] = None,
    as_audience: Annotated[str, typer.Option("--as-audience", help="Audience for cases that name none.")] = "internal",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the cross-validated metrics; store nothing.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Run the cross-validation this many times, each on another assignment of cases to folds, and pool the held-out results: steadier figures on a small suite, at that many times the time.")] = 1,
    negatives: Annotated[str, typer.Option("--negatives", help="What abstention learns 'unanswerable' from: withheld (each answerable question again, with its articles withheld: a question on a topic the KB lacks), suite (your unanswerable cases) or both. Your unanswerable cases are always scored.")] = "withheld",
    note: Annotated[str, typer.Option("--note", help="Why this tuning (kept in the record and the audit log).")] = "",
    user: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit retrieval and abstention to this knowledge base on a labelled suite, with k-fold
    cross-validation; store the result as a new tuning record and put it in use.

    Prints the cross-validated metrics of the tuned settings next to the shipped defaults on
    the same folds. Storing needs --as a user with the evaluator or approver role; every
    answering process uses the new record from its next question. Roll back with
    `kb eval use-tuning defaults` (or a version from `kb eval tunings`)."""
    from sqlmodel import Session

    from api.cli_eval import _progress, _suite
    from assist.calibration import TUNABLE_FUSIONS, record_problem
    from evals.tune import check_folds, check_negatives, check_operating_point, observe
    from evals.tune import tune as run_tune
    from kb import tuning as tunings

    c = get_ctx(ctx)
    store = content is None and not dry_run
    try:
        check_negatives(negatives)  # before any work
        check_operating_point(max_false_abstention)
        check_folds(folds)
        fusion = c.settings.retrieval.fusion
        if store and fusion not in TUNABLE_FUSIONS:
            raise InvalidInput(
                f"KB_RETRIEVAL__FUSION is '{fusion}', a baseline: the answer path applies no "
                "tuning record under it, so none would be stored. Tune under "
                f"{' or '.join(TUNABLE_FUSIONS)} (the shipped ranking), or pass --dry-run "
                "to see the cross-validated figures only")
        if store:  # who acts is checked before any work
            with c.session() as session:
                c.actor(session, user, "tune")
        if content is not None:
            from evals.workspace import known_articles, scratch_workspace

            with scratch_workspace(content, c.settings) as ws:
                loaded = _suite(suite, known_articles(ws.engine))
                check_folds(folds, loaded.cases)
                with _progress(f"asking {len(loaded.cases)} cases") as update:
                    seen = observe(ws.assistant, loaded, default_audience=as_audience,
                                   progress=update)
        else:
            from evals.workspace import known_articles

            loaded = _suite(suite, known_articles(c.engine))
            check_folds(folds, loaded.cases)
            with _progress(f"asking {len(loaded.cases)} cases") as update:
                seen = observe(c.assistant, loaded, default_audience=as_audience,
                               progress=update)
        times = f" x {repeats}" if repeats > 1 else ""
        with _progress(f"{folds}-fold cross-validation{times}") as update:
            result = run_tune(seen, base=c.settings.retrieval, answer=c.settings.answer,
                              folds=folds, max_false_abstention=max_false_abstention,
                              negatives=negatives, repeats=repeats, progress=update)
        row = None
        if store:
            with Session(c.engine, expire_on_commit=False) as session:
                actor = c.actor(session, user, "tune")
                row = tunings.store(session, actor, suite=loaded.name,
                                    suite_sha256=loaded.sha256, params=result.params,
                                    metrics=result.metrics(), now=c.clock(), note=note,
                                    problem=record_problem)
    except CanonError as exc:
        fail(exc)
    if as_json:
        print_json({"suite": loaded.name, "params": result.params, **result.metrics(),
                    "stored": None if row is None else
                    {"version": row.version, "sha256": row.sha256, "in_use": True}})
        return
    learns = {"withheld": f"{result.withheld} withheld-article negatives",
              "suite": "the suite's unanswerable cases",
              "both": f"the suite's unanswerable cases and {result.withheld} withheld-article "
                      "negatives"}[result.negatives]
    pooled = f" ({result.repeats} assignments of folds pooled)" if result.repeats > 1 else ""
    _print_cv(result, title=f"suite {loaded.name}: {result.folds}-fold cross-validated{pooled}, "
                            f"{result.cases} cases ({result.unanswerable} unanswerable); "
                            f"abstention learns from {learns}")
    spread = [x for x in result.repeat_false_abstention if x is not None]
    if len(spread) > 1:
        out.print(f"tuned false abstention, one assignment of folds at a time: "
                  f"{min(spread):.3f} to {max(spread):.3f} (operating point "
                  f"{result.max_false_abstention:.3f})")
    r = result.params["retrieval"]
    out.print(f"tuned retrieval: fusion {r['fusion']}, dense_weight {r['dense_weight']}, "
              f"article_support {r['article_support']}")
    model = result.params["abstention"]
    if model:
        weights = ", ".join(f"{f} {w:+.2f}" for f, w in zip(model["features"],
                                                            model["weights"], strict=True))
        out.print(f"abstention: logistic over {weights}; operating point: at most "
                  f"{result.max_false_abstention:.0%} of answerable questions escalated")
    for n in result.notes:
        out.print(f"[yellow]note:[/yellow] {n}")
    if row is not None:
        out.print(f"stored tuning v{row.version} ({row.sha256[:12]}) and put it in use")
    elif content is not None:
        out.print("scratch workspace (--content): nothing stored")
    else:
        out.print("--dry-run: nothing stored")


def _print_cv(result: Any, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("metric", "shipped defaults", "tuned"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for key, value in result.defaults.items():
        tuned = result.tuned.get(key)
        table.add_row(key, "-" if value is None else f"{value:.3f}",
                      "-" if tuned is None else f"{tuned:.3f}")
    out.print(table)


def tunings(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the tuning records, newest first, and which one is in use."""
    from sqlmodel import Session

    from kb import tuning as records

    c = get_ctx(ctx)
    with Session(c.engine) as s:
        rows = records.history(s)
        current = records.in_use(s)
    in_use = current.version if current else None
    if as_json:
        print_json([{"version": r.version, "at": r.at, "by": r.created_by, "suite": r.suite,
                     "sha256": r.sha256, "in_use": r.version == in_use, "params": r.params,
                     "metrics": r.metrics, "note": r.note} for r in rows])
        return
    if not rows:
        out.print("no tuning records: the shipped defaults are in use (see `kb eval tune`)")
        return
    for r in rows:
        cv = (r.metrics.get("cross_validated") or {}).get("tuned") or {}
        mark = "*" if r.version == in_use else " "
        out.print(f"{mark} v{r.version}  {r.at:%Y-%m-%d %H:%M}  {r.created_by}  {r.suite}  "
                  f"{r.sha256[:12]}  cv hit@1 {_f(cv.get('hit@1'))}  section_hit@1 "
                  f"{_f(cv.get('section_hit@1'))}  abstention_recall "
                  f"{_f(cv.get('abstention_recall'))}  false_abstention "
                  f"{_f(cv.get('false_abstention'))}  {r.note}")
    if in_use is None:
        out.print("in use: the shipped defaults")


def _f(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def use_tuning(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="A version from `kb eval tunings`, or `defaults`.")],
    note: Annotated[str, typer.Option("--note", help="Why (kept in the audit log).")] = "",
    user: AsUser = None,
) -> None:
    """Put a stored tuning record in use, or go back to the shipped defaults (audited)."""
    from assist.calibration import record_problem
    from kb import tuning as records

    c = get_ctx(ctx)
    try:
        if version == "defaults":
            number = None
        elif version.lstrip("v").isdigit():
            number = int(version.lstrip("v"))
        else:
            raise InvalidInput(f"'{version}' is not a tuning version: give a number from "
                               "`kb eval tunings` or `defaults`")
        with c.session() as session:
            actor = c.actor(session, user, "tune")
            records.use(session, actor, version=number, now=c.clock(), note=note,
                        problem=record_problem)
    except CanonError as exc:
        fail(exc)
    out.print("in use: the shipped defaults" if number is None else f"in use: tuning v{number}")


def register(eval_app: typer.Typer) -> None:
    eval_app.command("tune")(tune)
    eval_app.command("tunings")(tunings)
    eval_app.command("use-tuning")(use_tuning)
