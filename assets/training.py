"""The training stage: ``training_dataset`` (windows from ``fct_shard_kpis``) and ``world_model``.

Retraining is driven two ways, both targeting ``world_model_training_job``
(dataset, model and evaluation in one run, so a registered challenger is always
judged in the run that made it):

- ``world_model_new_telemetry`` sensor: when the mart has gained at least
  the ``training`` resource's ``retrain_new_rows`` (default
  ``$AEGIS_RETRAIN_NEW_ROWS``, else 2000, about six shards x 7 game hours)
  since the rows the last dataset was built from. A sensor, not an
  ``AutomationCondition``: the marts are eager and update on every ingested
  batch, so "upstream updated" would retrain every few minutes; the threshold
  needs a count read from the warehouse, which a sensor with a cursor says
  plainly and a custom condition would hide.
- ``world_model_daily`` schedule (04:00 UTC, after the nightly dbt refresh),
  so a model keeps up with slow drift even when telemetry trickles.

Both are RUNNING by default. The warehouse both read is the ``lake``
resource's (``LakeResource.warehouse_path``), never the process's global home.

Import cost: every Dagster run subprocess and code server imports this module
to build the definitions, and most of them never train. So torch and mlflow
(``aegis.worldmodel.pipeline`` / ``train``: about 2 s) are imported inside the
``world_model`` body. What Dagster resolves at definition time stays cheap:
names and defaults from :mod:`aegis.worldmodel.settings` (standard library) and
:class:`WorldModelDataset`, the I/O type, from :mod:`aegis.worldmodel.dataset`
(numpy, pandas). No ``from __future__ import annotations`` here: Dagster reads
the config classes and I/O types from the evaluated annotations.
"""

from pathlib import Path
from typing import Any, cast

import dagster as dg

from aegis import warehouse as warehouse_db
from aegis.worldmodel.dataset import (
    DatasetError,
    SplitConfig,
    WorldModelDataset,
    build_dataset,
    read_warehouse,
)
from aegis.worldmodel.settings import (
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    DEFAULT_MEMBERS,
    DEFAULT_PATIENCE,
    DEFAULT_SEED,
    DEFAULT_TEST_SHARD_FRACTION,
    DEFAULT_TEST_TIME_FRACTION,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WINDOW,
    KPI_TABLE,
)
from assets.resources.lake import LakeResource
from assets.resources.mlflow import MlflowResource
from assets.resources.training import TrainingResource

GROUP = "training"
KPI_KEY = dg.AssetKey(KPI_TABLE)
JOB_NAME = "world_model_training_job"
DAILY_CRON = "0 4 * * *"
SENSOR_INTERVAL_S = 300
# The asset trains with larger batches than the library default (DEFAULT_BATCH).
ASSET_BATCH_SIZE = 128


class TrainingDatasetConfig(dg.Config):
    window: int = DEFAULT_WINDOW
    seed: int = DEFAULT_SEED
    test_shard_fraction: float = DEFAULT_TEST_SHARD_FRACTION
    test_time_fraction: float = DEFAULT_TEST_TIME_FRACTION
    val_fraction: float = DEFAULT_VAL_FRACTION


class WorldModelConfig(dg.Config):
    epochs: int = DEFAULT_EPOCHS
    patience: int = DEFAULT_PATIENCE
    members: int = DEFAULT_MEMBERS
    hidden: int = DEFAULT_HIDDEN
    batch_size: int = ASSET_BATCH_SIZE
    lr: float = DEFAULT_LR
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE


