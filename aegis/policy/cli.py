"""``aegis policy``: judge a changeset file, run the Rego tests."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from aegis.domain import AutonomousChangeSet, Decision

EXIT_MALFORMED = 2


@click.group()
@click.option(
    "--policies",
    type=click.Path(file_okay=False, path_type=Path),
    help="Policy directory (default: policies/).",
)
@click.pass_context
def policy(ctx: click.Context, policies: Path | None) -> None:
    """Policy as code: the Rego axioms every change must pass."""
    ctx.obj = {"policies": policies}


def _engine(ctx: click.Context):  # type: ignore[no-untyped-def]
    from aegis.policy.engine import PolicyEngine, PolicyError

    try:
        return PolicyEngine(ctx.obj.get("policies"))
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _malformed(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_MALFORMED)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Record the Decision (with the changeset it judged) in the audit ledger, as the changeset's actor.",
)
@click.pass_context
def check(ctx: click.Context, file: Path, record: bool) -> None:
    """Judge FILE ({"changeset": ..., "context": ...}) and print the Decision as JSON.

    The Decision is recorded in the audit ledger under AEGIS_HOME first (unless
    --no-record); where it went (seq) is printed on stderr, so stdout is only
    the Decision JSON. Exit 0 on any verdict (auto, simulate, deny); exit 2 when
    FILE is malformed (not strict JSON: NaN/Infinity, a duplicate key, deep nesting,
    invalid UTF-8 or over 1 MiB are refused, see aegis.policy.strict_json; or not a
    changeset and context); exit 1 when the ledger cannot record it (nothing printed).
    """
    from aegis.domain import explain
    from aegis.policy.context import PolicyContext
    from aegis.policy.strict_json import StrictJsonError, load_strict

    try:
        doc = load_strict(file)
    except StrictJsonError as exc:  # NaN/Infinity, duplicate keys, deep nesting, bad UTF-8, too large
        _malformed(str(exc))
    if not isinstance(doc, dict) or "changeset" not in doc or "context" not in doc:
        _malformed(
            f'{file} must hold an object with "changeset" and "context" (and optionally "description")'
        )
    unknown = sorted(set(doc) - {"changeset", "context", "description", "expected"})
    if unknown:
        _malformed(f"{file}: unknown top-level field(s) {', '.join(unknown)}")
    try:
        changeset = AutonomousChangeSet.model_validate(doc["changeset"])
    except ValidationError as exc:
        _malformed(explain(exc, "changeset"))
    try:
        context = PolicyContext.model_validate(doc["context"])
    except ValidationError as exc:
        _malformed(explain(exc, "context"))
    try:
        decision = _engine(ctx).decide(changeset, context)
    except ValueError as exc:  # a non-finite number reached the engine some other way
        _malformed(f"{file}: {exc}")
    where = _record(decision, changeset) if record else None
    click.echo(decision.model_dump_json(indent=2))
    if where:
        click.echo(where, err=True)


def _record(decision: Decision, changeset: AutonomousChangeSet) -> str:
    """Append the Decision to the ledger as the changeset's actor; a sentence saying where it went."""
    from aegis.ledger import Ledger, LedgerError, LedgerKeyError

    try:
        ledger = Ledger()
        try:
            rec = ledger.record_decision(decision, changeset, actor=changeset.actor)
        finally:
            ledger.dispose()
    except (LedgerError, LedgerKeyError) as exc:
        raise click.ClickException(
            f"the decision was not recorded in the audit ledger: {exc} (use --no-record to only print it)"
        ) from exc
    return (
        f"recorded decision {decision.id} about {changeset.id} by {changeset.actor} "
        f"in the audit ledger at {ledger.url} as seq={rec.seq}"
    )


@policy.command("test")
@click.pass_context
def test_cmd(ctx: click.Context) -> None:
    """Run the test_* rules of policies/*_test.rego; exit 1 if any fails."""
    report = _engine(ctx).test()
    for result in report.results:
        mark = "PASS" if result.passed else "FAIL"
        line = f"{mark}  {result.full_name}  ({result.file}, {result.duration_ms:.1f} ms)"
        click.echo(line if result.passed else f"{line}\n      {result.detail}")
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    click.echo(f"{report.passed} passed, {report.failed} failed")
    if not report.ok:
        sys.exit(1)
