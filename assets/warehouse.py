"""The warehouse stage: dbt models as Dagster assets, Great Expectations checks, mart charts.

- Every dbt model is an asset in group ``telemetry`` (staging and intermediate
  too: ``aegis materialize telemetry`` must fill every mart, which needs their
  upstream models in the same selection). dbt tests become asset checks
  (dagster-dbt), and bronze lineage is the ingest's ``bronze_events`` asset.
- Automation: :func:`warehouse_automation_condition` on every model, eager in
  spirit (a new bronze materialization cascades through staging to the marts)
  with three differences from ``AutomationCondition.eager()``, each found by
  running the stack: (1) a model that is missing is built even when it was
  already missing on the condition's first evaluation (``eager()`` resets on
  that evaluation, so ``stg_lake__world_configs``, whose only input is the
  external config feed, was never built and ``fct_shard_kpis`` waited on it
  forever); (2) at most one request per model per ``WAREHOUSE_BUILD_WINDOW_CRON``
  window, so a build (tens of seconds on a small machine) is not re-requested on
  every ingest; an update seen meanwhile is built in the next window, never
  dropped; (3) bronze's blocking checks must have passed, so bad bronze stops
  here although the ingest and the build are separate runs (between dbt models,
  dbt's own blocking tests stop a build inside its run; requiring them across
  runs too would split one build into a run per layer). Eager rather than on_cron: bronze
  arrives whenever the sensor ingests, and the marts should follow within
  minutes; the nightly schedule below reconciles with a full refresh.
  ``world_configs`` is ignored by the condition: the config feed is not a Dagster
  asset (the world server lands it), and ``stg_lake__world_configs`` is a view,
  never stale once built.
- GX checks (``aegis.quality``) guard bronze (integrity blocking) and the key
  marts (integrity blocking; volume and freshness warn).
- Paths come from the ``lake`` resource (``LakeResource``), never from the
  process's global ``paths()``: the profile chooses the lake in one place
  (pipelines/profiles.py), and a configured ``LakeResource(home=...)`` is what
  the build and the checks read. On an S3 lake (prod) the dbt build reads the
  lake through the prod target (the dbt var ``lake_root``, Arrow's S3 filesystem)
  and the GX checks read bronze in S3 the same way; the warehouse file stays in
  the home and is published to the platform bucket after each build.

The dbt project, its manifest and the ``dbt`` resource are
:mod:`assets.resources.dbt`'s.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from aegis import warehouse as warehouse_db
from aegis.config import AegisPaths
from aegis.lake.store import Lake, as_lake
from aegis.quality import suites
from aegis.quality.gx_validation import ValidationReport
from aegis.stack import AUTOMATION_TAG
from assets.resources.dbt import DBT_PROJECT
from assets.resources.lake import LakeResource
from assets.telemetry import BRONZE_KEY

GROUP = "telemetry"
WORLD_CONFIGS_KEY = dg.AssetKey("world_configs")
CHECKED_MARTS: tuple[str, ...] = tuple(suites.MART_SPECS)
FUNNEL_MART = "fct_progression_funnel"
HEATMAP_MART = "fct_death_heatmap"
PREVIEW_ROWS = 10
NIGHTLY_CRON = "30 3 * * *"
# Automation requests a model at most once per window (see warehouse_automation_condition).
WAREHOUSE_BUILD_WINDOW_CRON = "*/2 * * * *"


def warehouse_automation_condition() -> dg.AutomationCondition:
    """When automation builds a dbt model: missing, or an input updated since it was last handled.

    Built from ``AutomationCondition``'s parts rather than ``eager()`` (see the
    module docstring for the three reasons). Kept from eager: never while the
    model or an input is in progress, never with an input missing. A missing
    model whose build failed is retried once per window; a present one waits for
    the next input update, as with eager.
    """
    cond = dg.AutomationCondition
    requested_this_window = (
        cond.newly_requested()
        .since(cond.cron_tick_passed(WAREHOUSE_BUILD_WINDOW_CRON))
        .with_label(f"requested since the last {WAREHOUSE_BUILD_WINDOW_CRON} tick")
    )
    needs_build = cond.missing() | cond.any_deps_updated().since_last_handled()
    return (
        (
            needs_build.with_label("missing or an input updated since last handled")
            & ~cond.any_deps_missing()
            & ~cond.any_deps_in_progress()
            & ~cond.in_progress()
            & cond.all_deps_blocking_checks_passed().allow(dg.AssetSelection.assets(BRONZE_KEY))
            & ~requested_this_window
        )
        .with_label("warehouse_eager")
        .ignore(dg.AssetSelection.assets(WORLD_CONFIGS_KEY))
    )


WAREHOUSE_AUTOMATION = warehouse_automation_condition()
# Dagster's tag on runs that declarative automation requested.
AUTOMATION_RUN_TAG = "dagster/from_automation_condition"


class AegisDbtTranslator(DagsterDbtTranslator):
    """Models in group ``telemetry``, warehouse automation; sources keep the keys their meta names."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props.get("resource_type") == "source":
            return super().get_group_name(dbt_resource_props)
        return GROUP

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        if dbt_resource_props.get("resource_type") == "source":
            return None
        return WAREHOUSE_AUTOMATION


