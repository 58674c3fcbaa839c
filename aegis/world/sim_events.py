"""Columnar assembly of one tick's telemetry events (SCHEMA_V1) from numpy arrays.

The simulator produces events kind by kind as numpy index arrays (which player
slots) plus the columns that kind carries. Building rows in Python would cost
more than the whole simulation, so this module concatenates the segments per
column and hands pyarrow buffers: string columns are built from fixed-width
byte matrices or dictionary codes, never from per-row f-strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aegis.telemetry import CURRENCIES, KINDS, SCHEMA_V1, SCHEMA_VERSION

KIND_CODE: dict[str, int] = {k: i for i, k in enumerate(KINDS)}

# Reasons carried in ``cause``: session end causes, death causes, economy reasons.
CAUSES: tuple[str, ...] = (
    "logout",
    "disconnect",
    "churn",
    "npc",
    "elite",
    "fall",
    "pvp",
    "loot",
    "quest_reward",
    "vendor",
    "purchase",
    "repair",
    "tax",
    "fee",
    "shop",
)
CAUSE_CODE: dict[str, int] = {c: i for i, c in enumerate(CAUSES)}
CURRENCY_CODE: dict[str, int] = {c: i for i, c in enumerate(CURRENCIES)}

# Causal order of kinds inside one tick: the slice of the tick an event's
# timestamp falls in, so a session starts before its quests and ends after them.
_TS_ORDER: tuple[str, ...] = (
    "reconnect",
    "session_start",
    "quest_start",
    "combat_death",
    "item_drop",
    "currency_source",
    "quest_abandon",
    "quest_stage",
    "quest_complete",
    "trade",
    "currency_sink",
    "session_end",
    "server_tick",
)
KIND_TS_RANK: dict[str, int] = {k: i for i, k in enumerate(_TS_ORDER)}
# Share of a tick in which a player's own activity falls; the rest is split by kind.
_PLAYER_SPREAD = 0.85

_NUMERIC_COLUMNS: dict[str, np.dtype] = {
    "quest_id": np.dtype(np.int32),
    "stage": np.dtype(np.int32),
    "zone": np.dtype(np.int32),
    "x": np.dtype(np.float32),
    "y": np.dtype(np.float32),
    "amount": np.dtype(np.int64),
    "item_id": np.dtype(np.int32),
    "price": np.dtype(np.int64),
    "tick_ms": np.dtype(np.float32),
    "players_online": np.dtype(np.int32),
}
_CODED_COLUMNS: dict[str, tuple[str, ...]] = {"cause": CAUSES, "currency": CURRENCIES}
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SEQ_DIGITS = 7  # up to 268M events per shard per tick


@dataclass
class _Segment:
    kind: str
    idx: np.ndarray | None  # player slots, None for server events
    cols: dict[str, np.ndarray | int | float]
    n: int


@dataclass
class EventBatch:
    """The events of one shard tick, accumulated segment by segment."""

    tick_start_us: int
    tick_len_us: int
    u_ts: np.ndarray  # per-slot uniform in [0, 1): where in the tick the player acts
    segments: list[_Segment] = field(default_factory=list)

    def add(self, kind: str, idx: np.ndarray, **cols: np.ndarray | int | float) -> None:
        """Add one event per slot in ``idx``; ``cols`` are arrays of len(idx) or scalars."""
        n = len(idx)
        if n:
            self.segments.append(_Segment(kind, idx, cols, n))

    def add_server(self, kind: str, **cols: np.ndarray | int | float) -> None:
        self.segments.append(_Segment(kind, None, cols, 1))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.segments:
            out[s.kind] = out.get(s.kind, 0) + s.n
        return out

    def to_table(
        self,
        *,
        shard_id: str,
        region: str,
        config_version: int,
        player_ids: np.ndarray,
        id_prefix: bytes,
    ) -> pa.Table:
        """Assemble the tick's table in SCHEMA_V1 (no reordering of events)."""
        segs = self.segments
        n = sum(s.n for s in segs)
        if n == 0:
            return SCHEMA_V1.empty_table()
        bounds = np.cumsum([0] + [s.n for s in segs])
        slot_share = self.tick_len_us * (1.0 - _PLAYER_SPREAD) / len(_TS_ORDER)

        ts = np.empty(n, dtype=np.int64)
        player = np.zeros(n, dtype=np.int64)
        player_valid = np.ones(n, dtype=bool)
        kind_codes = np.empty(n, dtype=np.int8)
        for s, a, b in zip(segs, bounds[:-1], bounds[1:], strict=True):
            kind_codes[a:b] = KIND_CODE[s.kind]
            if s.idx is None:
                ts[a:b] = self.tick_start_us + self.tick_len_us - 1
                player_valid[a:b] = False
            else:
                # A player's events share one instant in the tick, offset by kind
                # so that they read in causal order.
                base = (self.u_ts[s.idx] * (self.tick_len_us * _PLAYER_SPREAD)).astype(np.int64)
                ts[a:b] = self.tick_start_us + base + int(KIND_TS_RANK[s.kind] * slot_share)
                player[a:b] = player_ids[s.idx]

        arrays: dict[str, pa.Array] = {
            "event_id": _event_ids(id_prefix, n),
            "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int16)),
            "region": _constant_strings(region, n),
            "shard_id": _constant_strings(shard_id, n),
            "player_id": pa.array(player, mask=None if player_valid.all() else ~player_valid),
            "kind": pc.take(pa.array(KINDS, pa.string()), pa.array(kind_codes)),
        }
        for name, dtype in _NUMERIC_COLUMNS.items():
            arrays[name] = _gather_numeric(name, dtype, segs, bounds, n)
        for name, vocab in _CODED_COLUMNS.items():
            arrays[name] = _gather_coded(name, vocab, segs, bounds, n)
        arrays["config_version"] = pa.array(np.full(n, config_version, dtype=np.int32))
        return pa.Table.from_arrays([arrays[c] for c in SCHEMA_V1.names], schema=SCHEMA_V1)