@dg.asset(
    group_name=GROUP,
    deps=[KPI_KEY],
    kinds={"python", "numpy"},
    description="Windows of shard KPI history + parameters -> next-bucket KPIs, split by shard and time.",
)
def training_dataset(
    context: dg.AssetExecutionContext, config: TrainingDatasetConfig, lake: LakeResource
) -> dg.Output[WorldModelDataset]:
    try:
        rows = read_warehouse(lake.warehouse_path())
        ds = build_dataset(
            rows,
            SplitConfig(
                window=config.window,
                seed=config.seed,
                test_shard_fraction=config.test_shard_fraction,
                test_time_fraction=config.test_time_fraction,
                val_fraction=config.val_fraction,
            ),
        )
    except DatasetError as exc:
        raise dg.Failure(description=f"no training dataset: {exc}", allow_retries=False) from exc
    context.log.info(f"dataset {ds.content_hash[:12]}: {ds.sizes()} windows from {len(rows)} KPI rows")
    summary = ds.summary()
    return dg.Output(
        ds,
        metadata={
            "content_hash": ds.content_hash,
            "source_rows": dg.MetadataValue.int(len(rows)),
            "windows": dg.MetadataValue.json(ds.sizes()),
            "held_out_shards": ", ".join(ds.held_out_shards),
            "time_cutoffs": dg.MetadataValue.json(ds.time_cutoffs),
            "rows_invalid": dg.MetadataValue.int(ds.clean.rows_invalid),
            "param_changes_in_test": dg.MetadataValue.json(cast(Any, summary["param_changes_in_test"])),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    description="Deep-ensemble GRU world model; logged to MLflow and registered as 'challenger'.",
)
def world_model(
    context: dg.AssetExecutionContext,
    config: WorldModelConfig,
    training_dataset: WorldModelDataset,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    # torch and mlflow: imported here, not at module top (see the module docstring)
    from aegis.worldmodel.pipeline import log_to_registry, train_with_baselines
    from aegis.worldmodel.train import EpochLog, TrainConfig

    ds = training_dataset
    cfg = TrainConfig(
        epochs=config.epochs,
        patience=config.patience,
        members=config.members,
        hidden=config.hidden,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        device=config.device,
    )

    def progress(log: EpochLog) -> None:
        context.log.info(
            f"member {log.member + 1}/{cfg.members} epoch {log.epoch + 1}/{cfg.epochs}: "
            f"train {log.train_loss:.4f} val NLL {log.val_loss:.4f} ({log.seconds:.1f}s)"
        )

    try:
        outcome = train_with_baselines(ds, cfg, progress)
    except (ValueError, FloatingPointError) as exc:
        raise dg.Failure(description=f"training failed: {exc}", allow_retries=False) from exc
    registry = mlflow.registry()
    registered = log_to_registry(
        registry,
        outcome,
        ds,
        None,
        cfg,
        {
            "aegis.trigger": context.run.tags.get("dagster/sensor_name")
            or context.run.tags.get("dagster/schedule_name")
            or "manual",
            "dagster.run_id": context.run_id,
        },
    )
    reports = outcome.reports
    meta: dict[str, Any] = {
        "model_version": registered.version,
        "model_uri": registered.uri,
        "mlflow_run_id": registered.run_id,
        "dataset_hash": ds.content_hash,
        "device": outcome.result.device,
        "epochs_run": dg.MetadataValue.json(outcome.result.epochs_run),
        "samples_per_second": dg.MetadataValue.float(round(outcome.result.samples_per_second, 1)),
        "accuracy": dg.MetadataValue.md(outcome.markdown()),
    }
    for kind, rep in reports.items():
        for split, m in rep.splits.items():
            meta[f"{kind}.{split}.relative_mae"] = dg.MetadataValue.float(round(m.relative_mae, 4))
    quality = model_quality_line(reports["world_model"])
    meta["summary"] = dg.MetadataValue.text(f"version {registered.version}: {quality}")
    context.log.info(f"world model version {registered.version} registered as challenger: {quality}")
    return dg.MaterializeResult(metadata=meta)


def model_quality_line(report: Any) -> str:
    """Per held-out split: MAE relative to persistence (< 1 beats it) and 90% interval coverage."""
    parts = [
        f"{split}: MAE {m.relative_mae:.3f}x persistence, 90% coverage {m.coverage:.2f}"
        for split, m in report.splits.items()
    ]
    return "; ".join(parts)


training_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(training_dataset, world_model)
    | dg.AssetSelection.groups("evaluation"),
    description="Build the dataset, train and register a challenger, judge it against the champion.",
)

world_model_daily = dg.ScheduleDefinition(
    name="world_model_daily",
    cron_schedule=DAILY_CRON,
    job=training_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)


def count_kpi_rows(warehouse: Path) -> int | None:
    """Rows in the mart now, or None when the warehouse cannot be read (absent or locked by a writer)."""
    try:
        con = warehouse_db.connect(warehouse, wait_s=warehouse_db.SENSOR_WAIT_S)
    except Exception:
        return None
    try:
        return int(con.execute(f"select count(*) from {KPI_TABLE}").fetchone()[0])  # type: ignore[index]
    except Exception:
        return None
    finally:
        con.close()


def rows_at_last_dataset(instance: dg.DagsterInstance) -> int | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("training_dataset"))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("source_rows")
    return int(value.value) if value is not None else None  # type: ignore[arg-type]


@dg.sensor(
    name="world_model_new_telemetry",
    job=training_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain when fct_shard_kpis gained the training resource's retrain_new_rows since the last dataset.",
)
def world_model_new_telemetry(
    context: dg.SensorEvaluationContext, lake: LakeResource, training: TrainingResource
) -> dg.SensorResult | dg.SkipReason:
    warehouse = lake.warehouse_path()
    now = count_kpi_rows(warehouse)
    if now is None:
        return dg.SkipReason(f"warehouse {warehouse} or table {KPI_TABLE} not readable now")
    threshold = training.retrain_threshold()
    cursor = int(context.cursor) if context.cursor else None
    baseline = cursor if cursor is not None else rows_at_last_dataset(context.instance)
    grown = now - (baseline or 0)
    if grown < threshold:
        return dg.SkipReason(f"{grown} new KPI rows since the last dataset; retrain at {threshold}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"kpi-rows-{now}", tags={"aegis/kpi_rows": str(now)})],
        cursor=str(now),
    )


training_assets = [training_dataset, world_model]
defs = training_defs = dg.Definitions(
    assets=training_assets,
    jobs=[training_job],
    schedules=[world_model_daily],
    sensors=[world_model_new_telemetry],
)