TRANSLATOR = AegisDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


class WarehouseBuildConfig(dg.Config):
    """Run config of the dbt build."""

    full_refresh: bool = False  # dbt --full-refresh: rebuild every model from scratch (incremental ones too)


def _dbt_args(config: WarehouseBuildConfig, home: AegisPaths, lake: Lake | None = None) -> list[str]:
    """``dbt build`` arguments: the home (the warehouse file) and, for an S3 lake, its root."""
    dbt_vars = {"aegis_home": str(home.home)}
    if lake is not None and lake.is_remote:
        dbt_vars["lake_root"] = lake.store.uri
    args = ["build", "--vars", json.dumps(dbt_vars)]
    if config.full_refresh:
        args.append("--full-refresh")
    return args


def missing_lake_inputs(where: AegisPaths | Lake) -> list[str]:
    """What a dbt build needs and the lake lacks, each with how to produce it.

    dbt-duckdb would otherwise fail deep inside the first model with DuckDB's
    "No files found that match the pattern", which names neither the cause nor the fix.
    """
    lake = as_lake(where)
    missing: list[str] = []
    if not lake.store.any("bronze"):
        missing.append(
            f"no bronze events under {lake.store.uri_of('bronze')}: land telemetry (`aegis world run`, or "
            "a running world server) and ingest it (job ingest_telemetry / `aegis materialize telemetry` "
            "runs bronze_events first)"
        )
    if not lake.store.any("landing/configs"):
        missing.append(
            f"no world config feed under {lake.store.uri_of('landing/configs')}: the world server (or "
            "`aegis world run`) lands one file per shard and config version there"
        )
    return missing


