"""``aegis audit``: verify the ledger, read its trail in plain language, export or rotate the key.

Exit codes: 0 OK; 1 the ledger failed verification or cannot be opened (the
message names the record, the witness checkpoint or the file at fault).
"""

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
@click.option(
    "--witness",
    "witness_spec",
    help="Witness of the checkpoints: a directory, file:///DIR or s3://BUCKET/PREFIX "
    "(default: $AEGIS_LEDGER_WITNESS, the audit bucket in prod, else AEGIS_HOME/witness/).",
)
@click.pass_context
def audit(ctx: click.Context, url: str | None, keys: Path | None, witness_spec: str | None) -> None:
    """The signed, hash-chained audit ledger, anchored by witness checkpoints."""
    ctx.obj = {"url": url, "keys": keys, "witness": witness_spec}


def _ledger(ctx: click.Context, read_only: bool = True):  # type: ignore[no-untyped-def]
    """The ledger, read-only unless asked: verify/show/export never create, replace or archive key material."""
    from aegis.ledger import Ledger, LedgerError, LedgerKeyError
    from aegis.ledger.witness import WitnessError, witness_from_url

    try:
        witness = witness_from_url(ctx.obj["witness"]) if ctx.obj.get("witness") else None
        return Ledger(ctx.obj["url"], ctx.obj["keys"], read_only=read_only, witness=witness)
    except (LedgerError, LedgerKeyError, WitnessError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@audit.command()
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="KEY_ID",
    help="Expected genesis key fingerprint (from 'aegis audit export-key' kept elsewhere); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify(ctx: click.Context, pins: tuple[str, ...], as_json: bool) -> None:
    """Check the chain, every signature, the pinned keys and the witness; exit 1 naming the problem.

    Fails for an altered, removed, reordered or re-signed record, a cut tail
    (the witness saw more records), a ledger re-made from its start, a record
    signed by a key the chain never pinned (a key dropped into keys/ is not
    trusted), and a private key or key directory others can read. Read-only.
    """
    report = _ledger(ctx).verify(trusted_keys=dict.fromkeys(pins) if pins else None)
    click.echo(report.model_dump_json(indent=2) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


@audit.command("rotate-key")
@click.option("--reason", default="", help="Why the key is replaced (recorded).")
@click.option("--actor", default="operator", show_default=True)
@click.pass_context
def rotate_key(ctx: click.Context, reason: str, actor: str) -> None:
    """Replace the signing key: a record signed with the old key names the new one, which signs from then on."""
    from aegis.ledger import LedgerError, LedgerKeyError

    ledger = _ledger(ctx, read_only=False)
    old = ledger.key_id
    try:
        record = ledger.rotate_key(actor=actor, reason=reason)
    except (LedgerError, LedgerKeyError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        ledger.dispose()
    click.echo(f"rotated the ledger signing key {old} -> {ledger.key_id} (record seq={record.seq})")


@audit.command()
@click.option("--changeset", "changeset_id", help="Only the records about this changeset.")
@click.pass_context
def show(ctx: click.Context, changeset_id: str | None) -> None:
    """A readable trail: every record in plain words (decisions with axiom, rule and numbers)."""
    from aegis.ledger import LedgerError

    try:
        records = _ledger(ctx).records(changeset_id)
    except LedgerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
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
    """Print the public key the ledger trusts now (PEM), to verify records elsewhere or pin it.

    The key comes from the chain (genesis or the latest rotation), not from
    keys/: a public key file there may have been replaced. Keep its fingerprint
    apart from this machine and pass it to 'aegis audit verify --pin'.
    """
    ledger = _ledger(ctx)
    pinned = ledger.pinned_keys()
    if pinned:
        key_id, pem = sorted(pinned.items())[-1]
        if ledger.key_id is not None and ledger.key_id not in pinned:
            click.echo(
                f"warning: {ledger.key_dir} holds public key {ledger.key_id}, which the ledger does not trust",
                err=True,
            )
    elif ledger.public_key_pem is not None and ledger.key_id is not None:
        key_id, pem = ledger.key_id, ledger.public_key_pem
    else:
        click.echo(
            f"error: no ledger public key in {ledger.key_dir} (nothing has been signed here yet)", err=True
        )
        sys.exit(1)
    if out is None:
        click.echo(pem, nl=False)
    else:
        out.write_text(pem)
        click.echo(f"wrote public key {key_id} to {out}")


KIND_WORDS: dict[str, str] = {
    "genesis": "ledger started",
    "key_rotation": "signing key rotated",
    "decision": "policy decision",
    "transition": "changeset moved",
    "token": "API token",
    "security": "security event",
    "canary": "canary",
    "proposal": "change proposed",
    "reflection": "reflection on an outcome",
    "healing": "self-healing",
    "model": "world model",
}


def describe(record: AuditRecord) -> str:
    """One record in plain language: what happened, to what, by whom; decisions in full."""
    when = record.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    head = f"#{record.seq} {when} {record.kind} on {record.subject} by {record.actor}"
    payload: dict[str, Any] = record.payload
    if record.kind == "decision" and isinstance(payload.get("decision"), dict):
        return head + "\n" + _describe_decision(payload["decision"])
    if record.kind == "transition" and "to" in payload:
        reason = f" because {payload['reason']}" if payload.get("reason") else ""
        return f"{head}: {payload.get('from')} -> {payload['to']}{reason}"
    words = KIND_WORDS.get(record.kind)
    text = _plain(record.kind, payload)
    return f"{head}: {words}: {text}" if words else f"{head}: {text}"


def _plain(kind: str, payload: dict[str, Any]) -> str:
    """The payload in words: kinds with their own wording, else its ``summary``, else its fields."""
    if kind == "genesis" and isinstance(payload.get("trusted_keys"), dict):
        return f"trusts only signing key(s) {', '.join(sorted(payload['trusted_keys']))}"
    if kind == "key_rotation" and payload.get("new_key"):
        why = f" because {payload['reason']}" if payload.get("reason") else ""
        return f"key {payload.get('old_key')} retired, key {payload['new_key']} signs from here on{why}"
    if kind == "model" and payload.get("version"):
        before = payload.get("previous_version") or "none"
        why = f" because {payload['reason']}" if payload.get("reason") else ""
        return (
            f"{payload.get('model', 'model')} version {payload['version']} promoted to "
            f"{payload.get('alias', 'champion')} (was {before}){why}"
        )
    summary = payload.get("summary")
    if isinstance(summary, str) and summary.strip():
        return summary.strip()
    return ", ".join(f"{k}={v}" for k, v in sorted(payload.items())) or "(no details)"


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
