"""``aegis alerts``: run the receiver, write the generated rules, validate the alerting config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aegis.config import ALERTS_PORT, WORLD_PORT, paths

ENV_SNS_SKIP_VERIFY = "AEGIS_SNS_SKIP_VERIFY"


@click.group()
def alerts() -> None:
    """Alerts in: the receiver, the Prometheus rules generated from the SLOs, config checks."""


@alerts.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=ALERTS_PORT, show_default=True)
@click.option(
    "--sns-insecure-skip-verify",
    is_flag=True,
    default=lambda: os.environ.get(ENV_SNS_SKIP_VERIFY, "") == "1",
    help=f"Local only: accept SNS messages without checking their signature (env {ENV_SNS_SKIP_VERIFY}=1).",
)
def serve(host: str, port: int, sns_insecure_skip_verify: bool) -> None:
    """Run the alert receiver (Alertmanager webhook, CloudWatch via SNS) until Ctrl-C."""
    from aegis.alerts.receiver import serve as run

    if sns_insecure_skip_verify:
        click.echo("warning: SNS signature verification is OFF (local testing only)", err=True)
    try:
        run(host, port, sns_skip_verify=sns_insecure_skip_verify)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@alerts.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write into (default: AEGIS_HOME/alerting).",
)
@click.option("--world-port", type=click.IntRange(1, 65535), default=WORLD_PORT, show_default=True)
def rules(out_dir: Path | None, world_port: int) -> None:
    """Write the rules generated from policies/data.json, with prometheus.yml and alertmanager.yml."""
    from aegis.alerts.config import AlertingPorts, write_configs
    from aegis.alerts.rules import RulesError

    p = paths()
    try:
        files = write_configs(p, AlertingPorts(world=world_port), out_dir)
    except RulesError as exc:
        raise click.UsageError(str(exc)) from exc
    for path in (files.rules, files.prometheus, files.alertmanager):
        click.echo(str(path))


@alerts.command()
@click.option("--world-port", type=click.IntRange(1, 65535), default=WORLD_PORT, show_default=True)
def check(world_port: int) -> None:
    """Generate the config into a scratch directory and validate it with promtool and amtool."""
    import tempfile

    from aegis.alerts.config import AlertingPorts, check_configs, write_configs
    from aegis.alerts.rules import RulesError

    with tempfile.TemporaryDirectory(prefix="aegis-alerts-check-") as tmp:
        try:
            files = write_configs(paths(), AlertingPorts(world=world_port), Path(tmp))
        except RulesError as exc:
            raise click.UsageError(str(exc)) from exc
        results = check_configs(files)
    failed = False
    for command, code, output in results:
        mark = "ok" if code == 0 else ("missing" if code == 127 else "FAILED")
        click.echo(f"[{mark}] {command}")
        if code != 0:
            click.echo("    " + output.replace("\n", "\n    "))
        failed |= code not in (0, 127)
    if failed:
        sys.exit(1)