def _model_name(event: Any) -> str | None:
    key = getattr(event, "asset_key", None)
    if key is None and isinstance(event, dg.Output):
        key = dg.AssetKey(event.output_name)
    return key.path[-1] if key is not None else None


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    project=DBT_PROJECT,
    dagster_dbt_translator=TRANSLATOR,
    name="warehouse_dbt",
)
def warehouse_dbt(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource, config: WarehouseBuildConfig
) -> Iterator[Any]:
    """``dbt build`` of the selected models; marts get row counts, previews and charts.

    DuckDB allows one writer per file and dbt holds it until it exits, so the
    events of the enriched marts are held back and yielded, with their metadata,
    once the build is over. The lake (and the local warehouse file beside it)
    is the ``lake`` resource's; a local lake missing its inputs fails before
    dbt starts, with what is missing and how to produce it.
    """
    home = lake.home_paths()
    where = lake.lake()
    missing = missing_lake_inputs(where)
    if missing and context.run.tags.get(AUTOMATION_RUN_TAG) == "true":
        # Automation asks for the models as soon as the stack starts (a model with no
        # materialized input, like the config feed's view, counts as missing): before the
        # first telemetry has landed and been ingested that is warming up, not a failure.
        # The run ends green with nothing materialized; the next window tries again.
        context.log.info("warming up, nothing to build yet: " + "; ".join(missing))
        return
    if missing:
        raise dg.Failure(
            description="the warehouse cannot be built yet: " + "; ".join(missing),
            metadata={"lake": dg.MetadataValue.path(where.store.uri)},
        )
    held: list[Any] = []
    # The build holds the warehouse's exclusive lock (aegis.warehouse): readers queue behind it
    # instead of failing it, and it waits for the readers in flight. Released before the
    # metadata below, which reads under the shared lock. In prod the build starts from the
    # newest published warehouse (incremental models) and publishes what it built.
    with warehouse_db.warehouse_lock(home.warehouse, exclusive=True, wait_s=warehouse_db.RUN_WAIT_S):
        warehouse_db.pull(home.warehouse)
        for event in dbt.cli(_dbt_args(config, home, where), context=context).stream():
            name = _model_name(event)
            if name in _ENRICHED and isinstance(
                event, (dg.Output, dg.AssetMaterialization, dg.AssetCheckResult)
            ):
                held.append(event)
            else:
                yield event
        if warehouse_db.publish(home.warehouse) is not None:
            context.log.info(f"published the warehouse to {warehouse_db.published_key()}")
    for event in held:
        name = _model_name(event)
        if isinstance(event, (dg.Output, dg.AssetMaterialization)) and name is not None:
            try:
                extra = mart_metadata(home, name)
            except Exception as exc:  # metadata is a view of the data: never fail a good build over it
                context.log.warning(f"could not compute metadata for {name}: {exc}")
                extra = {}
            event = event.with_metadata({**event.metadata, **extra})
        yield event


# ---------------------------------------------------------------- mart metadata

_ENRICHED = frozenset({*CHECKED_MARTS, FUNNEL_MART, HEATMAP_MART, "fct_server_health"})


def mart_metadata(home: AegisPaths, mart: str) -> dict[str, Any]:
    """Row count, a preview table and, for the funnel and the heatmap, a chart."""
    from aegis.quality import reporting

    out: dict[str, Any] = {}
    with suites.connect_warehouse(home.warehouse) as con:
        rows = int(con.execute(f"select count(*) from main.{mart}").fetchone()[0])  # type: ignore[index]
        out["dagster/row_count"] = dg.MetadataValue.int(rows)
        out["preview"] = dg.MetadataValue.md(
            reporting.frame_markdown(con.execute(f"select * from main.{mart} limit {PREVIEW_ROWS}").df())
        )
        if mart == FUNNEL_MART and rows:
            funnel = con.execute(f"select stage, starts, completions, abandonments from main.{mart}").df()
            png = reporting.funnel_chart(funnel)
            out["funnel_chart"] = dg.MetadataValue.md(reporting.png_markdown(png, "quest funnel"))
            out["funnel_chart_path"] = dg.MetadataValue.path(
                str(reporting.save_png(png, home.home / "reports", mart))
            )
        if mart == HEATMAP_MART and rows:
            deaths = con.execute(f"select cell_x, cell_y, deaths from main.{mart}").df()
            png = reporting.death_heatmap(deaths)
            out["heatmap"] = dg.MetadataValue.md(reporting.png_markdown(png, "death heatmap"))
            out["heatmap_path"] = dg.MetadataValue.path(
                str(reporting.save_png(png, home.home / "reports", mart))
            )
    return out


# ------------------------------------------------------------------- GX checks


