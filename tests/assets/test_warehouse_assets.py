"""The warehouse assets: graph shape (fast) and a real materialization with GX checks (slow)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from aegis.quality.synthetic_lake import write_synthetic_lake
from aegis.telemetry import KPI_BUCKET_MINUTES
from assets import warehouse

MODELS = {
    "stg_lake__events",
    "stg_lake__world_configs",
    "int_shard_buckets",
    "int_shard_bucket_spine",
    "fct_progression_funnel",
    "fct_quest_abandonment",
    "fct_death_heatmap",
    "fct_economy_daily",
    "fct_server_health",
    "fct_slo_burn",
    "fct_shard_kpis",
}


def _defs() -> dg.Definitions:
    return dg.Definitions.merge(
        warehouse.defs, dg.Definitions(resources={"dbt": warehouse.dbt_resource("local")})
    )


def test_bucket_minutes_match_the_contract() -> None:
    project = yaml.safe_load((warehouse.DBT_PROJECT_DIR / "dbt_project.yml").read_text())
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
        assert node.automation_condition.get_label() == "warehouse_eager"  # assets.warehouse.WAREHOUSE_AUTOMATION
    assert models["stg_lake__events"].parent_keys == {dg.AssetKey("bronze_events")}
    assert models["stg_lake__world_configs"].parent_keys == {dg.AssetKey("world_configs")}
    # every mart is downstream of bronze, so materializing group telemetry fills them all
    marts = {k for k in MODELS if k.startswith("fct_")}
    downstream = (
        {k.to_user_string() for k in graph.get_downstream_keys(dg.AssetKey("bronze_events"))}
        if hasattr(graph, "get_downstream_keys")
        else None
    )
    if downstream is not None:
        assert marts <= downstream


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


def test_nightly_full_refresh_schedule() -> None:
    schedule = _defs().resolve_schedule_def("warehouse_nightly_full_refresh")
    assert schedule.cron_schedule == warehouse.NIGHTLY_CRON
    assert (
        warehouse._dbt_args(warehouse.WarehouseBuildConfig(full_refresh=True), warehouse.paths())[-1]
        == "--full-refresh"
    )


def test_dbt_resource_profiles() -> None:
    assert warehouse.dbt_resource("prod").target == "prod"
    with pytest.raises(ValueError, match="unknown profile"):
        warehouse.dbt_resource("staging")


def test_bronze_check_result_fails_on_bad_rows_and_shows_examples(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=1, n_shards=1, players_per_shard=5, ingested_at=datetime.now(UTC))
    good = warehouse.bronze_gx_integrity()
    assert good.passed
    path = next(aegis_home.bronze.glob("*/*.parquet"))
    df = pq.read_table(path).to_pandas()
    df.loc[3, "event_id"] = None
    df.to_parquet(path, index=False)
    bad = warehouse.bronze_gx_integrity()
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["failed_expectations"].value == 1
    assert "**FAIL**" in bad.metadata["expectations"].value
    assert "null" in bad.metadata["failing_examples"].value


@pytest.mark.slow
def test_materialize_dbt_assets_with_checks(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=3, n_shards=2, players_per_shard=20, ingested_at=datetime.now(UTC))
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    selection = [
        warehouse.warehouse_dbt,
        *[c for c in warehouse.ASSET_CHECKS if "bronze_events" not in str(c.keys)],
    ]
    result = dg.materialize(selection, resources={"dbt": warehouse.dbt_resource("local")}, instance=instance)
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
    assert defs is not None
