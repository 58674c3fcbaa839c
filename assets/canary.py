"""The canary stage: launch a canary from the best proposal, judge it live, promote or roll back, reflect.

- ``canary_launch`` takes the ranked ``proposals`` and drives the best one that
  may start now through the lifecycle (policy, simulation gate when the verdict
  asks, snapshot, guarded apply, integrity) onto one shard, with fair control
  shards stored beside it. Automation runs it whenever ``proposals`` updates.
- ``canary_judge_sensor`` looks every ``JUDGE_SENSOR_INTERVAL_S`` at the
  warehouse's newest KPI bucket; when ``fct_shard_kpis`` has new buckets (the
  warehouse is rebuilt by declarative automation) and a canary is live, it
  judges every live canary with :func:`aegis.canary.judge.judge` (the code
  ``aegis canary judge`` replays) and requests a ``canary_loop`` run.
- ``canary_judgement`` (in that run) judges again on the same mart, acts on the
  decided verdicts (rollback from the pre-change snapshot; promote and roll out
  in guarded waves; inconclusive at the budget rolls back), finishes any
  rollout a killed run left, reflects on every finished changeset, and shows
  the canary's KPIs against its controls and the confidence sequences as plots.
- ``reality_delta`` scores the world model's predictions against the observed
  canary effects and writes the interval scale the proposals read
  (``AEGIS_HOME/proposals/calibration.json``); past a scale limit it asks for
  retraining, which ``reality_delta_retrain_sensor`` turns into a training run.

Every action is idempotent (the lifecycle journals each step; events have
unique keys), so Dagster retries and killed runs repeat nothing.
"""

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from aegis.canary.loop import (
    DEFAULT_CONTROLS,
    PRE_PERIOD_BUCKETS,
    CanaryLoop,
    LiveCanary,
    WarehouseUnavailable,
    newest_bucket,
    read_kpis,
)
from aegis.proposals.model import Proposal
from aegis.telemetry import KPI_BUCKET_MINUTES
from assets.resources.changes import ChangeSetResource

if TYPE_CHECKING:
    from aegis.canary.judge import Judgement

