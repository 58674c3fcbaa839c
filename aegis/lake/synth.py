"""Synthetic schema-v1 batches: fast, valid, reproducible.

The world simulator is the faithful producer; this one exists for what the
simulator is too slow or too lifelike for: benchmark volumes (10 million events
in seconds) and tests that need a valid batch of an exact shape to corrupt.
Vectorized with numpy; every row satisfies the rules in :mod:`aegis.telemetry`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aegis.telemetry import (
    CURRENCIES,
    KINDS,
    REQUIRED_BY_KIND,
    SCHEMA_V1,
    SESSION_END_CAUSES,
    WORLD_EPOCH,
    landing_path,
    write_atomic,
)

DEATH_CAUSES = ("wolf", "fall", "bandit", "dragon", "drowning")
SOURCE_CAUSES = ("quest_reward", "loot", "daily_bonus")
SINK_CAUSES = ("repair", "vendor", "fast_travel")
DEFAULT_START = WORLD_EPOCH + timedelta(days=1)


def _null_where(values: np.ndarray, keep: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.array(values, type=typ, mask=~keep)


def make_batch(
    n: int,
    seed: int = 0,
    shard_id: str = "eu-1",
    region: str = "eu-west-1",
    start: datetime = DEFAULT_START,
    span_s: float = 60.0,
    id_prefix: str | None = None,
) -> pa.Table:
    """``n`` valid events of every kind for one shard, ``span_s`` seconds from ``start``."""
    rng = np.random.default_rng(seed)
    prefix = id_prefix if id_prefix is not None else f"{seed:08x}"
    kinds_arr = np.array(KINDS)
    kind_ix = rng.integers(0, len(KINDS), n)
    kind = kinds_arr[kind_ix]
    need = {name: np.isin(kind, [k for k, f in REQUIRED_BY_KIND.items() if name in f]) for name in _OPTIONAL}
    start_us = int(start.timestamp() * 1_000_000)
    ts = np.sort(start_us + rng.integers(0, int(span_s * 1_000_000), n)).astype("datetime64[us]")
    event_ids = pc.binary_join_element_wise(f"{prefix}-", pc.cast(pa.array(np.arange(n)), pa.string()), "")
    is_server = kind == "server_tick"
    is_session_end = kind == "session_end"
    is_death = kind == "combat_death"
    is_source = kind == "currency_source"
    is_sink = kind == "currency_sink"
    cause = np.where(
        is_death,
        np.array(DEATH_CAUSES)[rng.integers(0, len(DEATH_CAUSES), n)],
        np.where(
            is_source,
            np.array(SOURCE_CAUSES)[rng.integers(0, len(SOURCE_CAUSES), n)],
            np.where(
                is_sink,
                np.array(SINK_CAUSES)[rng.integers(0, len(SINK_CAUSES), n)],
                np.array(SESSION_END_CAUSES)[rng.integers(0, len(SESSION_END_CAUSES), n)],
            ),
        ),
    )
    cols: dict[str, pa.Array] = {
        "event_id": event_ids,
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "schema_version": pa.array(np.ones(n, np.int16)),
        "region": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [region]).cast(pa.string()),
        "shard_id": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [shard_id]).cast(pa.string()),
        "player_id": _null_where(rng.integers(1, 50_000, n), ~is_server, pa.int64()),
        "kind": pa.array(kind),
        "quest_id": _null_where(rng.integers(0, 200, n).astype(np.int32), need["quest_id"], pa.int32()),
        "stage": _null_where(rng.integers(1, 6, n).astype(np.int32), need["stage"], pa.int32()),
        "zone": _null_where(rng.integers(0, 6, n).astype(np.int32), need["zone"], pa.int32()),
        "x": _null_where(rng.uniform(0, 1024, n).astype(np.float32), need["x"], pa.float32()),
        "y": _null_where(rng.uniform(0, 1024, n).astype(np.float32), need["y"], pa.float32()),
        "cause": _null_where(cause, need["cause"] | is_session_end, pa.string()),
        "currency": _null_where(
            np.array(CURRENCIES)[rng.integers(0, len(CURRENCIES), n)], need["currency"], pa.string()
        ),
        "amount": _null_where(rng.integers(1, 500, n), need["amount"], pa.int64()),
        "item_id": _null_where(rng.integers(0, 5_000, n).astype(np.int32), need["item_id"], pa.int32()),
        "price": _null_where(rng.integers(1, 10_000, n), need["price"], pa.int64()),
        "tick_ms": _null_where(rng.gamma(4.0, 8.0, n).astype(np.float32), need["tick_ms"], pa.float32()),
        "players_online": _null_where(
            rng.integers(0, 2_000, n).astype(np.int32), need["players_online"], pa.int32()
        ),
        "config_version": pa.array(np.ones(n, np.int32)),
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA_V1)


_OPTIONAL = sorted({name for fields in REQUIRED_BY_KIND.values() for name in fields})


def land_batch(landing_root: Path, table: pa.Table, batch_id: str, shard_id: str = "eu-1") -> Path:
    """Write ``table`` where a shard would, atomically, and return its path."""
    first_ts = table.column("ts")[0].as_py() if table.num_rows else DEFAULT_START
    path = landing_path(landing_root, first_ts, shard_id, batch_id)
    return write_atomic(table, path)