def check_result(report: ValidationReport, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    """A GX report as an asset check result the UI can read: counts, the table, failing rows."""
    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.text(report.summary()),
        "rows_validated": dg.MetadataValue.int(report.row_count),
        "failed_expectations": dg.MetadataValue.int(len(report.failed)),
        "unexpected_values": dg.MetadataValue.int(report.unexpected_total),
        "expectations": dg.MetadataValue.md(report.outcomes_markdown()),
        "failing_examples": dg.MetadataValue.md(report.examples_markdown()),
    }
    if report.skipped:
        metadata["skipped"] = dg.MetadataValue.text("; ".join(report.skipped))
    for key, value in report.details.items():
        metadata[f"detail/{key}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return dg.AssetCheckResult(passed=report.success, severity=severity, metadata=metadata)


@dg.asset_check(
    asset=BRONZE_KEY,
    name="gx_integrity",
    blocking=True,
    description="GX: keys not null, kind in the enum, schema_version 1, event_id unique (newest rows).",
)
def bronze_gx_integrity(lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(suites.bronze_integrity(lake.lake()), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset=BRONZE_KEY,
    name="gx_volume",
    description="GX: events in the newest complete game hour within 50% of the trailing hours' mean.",
)
def bronze_gx_volume(lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(suites.bronze_volume(lake.lake()), dg.AssetCheckSeverity.WARN)


@dg.asset_check(
    asset=BRONZE_KEY,
    name="gx_freshness",
    description="GX: lake ingested recently (wall clock); no shard trails the fleet's newest event by 30 min.",
)
def bronze_gx_freshness(lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(suites.bronze_freshness(lake.lake()), dg.AssetCheckSeverity.WARN)


def _previous_row_counts(instance: dg.DagsterInstance, key: dg.AssetKey, limit: int = 25) -> list[int]:
    """Row counts of earlier materializations (newest excluded: it is the one being checked)."""
    records = instance.fetch_materializations(key, limit=limit).records
    counts: list[int] = []
    for record in records[1:]:
        mat = record.asset_materialization
        value = mat.metadata.get("dagster/row_count") if mat is not None else None
        if value is not None:
            counts.append(int(value.value))  # type: ignore[arg-type]
    return list(reversed(counts))


def _mart_checks(mart: str) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(mart)

    @dg.asset_check(
        asset=key,
        name="gx_integrity",
        blocking=True,
        description=f"GX: keys not null and rates within [0, 1] on {mart}; bad rows must not flow on.",
    )
    def integrity(lake: LakeResource) -> dg.AssetCheckResult:
        return check_result(
            suites.mart_integrity(lake.home_paths(), mart, lake.lake()), dg.AssetCheckSeverity.ERROR
        )

    @dg.asset_check(
        asset=key, name="gx_volume", description=f"GX: {mart} row volume against its trailing baseline."
    )
    def volume(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        previous = _previous_row_counts(context.instance, key)
        return check_result(suites.mart_volume(lake.home_paths(), mart, previous), dg.AssetCheckSeverity.WARN)

    @dg.asset_check(
        asset=key, name="gx_freshness", description=f"GX: {mart} covers the lake's newest events."
    )
    def freshness(lake: LakeResource) -> dg.AssetCheckResult:
        return check_result(
            suites.mart_freshness(lake.home_paths(), mart, lake.lake()), dg.AssetCheckSeverity.WARN
        )

    return [integrity, volume, freshness]


ASSET_CHECKS: list[dg.AssetChecksDefinition] = [
    bronze_gx_integrity,
    bronze_gx_volume,
    bronze_gx_freshness,
    *[check for mart in CHECKED_MARTS for check in _mart_checks(mart)],
]

# ------------------------------------------------------------------- schedules

warehouse_full_refresh_job = dg.define_asset_job(
    "warehouse_full_refresh",
    selection=dg.AssetSelection.assets(warehouse_dbt),
    config=dg.RunConfig(ops={"warehouse_dbt": WarehouseBuildConfig(full_refresh=True)}),
    # Same concurrency key as automation builds: DuckDB takes one writer at a time.
    tags={AUTOMATION_TAG: "nightly"},
    description="Rebuild every warehouse model from bronze as it is, with all dbt tests and checks.",
)

warehouse_nightly = dg.ScheduleDefinition(
    name="warehouse_nightly_full_refresh",
    job=warehouse_full_refresh_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    # On by default, like every Aegis schedule: the daily reconciliation must not wait for a click.
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Nightly full rebuild: the marts and their checks (freshness, volume) run at least once a day, "
        "also when no telemetry arrived and automation had nothing to react to."
    ),
)

defs = dg.Definitions(
    assets=[warehouse_dbt],
    asset_checks=ASSET_CHECKS,
    jobs=[warehouse_full_refresh_job],
    schedules=[warehouse_nightly],
)

__all__ = [
    "ASSET_CHECKS",
    "GROUP",
    "AegisDbtTranslator",
    "defs",
    "mart_metadata",
    "missing_lake_inputs",
    "warehouse_dbt",
]
