"""The GX layer fails on bad data and passes on good (no Dagster, no dbt)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aegis.quality import suites
from aegis.quality.gx_validation import validate_frame
from aegis.quality.synthetic_lake import write_synthetic_lake


def _kpis(**overrides: list[object]) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "shard_id": ["eu-1", "eu-1", "us-2"],
            "region": ["eu-west-1"] * 2 + ["us-east-1"],
            "bucket_start": pd.to_datetime(
                ["2026-01-01 00:00", "2026-01-01 00:05", "2026-01-01 00:00"], utc=True
            ),
            "config_version": [1, 1, 1],
            "abandon_rate": [0.1, 0.2, 0.0],
            "saturation": [0.5, 0.6, 0.7],
            "reconnect_rate": [0.0, 0.01, 0.02],
            "churn_rate": [0.0, 0.0, 0.01],
        }
    )
    for col, values in overrides.items():
        df[col] = values
    return df


def test_good_kpis_pass() -> None:
    report = suites.mart_integrity_frame(_kpis(), "fct_shard_kpis")
    assert report.success, report.outcomes_markdown()
    assert report.row_count == 3
    assert report.failing_examples == []
    assert all(o.success for o in report.outcomes)


def test_rate_above_one_fails_with_example_row() -> None:
    report = suites.mart_integrity_frame(_kpis(abandon_rate=[0.1, 1.5, 0.0]), "fct_shard_kpis")
    assert not report.success
    failed = {(o.expectation, o.column) for o in report.failed}
    assert failed == {("expect_column_values_to_be_between", "abandon_rate")}
    assert report.failed[0].unexpected_count == 1
    assert report.failed[0].partial_unexpected == [1.5]
    assert report.failing_examples[0]["abandon_rate"] == 1.5
    assert report.failing_examples[0]["bucket_start"].startswith("2026-01-01T00:05")
    assert "**FAIL**" in report.outcomes_markdown()


def test_null_key_fails() -> None:
    report = suites.mart_integrity_frame(_kpis(shard_id=["eu-1", None, "us-2"]), "fct_shard_kpis")
    assert not report.success
    assert [(o.column, o.unexpected_count) for o in report.failed] == [("shard_id", 1)]
    assert report.failing_examples[0]["shard_id"] is None


def test_missing_column_is_a_failure_not_a_pass() -> None:
    report = suites.mart_integrity_frame(_kpis().drop(columns=["churn_rate"]), "fct_shard_kpis")
    assert not report.success
    assert any(o.column == "churn_rate" and o.error for o in report.failed)


def test_empty_mart_fails() -> None:
    assert not suites.mart_integrity_frame(_kpis().iloc[0:0], "fct_shard_kpis").success


def test_unknown_mart_and_empty_suite_are_errors() -> None:
    with pytest.raises(ValueError, match="no checks are defined"):
        suites.mart_integrity_frame(_kpis(), "fct_nope")
    with pytest.raises(ValueError, match="cannot fail"):
        validate_frame(_kpis(), "empty", [])


def test_volume_skips_without_baseline_then_judges() -> None:
    periods = pd.DataFrame({"period": range(3), "rows": [100, 100, 40]})
    skipped = suites.volume_report("v", periods)
    assert skipped.success and skipped.skipped and "no baseline" in skipped.skipped[0]
    steady = pd.DataFrame({"period": range(7), "rows": [100, 102, 98, 101, 99, 100, 10]})
    assert suites.volume_report("v", steady).success  # the last (filling) period is ignored
    collapsed = pd.DataFrame({"period": range(7), "rows": [100, 102, 98, 101, 99, 20, 10]})
    report = suites.volume_report("v", collapsed)
    assert not report.success
    assert report.details["rows"] == 20 and report.details["baseline_mean"] == pytest.approx(100.0)
    assert suites.history_volume_report("h", 50, [100, 100]).skipped
    assert not suites.history_volume_report("h", 10, [100, 100, 100]).success
    assert suites.history_volume_report("h", 95, [100, 100, 100]).success


def test_bronze_checks_on_a_lake(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=5, n_shards=2, players_per_shard=10, ingested_at=datetime.now(UTC))
    integrity = suites.bronze_integrity(aegis_home)
    assert integrity.success, integrity.outcomes_markdown()
    assert integrity.row_count > 1000
    volume = suites.bronze_volume(aegis_home)
    assert volume.success and not volume.skipped, volume.outcomes_markdown()
    fresh = suites.bronze_freshness(aegis_home)
    assert fresh.success, fresh.outcomes_markdown()
    stale = suites.bronze_freshness(aegis_home, now=datetime.now(UTC) + timedelta(days=2))
    assert not stale.success


def test_bronze_integrity_catches_bad_kind_and_null_key(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=1, n_shards=1, players_per_shard=5)
    path = next(aegis_home.bronze.glob("*/*.parquet"))
    df = pq.read_table(path).to_pandas()
    df.loc[0, "kind"] = "teleport"
    df.loc[1, "shard_id"] = None
    df.to_parquet(path, index=False)
    report = suites.bronze_integrity(aegis_home)
    assert not report.success
    assert {(o.column, o.unexpected_count) for o in report.failed} == {("kind", 1), ("shard_id", 1)}
    assert {row["kind"] for row in report.failing_examples} >= {"teleport"}


def test_empty_lake_gives_reasons_not_stack_traces(aegis_home) -> None:
    integrity = suites.bronze_integrity(aegis_home)
    assert not integrity.success and integrity.row_count == 0
    assert integrity.summary() == (f"bronze_integrity: FAILED: {suites.NO_BRONZE} {suites.NO_BRONZE_HINT}")
    assert "no bronze data yet" in integrity.outcomes_markdown()
    for report in (suites.bronze_volume(aegis_home), suites.bronze_freshness(aegis_home)):
        assert report.success and report.skipped == [suites.NO_BRONZE]


def _empty_slo_burn(paths) -> None:
    import duckdb

    with duckdb.connect(str(paths.warehouse)) as con:
        con.execute(
            "create table fct_slo_burn (shard_id varchar, bucket_start timestamptz, sli varchar, error_ratio double)"
        )


def test_empty_mart_over_a_young_lake_is_warming_up_not_failed(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=1, n_shards=1, players_per_shard=5)
    for path in aegis_home.bronze.glob("*/*.parquet"):  # keep only the first three game minutes
        table = pq.read_table(path).to_pandas()
        first = table["ts"].min()
        pq.write_table(pa.Table.from_pandas(table[table["ts"] < first + pd.Timedelta(minutes=3)]), path)
    _empty_slo_burn(aegis_home)
    report = suites.mart_integrity(aegis_home, "fct_slo_burn")
    assert report.success
    assert report.skipped and report.skipped[0].startswith("warming up")
    assert report.details["warmup_minutes"] == 10


def test_empty_mart_over_a_lake_old_enough_fails(aegis_home) -> None:
    write_synthetic_lake(aegis_home, hours=1, n_shards=1, players_per_shard=5)
    _empty_slo_burn(aegis_home)
    report = suites.mart_integrity(aegis_home, "fct_slo_burn")
    assert not report.success
    assert not report.skipped
