"""The `kb` command line. Human-readable output by default, `--json` everywhere."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api import cli_assist, cli_eval, cli_identity
from api.cli_common import (
    EXIT_CODES,
    AsUser,
    Ctx,
    JsonOpt,
    err,
    fail,
    get_ctx,
    out,
    parse_duration,
    print_json,
)
from kb import db, governance
from kb.articles import check_inside, decode_article_bytes, iter_article_files, parse_article
from kb.errors import ApprovalBlocked, CanonError, InvalidArticle, InvalidInput, Problem
from kb.models import User
from kb.settings import Settings
from kb.sync import SyncReport, sync_folder

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Canon: governed knowledge base and verbatim agent-assist.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema management.")
app.add_typer(db_app, name="db")
cli_assist.register(app)
cli_eval.register(app)
cli_identity.register(app)

@app.callback()
def main_callback(ctx: typer.Context) -> None:
    """Settings come from KB_* environment variables (see README)."""
    if ctx.obj is None:
        try:
            settings = Settings.from_env()
        except CanonError as exc:  # an unknown KB_* name or an invalid value: exit 2
            fail(exc)
        ctx.obj = Ctx(settings)
        ctx.call_on_close(ctx.obj.close)


# --- content ------------------------------------------------------------------------------


def check_folder(root: Path, *, max_bytes: int) -> list[Problem]:
    """Every problem in every article under ``root`` (errors and warnings), without storing."""
    problems: list[Problem] = []
    ids: dict[str, list[str]] = {}
    for path in iter_article_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            check_inside(root, path)
            text = decode_article_bytes(path.read_bytes(), path=rel, max_bytes=max_bytes)
            parsed = parse_article(text, path=rel)
        except InvalidArticle as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(parsed.warnings)
        ids.setdefault(parsed.id, []).append(rel)
    for art_id, paths in ids.items():
        if len(paths) > 1:
            for rel in paths:
                others = ", ".join(p for p in paths if p != rel)
                problems.append(Problem(rel, 2, "id", f"id '{art_id}' is also used by {others}",
                                        "give every article a unique id (rename one of them)"))
    return problems


@app.command()
def check(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="Folder of articles (default: KB_CONTENT_DIR)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate every article in a folder without storing anything."""
    c = get_ctx(ctx)
    root = path or c.settings.content_dir
    if not root.is_dir():
        fail(InvalidInput(f"{root} is not a folder; pass the folder that holds your articles"))
    problems = check_folder(root, max_bytes=c.settings.max_article_bytes)
    errors = [p for p in problems if p.severity == "error"]
    files = len(iter_article_files(root))
    if as_json:
        print_json({"files": files, "problems": [p.__dict__ for p in problems],
                     "errors": len(errors)})
    else:
        for p in problems:
            color = "red" if p.severity == "error" else "yellow"
            out.print(f"[{color}]{p.severity}[/{color}] {p}")
        out.print(f"{files} files checked: {len(errors)} errors, "
                  f"{len(problems) - len(errors)} warnings")
    if errors:
        raise typer.Exit(EXIT_CODES[InvalidArticle])


def _print_sync(report: SyncReport) -> None:
    for p in report.problems:
        color = "red" if p.severity == "error" else "yellow"
        err.print(f"[{color}]{p.severity}[/{color}] {p}")
    for art_id, n in report.created:
        out.print(f"[green]new[/green]      {art_id} v{n} (pending approval)")
    for art_id, n in report.updated:
        out.print(f"[cyan]changed[/cyan]  {art_id} v{n} (pending approval)")
    for art_id, rel in report.moved:
        out.print(f"moved    {art_id} -> {rel}")
    for art_id in report.restored:
        out.print(f"restored {art_id} (its file is back)")
    for art_id in report.removed:
        out.print(f"[yellow]removed[/yellow]  {art_id}: its file is gone; the approved version "
                  f"keeps serving until `kb retire {art_id}`")
    out.print(f"sync: {len(report.created)} new, {len(report.updated)} changed, "
              f"{report.unchanged} unchanged, {len(report.removed)} removed, "
              f"{len(report.errors)} errors")


def run_sync(c: Ctx, root: Path, user: str | None) -> SyncReport:
    """Sync ``root`` into the database as ``user`` (and, when this process may write it, the
    index). A version's author is the git author of its file when the file is committed
    unchanged, else the user syncing it."""
    with c.session() as session:
        actor = c.actor(session, user, "sync")
        report = sync_folder(session, root=root, actor=actor.id, default_author=actor.id,
                             max_bytes=c.settings.max_article_bytes, now=c.clock())
    cli_assist.refresh_index(c)  # also repairs an index left behind by a crash
    return report


