"""Healing in Dagster: the alert sensor, one healing run per incident, and the incidents asset.

- ``healing_alert_sensor`` (every 5 s, on by default): reads the alert inbox and the
  refused calls, groups them into incidents (:mod:`aegis.healing.grouping`: per
  target and problem, storm guards included) and requests one ``healing_job`` run
  per incident to launch, ``run_key`` = the incident id (Dagster never launches
  the same incident twice).
- ``healing_job``: diagnoses and heals the incident (:class:`aegis.healing.engine.Healer`)
  and materializes ``incidents`` with the incident table and a timeline plot, so
  the UI shows every incident and each healing run's steps.
- ``incidents`` (group ``healing``): the same table, materializable by hand.

Why a sensor and not a push from the receiver: a healing run starts a run worker,
which imports the code location (seconds, see docs/benchmarks.md); the sensor's
interval adds at most 5 s on top, and keeps the receiver free of any Dagster
dependency. The measured figures are in docs/benchmarks.md (healing).

Where Alertmanager is not installed (the ``healing`` resource's ``probe``, default
``$AEGIS_HEALING_PROBE``, else ``auto``), each sensor tick first runs
:class:`aegis.healing.probe.Probe` over every shard: it posts the symptoms the alert
rules watch to the receiver as Alertmanager would, so a stack without Alertmanager
still heals with no clicks. The incident store and the timeline's directory are the
``healing`` resource's (:class:`assets.resources.healing.HealingResource`).

No ``from __future__ import annotations`` here: Dagster resolves the op's config
class from its annotation at definition time.
"""

import base64
import io
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from aegis.healing.models import Incident, IncidentStatus
from aegis.stack import HEALING_TAG
from assets.resources.game import GameBackendResource
from assets.resources.healing import HealingResource

GROUP = "healing"
SENSOR_INTERVAL_S = 5
INCIDENT_TAG = "aegis/incident"
TARGET_TAG = "aegis/target"
TABLE_ROWS = 50
OUTCOME_COLORS = {
    "applied": "#4C72B0",
    "verified": "#55A868",
    "unverified": "#DD8452",
    "denied": "#C44E52",
    "failed": "#C44E52",
    "skipped": "#8C8C8C",
    "escalated": "#8172B3",
}