GROUP = "canary"
KPI_KEY = dg.AssetKey("fct_shard_kpis")
PROPOSALS_KEY = dg.AssetKey("proposals")
JUDGE_SENSOR_INTERVAL_S = 10
LOOP_JOB_NAME = "canary_loop"
TRAINING_JOB_NAME = "world_model_training_job"
VERDICTS_TAG = "aegis/canary-verdicts"
BUCKET_TAG = "aegis/kpi-bucket"
# KPIs drawn for the canary against its controls (raw, per bucket).
PLOT_KPIS: tuple[str, ...] = (
    "abandon_rate",
    "deaths_mid",
    "tick_p95_ms",
    "players_online",
    "net_inflow",
    "churn_rate",
)
RETRY = dg.RetryPolicy(max_retries=3, delay=10)
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _pre_period_start(starts: list[Any]) -> Any:
    if not starts:
        return None
    return (
        min(pd.Timestamp(s) for s in starts) - pd.Timedelta(minutes=KPI_BUCKET_MINUTES * PRE_PERIOD_BUCKETS)
    ).to_pydatetime()


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_"
    cols = list(dict.fromkeys(c for r in rows for c in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ charts


def kpi_chart(kpis: pd.DataFrame, canary: str, controls: list[str], start: Any) -> bytes:
    """The canary's raw KPIs against its controls' mean (and their range), with the change's start."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from aegis.quality.reporting import _figure_png

    cols = [c for c in PLOT_KPIS if c in kpis.columns]
    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), sharex=True)
    df = kpis.copy()
    df["bucket_start"] = pd.to_datetime(df["bucket_start"], utc=True)
    for ax, col in zip(axes.flat, cols, strict=False):
        wide = df.pivot_table(index="bucket_start", columns="shard_id", values=col, aggfunc="mean")
        ctl = wide[[c for c in controls if c in wide]]
        if not ctl.empty:
            ax.fill_between(
                ctl.index,
                ctl.min(axis=1),
                ctl.max(axis=1),
                color="tab:grey",
                alpha=0.25,
                label="controls range",
            )
            ax.plot(ctl.index, ctl.mean(axis=1), color="tab:grey", lw=1, label="controls mean")
        if canary in wide:
            ax.plot(wide.index, wide[canary], color="tab:red", lw=1.2, label=f"canary {canary}")
        if start is not None:
            ax.axvline(pd.Timestamp(start), color="black", ls="--", lw=0.8)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"canary {canary} against {', '.join(controls)} (dashed: change applied)", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _figure_png(fig)


def sequence_chart(trace: list[dict[str, Any]], metrics: list[dict[str, Any]], verdict: str) -> bytes:
    """Each metric's effect against the counterfactual with its anytime-valid interval, look by look,
    and its margin of harm."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from aegis.quality.reporting import _figure_png

    names = [m["name"] for m in metrics if m.get("role") != "exposure"]
    n = max(1, len(names))
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.5 * nrows), squeeze=False)
    margins = {m["name"]: (m.get("margin"), m.get("direction")) for m in metrics}
    for ax, name in zip(axes.flat, names, strict=False):
        xs = [pd.Timestamp(s["bucket_start"]) for s in trace if name in s]
        eff = [s[name][0] for s in trace if name in s]
        lo = [s[name][1] for s in trace if name in s]
        hi = [s[name][2] for s in trace if name in s]
        if xs:
            ax.fill_between(xs, lo, hi, color="tab:blue", alpha=0.25)
            ax.plot(xs, eff, color="tab:blue", lw=1.2)
        ax.axhline(0, color="grey", lw=0.6)
        margin, direction = margins.get(name, (None, None))
        if margin:
            if direction in ("higher", "two_sided"):
                ax.axhline(margin, color="tab:red", ls="--", lw=0.8)
            if direction in ("lower", "two_sided"):
                ax.axhline(-margin, color="tab:red", ls="--", lw=0.8)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"confidence sequences (relative effect; red: margin of harm) - verdict so far: {verdict}", fontsize=9
    )
    fig.tight_layout()
    return _figure_png(fig)


# ------------------------------------------------------------------ assets


class LaunchConfig(dg.Config):
    daily_budget: int | None = None  # None: aegis.config.proposals.daily_budget (what the ranking assumed)
    n_controls: int = DEFAULT_CONTROLS
    max_buckets: int | None = None  # None: the judge's default exposure budget (policies/data.json)


@dg.asset(
    group_name=GROUP,
    ins={"proposals": dg.AssetIn(PROPOSALS_KEY)},
    deps=[KPI_KEY],
    # a new ranking starts a canary; a new mart alone does not (the ranking follows the marts)
    automation_condition=dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(KPI_KEY)),
    retry_policy=RETRY,
    description="Starts a canary for the best proposal that may start now: policy, simulation gate, apply, fair controls.",
)
def canary_launch(
    context: dg.AssetExecutionContext,
    config: LaunchConfig,
    proposals: list[Proposal],
    changes: ChangeSetResource,
) -> dg.MaterializeResult:
    loop = changes.loop()
    lc = loop.lifecycle
    try:
        kpis = read_kpis(lc.paths.warehouse)
    except WarehouseUnavailable as exc:
        raise dg.Failure(description=f"cannot choose fair controls: {exc}") from exc
    budget = config.daily_budget
    if budget is None:
        from aegis.proposals.settings import ProposalSettings

        budget = ProposalSettings.from_policy_data().daily_budget
    outcome = loop.launch(
        proposals,
        kpis,
        lc.backend.shards(),
        daily_budget=budget,
        n_controls=config.n_controls,
        max_buckets=config.max_buckets,
    )
    context.log.info(outcome.reason)
    meta: dict[str, Any] = {
        "outcome": dg.MetadataValue.text(outcome.reason),
        "proposals": dg.MetadataValue.int(len(proposals)),
        "launch": dg.MetadataValue.json(outcome.as_dict()),
    }
    if outcome.proposal is not None:
        meta["hypothesis"] = dg.MetadataValue.text(outcome.proposal.hypothesis)
        meta["predicted"] = dg.MetadataValue.md(
            _md_table([p.model_dump() for p in outcome.proposal.predicted])
        )
    if outcome.record is not None:
        meta["changeset_id"] = dg.MetadataValue.text(outcome.record.id)
        meta["state"] = dg.MetadataValue.text(outcome.record.state.value)
        meta["controls"] = dg.MetadataValue.text(", ".join(outcome.controls))
    return dg.MaterializeResult(metadata=meta)


