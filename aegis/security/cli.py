"""``aegis token``: the operator mints, lists, rotates and revokes scoped API tokens.

A token is printed once, at issue or rotation; the store keeps only its hash.
Bad input (unknown scope, unreadable TTL, unknown token id) exits 2 with a
message that says what is accepted.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta

import click

from aegis.security.tokens import DEFAULT_GRACE, DEFAULT_TTL, MAX_TTL, SCOPES

TTL_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d`` -> timedelta; ``ValueError`` otherwise."""
    match = _TTL_RE.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit s, m, h or d (e.g. 12h, 7d)")
    value = float(match.group(1))
    delta = timedelta(**{TTL_UNITS[match.group(2)]: value})
    if delta <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return delta


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _store():  # type: ignore[no-untyped-def]
    from aegis.security.tokens import TokenStore

    return TokenStore()


def _human(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@click.group()
def token() -> None:
    """Scoped API tokens (read, control, faults, alerts); see docs/security.md."""


@token.command("issue")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help=f"A scope the token carries (repeatable): {', '.join(SCOPES)}.",
)
@click.option(
    "--ttl",
    default=_human(DEFAULT_TTL),
    show_default=True,
    help=f"Lifetime: a number and s, m, h or d (at most {MAX_TTL.days}d).",
)
@click.option("--label", default="", help="What the token is for (shown by `aegis token list`).")
@click.option("--actor", default="operator", show_default=True, help="Who issues it (for the ledger).")
@click.option("--json", "as_json", is_flag=True, help="Print the token as JSON.")
def issue(scopes: tuple[str, ...], ttl: str, label: str, actor: str, as_json: bool) -> None:
    """Mint a token and print it ONCE (only its hash is stored)."""
    try:
        lifetime = parse_duration(ttl)
        issued = _store().issue(list(scopes), ttl=lifetime, label=label, actor=actor)
    except ValueError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(issued.model_dump(mode="json")))
        return
    click.echo(issued.token)
    click.echo(
        f"token {issued.id}: scopes {', '.join(issued.scopes)}, expires {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC "
        "(shown once; store it now)",
        err=True,
    )


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as a JSON list.")
def list_tokens(as_json: bool) -> None:
    """Every token's id, scopes, state and expiry (never a secret)."""
    infos = _store().tokens()
    if as_json:
        click.echo(json.dumps([{**t.model_dump(mode="json"), "state": t.state()} for t in infos]))
        return
    if not infos:
        click.echo("no tokens (aegis token issue --scope SCOPE)")
        return
    for t in infos:
        expires = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
        extra = f" -> {t.replaced_by}" if t.replaced_by else ""
        click.echo(f"{t.id}  {t.state():8}  {','.join(t.scopes):22}  expires {expires}  {t.label}{extra}")


@token.command("revoke")
@click.argument("token_id")
@click.option("--reason", default="", help="Why (recorded in the ledger).")
@click.option("--actor", default="operator", show_default=True)
def revoke(token_id: str, reason: str, actor: str) -> None:
    """Refuse the token from now on."""
    try:
        _store().revoke(token_id, actor=actor, reason=reason)
    except KeyError as exc:
        _fail(str(exc.args[0]))
        return
    click.echo(f"revoked {token_id}")


@token.command("rotate")
@click.argument("token_id")
@click.option(
    "--grace",
    default=_human(DEFAULT_GRACE),
    show_default=True,
    help="How long the old token keeps working (s, m, h or d).",
)
@click.option("--actor", default="operator", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the new token as JSON.")
def rotate(token_id: str, grace: str, actor: str, as_json: bool) -> None:
    """Issue the replacement now; the old token works until the grace period ends."""
    try:
        period = timedelta(0) if grace.strip() in ("0", "0s") else parse_duration(grace)
        issued = _store().rotate(token_id, actor=actor, grace=period)
    except KeyError as exc:
        _fail(str(exc.args[0]))
        return
    except ValueError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(issued.model_dump(mode="json")))
        return
    click.echo(issued.token)
    click.echo(f"token {token_id} rotated to {issued.id}; the old one works for {grace} more", err=True)


@token.command("refusals")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
def refusals(limit: int, as_json: bool) -> None:
    """The most recent refused calls (who, where, why)."""
    rows = _store().refusals()[-limit:]
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    for r in rows:
        click.echo(
            f"{r.at:%Y-%m-%d %H:%M:%S}  {r.status}  {r.reason:9}  {r.caller}  {r.path}  {r.token_id or '-'}"
        )


@token.command("release")
@click.argument("caller")
@click.option("--actor", default="operator", show_default=True)
def release(caller: str, actor: str) -> None:
    """Lift a security incident's isolation of CALLER (a client address or a token id)."""
    store = _store()
    if not store.is_isolated(caller):
        _fail(
            f"{caller!r} is not isolated; isolated now: {', '.join(i.caller for i in store.isolations()) or 'none'}"
        )
    store.release(caller, actor=actor)
    click.echo(f"released {caller}")
