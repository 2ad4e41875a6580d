"""`kb users ...` and `kb tokens ...`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from api.cli_common import (
    AsUser,
    JsonOpt,
    err,
    fail,
    get_ctx,
    out,
    parse_duration,
    print_json,
)
from kb.errors import CanonError


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _names(values: list[str]) -> str:
    return ", ".join(values) or "-"


users_app = typer.Typer(no_args_is_help=True, help="Users, roles, teams and audiences.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens (shown once, stored hashed).")


def users_add(
    ctx: typer.Context,
    name: str,
    role: Annotated[str, typer.Option("--role", help="agent | owner | approver | evaluator | admin")],
    team: Annotated[list[str] | None, typer.Option("--team", help="Team the user owns/approves for (repeat).")] = None,
    audience: Annotated[list[str] | None, typer.Option("--audience", help="Audience an agent sees (repeat).")] = None,
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Another name they write under, e.g. their git email (repeat).")] = None,
    by: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user (admins)."""
    from kb.identity import add_user

    c = get_ctx(ctx)
    with c.session() as s:
        try:
            admin = c.actor(s, by, "manage_users")
            u = add_user(s, name=name, role=role, teams=team or [], audiences=audience or [],
                         aliases=alias or [], by=admin.id)
        except CanonError as exc:
            fail(exc)
    _print_user(u, as_json, "added")


def _print_user(u: Any, as_json: bool, verb: str) -> None:
    data = {"name": u.name, "role": u.role, "teams": u.teams, "audiences": u.audiences,
            "aliases": u.aliases, "disabled": u.disabled}
    if as_json:
        print_json(data)
    else:
        out.print(f"{verb} {u.name} ({u.role}{', disabled' if u.disabled else ''}); teams: "
                  f"{_names(u.teams)}; audiences: {_names(u.audiences)}; aliases: "
                  f"{_names(u.aliases)}")


