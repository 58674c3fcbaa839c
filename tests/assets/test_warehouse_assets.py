"""The warehouse assets: graph shape (fast) and a real materialization with GX checks (slow)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from aegis.config import AegisPaths
from aegis.quality.synthetic_lake import write_synthetic_lake
from aegis.telemetry import KPI_BUCKET_MINUTES
from assets import warehouse
from assets.resources.dbt import DBT_PROJECT_DIR, dbt_resource
from assets.resources.lake import LakeResource
from tests.support import ISSUE_MARTS

MODELS = {
    "stg_lake__events",
    "stg_lake__world_configs",
    "int_shard_buckets",
    "int_shard_bucket_spine",
    *ISSUE_MARTS,
}


def _defs() -> dg.Definitions:
    return dg.Definitions.merge(
        warehouse.defs,
        dg.Definitions(resources={"dbt": dbt_resource("local"), "lake": LakeResource()}),
    )


def test_bucket_minutes_match_the_contract() -> None:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["kpi_bucket_minutes"] == KPI_BUCKET_MINUTES


def test_every_model_is_an_eager_telemetry_asset_fed_by_bronze() -> None:
    graph = _defs().resolve_asset_graph()
    models = {
        k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).is_materializable
    }
    assert set(models) == MODELS
    assert {n.group_name for n in models.values()} == {"telemetry"}
    for node in models.values():
        assert node.automation_condition is not None
        assert (
            node.automation_condition.get_label() == "warehouse_eager"
        )  # assets.warehouse.WAREHOUSE_AUTOMATION
    assert models["stg_lake__events"].parent_keys == {dg.AssetKey("bronze_events")}
    assert models["stg_lake__world_configs"].parent_keys == {dg.AssetKey("world_configs")}
    # every mart is downstream of bronze, so materializing group telemetry fills them all
    marts = {k for k in MODELS if k.startswith("fct_")}
    downstream = dg.AssetSelection.assets("bronze_events").downstream().resolve(graph)
    assert marts <= {k.to_user_string() for k in downstream}


def test_checks_cover_bronze_and_key_marts_with_blocking_where_it_matters() -> None:
    specs = {(s.asset_key.to_user_string(), s.name): s for c in warehouse.ASSET_CHECKS for s in c.check_specs}
    for name in ("gx_integrity", "gx_volume", "gx_freshness"):
        assert ("bronze_events", name) in specs
        for mart in ("fct_shard_kpis", "fct_quest_abandonment", "fct_slo_burn", "fct_economy_daily"):
            assert (mart, name) in specs
    assert specs[("bronze_events", "gx_integrity")].blocking
    assert specs[("fct_shard_kpis", "gx_integrity")].blocking
    assert not specs[("fct_shard_kpis", "gx_volume")].blocking
    # dbt tests are asset checks too
    dbt_checks = {s.name for s in warehouse.warehouse_dbt.check_specs}
    assert any(n.startswith("unique_combination_fct_shard_kpis") for n in dbt_checks)


def test_nightly_full_refresh_schedule(aegis_home) -> None:
    schedule = _defs().resolve_schedule_def("warehouse_nightly_full_refresh")
    assert schedule.cron_schedule == warehouse.NIGHTLY_CRON
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    args = warehouse._dbt_args(warehouse.WarehouseBuildConfig(full_refresh=True), aegis_home)
    assert args[-1] == "--full-refresh"
    assert str(aegis_home.home) in args[2]
    # an S3 lake: the home still holds the warehouse; the lake root is the bucket
    from aegis.lake.store import Lake

    s3 = Lake.s3("s3://lake-bucket", state_dir=aegis_home.home / "cache", manifest_url="sqlite://")
    args = warehouse._dbt_args(warehouse.WarehouseBuildConfig(), aegis_home, s3)
    assert args[:2] == ["build", "--vars"]
    assert json.loads(args[2]) == {"aegis_home": str(aegis_home.home), "lake_root": "s3://lake-bucket"}


def test_dbt_resource_profiles() -> None:
    assert dbt_resource("prod").target == "prod"
    with pytest.raises(ValueError, match="unknown profile"):
        dbt_resource("staging")


def test_bronze_check_result_fails_on_bad_rows_and_shows_examples(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=1, n_shards=1, players_per_shard=5, ingested_at=datetime.now(UTC))
    lake = LakeResource()
    good = warehouse.bronze_gx_integrity(lake)
    assert good.passed
    path = next(aegis_home.bronze.glob("*/*.parquet"))
    df = pq.read_table(path).to_pandas()
    df.loc[3, "event_id"] = None
    df.to_parquet(path, index=False)
    bad = warehouse.bronze_gx_integrity(lake)
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["failed_expectations"].value == 1
    assert "**FAIL**" in bad.metadata["expectations"].value
    assert "null" in bad.metadata["failing_examples"].value


@pytest.mark.slow
def test_materialize_dbt_assets_with_checks(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=3, n_shards=2, players_per_shard=20, ingested_at=datetime.now(UTC))
    instance = dg.DagsterInstance.ephemeral()
    selection = [
        warehouse.warehouse_dbt,
        *[c for c in warehouse.ASSET_CHECKS if "bronze_events" not in str(c.keys)],
    ]
    result = dg.materialize(
        selection,
        resources={"dbt": dbt_resource("local"), "lake": LakeResource()},
        instance=instance,
    )
    assert result.success
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert set(mats) >= MODELS
    funnel = mats["fct_progression_funnel"].materialization.metadata
    assert funnel["dagster/row_count"].value > 0
    assert funnel["funnel_chart"].value.startswith("![quest funnel](data:image/png;base64,")
    assert (aegis_home.home / "reports" / "fct_death_heatmap.png").stat().st_size > 1000
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    kpi = checks[("fct_shard_kpis", "gx_integrity")]
    assert kpi.passed and kpi.metadata["rows_validated"].value > 0
    assert checks[("fct_shard_kpis", "gx_freshness")].passed
    assert checks[("fct_quest_abandonment", "gx_volume")].metadata["skipped"].value.startswith("no baseline")
    assert any(name.startswith("unique_combination") and ev.passed for (_, name), ev in checks.items())


def test_bronze_checks_on_an_empty_lake_fail_or_skip_with_a_reason(aegis_home) -> None:
    lake = LakeResource()
    integrity = warehouse.bronze_gx_integrity(lake)
    assert not integrity.passed and integrity.severity == dg.AssetCheckSeverity.ERROR
    assert "no bronze data yet: land telemetry and run the ingest" in integrity.metadata["summary"].value
    for check in (warehouse.bronze_gx_volume, warehouse.bronze_gx_freshness):
        result = check(lake)
        assert result.passed and "no bronze data yet" in result.metadata["skipped"].value


def test_checks_read_the_lake_resource_home_not_aegis_home(aegis_home, tmp_path) -> None:
    """AEGIS_HOME is empty; the configured LakeResource points at a home that has a lake."""
    other = AegisPaths.from_env(tmp_path / "other").ensure()
    write_synthetic_lake(other, hours=1, n_shards=1, players_per_shard=5, ingested_at=datetime.now(UTC))
    assert not any(aegis_home.bronze.glob("*/*.parquet"))
    result = warehouse.bronze_gx_integrity(LakeResource(home=str(other.home)))
    assert result.passed and result.metadata["rows_validated"].value > 0
    assert not warehouse.bronze_gx_integrity(LakeResource()).passed  # the environment's home is empty


def test_dbt_asset_on_an_empty_lake_fails_before_dbt_with_what_is_missing(aegis_home) -> None:
    missing = warehouse.missing_lake_inputs(aegis_home)
    assert len(missing) == 2 and "no bronze events" in missing[0] and "config feed" in missing[1]
    result = dg.materialize(
        [warehouse.warehouse_dbt],
        resources={"dbt": dbt_resource("local"), "lake": LakeResource()},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.step_failure_data.user_failure_data.description)
    assert "the warehouse cannot be built yet" in text and "no bronze events under" in text
    assert "No files found" not in text
    assert not aegis_home.warehouse.exists()  # dbt never ran


def test_automation_on_an_empty_lake_is_warming_up_not_a_red_run(aegis_home) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [warehouse.warehouse_dbt],
        resources={"dbt": dbt_resource("local"), "lake": LakeResource()},
        instance=instance,
        tags={warehouse.AUTOMATION_RUN_TAG: "true"},  # what declarative automation puts on its runs
        raise_on_error=False,
    )
    assert result.success
    assert result.get_asset_materialization_events() == []  # nothing pretended to be built
    logs = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("warming up, nothing to build yet" in m and "no bronze events" in m for m in logs)
    assert not aegis_home.warehouse.exists()


@pytest.mark.slow
def test_materialize_reads_the_lake_resource_home(aegis_home, tmp_path) -> None:
    """The dbt build and the mart checks use LakeResource(home=...), not AEGIS_HOME (which stays empty)."""
    other = AegisPaths.from_env(tmp_path / "other").ensure()
    write_synthetic_lake(other, hours=2, n_shards=1, players_per_shard=10, ingested_at=datetime.now(UTC))
    kpis = next(
        c
        for c in warehouse.ASSET_CHECKS
        if any(
            s.asset_key == dg.AssetKey("fct_shard_kpis") and s.name == "gx_integrity" for s in c.check_specs
        )
    )
    result = dg.materialize(
        [warehouse.warehouse_dbt, kpis],
        resources={"dbt": dbt_resource("local"), "lake": LakeResource(home=str(other.home))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert other.warehouse.exists() and not aegis_home.warehouse.exists()
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert checks[("fct_shard_kpis", "gx_integrity")].passed
