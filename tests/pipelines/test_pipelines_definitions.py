"""The code location's wiring (the whole graph: test_definitions_snapshot.py), profiles, CLI, dagster.yaml."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from aegis.config import AegisPaths

# The telemetry area's part of the graph; other areas add theirs beside it.
EXPECTED_TELEMETRY_ASSETS = {"bronze_events", "telemetry_quality_report"}
EXPECTED_JOBS = {"ingest_telemetry", "telemetry_quality_report_job"}
EXPECTED_SENSORS = {"landing_sensor": "RUNNING", "default_automation_condition_sensor": "RUNNING"}
EXPECTED_SCHEDULES = {
    "telemetry_daily_quality_report": ("0 6 * * *", "RUNNING"),
    "warehouse_nightly_full_refresh": ("30 3 * * *", "RUNNING"),
}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from pipelines.definitions import defs

    return defs


def test_asset_keys_and_groups(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.materializable_asset_keys}
    assert {k: g for k, g in groups.items() if k in EXPECTED_TELEMETRY_ASSETS} == dict.fromkeys(
        EXPECTED_TELEMETRY_ASSETS, "telemetry"
    )
    # marts hang off bronze: every dbt model's upstream closure reaches bronze_events
    marts = [k for k in graph.materializable_asset_keys if k.path[-1].startswith("fct_")]
    assert marts, "the warehouse's marts are part of the code location"
    bronze = dg.AssetKey("bronze_events")
    for mart in marts:
        assert bronze in dg.AssetSelection.assets(mart).upstream().resolve(graph), mart
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("bronze_events", "rows_conserved") in checks


def test_jobs_sensors_schedules(defs: dg.Definitions) -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= EXPECTED_JOBS
    sensors = {s.name: s.default_status.value for s in repo.sensor_defs}
    assert {k: sensors.get(k) for k in EXPECTED_SENSORS} == EXPECTED_SENSORS
    schedules = {s.name: (s.cron_schedule, s.default_status.value) for s in repo.schedule_defs}
    assert {k: schedules.get(k) for k in EXPECTED_SCHEDULES} == EXPECTED_SCHEDULES
    landing = repo.get_sensor_def("landing_sensor")
    assert landing.minimum_interval_seconds == 15
    assert landing.job_name == "ingest_telemetry"
    # local profile: every job, automation runs included, executes in the run worker's process
    assert defs.resolve_job_def("ingest_telemetry").executor_def is dg.in_process_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor


def test_resources_per_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.resources.lake import LakeNotConfigured
    from pipelines.profiles import resources_for
    from pipelines.stack_outputs import PROD_SECRET_ENV, STACK_OUTPUT_ENV, MissingStackOutputsError

    local = resources_for("local")
    assert {"lake", "game", "dbt"} <= set(local)
    assert not local["lake"].is_s3
    for var in [*STACK_OUTPUT_ENV.values(), *PROD_SECRET_ENV]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AEGIS_LAKE_BUCKET", "lake")  # one present, the rest missing: all named at once
    with pytest.raises(MissingStackOutputsError) as missing:
        resources_for("prod")
    named = str(missing.value)
    assert "AEGIS_LAKE_BUCKET" not in named
    for var in [v for v in STACK_OUTPUT_ENV.values() if v != "AEGIS_LAKE_BUCKET"] + list(PROD_SECRET_ENV):
        assert var in named, var
    for out, var in STACK_OUTPUT_ENV.items():
        monkeypatch.setenv(var, f"value-of-{out}")
    with pytest.raises(MissingStackOutputsError, match="AEGIS_DB_PASSWORD"):
        resources_for("prod")  # the outputs alone are not enough: the database secret too
    for var in PROD_SECRET_ENV:
        monkeypatch.setenv(var, f"secret-{var}")
    prod = resources_for("prod")
    assert prod["lake"].s3_bucket == "value-of-lakeBucket"
    assert prod["game"].base_url == "value-of-gameApiUrl"
    assert prod["healing"].alert_queue_url == "value-of-alertQueueUrl"
    with pytest.raises(LakeNotConfigured, match="no local directory layout"):
        prod["lake"].paths()
    with pytest.raises(ValueError, match="unknown profile"):
        resources_for("staging")


def test_the_prod_profile_provides_every_resource_an_area_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot covers local; prod must assemble too (Dagster refuses a required key nobody provides)."""
    from pipelines.definitions import build_definitions
    from pipelines.stack_outputs import PROD_SECRET_ENV, STACK_OUTPUT_ENV

    for out, var in STACK_OUTPUT_ENV.items():
        monkeypatch.setenv(var, f"value-of-{out}")
    for var in PROD_SECRET_ENV:
        monkeypatch.setenv(var, "x")
    prod = build_definitions("prod")
    repo = prod.get_repository_def()  # raises DagsterInvalidDefinitionError on a missing resource
    assert {s.name for s in repo.sensor_defs} >= {"landing_sensor", "healing_alert_sensor"}
    assert prod.resolve_job_def("ingest_telemetry").executor_def is dg.multiprocess_executor


def test_local_dagster_yaml_is_a_valid_instance(tmp_path) -> None:
    from aegis.stack import write_dagster_yaml

    home = tmp_path / "dagster"
    write_dagster_yaml(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 3
        assert queue.tag_concurrency_limits == [
            {"key": "aegis/ingest", "limit": 1},
            {"key": "aegis/automation", "limit": 1},
            {"key": "aegis/area", "value": "healing", "limit": 1},  # healing never takes every slot
        ]
        assert instance.auto_materialize_use_sensors
        assert not instance.telemetry_enabled
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180


def test_materialize_list_and_unknown_group(aegis_home: AegisPaths) -> None:
    from pipelines.cli import materialize

    runner = CliRunner()
    listed = runner.invoke(materialize, ["--list"])
    assert listed.exit_code == 0, listed.output
    assert "telemetry (" in listed.output and "bronze_events" in listed.output
    unknown = runner.invoke(materialize, ["no_such_group"])
    assert unknown.exit_code == 2 and "unknown group 'no_such_group'" in unknown.output


def test_materialize_exits_non_zero_when_a_run_fails(aegis_home: AegisPaths) -> None:
    from aegis.lake.synth import land_batch, make_batch
    from pipelines.cli import materialize

    land_batch(aegis_home.landing_telemetry, make_batch(20, seed=1), "x")
    # The lake's ingest directory is a file: the ingest cannot run.
    (aegis_home.lake / "ingest").write_text("not a directory")
    result = CliRunner().invoke(materialize, ["telemetry"])
    assert result.exit_code == 1
    assert "failed" in (result.output + (result.stderr if result.stderr_bytes else ""))