def users_bootstrap(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Create the first admin (only on a database without any user)."""
    from kb.identity import bootstrap_admin

    with get_ctx(ctx).session() as s:
        try:
            u = bootstrap_admin(s, name=name)
        except CanonError as exc:
            fail(exc)
    _print_user(u, as_json, "bootstrapped admin")


def _admin_change(ctx: typer.Context, by: str | None, verb: str, change: Any,
                  as_json: bool) -> None:
    c = get_ctx(ctx)
    with c.session() as s:
        try:
            admin = c.actor(s, by, "manage_users")
            u = change(s, admin.id)
        except CanonError as exc:
            fail(exc)
    _print_user(u, as_json, verb)


def users_disable(ctx: typer.Context, name: str, by: AsUser = None,
                  as_json: JsonOpt = False) -> None:
    """Disable a user: their tokens and --as stop working at once (admins)."""
    from kb.identity import set_disabled

    _admin_change(ctx, by, "disabled",
                  lambda s, who: set_disabled(s, name=name, disabled=True, by=who), as_json)


def users_enable(ctx: typer.Context, name: str, by: AsUser = None,
                 as_json: JsonOpt = False) -> None:
    """Enable a disabled user again (admins)."""
    from kb.identity import set_disabled

    _admin_change(ctx, by, "enabled",
                  lambda s, who: set_disabled(s, name=name, disabled=False, by=who), as_json)


def users_set_role(
    ctx: typer.Context,
    name: str,
    role: Annotated[str, typer.Argument(help="agent | owner | approver | evaluator | admin")],
    team: Annotated[list[str] | None, typer.Option("--team", help="Replace the teams (repeat).")] = None,
    audience: Annotated[list[str] | None, typer.Option("--audience", help="Replace the audiences (repeat).")] = None,
    by: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a user's role, and optionally teams or audiences (admins)."""
    from kb.identity import set_role

    _admin_change(ctx, by, "changed",
                  lambda s, who: set_role(s, name=name, role=role, teams=team, audiences=audience,
                                          by=who), as_json)


def users_link(
    ctx: typer.Context,
    name: str,
    alias: Annotated[str, typer.Option("--alias", help="e.g. the git author email of this user")],
    by: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Link another name (a git author email) to a user, for the four-eyes rule (admins)."""
    from kb.identity import link_alias

    _admin_change(ctx, by, "linked",
                  lambda s, who: link_alias(s, name=name, alias=alias, by=who), as_json)


def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every user."""
    from kb.identity import list_users

    with get_ctx(ctx).session() as s:
        rows = list_users(s)
    data = [{"name": u.name, "role": u.role, "teams": u.teams, "audiences": u.audiences,
             "aliases": u.aliases, "disabled": u.disabled} for u in rows]
    if as_json:
        print_json(data)
        return
    for u in rows:
        state = "  (disabled)" if u.disabled else ""
        out.print(f"{u.name:<24} {u.role:<10} teams: {_names(u.teams)}; audiences: "
                  f"{_names(u.audiences)}{state}")


def tokens_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="The user the token acts as.")],
    expires: Annotated[str, typer.Option("--expires", help="Lifetime, e.g. 30d, 12w, 6m, 1y, or 'never'.")] = "90d",
    note: Annotated[str, typer.Option("--note", help="What the token is for.")] = "",
    by: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and cannot be shown again (admins)."""
    from kb.identity import create_token

    c = get_ctx(ctx)
    ttl = None if expires == "never" else parse_duration(expires)
    with c.session() as s:
        try:
            admin = c.actor(s, by, "manage_tokens")
            row, token = create_token(s, user=user, expires_in=ttl, by=admin.id, note=note,
                                      now=c.clock())
        except CanonError as exc:
            fail(exc)
    expiry = f"expires {row.expires_at:%Y-%m-%d}" if row.expires_at else "never expires"
    if as_json:
        print_json({"id": row.id, "user": row.user_name, "token": token,
                    "expires_at": _iso(row.expires_at), "note": row.note})
    else:
        out.print(token)
    err.print(f"[yellow]warning:[/yellow] token {row.id} for {user} ({expiry}) is shown only "
              "this once; store it now, it cannot be shown again.")


def tokens_revoke(
    ctx: typer.Context,
    token_id: str,
    by: AsUser = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token (it stops working at once; admins)."""
    from kb.identity import revoke_token

    c = get_ctx(ctx)
    with c.session() as s:
        try:
            admin = c.actor(s, by, "manage_tokens")
            row = revoke_token(s, token_id=token_id, by=admin.id, now=c.clock())
        except CanonError as exc:
            fail(exc)
    if as_json:
        print_json({"id": row.id, "user": row.user_name, "revoked_at": _iso(row.revoked_at)})
    else:
        out.print(f"revoked {row.id} ({row.user_name})")


def tokens_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokens (never their values)."""
    from kb.identity import list_tokens

    with get_ctx(ctx).session() as s:
        rows = list_tokens(s, user=user)
    data = [{"id": t.id, "user": t.user_name, "created_at": _iso(t.created_at),
             "expires_at": _iso(t.expires_at), "revoked_at": _iso(t.revoked_at),
             "last_used_at": _iso(t.last_used_at), "note": t.note} for t in rows]
    if as_json:
        print_json(data)
        return
    for t in rows:
        state = "revoked" if t.revoked_at else "active"
        expires = f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "never"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        out.print(f"{t.id}  {t.user_name:<20} {state:<8} expires {expires:<10} "
                  f"last used {used:<16} {t.note}")


def register(app: typer.Typer) -> None:
    users_app.command("bootstrap")(users_bootstrap)
    users_app.command("add")(users_add)
    users_app.command("list")(users_list)
    users_app.command("disable")(users_disable)
    users_app.command("enable")(users_enable)
    users_app.command("set-role")(users_set_role)
    users_app.command("link")(users_link)
    tokens_app.command("create")(tokens_create)
    tokens_app.command("revoke")(tokens_revoke)
    tokens_app.command("list")(tokens_list)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
