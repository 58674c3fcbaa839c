"""No silent telemetry loss: id collisions are quarantined (not dropped as duplicates), one bad
integer value rejects its row (not the file), and temporaries of killed writers are swept."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aegis.config import AegisPaths
from aegis.lake.bronze import BRONZE_SCHEMA, ID_COLLISION, ingest_batches
from aegis.lake.landing import STALE_TMP_MIN_AGE_S, sweep_stale_tmp, tmp_owner
from aegis.lake.manifest import Manifest
from aegis.lake.synth import land_batch, make_batch
from aegis.telemetry import write_atomic

OLD = time.time() - 2 * STALE_TMP_MIN_AGE_S


def _bronze(paths: AegisPaths) -> pa.Table:
    files = sorted(paths.bronze.glob("date=*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else BRONZE_SCHEMA.empty_table()


def _quarantine(paths: AegisPaths) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(paths.quarantine.glob("date=*/*.parquet"))])


def _conserved(paths: AegisPaths) -> bool:
    t = Manifest(paths).totals()
    return t["rows_in"] == t["bronze_rows"] + t["quarantined_rows"] + t["duplicate_rows"]


def _set(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def _first_with(table: pa.Table, name: str) -> int:
    return next(i for i, v in enumerate(table.column(name).to_pylist()) if v is not None)


# ---------------------------------------------------------------- id collisions


def test_a_forged_collision_is_quarantined_with_its_reason_and_a_true_duplicate_is_counted(
    aegis_home: AegisPaths,
) -> None:
    original = make_batch(100, seed=1, id_prefix="w")
    land_batch(aegis_home.landing_telemetry, original, "a")
    assert ingest_batches(aegis_home).bronze_rows == 100
    # Batch b: rows 0-9 are exact copies (true duplicates); rows 10-19 reuse ids with other content.
    forged = original.slice(10, 10)
    k = _first_with(forged, "amount")
    amounts = forged.column("amount").to_pylist()
    amounts[k] += 1
    ts = forged.column("ts").to_pylist()
    forged = _set(
        _set(forged, "amount", amounts),
        "ts",
        [t.replace(microsecond=(t.microsecond + 1) % 10**6) for t in ts],
    )
    fresh = make_batch(30, seed=2, id_prefix="fresh")
    land_batch(aegis_home.landing_telemetry, pa.concat_tables([original.slice(0, 10), forged, fresh]), "b")
    (b,) = ingest_batches(aegis_home).results
    assert (b.rows_in, b.bronze_rows, b.duplicate_rows, b.quarantined_rows) == (50, 30, 10, 10)
    assert b.rules == {ID_COLLISION: 10} and b.status == "partial" and b.conserved
    q = _quarantine(aegis_home)
    assert q.column("rule").to_pylist() == [ID_COLLISION] * 10
    assert q.column("event_id").to_pylist() == forged.column("event_id").to_pylist()
    assert q.column("row_number").to_pylist() == list(range(10, 20))  # rows of the landed file
    reasons = q.column("reason").to_pylist()
    assert all("already used by a different event (held in bronze by batch a)" in r for r in reasons)
    assert "differing field(s): ts, amount" in reasons[k]
    assert all(r.endswith("quarantined, not dropped") for r in reasons)
    # Bronze keeps the first event of every id, unchanged.
    bronze = _bronze(aegis_home)
    assert bronze.num_rows == 130 and pc.count_distinct(bronze.column("event_id")).as_py() == 130
    assert _conserved(aegis_home)


def test_a_collision_inside_one_batch_is_quarantined_and_a_repeat_is_a_duplicate(
    aegis_home: AegisPaths,
) -> None:
    base = make_batch(20, seed=3, id_prefix="in")
    clash = _set(base.slice(0, 5), "config_version", [2] * 5)
    land_batch(aegis_home.landing_telemetry, pa.concat_tables([base, base.slice(0, 5), clash]), "c")
    (r,) = ingest_batches(aegis_home).results
    assert (r.rows_in, r.bronze_rows, r.duplicate_rows, r.quarantined_rows) == (30, 20, 5, 5)
    q = _quarantine(aegis_home)
    assert q.column("row_number").to_pylist() == list(range(25, 30))
    assert "earlier in this ingest" in q.column("reason")[0].as_py()
    assert "differing field(s): config_version" in q.column("reason")[0].as_py()
    assert _conserved(aegis_home)


def test_collisions_across_batches_of_one_group_keep_the_first_and_quarantine_the_other(
    aegis_home: AegisPaths,
) -> None:
    first = make_batch(40, seed=4, id_prefix="g")
    other = _set(make_batch(40, seed=5, id_prefix="g"), "event_id", first.column("event_id").to_pylist())
    land_batch(aegis_home.landing_telemetry, first, "g1")
    land_batch(aegis_home.landing_telemetry, other, "g2")
    report = ingest_batches(aegis_home)  # one group: the within-group path
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["g1"].bronze_rows == 40
    assert by_id["g2"].quarantined_rows == 40 and by_id["g2"].rules == {ID_COLLISION: 40}
    assert report.rows_in == report.bronze_rows + report.quarantined_rows + report.duplicate_rows
    assert _conserved(aegis_home)


# ------------------------------------------------------- one bad integer value


def test_a_non_integral_float_in_an_integer_column_rejects_only_its_row(aegis_home: AegisPaths) -> None:
    table = make_batch(60, seed=6)
    amounts = [None if v is None else float(v) for v in table.column("amount").to_pylist()]
    k = _first_with(table, "amount")
    amounts[k] = 2.5
    table = table.set_column(
        table.schema.get_field_index("amount"), "amount", pa.array(amounts, pa.float64())
    )
    land_batch(aegis_home.landing_telemetry, table, "floats")
    (r,) = ingest_batches(aegis_home).results
    assert (r.status, r.bronze_rows, r.quarantined_rows) == ("partial", 59, 1)
    assert r.rules == {"bad_type": 1}
    q = _quarantine(aegis_home)
    assert q.column("row_number").to_pylist() == [k] and q.column("amount").to_pylist() == ["2.5"]
    assert _bronze(aegis_home).schema.field("amount").type == pa.int64()


def test_a_uint64_above_the_int64_range_rejects_only_its_row(aegis_home: AegisPaths) -> None:
    table = make_batch(60, seed=7)
    amounts = table.column("amount").to_pylist()
    k = _first_with(table, "amount")
    amounts[k] = 2**63 + 5
    table = table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amounts, pa.uint64()))
    land_batch(aegis_home.landing_telemetry, table, "uint64")
    (r,) = ingest_batches(aegis_home).results
    assert (r.status, r.bronze_rows, r.quarantined_rows) == ("partial", 59, 1)
    assert _quarantine(aegis_home).column("amount").to_pylist() == [str(2**63 + 5)]


def test_integer_columns_of_other_widths_and_floats_keep_their_good_rows(aegis_home: AegisPaths) -> None:
    table = make_batch(40, seed=8)
    quest = table.column("quest_id").to_pylist()
    k = _first_with(table, "quest_id")
    quest[k] = float("nan")
    quest = [None if v is None else float(v) for v in quest]
    table = table.set_column(
        table.schema.get_field_index("quest_id"), "quest_id", pa.array(quest, pa.float32())
    )
    version = [1] * 39 + [-(2**63)]  # int64 minimum where int32 belongs
    table = table.set_column(
        table.schema.get_field_index("config_version"), "config_version", pa.array(version, pa.int64())
    )
    land_batch(aegis_home.landing_telemetry, table, "widths")
    (r,) = ingest_batches(aegis_home).results
    assert (r.bronze_rows, r.quarantined_rows) == (38, 2) and r.rules == {"bad_type": 2}


# ------------------------------------------------------------ stale temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _tmp(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    os.utime(path, (mtime, mtime))
    return path


def test_stale_temporaries_are_swept_at_ingest_start_and_live_ones_kept(aegis_home: AegisPaths) -> None:
    dead = _dead_pid()
    part = aegis_home.bronze / "date=2026-01-02"
    stale = [
        _tmp(part / f".x.parquet.{dead}.tmp", OLD),  # a killed ingest's bronze write
        _tmp(aegis_home.quarantine / "date=2026-01-02" / f".y.parquet.{dead}.tmp", OLD),
        _tmp(aegis_home.quarantine_files / "b1" / ".z.parquet.tmp", OLD),  # no pid: the age decides
    ]
    kept = [
        _tmp(part / f".fresh.parquet.{dead}.tmp", time.time()),  # too young to judge
        _tmp(part / f".mine.parquet.{os.getpid()}.tmp", OLD),  # its writer is alive
        _tmp(part / "duckdb_spill.tmp", OLD),  # not one of ours
    ]
    land_batch(aegis_home.landing_telemetry, make_batch(10, seed=9), "t")
    assert ingest_batches(aegis_home).bronze_rows == 10
    assert [p.exists() for p in stale] == [False] * 3
    assert [p.exists() for p in kept] == [True] * 3


def test_the_landing_writer_sweeps_its_area_at_start(tmp_path: Path) -> None:
    from aegis.world.landing import LandingWriter

    root = tmp_path / "landing" / "telemetry"
    dead = _dead_pid()
    batch_tmp = _tmp(root / "date=2026-01-02" / "hour=00" / "shard=eu-1" / f".b.parquet.{dead}.tmp", OLD)
    config_tmp = _tmp(tmp_path / "landing" / "configs" / "shard=eu-1" / f".v1.parquet.{dead}.tmp", OLD)
    clock_tmp = _tmp(root / f"._world_clock.json.{dead}.tmp", OLD)
    live = _tmp(root / "date=2026-01-02" / "hour=00" / "shard=eu-1" / f".c.parquet.{dead}.tmp", time.time())
    writer = LandingWriter(root)
    assert writer.stats.stale_tmp_removed == 3
    assert not batch_tmp.exists() and not config_tmp.exists() and not clock_tmp.exists()
    assert live.exists()


def test_tmp_names_carry_their_writers_pid(tmp_path: Path) -> None:
    path = write_atomic(make_batch(3), tmp_path / "a.parquet")
    assert path.exists() and not list(tmp_path.glob(".*"))
    assert tmp_owner(f".a.parquet.{os.getpid()}.tmp") == os.getpid()
    assert tmp_owner(".a.parquet.tmp") is None
    assert sweep_stale_tmp(tmp_path / "missing") == []
