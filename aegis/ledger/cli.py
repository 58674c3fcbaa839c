"""``aegis audit``: verify the ledger, read its trail in plain language, export the public key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from aegis.domain import AuditRecord


@click.group()
@click.option("--url", help="Ledger database URL (default: the local ledger under AEGIS_HOME).")
@click.option(
    "--keys",
    type=click.Path(file_okay=False, path_type=Path),
    help="Key directory (default AEGIS_HOME/keys).",
)
@click.pass_context
def audit(ctx: click.Context, url: str | None, keys: Path | None) -> None:
    """The signed, hash-chained audit ledger."""
    ctx.obj = {"url": url, "keys": keys}


def _ledger(ctx: click.Context):  # type: ignore[no-untyped-def]
    """The ledger opened read-only: no command here may create, replace or archive key material."""
    from aegis.ledger import Ledger, LedgerError, LedgerKeyError

    try:
        return Ledger(ctx.obj["url"], ctx.obj["keys"], read_only=True)
    except (LedgerError, LedgerKeyError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@audit.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Check the whole chain and every signature; exit 1 and name the first bad record on tampering.

    Read-only: it trusts the public keys in the key directory (current and
    archived ``<key_id>.pub.pem``) and exits 1 when there are none.
    """
    from aegis.ledger import LedgerKeyError

    try:
        report = _ledger(ctx).verify()
    except LedgerKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@audit.command()
@click.option("--changeset", "changeset_id", help="Only the records about this changeset.")
@click.pass_context
def show(ctx: click.Context, changeset_id: str | None) -> None:
    """A readable trail: each decision with its axiom, rule and numbers; each transition."""
    records = _ledger(ctx).records(changeset_id)
    if not records:
        click.echo("no records" + (f" about {changeset_id}" if changeset_id else ""))
        return
    for record in records:
        click.echo(describe(record))


@audit.command("export-key")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the PEM here instead of stdout."
)
@click.pass_context
def export_key(ctx: click.Context, out: Path | None) -> None:
    """Print the ledger's public key (PEM), to verify records elsewhere."""
    ledger = _ledger(ctx)
    if ledger.public_key_pem is None:
        click.echo(
            f"error: no ledger public key in {ledger.key_dir} (nothing has been signed here yet)", err=True
        )
        sys.exit(1)
    if out is None:
        click.echo(ledger.public_key_pem, nl=False)
    else:
        out.write_text(ledger.public_key_pem)
        click.echo(f"wrote public key {ledger.key_id} to {out}")


def describe(record: AuditRecord) -> str:
    """One record in plain language."""
    when = record.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    head = f"#{record.seq} {when} {record.kind} on {record.subject} by {record.actor}"
    payload: dict[str, Any] = record.payload
    if record.kind == "decision" and isinstance(payload.get("decision"), dict):
        return head + "\n" + _describe_decision(payload["decision"])
    if record.kind == "transition" and "to" in payload:
        reason = f" because {payload['reason']}" if payload.get("reason") else ""
        return f"{head}: {payload.get('from')} -> {payload['to']}{reason}"
    items = ", ".join(f"{k}={v}" for k, v in sorted(payload.items()))
    return f"{head}: {items}"


def _describe_decision(decision: dict[str, Any]) -> str:
    verdict = str(decision.get("verdict", "?")).upper()
    lines = [
        f"    verdict {verdict} (risk {decision.get('risk_score')}, policy {decision.get('policy_version')})"
    ]
    if decision.get("axiom"):
        lines.append(f"    decided by axiom {decision['axiom']}, rule {decision.get('rule')}")
    for finding in decision.get("findings", []):
        numbers = ", ".join(f"{k}={v}" for k, v in sorted(finding.get("numbers", {}).items()))
        lines.append(
            f"    - [{finding.get('verdict')}] {finding.get('axiom')} / {finding.get('rule')}: "
            f"{finding.get('message')}" + (f" [{numbers}]" if numbers else "")
        )
    if not decision.get("findings"):
        lines.append("    - no axiom violated; low-risk parameter change within bounded deltas")
    return "\n".join(lines)
