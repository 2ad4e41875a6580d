"""`kb` commands for the answer path: index, ask, serve, audit replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from api.cli_common import Ctx, JsonOpt, err, fail, get_ctx, out, print_json
from kb.errors import CanonError

index_app = typer.Typer(no_args_is_help=True, help="The search index of approved text.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log of answers.")


def refresh_index(c: Ctx, article_ids: Sequence[str] | None = None, *,
                  rebuild: bool = False) -> None:
    """Bring the index in line with what the database serves, with a progress bar."""
    from assist import indexer

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("indexing approved text", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with c.session() as session:
            fn = indexer.rebuild if rebuild else indexer.refresh
            kwargs = {} if rebuild else {"article_ids": article_ids}
            report = fn(session, c.index, max_chars=c.settings.index.chunk_max_chars,
                        progress=progress, **kwargs)
    if report.changed or rebuild:
        err.print(f"index: {len(report.indexed)} articles indexed ({report.chunks} chunks), "
                  f"{len(report.removed)} removed")


def index_rebuild(ctx: typer.Context) -> None:
    """Drop the index and index every served version again."""
    refresh_index(get_ctx(ctx), rebuild=True)


def index_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What the index holds compared with what the database serves."""
    from kb.governance import served_numbers

    c = get_ctx(ctx)
    with c.session() as session:
        served = served_numbers(session)
    indexed = c.index.manifest()
    behind = sorted(a for a in set(served) | set(indexed) if served.get(a) != indexed.get(a))
    data = {"collection_prefix": c.index.prefix, "served_articles": len(served),
            "indexed_articles": len(indexed), "chunks": len(c.index.catalog().chunks),
            "views": sorted(c.index.views()), "out_of_date": behind}
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key}: {value}")


def ask(
    ctx: typer.Context,
    question: str,
    audience: Annotated[str, typer.Option("--audience", help="internal | vendors | vendor:<name>")] = "internal",
    locale: Annotated[str | None, typer.Option("--locale")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k")] = None,
    caller: Annotated[str, typer.Option("--as", help="Who is asking (audit log).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Ask a question exactly as /v1/assist would answer it."""
    c = get_ctx(ctx)
    print_answer(c, question, audience=audience, locale=locale, top_k=top_k, caller=caller,
                 as_json=as_json)


def print_answer(c: Ctx, question: str, *, audience: str, locale: str | None = None,
                 top_k: int | None = None, caller: str = "cli", as_json: bool = False) -> None:
    from api.schemas import AssistResponse
    from assist.answer import Question

    result = c.assistant.ask(Question(text=question, audience=audience, caller=caller,
                                      locale=locale, top_k=top_k))
    data = AssistResponse.from_result(result)
    if as_json:
        print_json(data.model_dump(mode="json"))
        return
    out.print(f"[bold]{data.status}[/bold]  (query {data.query_id}, {result.latency_ms:.1f} ms)")
    for i, p in enumerate(data.passages, 1):
        cit = p.citation
        out.print(f"\n[{i}] {' > '.join(cit.section)}  — {cit.article_id} v{cit.version} "
                  f"#{cit.anchor} [{cit.start}:{cit.end}] score {p.score:.3f}")
        out.print(p.text)
    for w in data.warnings:
        out.print(f"[yellow]warning[/yellow] {w['message']}")
    if data.escalation:
        e = data.escalation
        out.print(f"\n[red]escalate to {e.team}[/red] ({e.reason}): {e.message}")
        for f in e.found:
            out.print(f"  found: {f['article_id']} v{f['version']} {' > '.join(f['section'])}")


def audit_replay(ctx: typer.Context, query_id: str, as_json: JsonOpt = False) -> None:
    """Print exactly the text that was served for a query (verified against its hash)."""
    from kb.audit import replay

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            entry, passages = replay(session, query_id=query_id)
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json({"query_id": entry.id, "at": entry.at.isoformat(), "caller": entry.caller,
                    "audience": entry.audience, "question": entry.question,
                    "status": entry.status, "reason": entry.reason,
                    "passages": passages})
        return
    out.print(f"query {entry.id} at {entry.at:%Y-%m-%d %H:%M:%S}Z by {entry.caller} "
              f"({entry.audience}): {entry.question}")
    out.print(f"decision: {entry.status}" + (f" ({entry.reason})" if entry.reason else ""))
    for p in passages:
        mark = "verified" if p["verified"] else "[red]HASH MISMATCH[/red]"
        out.print(f"\n--- {p['article_id']} v{p['version']} [{p['start']}:{p['end']}] {mark}")
        out.print(p["text"])


def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers")] = 1,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    index_app.command("rebuild")(index_rebuild)
    index_app.command("status")(index_status)
    audit_app.command("replay")(audit_replay)
    app.add_typer(index_app, name="index")
    app.add_typer(audit_app, name="audit")
    app.command()(ask)
    app.command()(serve)
    register_owner_commands(app)


flags_app = typer.Typer(no_args_is_help=True, help="Agents' flags on served answers.")


def queue(
    ctx: typer.Context,
    team: Annotated[list[str] | None, typer.Option("--team", help="Only these teams (repeat); default: all.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The owners' review queue: stale articles, flags, pending versions, content gaps."""
    from kb.queue import review_queue

    c = get_ctx(ctx)
    with c.session() as session:
        items = review_queue(session, teams=team or None)
    if as_json:
        print_json(items)
        return
    if not items:
        out.print("the review queue is empty")
    for i in items:
        what = i.get("article_id") or i.get("question")
        extra = (f"flag {i['flag_id']} ({i['reason']}): {i['question']}" if i["kind"] == "flag"
                 else f"x{i['count']}" if i["kind"] == "gap" else i.get("owner", ""))
        out.print(f"{i['kind']:<9} {what}  {extra}  age {i.get('age_days', 0)}d")


def flags_resolve(
    ctx: typer.Context,
    flag_id: int,
    resolution: Annotated[str, typer.Option("--resolution", help="fixed | no_change | duplicate | wont_fix")],
    user: Annotated[str, typer.Option("--as", help="Who resolves it (audit log).")],
    note: Annotated[str, typer.Option("--note")] = "",
) -> None:
    """Close an agent's flag."""
    from kb.flags import resolve_flag

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            f = resolve_flag(session, flag_id=flag_id, by=user, resolution=resolution, note=note)
        except CanonError as exc:
            fail(exc)
    out.print(f"flag {f.id} resolved ({f.resolution}) by {f.resolved_by}")


def register_owner_commands(app: typer.Typer) -> None:
    flags_app.command("resolve")(flags_resolve)
    app.add_typer(flags_app, name="flags")
    app.command()(queue)
