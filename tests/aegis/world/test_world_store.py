"""The world store: lossless state codec, atomic tick commits, durable acknowledged writes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from aegis.domain import Integrity, SnapshotInfo, WorldParams
from aegis.world.store import (
    ConfigRecord,
    IdempotentResponse,
    StateCodecError,
    StoreError,
    WorldStore,
    decode_state,
    encode_state,
)

T0 = datetime(2026, 1, 2, tzinfo=UTC)


def _state(seed: int = 1) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    return {
        "format": 1,
        "gold": rng.integers(0, 10**12, 50, dtype=np.int64),
        "skill": rng.random(50, dtype=np.float32),
        "inventory": rng.integers(0, 5, (50, 7)).astype(np.int32),
        "rng_state": rng.bit_generator.state,  # 128-bit ints inside
        "params_json": WorldParams().model_dump_json(),
        "price_level": 1.0 / 3.0,
        "nested": {"when": T0, "pair": (1, 2.5), "raw": b"\x00\xff", "none": None, "flag": True},
        "scalar": np.float64(2.25),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert b[k].dtype == a[k].dtype and b[k].shape == a[k].shape
            assert np.array_equal(a[k], b[k])
        elif isinstance(a[k], dict):
            _assert_same(a[k], b[k])
        else:
            assert (a[k] == b[k] and type(b[k]) is type(a[k])) or isinstance(a[k], np.generic)


def test_codec_round_trips_arrays_bigints_and_markers() -> None:
    state = _state()
    text, blob = encode_state(state)
    back = decode_state(text, blob)
    _assert_same(state, back)
    assert back["rng_state"]["state"]["state"] == state["rng_state"]["state"]["state"]  # 128-bit exact
    # The decoded RNG continues exactly where the original would.
    g1 = np.random.Generator(np.random.PCG64())
    g1.bit_generator.state = back["rng_state"]
    g2 = np.random.Generator(np.random.PCG64())
    g2.bit_generator.state = state["rng_state"]
    assert np.array_equal(g1.random(10), g2.random(10))


def test_codec_rejects_what_it_cannot_store() -> None:
    with pytest.raises(StateCodecError, match="object arrays"):
        encode_state({"a": np.array([object()], dtype=object)})
    with pytest.raises(StateCodecError, match="keys must be strings"):
        encode_state({"a": {1: 2}})
    with pytest.raises(StateCodecError, match="reserved"):
        encode_state({"__ndarray__": 1})
    with pytest.raises(StateCodecError, match="cannot store a set"):
        encode_state({"s": {1, 2}})


def _world(store: WorldStore) -> None:
    store.create_world(
        {"seed": 3},
        {"format": 1, "game_time": T0.isoformat()},
        {"s-1": ("eu-west", "control", _state(1)), "s-2": ("us-east", "control", _state(2))},
        [
            ConfigRecord("s-1", 1, WorldParams(), "initial", T0),
            ConfigRecord("s-2", 1, WorldParams(), "initial", T0),
        ],
    )


def test_store_is_wal_and_round_trips_a_world(tmp_path: Path) -> None:
    store = WorldStore(tmp_path / "world.db")
    assert store.load_world() is None
    _world(store)
    with pytest.raises(StoreError, match="already exists"):
        _world(store)
    store.commit_tick(
        1, {"format": 1, "game_time": "x"}, {"s-1": _state(5), "s-2": _state(6)}, {"s-1": b"ipc"}, None
    )
    store.close()

    with sqlite3.connect(tmp_path / "world.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store = WorldStore(tmp_path / "world.db")
    loaded = store.load_world()
    assert loaded is not None and loaded.tick == 1
    assert loaded.meta["seed"] == 3
    assert loaded.world_state["game_time"] == "x"
    _assert_same(_state(5), loaded.shards["s-1"].state)
    assert loaded.shards["s-2"].region == "us-east"
    assert store.pending_events() == [(1, "s-1", b"ipc")]
    store.commit_tick(2, {"format": 1}, {"s-1": _state(5), "s-2": _state(6)}, {}, landed_through=2)
    assert store.pending_events() == []
    assert store.integrity_check() == "ok"
    store.close()


def test_failed_tick_commit_rolls_back_entirely(tmp_path: Path) -> None:
    store = WorldStore(tmp_path / "world.db")
    _world(store)
    with pytest.raises(StoreError, match="unknown shard"):
        store.commit_tick(1, {"format": 1}, {"s-1": _state(9), "ghost": _state(9)}, {"s-1": b"x"}, None)
    loaded = store.load_world()
    assert loaded is not None and loaded.tick == 0  # no torn tick: s-1 not advanced either
    _assert_same(_state(1), loaded.shards["s-1"].state)
    assert store.pending_events() == []


def test_config_apply_with_idempotency_is_one_transaction(tmp_path: Path) -> None:
    store = WorldStore(tmp_path / "world.db")
    _world(store)
    params = WorldParams(drop_rate=1.5)
    rec = ConfigRecord("s-1", 2, params, "api", T0)
    idem = IdempotentResponse("k1", "s-1", "h", 200, {"version": 2})
    store.save_shard("s-1", _state(7), config=rec, idempotent=idem)
    assert store.get_idempotent("k1") == idem
    # Reusing the key in another apply fails as a whole: the shard state is not overwritten.
    with pytest.raises(sqlite3.IntegrityError):
        store.save_shard("s-1", _state(8), config=ConfigRecord("s-1", 3, params, "api", T0), idempotent=idem)
    loaded = store.load_world()
    assert loaded is not None
    _assert_same(_state(7), loaded.shards["s-1"].state)
    assert [(c.version, c.source) for c in store.config_history("s-1")] == [(1, "initial"), (2, "api")]
    assert store.config_history("s-1")[-1].params == params


def test_snapshots_are_stored_and_listed_per_shard(tmp_path: Path) -> None:
    store = WorldStore(tmp_path / "world.db")
    _world(store)
    integ = Integrity(
        shard_id="s-1",
        players=3,
        active_inventory_items=4,
        active_inventory_checksum="ab",
        active_quests=1,
        active_quest_checksum="cd",
        save_schema_version=3,
    )
    info = SnapshotInfo(snapshot_id="snap-1", shard_id="s-1", game_time=T0, config_version=1, integrity=integ)
    store.save_snapshot(info, _state(4))
    assert store.list_snapshots("s-1") == [info]
    assert store.list_snapshots("s-2") == []
    snap = store.get_snapshot("snap-1")
    assert snap is not None and snap.info == info
    _assert_same(_state(4), snap.state)
    assert store.get_snapshot("nope") is None
    assert store.count_snapshots() == 1


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable world database"):
        WorldStore(path)
