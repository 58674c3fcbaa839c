"""The synthetic lake's generator: one seed gives one lake, and faults land where they are declared."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aegis.domain import WorldParams
from aegis.quality.synthetic_lake import Fault, _hour_table
from aegis.telemetry import SCHEMA_V1, WORLD_EPOCH

SHARD, REGION = "eu-1", "eu-west-1"
HOUR = WORLD_EPOCH + timedelta(hours=3)
WINDOW = (HOUR + timedelta(minutes=10), HOUR + timedelta(minutes=25))


def _table(seed: int, faults: list[Fault] | None = None, run_end: datetime | None = None) -> pa.Table:
    return _hour_table(
        np.random.default_rng(seed),
        SHARD,
        REGION,
        HOUR,
        30,
        1,
        WorldParams(),
        faults or [],
        3,
        run_end or HOUR + timedelta(hours=2),
    )


def _inside(table: pa.Table) -> pa.ChunkedArray:
    ts = table.column("ts")
    return pc.and_(pc.greater_equal(ts, pa.scalar(WINDOW[0])), pc.less(ts, pa.scalar(WINDOW[1])))


def test_one_seed_one_table() -> None:
    first = _table(11)
    assert first.schema == SCHEMA_V1
    assert first.equals(_table(11))
    assert not first.equals(_table(12))
    ts = first.column("ts").to_numpy()
    assert (np.diff(ts) >= np.timedelta64(0)).all(), "events are in time order"
    ids = first.column("event_id").to_pylist()
    assert ids == [f"{SHARD}-{HOUR:%Y%m%d%H}-{i}" for i in range(first.num_rows)]
    kinds = set(first.column("kind").to_pylist())
    assert {
        "server_tick",
        "session_start",
        "quest_start",
        "combat_death",
        "currency_source",
        "trade",
    } <= kinds


def test_crash_drops_the_window_and_nothing_else() -> None:
    clean = _table(5)
    crashed = _table(
        5, [Fault(SHARD, "crash", *WINDOW), Fault("us-2", "latency", HOUR, HOUR + timedelta(hours=1))]
    )
    assert pc.sum(_inside(clean)).as_py() > 0
    assert pc.sum(_inside(crashed)).as_py() == 0
    survivors = clean.filter(pc.invert(_inside(clean))).drop_columns(["event_id"])
    assert crashed.drop_columns(["event_id"]).equals(survivors)


def test_latency_multiplies_tick_ms_in_the_window() -> None:
    clean = _table(5)
    slow = _table(5, [Fault(SHARD, "latency", *WINDOW)])
    assert slow.num_rows == clean.num_rows
    inside = _inside(clean)
    ticks = pc.equal(clean.column("kind"), "server_tick")
    for where, factor in ((pc.and_(ticks, inside), 20.0), (pc.and_(ticks, pc.invert(inside)), 1.0)):
        before = clean.column("tick_ms").filter(where).to_numpy()
        after = slow.column("tick_ms").filter(where).to_numpy()
        assert len(before) > 0
        np.testing.assert_allclose(after, before * factor, rtol=1e-6)
    others = pc.invert(ticks)
    assert slow.filter(others).equals(clean.filter(others))


def test_nothing_from_after_the_run() -> None:
    run_end = HOUR + timedelta(minutes=30)
    table = _table(5, run_end=run_end)
    assert table.num_rows > 0
    assert pc.max(table.column("ts")).as_py() < run_end
    assert table.column("event_id").to_pylist()[-1] == f"{SHARD}-{HOUR:%Y%m%d%H}-{table.num_rows - 1}"