class JudgementConfig(dg.Config):
    trigger_bucket: str = ""  # the newest KPI bucket the sensor saw
    sensor_verdicts: dict[str, str] = {}  # what the sensor's look said, for the record


@dg.asset(
    group_name=GROUP,
    deps=[KPI_KEY],
    retry_policy=RETRY,
    description="Judges every live canary on fct_shard_kpis and acts: rollback, promote in waves, reflect.",
)
def canary_judgement(
    context: dg.AssetExecutionContext, config: JudgementConfig, changes: ChangeSetResource
) -> dg.MaterializeResult:
    loop = changes.loop()
    lc = loop.lifecycle
    loop.resume_rollouts()
    live = loop.live()
    meta: dict[str, Any] = {}
    actions: dict[str, str] = {}
    if live:
        try:
            kpis = read_kpis(
                lc.paths.warehouse,
                sorted({s for c in live for s in [c.spec.canary, *c.spec.controls]}),
                _pre_period_start([c.spec.start for c in live if c.spec.start is not None]),
            )
        except WarehouseUnavailable as exc:
            raise dg.Failure(description=f"cannot judge the live canaries: {exc}") from exc
        rows = [_judge_live_canary(context, loop, canary, kpis, meta, actions) for canary in live]
        meta["live_canaries"] = dg.MetadataValue.md(_md_table(rows))
    reflected = loop.reflect_all()
    meta["actions"] = dg.MetadataValue.json(actions)
    meta["live"] = dg.MetadataValue.int(len(loop.live()))
    meta["reflections_added"] = dg.MetadataValue.int(reflected)
    if config.trigger_bucket:
        meta["trigger_bucket"] = dg.MetadataValue.text(config.trigger_bucket)
    if config.sensor_verdicts:
        meta["sensor_verdicts"] = dg.MetadataValue.json(config.sensor_verdicts)
    context.log.info(f"canary actions: {actions or 'none'}")
    return dg.MaterializeResult(metadata=meta)


def _judge_live_canary(
    context: dg.AssetExecutionContext,
    loop: CanaryLoop,
    canary: LiveCanary,
    kpis: pd.DataFrame,
    meta: dict[str, Any],
    actions: dict[str, str],
) -> dict[str, Any]:
    """Judge one live canary and act on it; its metadata and charts go into ``meta``; returns its table row."""
    from aegis.canary.loop import judge_spec

    j = loop.judge_one(canary, kpis, trace=True)
    if j is None:
        return {
            "changeset": canary.id,
            "canary": canary.spec.canary,
            "verdict": "not judged yet",
            "exposure": "-",
        }
    spec = judge_spec(canary.spec)
    assert spec is not None
    actions[canary.id] = loop.act(canary.id, j)
    row = {
        "changeset": canary.id,
        "canary": canary.spec.canary,
        "verdict": j.verdict,
        "exposure": f"{j.buckets_observed}/{canary.spec.max_buckets}",
        "action": actions[canary.id],
    }
    prefix = canary.id
    meta[f"{prefix}/verdict"] = dg.MetadataValue.text(f"{j.verdict}: {j.reason}")
    meta[f"{prefix}/exposure_used"] = dg.MetadataValue.float(
        round(j.buckets_observed / canary.spec.max_buckets, 4)
    )
    meta[f"{prefix}/metrics"] = dg.MetadataValue.md(
        _md_table(
            [
                {
                    "metric": m.name,
                    "effect": f"{m.effect:+.2%}",
                    "interval": f"[{m.interval[0]:+.2%}, {m.interval[1]:+.2%}]",
                    "status": m.status,
                }
                for m in j.metrics
            ]
        )
    )
    try:
        _add_charts(meta, canary, j, kpis, loop.lifecycle.paths.home)
    except Exception as exc:  # a chart is a view: never fail a judgement over it
        context.log.warning(f"could not draw the charts of {canary.id}: {exc}")
    return row