def incidents_table(rows: list[Incident]) -> str:
    """A markdown table of the newest incidents with their actions."""
    lines = [
        "| id | target | kind | status | opened | contained (s) | resolved (s) | actions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for inc in sorted(rows, key=lambda i: i.opened_at, reverse=True)[:TABLE_ROWS]:
        contained = f"{(inc.contained_at - inc.opened_at).total_seconds():.1f}" if inc.contained_at else "-"
        resolved = f"{(inc.resolved_at - inc.opened_at).total_seconds():.1f}" if inc.resolved_at else "-"
        acts = ", ".join(f"{a.name}: {a.outcome.value}" for a in inc.actions) or "-"
        lines.append(
            f"| {inc.id} | {inc.target} | {inc.kind} | {inc.status.value} | {inc.opened_at:%Y-%m-%d %H:%M:%S} "
            f"| {contained} | {resolved} | {acts} |"
        )
    return "\n".join(lines)


def timeline_png(rows: list[Incident]) -> bytes:
    """A timeline plot: one lane per incident, a mark per action, coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    shown = sorted(rows, key=lambda i: i.opened_at)[-TABLE_ROWS:]
    fig, ax = plt.subplots(figsize=(10, 0.4 * max(len(shown), 3) + 1.2))
    for lane, inc in enumerate(shown):
        end = inc.resolved_at or inc.escalated_at or (inc.actions[-1].at if inc.actions else inc.opened_at)
        span = mdates.date2num([inc.opened_at, end])
        ax.plot(span, [lane, lane], color="#BBBBBB", linewidth=6, solid_capstyle="butt")
        for a in inc.actions:
            ax.scatter(
                mdates.date2num([a.at]),
                [lane],
                color=OUTCOME_COLORS.get(a.outcome.value, "black"),
                s=40,
                zorder=3,
            )
    ax.set_yticks(range(len(shown)), [f"{i.target} {i.kind} ({i.status.value})" for i in shown], fontsize=7)
    for outcome, color in OUTCOME_COLORS.items():
        ax.scatter([], [], color=color, label=outcome)
    ax.legend(fontsize=7, loc="upper left", ncols=4)
    ax.set_title("Incidents: opened → actions → resolved/escalated")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def incidents_metadata(rows: list[Incident], out_dir: Path, focus: Incident | None = None) -> dict[str, Any]:
    """The ``incidents`` materialization's metadata: counts, the table, the timeline plot (saved in ``out_dir``)."""
    png = timeline_png(rows)
    png_path = out_dir / "timeline.png"
    png_path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    counts = {s.value: sum(1 for r in rows if r.status == s) for s in IncidentStatus}
    meta: dict[str, Any] = {
        "incidents": dg.MetadataValue.md(incidents_table(rows)),
        "timeline": dg.MetadataValue.md(f"![timeline](data:image/png;base64,{b64})"),
        "timeline_png": dg.MetadataValue.path(str(png_path)),
        **{f"{k}_count": dg.MetadataValue.int(v) for k, v in counts.items()},
    }
    if focus is not None:
        meta["incident"] = dg.MetadataValue.json(focus.as_output())
    return meta


_PROBES: dict[str, Any] = {}


def _probe(game: GameBackendResource) -> Any:
    """One probe per world, kept across ticks (it remembers what it already reported)."""
    probe = _PROBES.get(game.base_url)
    if probe is None:
        from aegis.config import ALERTS_PORT
        from aegis.healing.probe import Probe
        from aegis.security.secrets import service_token

        read = game.token or service_token("read")
        headers = {"Authorization": f"Bearer {read}"} if read else {}
        import httpx

        shards = [
            s["id"] for s in httpx.get(f"{game.base_url}/v1/shards", headers=headers, timeout=10).json()
        ]
        probe = Probe(game.base_url, f"http://127.0.0.1:{ALERTS_PORT}", service_token("alerts"), read, shards)
        _PROBES[game.base_url] = probe
    return probe


class HealIncidentConfig(dg.Config):
    incident_id: str = Field(description="The incident this run heals (its id is also the run key)")


@dg.op(description="Diagnose one incident and walk its playbook: policy, act, verify, escalate.")
def heal_incident(
    context: dg.OpExecutionContext,
    config: HealIncidentConfig,
    game: GameBackendResource,
    healing: HealingResource,
) -> None:
    from aegis.healing.backend import RemediationBackend
    from aegis.healing.engine import Healer

    store = healing.store()
    with RemediationBackend(game.base_url, token=game.token) as backend:
        inc = Healer(backend, store=store).heal(config.incident_id)
    context.log.info(f"incident {inc.id} ({inc.kind} on {inc.target}) ended {inc.status.value}")
    metadata = incidents_metadata(store.incidents(), healing.reports_dir(), inc)
    context.log_event(dg.AssetMaterialization(asset_key=GROUP_ASSET, metadata=metadata))


GROUP_ASSET = dg.AssetKey("incidents")

healing_job = dg.JobDefinition(
    name="healing_job",
    description="Heal one incident (launched by healing_alert_sensor, one run per incident).",
    graph_def=dg.GraphDefinition(name="healing_graph", node_defs=[heal_incident]),
    tags={HEALING_TAG: "healing"},  # aegis up's instance runs one healing run at a time
)


@dg.asset(
    key=GROUP_ASSET,
    group_name=GROUP,
    description="Every incident healing opened, with its actions and a timeline plot (aegis incidents list).",
)
def incidents(context: dg.AssetExecutionContext, healing: HealingResource) -> dg.MaterializeResult:
    rows = healing.store().incidents()
    return dg.MaterializeResult(metadata=incidents_metadata(rows, healing.reports_dir()))


@dg.sensor(
    job=healing_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts and refused calls -> incidents (grouped, rate-limited, breakers) -> one healing run each.",
)
def healing_alert_sensor(
    context: dg.SensorEvaluationContext, game: GameBackendResource, healing: HealingResource
) -> dg.SensorResult:
    from aegis.alerts.inbox import AlertInbox
    from aegis.alerts.source import AlertSourceUnavailable
    from aegis.healing.playbooks import load_playbooks
    from aegis.healing.runner import decide
    from aegis.ledger.ledger import Ledger

    if healing.probe_enabled():
        try:
            posted = _probe(game).poll()
            if posted:
                context.log.info(f"probe delivered {posted} to the alert receiver")
        except Exception as exc:  # the receiver or the world may be down; the inbox path goes on
            context.log.warning(f"alert probe failed: {type(exc).__name__}: {exc}")
    inbox = AlertInbox()
    try:
        try:  # prod: the alarm queue into the inbox first (locally the receiver already wrote it)
            pulled = healing.alert_source().drain(inbox)
            if pulled.received:
                context.log.info(
                    f"alert queue: {pulled.received} received, {pulled.stored} stored, "
                    f"{len(pulled.skipped)} left for the dead-letter queue ({pulled.stopped})"
                )
        except AlertSourceUnavailable as exc:  # undeleted messages stay queued: nothing lost
            context.log.warning(str(exc))
        store = healing.store()
        result, launch = decide(store, load_playbooks(), inbox=inbox, ledger=Ledger())
    finally:
        inbox.close()
    requests = [
        dg.RunRequest(
            run_key=inc.id,
            run_config={"ops": {"heal_incident": {"config": {"incident_id": inc.id}}}},
            tags={INCIDENT_TAG: inc.id, TARGET_TAG: inc.target},
        )
        for inc in launch
    ]
    skip = None
    if not requests:
        skip = f"{result.read} alert(s) read, {len(result.opened)} incident(s) opened, none to launch now"
    return dg.SensorResult(run_requests=requests, skip_reason=skip)


defs = dg.Definitions(assets=[incidents], jobs=[healing_job], sensors=[healing_alert_sensor])
