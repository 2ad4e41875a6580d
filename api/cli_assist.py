"""`kb` commands for the answer path: index, ask, serve, audit replay."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from api.cli_common import AsUser, Ctx, JsonOpt, err, fail, get_ctx, out, print_json
from kb.errors import CanonError, Forbidden, IndexBusy

index_app = typer.Typer(no_args_is_help=True, help="The search index of approved text.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log of answers.")


def refresh_index(c: Ctx, *, rebuild: bool = False, clean: bool = False) -> None:
    """Bring the whole index in line with what the database serves, with a progress bar.

    Every article is compared (not only the ones just changed), so an index left behind by
    a crash is repaired by the next sync or approval. With an embedded index, a running
    server is its only writer: this process then leaves the work to the server, which
    follows the database within seconds (``kb index status`` shows the lag)."""
    from assist import indexer

    if not c.index_writer():
        if rebuild:
            fail(IndexBusy(f"a running Canon server (pid {c._lock.holder() if c._lock else '?'})"
                           " holds the embedded index; stop it to rebuild the index"))
        err.print("index: a running Canon server holds the embedded index and indexes this "
                  "change itself (within seconds; see `kb index status`)")
        return

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("indexing approved text", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with c.session() as session:
            max_chars = c.settings.index.chunk_max_chars
            if rebuild:
                # On a Chroma server other processes read the live collections: rebuild
                # them in place unless told to drop them first.
                report = indexer.rebuild(session, c.index, max_chars=max_chars,
                                         progress=progress,
                                         in_place=bool(c.settings.chroma_url) and not clean)
            else:
                report = indexer.refresh(session, c.index, max_chars=max_chars,
                                         progress=progress)
    if report.changed or rebuild:
        err.print(f"index: {len(report.indexed)} articles indexed ({report.chunks} chunks), "
                  f"{len(report.removed)} removed")
    # The index is whole now: generations older than the previous one go (the previous one
    # stays for a server of the previous release and for a rollback).
    pruned = prune_generations(c, keep_previous=True)
    if pruned["dropped"] or pruned["orphan_folders"]:
        err.print(_prune_summary(pruned))


def prune_generations(c: Ctx, *, keep_previous: bool = True,
                      dry_run: bool = False) -> dict[str, Any]:
    """Drop the index generations (collection prefixes) this release does not serve: all
    but the current one and, with ``keep_previous``, the most recently written other one.
    With an embedded index, also the folders Chroma left behind for deleted collections.
    The caller holds the index writer role (always true with a Chroma server)."""
    from assist import store

    client = c.index.client
    kept, dropped = store.prune_plan(store.list_generations(client), c.index.prefix,
                                     keep_previous=keep_previous)
    folders = size = 0
    if not dry_run:
        for g in dropped:
            store.drop_generation(client, g)
        if not c.settings.chroma_url:
            folders, size = store.remove_orphan_segments(c.settings.data_dir / "chroma")

    def row(g: Any) -> dict[str, Any]:
        return {"prefix": g.prefix, "collections": len(g.collections), "chunks": g.chunks,
                "last_write_ns": g.last_write_ns}

    return {"current": c.index.prefix, "kept": [row(g) for g in kept],
            "dropped": [row(g) for g in dropped], "dry_run": dry_run,
            "orphan_folders": folders, "orphan_bytes": size}


def _prune_summary(data: dict[str, Any]) -> str:
    verb = "would drop" if data["dry_run"] else "dropped"
    parts = [f"index: {verb} {len(data['dropped'])} old generation(s)"]
    parts += [f"{g['prefix']} ({g['chunks']} chunks)" for g in data["dropped"]]
    line = parts[0] + (": " + ", ".join(parts[1:]) if parts[1:] else "")
    if data["orphan_folders"]:
        line += (f"; removed {data['orphan_folders']} folder(s) of deleted collections "
                 f"({data['orphan_bytes'] / 1e6:.1f} MB)")
    return line


def index_prune(
    ctx: typer.Context,
    all_old: Annotated[bool, typer.Option("--all", help="Drop the previous generation as well (once the upgrade is kept and no server of the previous release runs).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be dropped.")] = False,
    user: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop old index generations: every collection prefix but the current one and the
    previous one (admins). Prints what was kept and dropped."""
    from datetime import UTC, datetime

    c = _index_admin(ctx, user)
    if not dry_run and not c.index_writer():
        fail(IndexBusy(f"a running Canon server (pid {c._lock.holder() if c._lock else '?'})"
                       " holds the embedded index; stop it to prune the index"))
    data = prune_generations(c, keep_previous=not all_old, dry_run=dry_run)
    if as_json:
        print_json(data)
        return

    def when(ns: int) -> str:
        if not ns:
            return "never written"
        return f"last written {datetime.fromtimestamp(ns / 1e9, UTC):%Y-%m-%d %H:%M:%S}Z"

    for g in data["kept"]:
        tag = "current" if g["prefix"] == data["current"] else "previous"
        out.print(f"kept    {g['prefix']} ({tag}; {g['collections']} collections, "
                  f"{g['chunks']} chunks, {when(g['last_write_ns'])})")
    for g in data["dropped"]:
        out.print(f"{'dropping' if dry_run else 'dropped'} {g['prefix']} "
                  f"({g['collections']} collections, {g['chunks']} chunks, "
                  f"{when(g['last_write_ns'])})")
    out.print(_prune_summary(data) if data["dropped"] or data["orphan_folders"]
              else "index: nothing to prune")


