"""`kb users ...` and `kb tokens ...`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from api.cli_common import JsonOpt, err, fail, get_ctx, out, parse_duration, print_json
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
    by: Annotated[str, typer.Option("--as", help="Who is adding (audit log).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Add a user."""
    from kb.identity import add_user

    c = get_ctx(ctx)
    with c.session() as s:
        try:
            u = add_user(s, name=name, role=role, teams=team or [], audiences=audience or [],
                         by=by)
        except CanonError as exc:
            fail(exc)
    data = {"name": u.name, "role": u.role, "teams": u.teams, "audiences": u.audiences}
    if as_json:
        print_json(data)
    else:
        out.print(f"added {u.name} ({u.role}); teams: {_names(u.teams)}; audiences: "
                  f"{_names(u.audiences)}")


def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every user."""
    from kb.identity import list_users

    with get_ctx(ctx).session() as s:
        rows = list_users(s)
    data = [{"name": u.name, "role": u.role, "teams": u.teams, "audiences": u.audiences,
             "disabled": u.disabled} for u in rows]
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
    by: Annotated[str, typer.Option("--as", help="Who is creating it (audit log).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and cannot be shown again."""
    from kb.identity import create_token

    c = get_ctx(ctx)
    ttl = None if expires == "never" else parse_duration(expires)
    with c.session() as s:
        try:
            row, token = create_token(s, user=user, expires_in=ttl, by=by, note=note)
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
    by: Annotated[str, typer.Option("--as", help="Who is revoking (audit log).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token (it stops working at once)."""
    from kb.identity import revoke_token

    with get_ctx(ctx).session() as s:
        try:
            row = revoke_token(s, token_id=token_id, by=by)
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
    users_app.command("add")(users_add)
    users_app.command("list")(users_list)
    tokens_app.command("create")(tokens_create)
    tokens_app.command("revoke")(tokens_revoke)
    tokens_app.command("list")(tokens_list)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