def _add_charts(
    meta: dict[str, Any], canary: LiveCanary, j: "Judgement", kpis: pd.DataFrame, home: Path
) -> None:
    """The canary's KPIs against its controls and its confidence sequences, as plots in ``meta`` (and files)."""
    from aegis.quality.reporting import png_markdown, save_png

    prefix = canary.id
    shown = kpis[kpis["shard_id"].isin([canary.spec.canary, *canary.spec.controls])]
    png = kpi_chart(shown, canary.spec.canary, canary.spec.controls, canary.spec.start)
    meta[f"{prefix}/kpis_vs_controls"] = dg.MetadataValue.md(
        png_markdown(png, f"{canary.id} KPIs vs controls")
    )
    meta[f"{prefix}/kpis_vs_controls_path"] = dg.MetadataValue.path(
        str(save_png(png, home / "reports", f"canary-{canary.id}-kpis"))
    )
    png = sequence_chart(j.trace, [m.model_dump() for m in j.metrics], j.verdict)
    meta[f"{prefix}/confidence_sequences"] = dg.MetadataValue.md(
        png_markdown(png, f"{canary.id} confidence sequences")
    )
    meta[f"{prefix}/confidence_sequences_path"] = dg.MetadataValue.path(
        str(save_png(png, home / "reports", f"canary-{canary.id}-sequences"))
    )


@dg.asset(
    group_name=GROUP,
    deps=[canary_judgement],
    description="World-model predictions against observed canary effects: error, interval coverage, calibration.",
)
def reality_delta(context: dg.AssetExecutionContext, changes: ChangeSetResource) -> dg.MaterializeResult:
    from aegis.domain import ReflectionRecord
    from aegis.quality.reporting import png_markdown, save_png
    from aegis.reflection import delta as rd

    loop = changes.loop()
    home = loop.lifecycle.paths.home
    reflections = [ReflectionRecord.model_validate(r) for r in loop.store.reflections()]
    pairs = rd.pairs_from(reflections)
    result = rd.score(pairs, rd.read_scale(home))
    path = rd.write_calibration(home, result)
    if result.miscalibrated or result.retrain:
        loop.lifecycle.record_event(
            "world-model",
            "model",
            f"calibration:{result.interval_scale:.4f}:{result.pairs}",
            f"Reality delta: {result.reason}; proposals now rank with intervals x{result.interval_scale:.2f}",
            interval_scale=result.interval_scale,
            coverage=result.coverage,
            retrain=result.retrain,
        )
    png = rd.delta_chart(pairs[-rd.WINDOW :])
    causes: dict[str, int] = {}
    for r in reflections:
        if r.root_cause:
            causes[r.root_cause] = causes.get(r.root_cause, 0) + 1
    context.log.info(result.reason)
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.text(result.reason),
            "pairs": dg.MetadataValue.int(result.pairs),
            "coverage": dg.MetadataValue.float(
                result.coverage if result.coverage is not None else float("nan")
            ),
            "mae": dg.MetadataValue.float(result.mae if result.mae is not None else float("nan")),
            "bias": dg.MetadataValue.float(result.bias if result.bias is not None else float("nan")),
            "interval_scale": dg.MetadataValue.float(result.interval_scale),
            "miscalibrated": dg.MetadataValue.bool(result.miscalibrated),
            "retrain": dg.MetadataValue.bool(result.retrain),
            "by_kpi": dg.MetadataValue.json(result.by_kpi),
            "root_causes": dg.MetadataValue.json(causes),
            "reflections": dg.MetadataValue.int(len(reflections)),
            "calibration_file": dg.MetadataValue.path(str(path)),
            "chart": dg.MetadataValue.md(png_markdown(png, "predicted vs observed")),
            "chart_path": dg.MetadataValue.path(str(save_png(png, home / "reports", "reality-delta"))),
        }
    )


