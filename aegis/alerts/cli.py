"""``aegis alerts``: run the receiver, write the generated rules, validate the alerting config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aegis.config import ALERTS_PORT, WORLD_PORT, paths

ENV_SNS_SKIP_VERIFY = "AEGIS_SNS_SKIP_VERIFY"
PULL_ONCE_DEADLINE_S = 60.0  # pull-sqs --once: no new receive after this
PULL_RETRY_S = 5.0  # pull-sqs: pause after the queue could not be read


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


@alerts.command(name="list")
@click.option(
    "--all", "show_all", is_flag=True, help="Resolved alerts and unknown names too (default: firing only)."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of inbox entries.")
def list_alerts(show_all: bool, limit: int, as_json: bool) -> None:
    """The alert inbox: what Alertmanager, CloudWatch and the SLO marts raised."""
    import json

    from aegis import db
    from aegis.alerts.inbox import AlertInbox, InboxEntry, default_url

    entries: list[InboxEntry] = []
    if db.sqlite_file(default_url()) is not None and not paths().alerts_db.is_file():
        pass  # a local inbox nothing has written yet: nothing to list (and no file created)
    else:
        inbox = AlertInbox()
        try:
            entries = inbox.all() if show_all else inbox.firing()
        finally:
            inbox.close()
    entries = entries[-limit:]
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    if not entries:
        click.echo("no firing alerts" if not show_all else "the alert inbox is empty")
        return
    for e in entries:
        a = e.alert
        flag = "" if e.known else "  (unknown name: recorded, ignored)"
        click.echo(
            f"{e.seq:>6}  {e.status:<8} {a.name:<26} {a.target:<18} {a.source:<12} "
            f"x{e.count:<4} last {e.last_seen:%Y-%m-%d %H:%M:%S}  {a.summary}{flag}"
        )


@alerts.command(name="pull-sqs")
@click.option(
    "--queue-url",
    envvar="AEGIS_ALERT_QUEUE_URL",
    required=True,
    help="The alarm queue (Pulumi output alertQueueUrl; env AEGIS_ALERT_QUEUE_URL).",
)
@click.option(
    "--region",
    envvar="AEGIS_AWS_REGION",
    required=True,
    help="AWS region (env AEGIS_AWS_REGION); an AWS queue URL's own region wins.",
)
@click.option(
    "--endpoint-url", default=None, help="Another SQS endpoint (default: AWS, or the env AWS_ENDPOINT_URL)."
)
@click.option("--once", is_flag=True, help="Drain what is waiting now (up to --max-messages), then exit.")
@click.option(
    "--max-messages",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="With --once: the most messages to take.",
)
def pull_sqs(queue_url: str, region: str, endpoint_url: str | None, once: bool, max_messages: int) -> None:
    """Move CloudWatch alarms from the production SQS queue into the alert inbox (until Ctrl-C).

    A message is deleted only after its alert is committed; one that is not an alarm is left for
    the dead-letter queue.  Without --once it long-polls and, when the queue cannot be read,
    says why and tries again.
    """
    import time

    from aegis.alerts.inbox import AlertInbox
    from aegis.alerts.source import AlertSourceUnavailable, SqsAlertSource
    from aegis.alerts.sqs import MAX_MESSAGES, WAIT_S, PullResult

    def report(result: PullResult) -> None:
        if result.received:
            click.echo(
                f"received {result.received}, stored {result.stored}, left {len(result.skipped)} for the DLQ"
                + (f", {len(result.undeleted)} not deleted (will come back)" if result.undeleted else "")
            )

    try:
        source = SqsAlertSource(queue_url, region, endpoint_url, wait_s=0 if once else WAIT_S)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    inbox = AlertInbox()
    try:
        if once:
            try:
                report(source.drain(inbox, max_messages=max_messages, deadline_s=PULL_ONCE_DEADLINE_S))
            except AlertSourceUnavailable as exc:
                report(exc.result)
                raise click.ClickException(str(exc)) from exc
            return
        while True:
            try:  # deadline 0: one long-polling receive per round
                report(source.drain(inbox, max_messages=MAX_MESSAGES, deadline_s=0))
            except AlertSourceUnavailable as exc:
                report(exc.result)
                click.echo(f"error: {exc}; retrying in {PULL_RETRY_S:g} s", err=True)
                time.sleep(PULL_RETRY_S)
    except KeyboardInterrupt:
        pass
    finally:
        inbox.close()
