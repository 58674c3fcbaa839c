"""The ingest core: every kind of bad input is quarantined with a readable reason,
the valid rows beside it still reach bronze, and counts are conserved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aegis.config import AegisPaths
from aegis.lake.bronze import BRONZE_SCHEMA, ingest_batches, pending_batches
from aegis.lake.manifest import Manifest
from aegis.lake.synth import land_batch, make_batch
from aegis.telemetry import SCHEMA_V1, landing_path, write_atomic

SHARD_DIR = ("date=2026-01-02", "hour=00", "shard=eu-1")


def _land_raw(paths: AegisPaths, name: str, data: bytes) -> Path:
    path = paths.landing_telemetry.joinpath(*SHARD_DIR, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _with_rows(base: pa.Table, edits: dict[int, dict]) -> pa.Table:
    rows = _rows(base)
    for i, change in edits.items():
        rows[i].update(change)
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in SCHEMA_V1]))


def _bronze(paths: AegisPaths) -> pa.Table:
    files = sorted(paths.bronze.glob("date=*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else BRONZE_SCHEMA.empty_table()


def _quarantine(paths: AegisPaths) -> pa.Table:
    files = sorted(paths.quarantine.glob("date=*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_clean_batches_reach_bronze_with_exact_schema(aegis_home: AegisPaths) -> None:
    for i in range(3):
        land_batch(aegis_home.landing_telemetry, make_batch(500, seed=i), f"batch{i}")
    report = ingest_batches(aegis_home)
    assert [r.status for r in report.results] == ["ok", "ok", "ok"]
    assert report.rows_in == report.bronze_rows == 1500
    bronze = _bronze(aegis_home)
    assert bronze.schema.names == [*SCHEMA_V1.names, "batch_id", "ingested_at"]
    assert bronze.schema.field("batch_id").type == pa.string()
    assert bronze.schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")
    assert bronze.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert set(bronze.column("batch_id").to_pylist()) == {"batch0", "batch1", "batch2"}
    assert pc.count_distinct(bronze.column("event_id")).as_py() == 1500
    assert (aegis_home.bronze / "date=2026-01-02" / "batch0.parquet").exists()
    assert pending_batches(aegis_home) == []


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_flows(aegis_home: AegisPaths) -> None:
    base = make_batch(40, seed=11)
    kinds = base.column("kind").to_pylist()

    def first(kind: str) -> int | None:  # rows 0-4 carry their own defects
        return next((i for i, k in enumerate(kinds) if k == kind and i >= 5), None)

    death, sink, end = first("combat_death"), first("currency_sink"), first("session_end")
    assert death is not None and sink is not None
    edits = {
        0: {"kind": "teleport"},
        1: {"event_id": None},
        2: {"ts": datetime(2026, 1, 1, tzinfo=UTC) - timedelta(days=3)},
        3: {"ts": datetime.now(UTC) + timedelta(days=400)},
        4: {"region": "r" * 200},
        death: {"zone": None},
        sink: {"amount": -5},
    }
    if end is not None and end not in edits:
        edits[end] = {"cause": "rage_quit"}
    table = _with_rows(base, edits)
    land_batch(aegis_home.landing_telemetry, table, "mixed")
    report = ingest_batches(aegis_home)
    (r,) = report.results
    assert r.status == "partial"
    assert r.quarantined_rows == len(edits)
    assert r.bronze_rows == 40 - len(edits)
    assert r.conserved
    q = _quarantine(aegis_home)
    by_row = dict(zip(q.column("row_number").to_pylist(), q.column("reason").to_pylist(), strict=True))
    assert by_row[0].startswith("kind 'teleport' is not a known event kind (expected one of: session_start")
    assert "event_id" in by_row[1] and "missing" in by_row[1]
    assert "before the world began" in by_row[2]
    assert "in the future" in by_row[3]
    assert "region is 200 characters long; at most 32" in by_row[4]
    assert by_row[death] == "combat_death requires player_id, zone, x, y, cause; missing: zone"
    assert by_row[sink] == "amount -5 is outside the allowed range 1..10000000"
    if end is not None and end in edits:
        assert "session_end cause 'rage_quit' is not a known cause" in by_row[end]
    # quarantined rows keep their original values, as text
    assert q.column("kind").to_pylist()[0] == "teleport"
    assert set(q.column("source_file").to_pylist()) == {"date=2026-01-02/hour=00/shard=eu-1/mixed.parquet"}
    bronze_ids = set(_bronze(aegis_home).column("event_id").to_pylist())
    assert not bronze_ids & set(q.column("event_id").drop_null().to_pylist())


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.parquet", b"", "empty (0 bytes)"),
        ("text.parquet", b"event_id,ts\n1,2\n", "not readable Parquet"),
    ],
)
def test_unreadable_files_are_quarantined_whole(
    aegis_home: AegisPaths, name: str, data: bytes, expected: str
) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(100, seed=1), "good")
    _land_raw(aegis_home, name, data)
    report = ingest_batches(aegis_home)
    statuses = {r.batch_id: r for r in report.results}
    assert statuses["good"].status == "ok" and statuses["good"].bronze_rows == 100
    bad = statuses[name.removesuffix(".parquet")]
    assert bad.status == "rejected" and expected in (bad.reason or "")
    copied = aegis_home.quarantine_files / bad.batch_id / name
    assert copied.read_bytes() == data
    listing = [
        json.loads(x) for x in (aegis_home.quarantine_files / "manifest.jsonl").read_text().splitlines()
    ]
    assert listing[-1]["batch_id"] == bad.batch_id and expected in listing[-1]["reason"]


def test_truncated_parquet_is_quarantined_whole(aegis_home: AegisPaths) -> None:
    path = land_batch(aegis_home.landing_telemetry, make_batch(2000, seed=3), "truncated")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (r,) = ingest_batches(aegis_home).results
    assert r.status == "rejected" and "not readable Parquet" in (r.reason or "")
    assert not list(aegis_home.bronze.glob("*/truncated.parquet"))


def test_valid_file_with_zero_rows_is_empty_not_an_error(aegis_home: AegisPaths) -> None:
    write_atomic(
        SCHEMA_V1.empty_table(), aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "nothing.parquet")
    )
    (r,) = ingest_batches(aegis_home).results
    assert (r.status, r.rows_in, r.bronze_rows) == ("empty", 0, 0)
    assert Manifest(aegis_home).entries()[0].status == "empty"


def test_missing_structural_column_quarantines_the_file(aegis_home: AegisPaths) -> None:
    table = make_batch(50, seed=4).drop_columns(["kind"])
    write_atomic(table, aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "nokind.parquet"))
    (r,) = ingest_batches(aegis_home).results
    assert r.status == "rejected"
    assert r.reason and "lacks column(s) kind" in r.reason
    assert r.rows_in == r.quarantined_rows == 50


def test_missing_optional_column_rejects_only_rows_that_need_it(aegis_home: AegisPaths) -> None:
    table = make_batch(300, seed=5)
    needs_zone = pc.is_in(table.column("kind"), value_set=pa.array(["combat_death", "item_drop"]))
    n_zone = pc.sum(needs_zone).as_py()
    write_atomic(
        table.drop_columns(["zone"]), aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "nozone.parquet")
    )
    (r,) = ingest_batches(aegis_home).results
    assert r.quarantined_rows == n_zone > 0
    assert r.bronze_rows == 300 - n_zone
    assert any("absent and treated as null: zone" in n for n in r.notes)
    assert set(r.rules) == {"missing_field"}


def test_extra_columns_are_dropped_and_noted(aegis_home: AegisPaths) -> None:
    table = make_batch(30, seed=6).append_column("debug_blob", pa.array(["x"] * 30))
    write_atomic(table, aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "extra.parquet"))
    (r,) = ingest_batches(aegis_home).results
    assert r.status == "ok" and r.bronze_rows == 30
    assert any("extra column(s) dropped" in n and "debug_blob" in n for n in r.notes)
    assert "debug_blob" not in _bronze(aegis_home).column_names


def test_wrong_types_convert_where_lossless_and_reject_the_rest(aegis_home: AegisPaths) -> None:
    table = make_batch(60, seed=7)
    amounts = table.column("amount").to_pylist()
    idx = next(i for i, v in enumerate(amounts) if v is not None)
    as_text = [None if v is None else str(v) for v in amounts]
    as_text[idx] = "lots"
    table = table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(as_text, pa.string()))
    table = table.set_column(
        table.schema.get_field_index("zone"), "zone", pc.cast(table.column("zone"), pa.int64())
    )
    write_atomic(table, aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "types.parquet"))
    (r,) = ingest_batches(aegis_home).results
    assert r.quarantined_rows == 1 and r.bronze_rows == 59
    q = _quarantine(aegis_home)
    assert q.column("reason").to_pylist() == [
        "amount: 'lots' is not a valid int64 (the column should hold int64)"
    ]
    assert q.column("amount").to_pylist() == ["lots"]
    assert _bronze(aegis_home).schema.field("amount").type == pa.int64()


def test_unconvertible_column_type_quarantines_the_file(aegis_home: AegisPaths) -> None:
    table = make_batch(10, seed=8)
    table = table.set_column(
        table.schema.get_field_index("x"), "x", pa.array([[1.0]] * 10, pa.list_(pa.float64()))
    )
    write_atomic(table, aegis_home.landing_telemetry.joinpath(*SHARD_DIR, "listx.parquet"))
    (r,) = ingest_batches(aegis_home).results
    assert (
        r.status == "rejected"
        and "column x has type list<" in (r.reason or "")
        and "no conversion exists" in (r.reason or "")
    )


def test_duplicates_within_and_across_batches_are_dropped_and_counted(aegis_home: AegisPaths) -> None:
    first = make_batch(100, seed=9, id_prefix="same")
    doubled = pa.concat_tables([first.slice(0, 10), first.slice(0, 10)])  # 10 ids twice in one batch
    land_batch(aegis_home.landing_telemetry, first, "a")
    report = ingest_batches(aegis_home)
    assert report.bronze_rows == 100
    land_batch(aegis_home.landing_telemetry, doubled, "b")  # every id already in bronze
    land_batch(aegis_home.landing_telemetry, make_batch(50, seed=10, id_prefix="fresh"), "c")
    report = ingest_batches(aegis_home)
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["b"].duplicate_rows == 20 and by_id["b"].bronze_rows == 0
    assert by_id["c"].bronze_rows == 50
    # within one new batch: the first copy wins
    land_batch(
        aegis_home.landing_telemetry, pa.concat_tables([make_batch(5, seed=1, id_prefix="w")] * 3), "d"
    )
    (d,) = ingest_batches(aegis_home).results
    assert (d.bronze_rows, d.duplicate_rows) == (5, 10)
    bronze = _bronze(aegis_home)
    assert pc.count_distinct(bronze.column("event_id")).as_py() == bronze.num_rows == 155
    totals = Manifest(aegis_home).totals()
    assert totals["rows_in"] == totals["bronze_rows"] + totals["quarantined_rows"] + totals["duplicate_rows"]


def test_reprocessing_a_batch_never_duplicates_rows(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(200, seed=12), "again")
    first = ingest_batches(aegis_home)
    assert first.bronze_rows == 200
    # not pending any more: a plain second ingest does nothing
    assert ingest_batches(aegis_home).results == []
    batches = pending_batches(aegis_home)
    assert batches == []
    from aegis.lake.landing import list_landed

    again = ingest_batches(aegis_home, list_landed(aegis_home.landing_telemetry), reprocess=True)
    (r,) = again.results
    assert (r.bronze_rows, r.duplicate_rows) == (200, 0)  # its own earlier rows are not "duplicates"
    assert _bronze(aegis_home).num_rows == 200
    skipped = ingest_batches(aegis_home, list_landed(aegis_home.landing_telemetry))
    assert skipped.results == [] and skipped.skipped == ["again"]


def test_a_batch_id_used_twice_is_rejected_not_merged(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(20, seed=13), "dup-id", shard_id="eu-1")
    t = make_batch(20, seed=14, shard_id="eu-2")
    write_atomic(
        t, landing_path(aegis_home.landing_telemetry, datetime(2026, 1, 2, tzinfo=UTC), "eu-2", "dup-id")
    )
    report = ingest_batches(aegis_home)
    statuses = sorted(r.status for r in report.results)
    assert statuses == ["ok", "rejected"]
    rejected = next(r for r in report.results if r.status == "rejected")
    assert "already used by" in (rejected.reason or "")


def test_manifest_refuses_counts_that_do_not_add_up(aegis_home: AegisPaths) -> None:
    from aegis.lake.manifest import ConservationError, ManifestEntry

    m = Manifest(aegis_home)
    no, _ = m.register("x", "x.parquet", 1, None)
    entry = ManifestEntry(no, "x", "x.parquet", 1, "ok", 10, 9, 0, 0, None, None, None, None, None, None)
    with pytest.raises(ConservationError, match="rows_in 10 != bronze 9"):
        m.record(entry)