def _gather_numeric(name: str, dtype: np.dtype, segs: list[_Segment], bounds: np.ndarray, n: int) -> pa.Array:
    present = [(s, a, b) for s, a, b in zip(segs, bounds[:-1], bounds[1:], strict=True) if name in s.cols]
    if not present:
        return pa.nulls(n, type=SCHEMA_V1.field(name).type)
    values = np.zeros(n, dtype=dtype)
    valid = np.zeros(n, dtype=bool)
    for s, a, b in present:
        values[a:b] = s.cols[name]
        valid[a:b] = True
    return pa.array(values, mask=~valid, type=SCHEMA_V1.field(name).type)


def _gather_coded(
    name: str, vocab: tuple[str, ...], segs: list[_Segment], bounds: np.ndarray, n: int
) -> pa.Array:
    present = [(s, a, b) for s, a, b in zip(segs, bounds[:-1], bounds[1:], strict=True) if name in s.cols]
    if not present:
        return pa.nulls(n, type=pa.string())
    codes = np.full(n, -1, dtype=np.int8)
    for s, a, b in present:
        codes[a:b] = s.cols[name]
    return pc.take(pa.array(vocab, pa.string()), pa.array(codes, mask=codes < 0))


def _constant_strings(value: str, n: int) -> pa.Array:
    raw = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _event_ids(prefix: bytes, n: int) -> pa.Array:
    """``<prefix><seq as 7 hex digits>``: fixed width, built as one byte matrix."""
    width = len(prefix) + _SEQ_DIGITS
    mat = np.empty((n, width), dtype=np.uint8)
    mat[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    seq = np.arange(n, dtype=np.uint32)
    shifts = np.arange(_SEQ_DIGITS - 1, -1, -1, dtype=np.uint32) * 4
    mat[:, len(prefix) :] = _HEX[(seq[:, None] >> shifts) & 0xF]
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(mat.tobytes()))
