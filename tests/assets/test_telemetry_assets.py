"""bronze_events and its conservation check through Dagster's materialize(), and the landing sensor."""

from __future__ import annotations

import dagster as dg

from aegis.config import AegisPaths
from aegis.lake.manifest import Manifest
from aegis.lake.synth import land_batch, make_batch
from assets.resources.lake import LakeResource
from assets.telemetry import bronze_events, landing_sensor, rows_conserved, telemetry_quality_report


def _materialize(instance: dg.DagsterInstance, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [bronze_events, rows_conserved, telemetry_quality_report],
        resources={"lake": LakeResource()},
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def test_bronze_events_reports_counts_and_passes_conservation(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(300, seed=1), "one")
    bad = aegis_home.landing_telemetry / "date=2026-01-02" / "hour=00" / "shard=eu-1" / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize(instance)
        assert result.success
        mats = {
            m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("bronze_events")
        }
        md = mats["bronze_events"].metadata
        assert md["rows_in"].value == 300 and md["bronze_rows"].value == 300
        assert md["batches_processed"].value == 2 and md["batches_rejected_whole"].value == 1
        assert "unreadable_file" in md["quarantine_by_reason"].value
        (check,) = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["rows_in"].value == 300


def test_conservation_check_fails_and_blocks_when_a_batch_is_unaccounted(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(100, seed=2), "two")
    with dg.DagsterInstance.ephemeral() as instance:
        assert _materialize(instance).success
        # A batch started and never finished (its landed file gone): not every row is accounted for.
        Manifest(aegis_home).register("ghost", "date=2026-01-02/hour=00/shard=eu-1/ghost.parquet", 1, None)
        result = _materialize(instance)
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and not evaluations[0].passed
        assert "half-done" in (evaluations[0].description or "")
        assert not result.success  # blocking: the downstream report did not run


def test_sensor_requests_new_batches_once_and_advances_its_cursor(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(10, seed=3), "s1")
    land_batch(aegis_home.landing_telemetry, make_batch(10, seed=4), "s2")
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"lake": LakeResource()})
        first = landing_sensor(ctx)
        assert len(first.run_requests) == 1
        batches = first.run_requests[0].run_config["ops"]["bronze_events"]["config"]["batches"]
        assert sorted(b.rsplit("/", 1)[1] for b in batches) == ["s1.parquet", "s2.parquet"]
        assert first.cursor
        again = landing_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=first.cursor, resources={"lake": LakeResource()}
            )
        )
        assert not again.run_requests  # nothing new: no duplicate request
        land_batch(aegis_home.landing_telemetry, make_batch(10, seed=5), "s3")
        third = landing_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=again.cursor, resources={"lake": LakeResource()}
            )
        )
        (req,) = third.run_requests
        assert [b.rsplit("/", 1)[1] for b in req.run_config["ops"]["bronze_events"]["config"]["batches"]] == [
            "s3.parquet"
        ]
        assert req.run_key != first.run_requests[0].run_key


def test_sensor_splits_a_backlog_into_bounded_runs_and_skips_processed(aegis_home: AegisPaths) -> None:
    for i in range(7):
        land_batch(aegis_home.landing_telemetry, make_batch(5, seed=10 + i), f"b{i}")
    with dg.DagsterInstance.ephemeral() as instance:
        lake = LakeResource(max_batches_per_run=3)
        sizes: list[int] = []
        cursor = None
        for _ in range(4):  # one run per tick (the sensor's pacing): the backlog comes in slices
            result = landing_sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake})
            )
            sizes += [
                len(r.run_config["ops"]["bronze_events"]["config"]["batches"]) for r in result.run_requests
            ]
            cursor = result.cursor
        assert sizes == [3, 3, 1]
        # A reset cursor does not re-request batches the manifest says are done.
        from aegis.lake.bronze import ingest_batches

        ingest_batches(aegis_home)
        fresh = landing_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}))
        assert not fresh.run_requests
