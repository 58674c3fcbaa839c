"""``aegis incidents``: what healing saw and did, and the levers to run or stop it by hand.

- ``list [--json] [--status S]``: every incident, oldest first.
- ``show ID [--json]``: one incident with its timeline (and, without --json, its diagnosis).
- ``open --target SHARD --problem P``: open an incident by hand (as an alert would).
- ``heal ID [--world-url URL]``: run its playbook now, in this process.
- ``escalate ID --reason TEXT``: take it over: no further automatic action.
- ``tick [--world-url URL]``: one sensor tick by hand (read alerts, open incidents, heal the launched ones).

Exit codes: 0 done, 2 bad input (unknown id, bad option), 1 the backend failed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from aegis.config import WORLD_PORT

EXIT_BAD_INPUT = 2
ENV_WORLD_URL = "AEGIS_WORLD_URL"
STATUSES = ("open", "contained", "resolved", "escalated")


def _world_url() -> str:
    return os.environ.get(ENV_WORLD_URL, f"http://127.0.0.1:{WORLD_PORT}")


def _store() -> Any:
    from aegis.healing.store import IncidentStore

    return IncidentStore()


def _bad(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


def _get(incident_id: str) -> Any:
    from aegis.healing.store import IncidentNotFound

    try:
        return _store().get(incident_id)
    except IncidentNotFound:
        _bad(f"no incident {incident_id!r}; `aegis incidents list` shows the known ones")


@click.group()
def incidents() -> None:
    """Incidents: alerts grouped per target and problem, healed by playbooks (docs/healing.md)."""


@incidents.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array (machine-readable)")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only incidents in this status")
def list_cmd(as_json: bool, status: str | None) -> None:
    """Every incident, oldest first."""
    from aegis.healing.models import IncidentStatus

    rows = _store().incidents({IncidentStatus(status)} if status else None)
    if as_json:
        click.echo(json.dumps([r.as_output() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no incidents")
        return
    click.echo(f"{'ID':<18} {'TARGET':<22} {'KIND':<11} {'STATUS':<10} {'OPENED':<26} ACTIONS")
    for r in rows:
        acts = ", ".join(f"{a.name}={a.outcome.value}" for a in r.actions if not a.name.startswith("verify:"))
        click.echo(
            f"{r.id:<18} {r.target:<22} {r.kind:<11} {r.status.value:<10} {r.opened_at.isoformat():<26} {acts}"
        )


@incidents.command("show")
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True, help="The incident as JSON")
def show_cmd(incident_id: str, as_json: bool) -> None:
    """One incident: status, times, diagnosis and its timeline of actions."""
    inc = _get(incident_id)
    if as_json:
        click.echo(json.dumps(inc.as_output(), indent=2))
        return
    out = inc.as_output()
    for k in ("id", "target", "kind", "status", "opened_at", "contained_at", "resolved_at"):
        click.echo(f"{k + ':':<14} {out[k] or '-'}")
    if inc.note:
        click.echo(f"{'note:':<14} {inc.note}")
    click.echo(f"{'alerts:':<14} {inc.alert_count} ({', '.join(inc.alerts) or 'none'})")
    if inc.diagnosis:
        click.echo(f"{'diagnosis:':<14} {inc.diagnosis.summary}")
    click.echo("timeline:")
    for a in inc.actions:
        click.echo(f"  {a.at.isoformat()}  {a.name:<24} {a.outcome.value}")


@incidents.command("open")
@click.option("--target", required=True, help="Shard id")
@click.option("--problem", required=True, help="Playbook problem (shard_down, latency, economy, telemetry)")
def open_cmd(target: str, problem: str) -> None:
    """Open an incident by hand (prints its id; `aegis incidents heal ID` runs it)."""
    from aegis.healing.models import Incident
    from aegis.healing.playbooks import load_playbooks

    book = load_playbooks()
    if book.get(problem) is None:
        _bad(f"unknown problem {problem!r}; known: {', '.join(p.problem for p in book.playbooks)}")
    inc = _store().save(
        Incident(target=target, kind=problem, alerts=["manual"], alert_count=1, note="opened by hand")
    )
    click.echo(inc.id)


@incidents.command("heal")
@click.argument("incident_id")
@click.option("--world-url", default=None, help=f"Game backend (default ${ENV_WORLD_URL} or :{WORLD_PORT})")
def heal_cmd(incident_id: str, world_url: str | None) -> None:
    """Run the incident's playbook now (diagnose, act, verify, escalate)."""
    from aegis.healing.backend import RemediationBackend
    from aegis.healing.engine import Healer

    _get(incident_id)
    with RemediationBackend(world_url or _world_url()) as backend:
        inc = Healer(backend).heal(incident_id)
    click.echo(json.dumps(inc.as_output(), indent=2))


@incidents.command("escalate")
@click.argument("incident_id")
@click.option("--reason", required=True, help="Why a person takes over")
def escalate_cmd(incident_id: str, reason: str) -> None:
    """Take an incident over by hand: a running heal stops before its next action."""
    from aegis.domain import utcnow
    from aegis.healing.models import TERMINAL, ActionOutcome, IncidentAction, IncidentStatus

    inc = _get(incident_id)
    if inc.status in TERMINAL:
        _bad(f"incident {incident_id} is already {inc.status.value}")
    store = _store()
    store.update(
        incident_id, status=IncidentStatus.ESCALATED, escalated_at=utcnow(), note=f"by hand: {reason}"
    )
    store.add_action(
        incident_id,
        IncidentAction(name="escalate", outcome=ActionOutcome.ESCALATED, detail={"reason": reason}),
    )
    click.echo(f"{incident_id} escalated")


@incidents.command("tick")
@click.option("--world-url", default=None, help=f"Game backend (default ${ENV_WORLD_URL} or :{WORLD_PORT})")
def tick_cmd(world_url: str | None) -> None:
    """One sensor tick by hand: read the alert inbox, open incidents, heal the ones launched."""
    from aegis.healing.runner import tick_and_heal

    for inc in tick_and_heal(world_url or _world_url()):
        click.echo(f"{inc.id} {inc.target} {inc.kind} {inc.status.value}")
