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

Where Alertmanager is not installed (``$AEGIS_HEALING_PROBE`` = ``auto``, the default),
each sensor tick first runs :class:`aegis.healing.probe.Probe` over every shard: it
posts the symptoms the alert rules watch to the receiver as Alertmanager would, so a
stack without Alertmanager still heals with no clicks.

No ``from __future__ import annotations`` here: Dagster resolves the op's config
class from its annotation at definition time.
"""

import base64
import io
import os
from typing import Any

import dagster as dg
from pydantic import Field

from aegis.healing.models import Incident, IncidentStatus
from aegis.stack import HEALING_TAG
from pipelines.resources.game import GameBackendResource

GROUP = "healing"
SENSOR_INTERVAL_S = 5
INCIDENT_TAG = "aegis/incident"
TARGET_TAG = "aegis/target"
TABLE_ROWS = 50
# Without Alertmanager the sensor polls the world's symptoms itself (aegis.healing.probe).
ENV_PROBE = "AEGIS_HEALING_PROBE"
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
    import matplotlib.pyplot as plt

    shown = sorted(rows, key=lambda i: i.opened_at)[-TABLE_ROWS:]
    fig, ax = plt.subplots(figsize=(10, 0.4 * max(len(shown), 3) + 1.2))
    for lane, inc in enumerate(shown):
        end = inc.resolved_at or inc.escalated_at or (inc.actions[-1].at if inc.actions else inc.opened_at)
        ax.plot([inc.opened_at, end], [lane, lane], color="#BBBBBB", linewidth=6, solid_capstyle="butt")
        for a in inc.actions:
            ax.scatter([a.at], [lane], color=OUTCOME_COLORS.get(a.outcome.value, "black"), s=40, zorder=3)
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


def incidents_metadata(rows: list[Incident], focus: Incident | None = None) -> dict[str, Any]:
    """The ``incidents`` materialization's metadata: counts, the table, the timeline plot."""
    from aegis.config import paths

    png = timeline_png(rows)
    out_dir = paths().healing_db.parent / "healing"
    out_dir.mkdir(parents=True, exist_ok=True)
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


def probe_enabled() -> bool:
    """``$AEGIS_HEALING_PROBE``: ``on``, ``off``, or ``auto`` (default: on when no Alertmanager is installed)."""
    mode = os.environ.get(ENV_PROBE, "auto").strip().lower()
    if mode in ("on", "1", "true"):
        return True
    if mode in ("off", "0", "false"):
        return False
    from aegis.alerts.config import alertmanager_binary

    return alertmanager_binary() is None


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
    context: dg.OpExecutionContext, config: HealIncidentConfig, game: GameBackendResource
) -> None:
    from aegis.healing.backend import RemediationBackend
    from aegis.healing.engine import Healer
    from aegis.healing.store import IncidentStore

    store = IncidentStore()
    with RemediationBackend(game.base_url, token=game.token) as backend:
        inc = Healer(backend, store=store).heal(config.incident_id)
    context.log.info(f"incident {inc.id} ({inc.kind} on {inc.target}) ended {inc.status.value}")
    context.log_event(
        dg.AssetMaterialization(asset_key=GROUP_ASSET, metadata=incidents_metadata(store.incidents(), inc))
    )


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
def incidents(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    from aegis.healing.store import IncidentStore

    rows = IncidentStore().incidents()
    return dg.MaterializeResult(metadata=incidents_metadata(rows))


@dg.sensor(
    job=healing_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts and refused calls -> incidents (grouped, rate-limited, breakers) -> one healing run each.",
)
def healing_alert_sensor(context: dg.SensorEvaluationContext, game: GameBackendResource) -> dg.SensorResult:
    from aegis.healing.playbooks import load_playbooks
    from aegis.healing.runner import decide
    from aegis.healing.store import IncidentStore
    from aegis.ledger.ledger import Ledger

    if probe_enabled():
        try:
            posted = _probe(game).poll()
            if posted:
                context.log.info(f"probe delivered {posted} to the alert receiver")
        except Exception as exc:  # the receiver or the world may be down; the inbox path goes on
            context.log.warning(f"alert probe failed: {type(exc).__name__}: {exc}")
    store = IncidentStore()
    result, launch = decide(store, load_playbooks(), ledger=Ledger())
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
