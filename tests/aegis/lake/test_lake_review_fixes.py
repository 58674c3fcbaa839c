"""Review fixes of the ingest: the game clock bounds "future" timestamps, one failing batch
never stops the others, clashing batch ids are counted, and one atomic Parquet writer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aegis.lake.validate as validate_mod
from aegis.config import AegisPaths
from aegis.lake import bronze
from aegis.lake import store as store_module
from aegis.lake.bronze import ingest_batches
from aegis.lake.manifest import Manifest, pending_keeper
from aegis.lake.synth import land_batch, make_batch
from aegis.lake.validate import WALL_CLOCK, WORLD_CLOCK, ingest_clock
from aegis.telemetry import (
    advance_world_clock,
    read_world_clock,
    world_clock_path,
    write_atomic,
)

# Far beyond any machine's wall clock: a world run for years of game time.
FAR_GAME_TIME = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3 * 365)


def _files_manifest(paths: AegisPaths) -> list[dict]:
    lines = (paths.quarantine_files / bronze.QUARANTINE_FILES_MANIFEST).read_text().splitlines()
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------ 1: the game clock


def test_game_time_ahead_of_the_wall_clock_is_not_future_when_the_world_clock_says_so(
    aegis_home: AegisPaths,
) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(300, seed=1, start=FAR_GAME_TIME), "late-game")
    advance_world_clock(aegis_home.landing_telemetry, FAR_GAME_TIME + timedelta(minutes=1), 60.0)
    report = ingest_batches(aegis_home)
    (r,) = report.results
    assert (r.status, r.bronze_rows, r.quarantined_rows) == ("ok", 300, 0)


def test_without_a_world_clock_the_wall_clock_bounds_ts(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(50, seed=2, start=FAR_GAME_TIME), "wall")
    (r,) = ingest_batches(aegis_home).results
    assert r.quarantined_rows == 50 and r.rules == {"ts_in_future": 50}
    assert WALL_CLOCK in r.examples["ts_in_future"]


def test_events_past_the_world_clock_are_still_quarantined(aegis_home: AegisPaths) -> None:
    table = make_batch(100, seed=3, start=FAR_GAME_TIME)
    ts = table.column("ts").to_pylist()
    ts[::10] = [t + timedelta(days=400) for t in ts[::10]]  # what corrupt_telemetry mode 4 lands
    table = table.set_column(1, "ts", pa.array(ts, table.schema.field("ts").type))
    land_batch(aegis_home.landing_telemetry, table, "future-rows")
    advance_world_clock(aegis_home.landing_telemetry, FAR_GAME_TIME + timedelta(minutes=1), 60.0)
    (r,) = ingest_batches(aegis_home).results
    assert r.rules == {"ts_in_future": 10} and r.bronze_rows == 90
    assert WORLD_CLOCK in r.examples["ts_in_future"]


def test_world_clock_only_moves_forward_and_a_damaged_one_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "telemetry"
    t0 = datetime(2026, 1, 3, tzinfo=UTC)
    advance_world_clock(root, t0 + timedelta(hours=2), 60.0)
    clock = advance_world_clock(root, t0, 30.0)  # another, slower writer behind
    assert clock.game_time == t0 + timedelta(hours=2) and clock.tick_seconds == 60.0
    assert read_world_clock(root) == clock
    assert ingest_clock(root) == (t0 + timedelta(hours=2, seconds=60), WORLD_CLOCK)
    given = datetime(2026, 2, 1, tzinfo=UTC)
    assert ingest_clock(root, given)[0] == given  # an explicit clock wins
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp or lock files left
    world_clock_path(root).write_text("{not json")
    with pytest.raises(ValueError, match=r"world clock file .* is damaged"):
        ingest_clock(root)
    assert advance_world_clock(root, t0, 60.0).game_time == t0  # the writer repairs it


def test_a_damaged_world_clock_stops_the_ingest_before_anything_is_recorded(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(20, seed=4), "b")
    world_clock_path(aegis_home.landing_telemetry).write_text('{"game_time": "yesterday"}')
    with pytest.raises(ValueError, match="damaged"):
        ingest_batches(aegis_home)
    assert Manifest(aegis_home).done_sources() == set()


# ------------------------------------------------------- 2: one batch, one fate


def test_a_validator_crash_on_one_batch_quarantines_only_that_batch(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = validate_mod.validate

    def flaky(conformed, *args, **kwargs):
        if "bad-1" in conformed.table.column("shard_id").to_pylist():
            raise RuntimeError("boom in the validator")
        return real(conformed, *args, **kwargs)

    monkeypatch.setattr(validate_mod, "validate", flaky)
    for i, shard in enumerate(["eu-1", "bad-1", "eu-2"]):
        land_batch(
            aegis_home.landing_telemetry, make_batch(200, seed=i, shard_id=shard), f"b{i}", shard_id=shard
        )
    report = ingest_batches(aegis_home)
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["b0"].status == by_id["b2"].status == "ok"
    assert by_id["b1"].status == "rejected"
    assert by_id["b1"].reason == "validator error: RuntimeError: boom in the validator"
    assert (by_id["b1"].rows_in, by_id["b1"].quarantined_rows) == (200, 200)
    assert report.bronze_rows == 400 and report.conserved
    (line,) = _files_manifest(aegis_home)
    assert line["batch_id"] == "b1" and line["reason"].startswith("validator error: RuntimeError")
    assert (aegis_home.lake / line["quarantined_path"]).read_bytes() == Path(
        aegis_home.landing_telemetry / by_id["b1"].source_path
    ).read_bytes()


def test_a_conform_crash_quarantines_that_file_with_its_footer_row_count(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bronze.conform

    def flaky(table):
        if table.num_rows == 77:
            raise KeyError("surprise")
        return real(table)

    monkeypatch.setattr(bronze, "conform", flaky)
    land_batch(aegis_home.landing_telemetry, make_batch(77, seed=5), "odd")
    land_batch(aegis_home.landing_telemetry, make_batch(100, seed=6), "fine")
    report = ingest_batches(aegis_home)
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["odd"].reason == "validator error: KeyError: 'surprise'"
    assert by_id["odd"].rows_in == 77 and by_id["fine"].bronze_rows == 100
    assert Manifest(aegis_home).totals()["rows_in"] == 177


# ------------------------------------------------------------ 3: clash counts


def test_a_batch_id_clash_counts_the_rows_of_the_clashing_file(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(120, seed=7), "same-id", shard_id="eu-1")
    land_batch(aegis_home.landing_telemetry, make_batch(80, seed=8), "same-id", shard_id="eu-2")
    report = ingest_batches(aegis_home)
    clash = next(r for r in report.results if r.status == "rejected")
    assert "already used" in (clash.reason or "")
    assert (clash.rows_in, clash.quarantined_rows) == (80, 80)
    assert report.rows_in == 200
    totals = Manifest(aegis_home).totals()
    assert totals["rows_in"] == 200 and totals["bronze_rows"] + totals["quarantined_rows"] == 200


# ------------------------------------------------------- 4: pending batches kept


def test_pending_keeper_keeps_exactly_the_batches_not_yet_ingested(aegis_home: AegisPaths) -> None:
    first = land_batch(aegis_home.landing_telemetry, make_batch(10, seed=9), "first")
    keep = pending_keeper(aegis_home, refresh_s=0.0)
    assert keep(first)
    ingest_batches(aegis_home)
    second = land_batch(aegis_home.landing_telemetry, make_batch(10, seed=10), "second")
    assert not keep(first) and keep(second)
    assert keep(Path("/elsewhere/x.parquet"))  # unaccounted for: never deleted


# --------------------------------------------------------- 5: one atomic writer


def test_write_atomic_passes_options_and_cleans_up_on_failure(tmp_path: Path) -> None:
    table = make_batch(30, seed=11)
    path = tmp_path / "d" / "t.parquet"
    write_atomic(table, path, compression="zstd", compression_level=1, write_statistics=False)
    meta = pq.read_metadata(path)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert not meta.row_group(0).column(0).is_stats_set
    with pytest.raises((ValueError, pa.ArrowException)):
        write_atomic(table, tmp_path / "d" / "u.parquet", compression="no-such-codec")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["t.parquet"]


def test_bronze_writes_through_the_shared_writer(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []

    def recording(table, path, compression="zstd", **options):
        calls.append({"compression": compression, **options})
        return write_atomic(table, path, compression, **options)

    monkeypatch.setattr(store_module, "write_atomic", recording)  # the local lake's atomic writer
    land_batch(aegis_home.landing_telemetry, make_batch(40, seed=12), "w")
    (r,) = ingest_batches(aegis_home).results
    assert r.bronze_rows == 40 and calls
    assert calls[0]["compression"] == bronze.BRONZE_COMPRESSION
    assert calls[0]["compression_level"] == bronze.BRONZE_COMPRESSION_LEVEL
    assert calls[0]["store_schema"] is False
    assert b"ARROW:schema" not in (pq.read_metadata(aegis_home.lake / r.bronze_path).metadata or {})
