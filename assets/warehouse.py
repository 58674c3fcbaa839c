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
  the build and the checks read. On an S3 lake the dbt build reads the lake
  through the prod target (``AEGIS_LAKE_ROOT``); the GX checks read local
  files only and say so (``LakeNotConfigured``) rather than read a local home.

The manifest is prepared at import when missing or older than the project's
files (``dbt parse``, guarded against concurrent parses), so importing the code
location works on a fresh clone where ``dbt/target`` does not exist.
"""

import contextlib
import fcntl
import json
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from aegis import warehouse as warehouse_db
from aegis.config import AegisPaths
from aegis.quality import suites
from aegis.quality.gx_validation import ValidationReport
from aegis.stack import AUTOMATION_TAG
from assets.telemetry import BRONZE_KEY
from pipelines.resources.lake import LakeResource

GROUP = "telemetry"
DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt"
DBT_TARGETS: dict[str, str] = {"local": "local", "prod": "prod"}  # AEGIS_PROFILE -> dbt target
WORLD_CONFIGS_KEY = dg.AssetKey("world_configs")
CHECKED_MARTS: tuple[str, ...] = tuple(suites.MART_SPECS)
FUNNEL_MART = "fct_progression_funnel"
HEATMAP_MART = "fct_death_heatmap"
PREVIEW_ROWS = 10
# Files whose change makes the manifest stale.
_PROJECT_GLOBS: tuple[str, ...] = (
    "dbt_project.yml",
    "profiles.yml",
    "models/**/*",
    "macros/**/*",
    "tests/**/*",
)
NIGHTLY_CRON = "30 3 * * *"
# Automation requests a model at most once per window (see warehouse_automation_condition).
WAREHOUSE_BUILD_WINDOW_CRON = "*/2 * * * *"


# ------------------------------------------------------------------ dbt project


def _manifest_is_stale(project: DbtProject) -> bool:
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(
        p.is_file() and p.stat().st_mtime > built for g in _PROJECT_GLOBS for p in project.project_dir.glob(g)
    )


def _dbt_executable() -> str:
    """The dbt beside this interpreter (the venv), so nothing depends on PATH being activated."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def prepare_manifest(project: DbtProject) -> Path:
    """``dbt parse`` when the manifest is missing or stale.

    A file lock serialises concurrent imports (pytest-xdist workers, the webserver
    and a run worker starting together); the staleness test is repeated under the
    lock so only the first of them parses.
    """
    if _manifest_is_stale(project):
        lock_path = project.project_dir / project.target_path / ".parse.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if _manifest_is_stale(project):
                    DbtCliResource(project_dir=project, dbt_executable=_dbt_executable()).cli(
                        ["parse", "--quiet"], target_path=project.target_path, raise_on_error=True
                    ).wait()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if not project.manifest_path.exists():
        raise RuntimeError(
            f"dbt parse did not produce {project.manifest_path}; run 'dbt parse' in {project.project_dir}"
        )
    return project.manifest_path


DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR)
prepare_manifest(DBT_PROJECT)


def dbt_resource(profile: str) -> DbtCliResource:
    """The dbt CLI resource for an Aegis profile (``local`` or ``prod``), keyed ``dbt`` in pipelines/profiles.py."""
    try:
        target = DBT_TARGETS[profile]
    except KeyError:
        raise ValueError(
            f"unknown profile {profile!r} for dbt; expected one of {', '.join(DBT_TARGETS)}"
        ) from None
    return DbtCliResource(
        project_dir=DBT_PROJECT, profiles_dir=DBT_PROJECT_DIR, target=target, dbt_executable=_dbt_executable()
    )


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


def _dbt_args(config: WarehouseBuildConfig, home: AegisPaths | None) -> list[str]:
    """``dbt build`` arguments; ``home`` None: an S3 lake, whose root the prod target takes from the env."""
    args = ["build"]
    if home is not None:
        args += ["--vars", json.dumps({"aegis_home": str(home.home)})]
    if config.full_refresh:
        args.append("--full-refresh")
    return args


def missing_lake_inputs(home: AegisPaths) -> list[str]:
    """What a local dbt build needs and the lake lacks, each with how to produce it.

    dbt-duckdb would otherwise fail deep inside the first model with DuckDB's
    "No files found that match the pattern", which names neither the cause nor the fix.
    """
    missing: list[str] = []
    if not any(home.bronze.glob("*/*.parquet")):
        missing.append(
            f"no bronze events under {home.bronze}: land telemetry (`aegis world run`, or a running "
            "world server) and ingest it (job ingest_telemetry / `aegis materialize telemetry` runs "
            "bronze_events first)"
        )
    configs = home.landing / "configs"
    if not any(configs.glob("*/*.parquet")):
        missing.append(
            f"no world config feed under {configs}: the world server (or `aegis world run`) lands one "
            "file per shard and config version there"
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
    home = None if lake.is_s3 else lake.paths()
    if home is not None:
        missing = missing_lake_inputs(home)
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
                metadata={"lake": dg.MetadataValue.path(str(home.lake))},
            )
    held: list[Any] = []
    # The build holds the warehouse's exclusive lock (aegis.warehouse): readers queue behind it
    # instead of failing it, and it waits for the readers in flight. Released before the
    # metadata below, which reads under the shared lock.
    build_lock = (
        warehouse_db.warehouse_lock(home.warehouse, exclusive=True, wait_s=warehouse_db.RUN_WAIT_S)
        if home is not None
        else contextlib.nullcontext()
    )
    with build_lock:
        for event in dbt.cli(_dbt_args(config, home), context=context).stream():
            name = _model_name(event)
            if name in _ENRICHED and isinstance(
                event, (dg.Output, dg.AssetMaterialization, dg.AssetCheckResult)
            ):
                held.append(event)
            else:
                yield event
    for event in held:
        name = _model_name(event)
        if isinstance(event, (dg.Output, dg.AssetMaterialization)) and name is not None and home is not None:
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
    return check_result(suites.bronze_integrity(lake.paths()), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset=BRONZE_KEY,
    name="gx_volume",
    description="GX: events in the newest complete game hour within 50% of the trailing hours' mean.",
)
def bronze_gx_volume(lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(suites.bronze_volume(lake.paths()), dg.AssetCheckSeverity.WARN)


@dg.asset_check(
    asset=BRONZE_KEY,
    name="gx_freshness",
    description="GX: lake ingested recently (wall clock); no shard trails the fleet's newest event by 30 min.",
)
def bronze_gx_freshness(lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(suites.bronze_freshness(lake.paths()), dg.AssetCheckSeverity.WARN)


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
        return check_result(suites.mart_integrity(lake.paths(), mart), dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(
        asset=key, name="gx_volume", description=f"GX: {mart} row volume against its trailing baseline."
    )
    def volume(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        previous = _previous_row_counts(context.instance, key)
        return check_result(suites.mart_volume(lake.paths(), mart, previous), dg.AssetCheckSeverity.WARN)

    @dg.asset_check(
        asset=key, name="gx_freshness", description=f"GX: {mart} covers the lake's newest events."
    )
    def freshness(lake: LakeResource) -> dg.AssetCheckResult:
        return check_result(suites.mart_freshness(lake.paths(), mart), dg.AssetCheckSeverity.WARN)

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
    "DBT_PROJECT",
    "GROUP",
    "AegisDbtTranslator",
    "dbt_resource",
    "defs",
    "mart_metadata",
    "missing_lake_inputs",
    "warehouse_dbt",
]