@app.command()
def sync(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="Folder of articles (default: KB_CONTENT_DIR)")] = None,
    user: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Import new and changed articles as pending versions. Safe to run any time."""
    c = get_ctx(ctx)
    try:
        report = run_sync(c, path or c.settings.content_dir, user)
    except CanonError as exc:
        fail(exc)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_sync(report)
    if report.errors:
        raise typer.Exit(EXIT_CODES[InvalidArticle])


# --- governance ---------------------------------------------------------------------------


@app.command()
def approve(
    ctx: typer.Context,
    article_id: Annotated[str | None, typer.Argument(help="Article id")] = None,
    user: AsUser = None,
    version: Annotated[int | None, typer.Option("--version", help="Version number (default: newest)")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    all_: Annotated[bool, typer.Option("--all", help="Approve every pending version.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Approve despite findings (needs --note).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending version so it is served (four-eyes: not your own).

    Runs the same rules and checks as the HTTP API: role and team, four-eyes on identities,
    then conflicting statements, suite expectations that would break and questions the
    article would stop answering (each blocks unless --force with --note)."""
    from kb import workflows

    c = get_ctx(ctx)
    allow_self = c.settings.allow_self_approval
    if all_ == (article_id is not None):
        fail(InvalidInput("give either an article id or --all"))
    with c.session() as session:
        try:
            actor = c.actor(session, user, "approve")
        except CanonError as exc:
            fail(exc)
        if all_:
            bulk = workflows.approve_all(session, actor=actor, note=note or "bulk approval",
                                         allow_self=allow_self, now=c.clock())
            if as_json:
                print_json({"approved": [{"id": i, "version": n} for i, n in bulk.approved],
                             "skipped": [{"id": i, "version": n, "reason": r}
                                         for i, n, r in bulk.skipped]})
            else:
                for i, n, r in bulk.skipped:
                    out.print(f"[yellow]skipped[/yellow] {i} v{n}: {r}")
                out.print(f"approved {len(bulk.approved)} versions, skipped {len(bulk.skipped)}")
        else:
            assert article_id is not None
            from api.approvals import approval_checks

            try:
                outcome = workflows.approve(
                    session, actor=actor, article_id=article_id, version=version, note=note,
                    force=force, allow_self=allow_self, checks=approval_checks(c.assistant),
                    clock=c.clock)
            except ApprovalBlocked as exc:
                for f in exc.findings:
                    err.print(f"[red]{f['kind']}[/red] on '{f['question']}': {f['message']}")
                fail(exc)
            except CanonError as exc:
                fail(exc)
            a = outcome.approval
            if as_json:
                print_json({"id": a.article_id, "version": a.version_number,
                             "content_sha256": a.content_sha256, "approver": a.approver,
                             "at": a.at.isoformat(), "forced": a.forced,
                             "findings": outcome.findings})
            else:
                for f in outcome.findings:
                    err.print(f"[yellow]forced over {f['kind']}[/yellow] on '{f['question']}'")
                out.print(f"approved {a.article_id} v{a.version_number} "
                          f"({a.content_sha256[:12]}) as {a.approver}; it is served now")
    _after_governance_change(c)


def _after_governance_change(c: Ctx) -> None:
    """Keep the search index in step with governance (every article is compared)."""
    cli_assist.refresh_index(c)


