"""The ingest's fast paths keep its semantics: dictionary-read strings, statistics
choices, the prefetching pipeline and many small batches."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import aegis.lake.bronze as bronze_mod
from aegis.config import AegisPaths
from aegis.lake.bronze import BRONZE_SCHEMA, ingest_batches
from aegis.lake.manifest import Manifest
from aegis.lake.synth import land_batch, make_batch
from aegis.lake.validate import DICTIONARY_COLUMNS, conform, read_batch, validate
from aegis.telemetry import SCHEMA_V1, landing_path, write_atomic


def _bronze(paths: AegisPaths) -> pa.Table:
    files = sorted(paths.bronze.glob("date=*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _quarantine(paths: AegisPaths) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(paths.quarantine.glob("date=*/*.parquet"))])


def test_low_cardinality_strings_are_read_as_dictionaries_but_bronze_holds_plain_strings(
    aegis_home: AegisPaths,
) -> None:
    path = land_batch(aegis_home.landing_telemetry, make_batch(300, seed=3), "dict")
    table = read_batch(path)
    for name in DICTIONARY_COLUMNS:
        assert pa.types.is_dictionary(table.schema.field(name).type), name
    conformed = conform(table)
    assert conformed.table.column_names == SCHEMA_V1.names
    assert validate(conformed).n_bad == 0
    ingest_batches(aegis_home)
    (written,) = sorted(aegis_home.bronze.glob("date=*/*.parquet"))
    schema = pq.read_schema(written)
    # every reader (DuckDB, dbt, GX) sees exactly the bronze types: strings, not dictionaries
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in BRONZE_SCHEMA]
    back = pq.read_table(written)
    original = make_batch(300, seed=3)
    for name in DICTIONARY_COLUMNS:
        assert back.column(name).to_pylist() == original.column(name).to_pylist(), name


def test_bad_values_in_dictionary_columns_are_quarantined_with_reasons(aegis_home: AegisPaths) -> None:
    base = make_batch(60, seed=5)
    kinds = base.column("kind").to_pylist()
    ends = [i for i, k in enumerate(kinds) if k == "session_end" and i >= 5]
    economy = [i for i, k in enumerate(kinds) if k in ("currency_source", "currency_sink") and i >= 5]
    assert ends and economy
    rows = base.to_pylist()
    rows[0]["kind"] = ""  # empty: missing, not an unknown kind
    rows[1]["region"] = ""
    rows[2]["shard_id"] = "s" * 65
    rows[3]["kind"] = "teleport"
    rows[ends[0]]["cause"] = "rage_quit"
    rows[economy[0]]["currency"] = "bitcoin"
    bad = {0, 1, 2, 3, ends[0], economy[0]}
    table = pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in SCHEMA_V1]))
    land_batch(aegis_home.landing_telemetry, table, "dictbad")
    (r,) = ingest_batches(aegis_home).results
    assert r.status == "partial" and r.quarantined_rows == len(bad) and r.bronze_rows == 60 - len(bad)
    q = _quarantine(aegis_home)
    reasons = dict(zip(q.column("row_number").to_pylist(), q.column("reason").to_pylist(), strict=True))
    assert set(reasons) == bad
    assert reasons[0] == "required field(s) missing on every event: kind"
    assert reasons[1] == "required field(s) missing on every event: region"
    assert reasons[2] == "shard_id is 65 characters long; at most 64 are allowed"
    assert reasons[3].startswith("kind 'teleport' is not a known event kind")
    assert reasons[ends[0]].startswith("session_end cause 'rage_quit' is not a known cause")
    assert reasons[economy[0]].startswith("currency 'bitcoin' is not a known currency")
    # quarantined values are kept as text, exactly as landed
    assert q.schema.field("kind").type == pa.string()
    assert sorted(q.column("kind").to_pylist()) == sorted(rows[i]["kind"] for i in bad)
    assert pc.count_distinct(_bronze(aegis_home).column("event_id")).as_py() == 60 - len(bad)


def test_a_producer_writing_categorical_columns_is_accepted(aegis_home: AegisPaths) -> None:
    """Arrow dictionaries stored with their Arrow schema come back as dictionaries of any index width."""
    base = make_batch(80, seed=9)
    columns = []
    for f in SCHEMA_V1:
        col = base.column(f.name)
        if f.name in ("kind", "region", "event_id"):
            col = pc.dictionary_encode(col).cast(
                pa.dictionary(pa.int8() if f.name == "kind" else pa.int32(), f.type)
            )
        columns.append(col)
    table = pa.Table.from_arrays(columns, names=SCHEMA_V1.names)
    path = landing_path(aegis_home.landing_telemetry, datetime(2026, 1, 2, tzinfo=UTC), "eu-1", "categorical")
    write_atomic(table, path)
    (r,) = ingest_batches(aegis_home).results
    assert r.status == "ok" and r.bronze_rows == 80
    back = _bronze(aegis_home)
    assert back.schema.field("kind").type == pa.string()
    assert back.column("event_id").to_pylist() == base.column("event_id").to_pylist()


def test_bronze_keeps_time_statistics_but_not_useless_ones(aegis_home: AegisPaths) -> None:
    land_batch(aegis_home.landing_telemetry, make_batch(500, seed=2), "stats")
    ingest_batches(aegis_home)
    (written,) = sorted(aegis_home.bronze.glob("date=*/*.parquet"))
    meta = pq.ParquetFile(written).metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).is_stats_set for i in range(meta.num_columns)}
    assert stats["ts"] and stats["shard_id"] and stats["batch_id"]  # readers prune files on these
    assert not stats["event_id"]


@pytest.mark.parametrize("prefetch_bytes", [1, 1 << 30])
def test_pipeline_depth_never_changes_the_outcome(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch, prefetch_bytes: int
) -> None:
    """Small batches, a duplicate across groups and an unreadable file, with tiny groups and any prefetch."""
    monkeypatch.setattr(bronze_mod, "PREFETCH_BYTES", prefetch_bytes)
    for i in range(12):
        land_batch(aegis_home.landing_telemetry, make_batch(50, seed=i, id_prefix=f"b{i}"), f"b{i:02d}")
    # batch 12 repeats 10 events of batch 0 (an earlier group) and 5 of its own
    repeat = make_batch(50, seed=0, id_prefix="b0").slice(0, 10)
    own = make_batch(20, seed=99, id_prefix="b12")
    land_batch(aegis_home.landing_telemetry, pa.concat_tables([repeat, own, own.slice(0, 5)]), "b12")
    bad = landing_path(aegis_home.landing_telemetry, datetime(2026, 1, 2, tzinfo=UTC), "eu-1", "b06x")
    bad.write_bytes(b"PAR1 not really")
    report = ingest_batches(aegis_home, group_rows=120)
    assert report.conserved
    by_id = {r.batch_id: r for r in report.results}
    assert by_id["b06x"].status == "rejected"
    assert by_id["b12"].duplicate_rows == 15 and by_id["b12"].bronze_rows == 20
    assert report.bronze_rows == 12 * 50 + 20
    ids = _bronze(aegis_home).column("event_id")
    assert pc.count_distinct(ids).as_py() == len(ids) == 620
    # every batch is recorded once, finished, with the counts the report gave
    entries = {e.batch_id: e for e in Manifest(aegis_home).entries()}
    assert set(entries) == set(by_id)
    for batch_id, r in by_id.items():
        e = entries[batch_id]
        assert (e.status, e.rows_in, e.bronze_rows, e.duplicate_rows) == (
            r.status,
            r.rows_in,
            r.bronze_rows,
            r.duplicate_rows,
        )


def _mixed_batches() -> list[pa.Table]:
    """Small batches, each broken differently; one converts a column, one lacks an optional one."""
    nullable = pa.schema([f.with_nullable(True) for f in SCHEMA_V1])
    out = []
    for i in range(6):
        rows = make_batch(40, seed=20 + i, id_prefix=f"m{i}").to_pylist()
        rows[i]["kind"] = "teleport"
        rows[i + 7]["region"] = ""
        rows[i + 9]["ts"] = datetime(2025, 1, 1, tzinfo=UTC)
        out.append(pa.Table.from_pylist(rows, schema=nullable))
    # amounts written as text: converted, the unparsable one rejected on its own
    amounts = pc.cast(out[2].column("amount"), pa.string()).to_pylist()
    first = next(i for i, a in enumerate(amounts) if a is not None)
    amounts[first] = "lots"
    out[2] = out[2].set_column(out[2].schema.get_field_index("amount"), "amount", pa.array(amounts))
    out[4] = out[4].drop_columns(["zone"])
    return out


def test_validating_batches_together_gives_each_its_own_verdicts() -> None:
    from aegis.lake.validate import validate_many

    conformed = [conform(t) for t in _mixed_batches()]
    clock = datetime.now(UTC)
    together = validate_many(conformed, clock)
    alone = [validate(c, clock) for c in conformed]
    assert len(together) == len(alone) == 6
    for t, a in zip(together, alone, strict=True):
        assert t.valid.to_pylist() == a.valid.to_pylist()
        assert t.bad_rows.to_pylist() == a.bad_rows.to_pylist()
        assert t.rules.to_pylist() == a.rules.to_pylist()
        assert t.reasons.to_pylist() == a.reasons.to_pylist()
    assert any("'lots' is not a valid int64" in r for r in together[2].reasons.to_pylist())
    assert all(v.n_bad >= 3 for v in together)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
def test_chunked_loading_quarantines_exactly_as_batch_by_batch(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    monkeypatch.setattr(bronze_mod, "CHUNK_BYTES", chunk_bytes)
    tables = _mixed_batches()
    for i, t in enumerate(tables):
        land_batch(aegis_home.landing_telemetry, t, f"mixed{i}")
    report = ingest_batches(aegis_home)
    assert report.conserved and len(report.results) == 6
    q = _quarantine(aegis_home)
    got = sorted(
        zip(
            q.column("batch_id").to_pylist(),
            q.column("row_number").to_pylist(),
            q.column("rule").to_pylist(),
            strict=True,
        )
    )
    expected = []
    clock = datetime.now(UTC)
    for i, t in enumerate(tables):
        v = validate(conform(t), clock)
        expected += [
            (f"mixed{i}", r, rule)
            for r, rule in zip(v.bad_rows.to_pylist(), v.rules.to_pylist(), strict=True)
        ]
    assert got == sorted(expected)
    assert report.bronze_rows == sum(t.num_rows for t in tables) - len(expected)