def _index_admin(ctx: typer.Context, user: str | None) -> Ctx:
    """The command's context once ``user`` may manage the index (else exit with why)."""
    c = get_ctx(ctx)
    with c.session() as session:
        try:
            c.actor(session, user, "index")
        except CanonError as exc:
            fail(exc)
    return c


def index_rebuild(
    ctx: typer.Context, user: AsUser = None,
    clean: Annotated[bool, typer.Option(
        "--clean", help="With a Chroma server (KB_CHROMA_URL): drop the collections first "
        "instead of rebuilding them in place; running servers find nothing until it ends")
    ] = False,
) -> None:
    """Index every served version again (admins). An embedded index is dropped and refilled
    (refused while a server holds it); on a Chroma server the live collections are rebuilt
    in place, so running servers keep answering."""
    c = _index_admin(ctx, user)
    if clean and c.settings.chroma_url:
        err.print("index: dropping the collections first (--clean): servers reading them "
                  "answer from an empty index until the rebuild ends")
    refresh_index(c, rebuild=True, clean=clean)


def index_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What the index holds compared with what the database serves, and the lag."""
    from assist.follower import index_lag
    from assist.store import list_generations
    from kb.governance import served_numbers

    c = get_ctx(ctx)
    with c.session() as session:
        served = served_numbers(session)
        lag = index_lag(session, c.index, now=c.clock())
    indexed = c.index.manifest()
    hidden = sorted(a for a in lag.behind if a in served)
    data = {"collection_prefix": c.index.prefix, "served_articles": len(served),
            "indexed_articles": len(indexed), "chunks": len(c.index.catalog().chunks),
            "views": sorted(c.index.views()), "out_of_date": lag.behind,
            "not_served_yet": hidden, "lag_seconds": round(lag.seconds, 3),
            "max_lag_seconds": c.settings.index.max_lag_seconds,
            "other_generations": [g.prefix for g in list_generations(c.index.client)
                                  if g.prefix != c.index.prefix]}
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key}: {value}")


def ask(
    ctx: typer.Context,
    question: str,
    audience: Annotated[str | None, typer.Option("--audience", help="Staff may preview as internal | vendors | vendor:<name> (default: the user's own).")] = None,
    locale: Annotated[str | None, typer.Option("--locale")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k")] = None,
    user: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a question exactly as /v1/assist would answer it (logged as the user)."""
    from kb.permissions import AGENT

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            actor = c.actor(session, user, "ask")
            if audience is not None and actor.role == AGENT and audience != actor.audience:
                raise Forbidden(f"{actor.id} is an agent for {actor.audience} and may not ask "
                                f"as {audience}; only staff preview other audiences")
        except CanonError as exc:
            fail(exc)
    print_answer(c, question, audience=audience or actor.audience, locale=locale, top_k=top_k,
                 caller=actor.id, as_json=as_json)


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
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    c = get_ctx(ctx)
    if workers > 1 and not c.settings.chroma_url:
        fail(IndexBusy(f"--workers {workers} needs a shared index: an embedded index has one "
                       "server process. Run a Chroma server (`chroma run --path DIR`) and set "
                       "KB_CHROMA_URL (and KB_DATABASE_URL to PostgreSQL), or use --workers 1"))

    if workers > 1:
        _multiprocess_metrics()
        _share_cores(workers, c.settings.index.embedder_threads)
    from api.logs import log_config

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=log_config(fmt=c.settings.log_format, level=c.settings.log_level),
                log_level=c.settings.log_level, access_log=False)


def _share_cores(workers: int, threads: int) -> None:
    """Several workers split the cores for the embedding of questions: each gets
    cores // workers ONNX Runtime threads (at least one) unless KB_INDEX__EMBEDDER_THREADS
    says otherwise. Two threads per worker on two shared cores make each forward pass wait
    for a thread that another worker's pass has descheduled."""
    import os

    if threads:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["KB_INDEX__EMBEDDER_THREADS"] = str(max(1, (cores or 1) // workers))


def _multiprocess_metrics() -> None:
    """Several workers: prometheus-client's multiprocess mode (api/metrics.py). The workers
    inherit PROMETHEUS_MULTIPROC_DIR (a fresh directory when unset); samples a previous run
    left there are removed, as prometheus-client requires."""
    import os
    import tempfile
    from pathlib import Path

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="canon-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):
        stale.unlink()


def register(app: typer.Typer) -> None:
    index_app.command("rebuild")(index_rebuild)
    index_app.command("status")(index_status)
    index_app.command("prune")(index_prune)
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
        items = review_queue(session, teams=team or None, now=c.clock(),
                             group_gaps=c.assistant.gaps, nearest=c.assistant.gaps.nearest)
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
    user: AsUser = None,
    note: Annotated[str, typer.Option("--note")] = "",
) -> None:
    """Close an agent's flag (its owning team, or an admin)."""
    from kb import workflows

    c = get_ctx(ctx)
    with c.session() as session:
        try:
            actor = c.actor(session, user, "resolve_flag")
            f = workflows.resolve_flag(session, actor=actor, flag_id=flag_id,
                                       resolution=resolution, note=note, now=c.clock())
        except CanonError as exc:
            fail(exc)
    out.print(f"flag {f.id} resolved ({f.resolution}) by {f.resolved_by}")


def register_owner_commands(app: typer.Typer) -> None:
    flags_app.command("resolve")(flags_resolve)
    app.add_typer(flags_app, name="flags")
    app.command()(queue)