@app.command()
def review(
    ctx: typer.Context,
    article_id: str,
    user: AsUser = None,
    outcome: Annotated[str, typer.Option("--outcome", help="verified | needs_update")] = "verified",
    note: Annotated[str, typer.Option("--note")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Record that the served version was re-verified (restarts the review clock)."""
    from kb import workflows

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            actor = c.actor(session, user, "review")
            r = workflows.review(session, actor=actor, article_id=article_id, outcome=outcome,
                                 note=note, now=c.clock())
            st = governance.statuses(session, article_id=article_id, now=c.clock())[0]
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json({"id": article_id, "version": r.version_number, "reviewer": r.reviewer,
                     "outcome": r.outcome, "at": r.at.isoformat(),
                     "due_at": st.freshness.due_at.isoformat() if st.freshness else None})
    else:
        due = f"; next review due {st.freshness.due_at:%Y-%m-%d}" if st.freshness else ""
        out.print(f"reviewed {article_id} v{r.version_number} ({r.outcome}){due}")


@app.command()
def retire(
    ctx: typer.Context,
    article_id: str,
    user: AsUser = None,
    note: Annotated[str, typer.Option("--note")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Stop serving an article."""
    from kb import workflows

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            actor = c.actor(session, user, "retire")
            r = workflows.retire(session, actor=actor, article_id=article_id, note=note,
                                 now=c.clock())
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json({"id": article_id, "up_to_version": r.up_to_version, "by": r.by,
                     "at": r.at.isoformat()})
    else:
        out.print(f"retired {article_id} (versions up to v{r.up_to_version}); it is no longer "
                  "served")
    _after_governance_change(c)


def _status_table(rows: list[governance.ArticleStatus], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("id", "state", "served", "pending", "owner", "risk", "due"):
        table.add_column(col)
    for s in rows:
        due = ""
        if s.freshness:
            due = f"{s.freshness.due_at:%Y-%m-%d}" + (" [red]STALE[/red]" if s.freshness.stale else "")
        state = s.state + (" [yellow](file removed)[/yellow]" if s.removed_from_source else "")
        table.add_row(s.id, state, f"v{s.served_version}" if s.served_version else "-",
                      f"v{s.pending_version}" if s.pending_version else "-", s.owner, s.risk, due)
    return table


@app.command()
def status(
    ctx: typer.Context,
    article_id: Annotated[str | None, typer.Argument(help="One article (default: all)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Governance state of every article (or one)."""
    c = get_ctx(ctx)
    with c.session() as session:
        try:
            rows = governance.statuses(session, article_id=article_id, now=c.clock())
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json([r.as_dict() for r in rows] if article_id is None else rows[0].as_dict())
        return
    out.print(_status_table(rows, "Articles"))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    stale = sum(1 for r in rows if r.freshness and r.freshness.stale)
    out.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; {stale} stale")


@app.command()
def stale(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    due_within: Annotated[str | None, typer.Option("--due-within", help="Also list articles due within e.g. 14d")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The review queue: served articles past (or near) their review date."""
    c = get_ctx(ctx)
    within = parse_duration(due_within) if due_within else None
    with c.session() as session:
        rows = governance.stale_articles(session, owner=owner, due_within=within,
                                         now=c.clock())
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    if not rows:
        out.print("nothing is due for review")
        return
    out.print(_status_table(rows, "Review queue (most overdue first)"))


@app.command()
def history(ctx: typer.Context, article_id: str, as_json: JsonOpt = False) -> None:
    """Every version of an article with author, dates, approver, reviews and retirements."""
    c = get_ctx(ctx)
    with c.session() as session:
        try:
            h = governance.history(session, article_id=article_id)
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json(h)
        return
    out.print(f"[bold]{h['id']}[/bold] — {h['title']} (owner {h['owner']}); served: "
              + (f"v{h['served_version']}" if h["served_version"] else "nothing"))
    for v in h["versions"]:
        ap = v["approval"]
        approval = (f"approved by {ap['approver']} at {ap['at'][:16]}"
                    + (f" — {ap['note']}" if ap["note"] else "")) if ap else "not approved"
        draft = " (draft)" if v["draft"] else ""
        out.print(f"  v{v['number']} {v['content_sha256'][:12]} by {v['author']} at "
                  f"{v['created_at'][:16]}{draft}: {approval}")
    for r in h["reviews"]:
        out.print(f"  review of v{r['version']} by {r['reviewer']} at {r['at'][:16]}: "
                  f"{r['outcome']}")
    for r in h["retirements"]:
        out.print(f"  retired up to v{r['up_to_version']} by {r['by']} at {r['at'][:16]}")
    if h["removed_from_source"]:
        out.print(f"  file removed from the content folder at {h['removed_from_source'][:16]}")


@app.command()
def diff(ctx: typer.Context, article_id: str, a: int, b: int, as_json: JsonOpt = False) -> None:
    """Unified diff between two versions."""
    c = get_ctx(ctx)
    with c.session() as session:
        try:
            text = governance.diff(session, article_id=article_id, a=a, b=b)
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json({"id": article_id, "from": a, "to": b, "diff": text})
    else:
        sys.stdout.write(text or f"versions {a} and {b} are identical\n")


# --- database -----------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending schema migrations (also done automatically on first use)."""
    c = get_ctx(ctx)
    engine = db.make_engine(c.settings)
    try:
        before, after = db.upgrade(engine)
    finally:
        engine.dispose()
    url = engine.url.render_as_string(hide_password=True)
    if before == after:
        out.print(f"{url}: schema is up to date (revision {after})")
    else:
        out.print(f"{url}: upgraded schema from {before or 'empty'} to {after}")


# --- demo ---------------------------------------------------------------------------------


DEMO_ADMIN = "kb-admin"
DEMO_USERS: list[dict[str, Any]] = [
    {"name": "acme-agent", "role": "agent", "audiences": ["vendor:acme"]},
    {"name": "globex-agent", "role": "agent", "audiences": ["vendor:globex"]},
    {"name": "billing-owner", "role": "owner", "teams": ["billing-knowledge"]},
    {"name": "risk-approver", "role": "approver",
     "teams": ["billing-knowledge", "retention-team", "trust-safety", "privacy-office"]},
]


def _demo_users(c: Ctx) -> None:
    """The demo's admin (the one-time bootstrap on an empty database) and its users."""
    from kb.identity import add_user, bootstrap_admin

    with c.session() as s:
        if s.get(User, DEMO_ADMIN) is None:
            bootstrap_admin(s, name=DEMO_ADMIN)
        for u in DEMO_USERS:
            if s.get(User, u["name"]) is None:
                add_user(s, name=u["name"], role=u["role"], teams=u.get("teams", ()),
                         audiences=u.get("audiences", ()), by=DEMO_ADMIN)
    out.print(f"users: {DEMO_ADMIN} (admin), "
              + ", ".join(f"{u['name']} ({u['role']})" for u in DEMO_USERS))


# Users `kb demo` prints a token for: one per face of the web console.
DEMO_TOKENS = {"acme-agent": "agent: the answer panel", "billing-owner": "owner: the desk",
               "risk-approver": "approver: approvals and the health dashboard"}

DEMO_QUESTIONS = [
    "customer cancelled their annual plan 20 days in, can they get a refund?",
    "customer says a charge on their bill is wrong and wants to dispute it",
    "customer forgot their password and is locked out, what do I do?",
    "what's the weather going to be like tomorrow?",
]


@app.command()
def demo(ctx: typer.Context) -> None:
    """Sync the demo content, approve the bootstrap import, show status and the stale queue.

    It tells the same story on any date: the articles' review dates are replayed relative
    to today (see kb/demo.py)."""
    from kb import workflows
    from kb.demo import replay_review_dates
    from kb.identity import create_token
    from kb.permissions import actor_for

    c = get_ctx(ctx)
    root = c.settings.content_dir
    try:
        out.rule("1. users: the first admin (one-time bootstrap) and demo users")
        _demo_users(c)
        out.rule("2. sync the content folder")
        report = run_sync(c, root, DEMO_ADMIN)
        _print_sync(report)
        out.rule("3. approve the bootstrap import (drafts stay pending)")
        with c.session() as session:
            admin = actor_for(session, name=DEMO_ADMIN)
            bulk = workflows.approve_all(session, actor=admin, note="bootstrap import",
                                         allow_self=True, now=c.clock())
            out.print(f"approved {len(bulk.approved)} versions; skipped {len(bulk.skipped)}")
            for i, n, r in bulk.skipped:
                out.print(f"  [yellow]skipped[/yellow] {i} v{n}: {r.split(';')[0]}")
            replay_review_dates(session, reviewer=DEMO_ADMIN, now=c.clock(),
                                article_ids={i for i, _ in bulk.approved})
            rows = governance.statuses(session, now=c.clock())
            queue = governance.stale_articles(session, due_within=timedelta(days=14),
                                              now=c.clock())
            tokens = {user: create_token(session, user=user, expires_in=timedelta(days=7),
                                         by=DEMO_ADMIN, note="kb demo", now=c.clock())[1]
                      for user in DEMO_TOKENS}
    except CanonError as exc:
        fail(exc)
    _after_governance_change(c)
    out.rule("4. status")
    out.print(_status_table(rows, "Articles"))
    out.rule("5. review queue: stale or due within 14 days")
    out.print(_status_table(queue, "Review queue"))
    out.rule("6. API tokens (valid 7 days, shown once): the API, and the web console at /ui")
    for user, role in DEMO_TOKENS.items():
        out.print(f"{user} ({role}):\n{tokens[user]}")
    out.print("Start `kb serve`, open http://127.0.0.1:8000/ui and sign in with a token: the "
              "agent's answer panel, the owners' desk, the health dashboard.")
    out.rule("7. an Acme agent asks (approved text only, verbatim, with citations)")
    for question in DEMO_QUESTIONS:
        out.print(f"\n[bold]> {question}[/bold]")
        cli_assist.print_answer(c, question, audience="vendor:acme", top_k=1,
                                caller="acme-agent")
    out.print("\nNext: `kb history ID`, `kb stale --owner TEAM`, edit a file in content/ and "
              "run `kb sync --as billing-owner`, then `kb approve ID --as risk-approver`.")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