canary_loop_job = dg.define_asset_job(
    LOOP_JOB_NAME,
    selection=dg.AssetSelection.assets(canary_judgement, reality_delta),
    description="Judge the live canaries, act on their verdicts, reflect, and score the world model.",
)


# ------------------------------------------------------------------ sensors


def loop_wait_reason(instance: dg.DagsterInstance) -> str | None:
    active = instance.get_run_records(
        dg.RunsFilter(job_name=LOOP_JOB_NAME, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return f"canary_loop run {active[0].dagster_run.run_id[:8]} is still {active[0].dagster_run.status.value.lower()}"
    return None


@dg.sensor(
    job=canary_loop_job,
    minimum_interval_seconds=JUDGE_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When fct_shard_kpis has new buckets, judges every live canary and requests a canary_loop run.",
)
def canary_judge_sensor(context: dg.SensorEvaluationContext, changes: ChangeSetResource) -> dg.SensorResult:
    wait = loop_wait_reason(context.instance)
    if wait is not None:
        return dg.SensorResult(skip_reason=wait, cursor=context.cursor)
    loop = changes.loop()
    live = loop.live()
    rollouts = loop.rollouts_running()
    if not live and not rollouts:
        return dg.SensorResult(skip_reason="no live canary", cursor=context.cursor)
    newest = newest_bucket(loop.lifecycle.paths.warehouse)
    if newest is None:
        return dg.SensorResult(skip_reason="fct_shard_kpis not readable now", cursor=context.cursor)
    if newest == context.cursor and not rollouts:
        return dg.SensorResult(skip_reason=f"no KPI bucket newer than {newest}", cursor=context.cursor)
    verdicts: dict[str, str] = {}
    if live:
        try:
            kpis = read_kpis(
                loop.lifecycle.paths.warehouse,
                sorted({s for c in live for s in [c.spec.canary, *c.spec.controls]}),
                _pre_period_start([c.spec.start for c in live if c.spec.start is not None]),
            )
        except WarehouseUnavailable as exc:
            return dg.SensorResult(skip_reason=str(exc), cursor=context.cursor)
        for canary in live:
            j = loop.judge_one(canary, kpis)
            verdicts[canary.id] = j.verdict if j is not None else "not judged yet"
    context.log.info(f"newest KPI bucket {newest}; verdicts so far {verdicts}")
    request = dg.RunRequest(
        run_key=f"canary-{newest}-{'-'.join(sorted(rollouts))}" if rollouts else f"canary-{newest}",
        run_config=dg.RunConfig(
            ops={"canary_judgement": JudgementConfig(trigger_bucket=newest, sensor_verdicts=verdicts)}
        ),
        tags={VERDICTS_TAG: json.dumps(verdicts)[:200], BUCKET_TAG: newest},
    )
    return dg.SensorResult(run_requests=[request], cursor=newest)


def _retrain_on_reality_delta(context: dg.SensorEvaluationContext, asset_event: Any) -> Any:
    mat = asset_event.dagster_event.event_specific_data.materialization
    retrain = mat.metadata.get("retrain")
    if retrain is None or not retrain.value:
        return dg.SkipReason("reality_delta is calibrated (no retraining asked)")
    return dg.RunRequest(run_key=f"retrain-{asset_event.storage_id}", tags={"aegis/reason": "reality_delta"})


with warnings.catch_warnings():  # asset_sensor passes its own beta `owners` argument: not ours to fix
    warnings.simplefilter("ignore", dg.BetaWarning)
    reality_delta_retrain_sensor = dg.asset_sensor(
        asset_key=dg.AssetKey("reality_delta"),
        job_name=TRAINING_JOB_NAME,
        name="reality_delta_retrain_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Retrains the world model when reality_delta finds its intervals too far off to widen.",
    )(_retrain_on_reality_delta)


defs = dg.Definitions(
    assets=[canary_launch, canary_judgement, reality_delta],
    jobs=[canary_loop_job],
    sensors=[canary_judge_sensor, reality_delta_retrain_sensor],
)
