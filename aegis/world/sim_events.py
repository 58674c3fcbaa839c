"""Columnar assembly of telemetry events (SCHEMA_V1) from numpy arrays.

The simulator produces events kind by kind as numpy index arrays (which player
slots) plus the columns that kind carries, and appends them straight into an
:class:`EventBuffer`: one preallocated array per column, grown by doubling, in
which a column a kind does not carry keeps its null sentinel. Building rows in
Python would cost more than the whole simulation; building a pyarrow table per
tick and concatenating them later costs twice the copies. So a buffer holds as
many ticks as its owner wants (one for :meth:`ShardSim.step`, a whole 5-minute
landing window for the batch runner) and becomes one table at the end:
validity bitmaps from the sentinels, numeric buffers handed over without a
copy, string columns built from fixed-width byte matrices or dictionary codes,
never from per-row Python strings.
"""

from __future__ import annotations

import re

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
PLAYER_SPREAD = 0.85

# Nullable numeric columns and the sentinel that marks "null" in the buffer
# (values the simulator never produces: negative ids/amounts, NaN coordinates).
INT32_NULL = np.iinfo(np.int32).min
INT64_NULL = np.iinfo(np.int64).min
_NUMERIC_COLUMNS: dict[str, tuple[np.dtype, int | float]] = {
    "quest_id": (np.dtype(np.int32), INT32_NULL),
    "stage": (np.dtype(np.int32), INT32_NULL),
    "zone": (np.dtype(np.int32), INT32_NULL),
    "x": (np.dtype(np.float32), np.nan),
    "y": (np.dtype(np.float32), np.nan),
    "amount": (np.dtype(np.int64), INT64_NULL),
    "item_id": (np.dtype(np.int32), INT32_NULL),
    "price": (np.dtype(np.int64), INT64_NULL),
    "tick_ms": (np.dtype(np.float32), np.nan),
    "players_online": (np.dtype(np.int32), INT32_NULL),
}
_CODED_COLUMNS: dict[str, tuple[str, ...]] = {"cause": CAUSES, "currency": CURRENCIES}
_ALL_COLUMNS = frozenset(_NUMERIC_COLUMNS) | frozenset(_CODED_COLUMNS)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# A world instance id: INSTANCE_DIGITS lowercase hex digits. Event ids are unique per shard
# and tick within one world; the instance makes them unique across worlds sharing a lake.
INSTANCE_DIGITS = 8
_INSTANCE_RE = re.compile(rf"[0-9a-f]{{{INSTANCE_DIGITS}}}")
_SEQ_DIGITS = 7  # up to 268M events per shard per tick
_TICK_DIGITS = 13  # tick start in µs since WORLD_EPOCH: 13 hex digits last ~285 years
_MIN_CAPACITY = 1024
_KIND_VOCAB = pa.array(KINDS, pa.string())
_CODED_VOCAB = {name: pa.array(vocab, pa.string()) for name, vocab in _CODED_COLUMNS.items()}


class _SeqHex:
    """Cached ``(n, 7)`` byte matrix of the hex digits of 0..n-1 (event sequence numbers)."""

    def __init__(self) -> None:
        self.table = np.empty((0, _SEQ_DIGITS), dtype=np.uint8)

    def upto(self, n: int) -> np.ndarray:
        if n > len(self.table):
            size = max(n, 2 * len(self.table), 4096)
            if size >= 16**_SEQ_DIGITS:
                raise OverflowError(f"more than {16**_SEQ_DIGITS - 1} events in one shard tick")
            seq = np.arange(size, dtype=np.uint32)
            shifts = np.arange(_SEQ_DIGITS - 1, -1, -1, dtype=np.uint32) * 4
            self.table = _HEX[(seq[:, None] >> shifts) & 0xF]
        return self.table[:n]


_SEQ_HEX = _SeqHex()


class EventBuffer:
    """The events of one shard over one or more ticks, in emission order.

    The simulator calls :meth:`begin_tick` once per tick and :meth:`append` per
    kind; :meth:`to_table` turns everything into one SCHEMA_V1 table and
    :meth:`clear` makes the buffer reusable (its arrays are kept).
    """

    def __init__(
        self, shard_id: str, region: str, capacity: int = _MIN_CAPACITY, *, instance: str = ""
    ) -> None:
        """``instance``: the world instance id its event ids carry (:func:`check_instance_id`);
        empty for the simulator's own tables, whose ids the landing writer stamps."""
        self.shard_id = shard_id
        self.region = region
        self.instance = check_instance_id(instance) if instance else ""
        self.n = 0
        self._cap = 0  # 0: no arrays yet (allocated on first use)
        self._want = max(int(capacity), _MIN_CAPACITY)
        self._ticks: list[tuple[int, int, int]] = []  # (first row, tick start µs since epoch, config version)
        self.cols: dict[str, np.ndarray] = {}

    @staticmethod
    def column_dtype(name: str) -> np.dtype:
        """The buffer dtype of an optional event column (coded string columns hold int8 codes)."""
        if name in _NUMERIC_COLUMNS:
            return _NUMERIC_COLUMNS[name][0]
        if name in _CODED_COLUMNS:
            return np.dtype(np.int8)
        raise KeyError(f"unknown event column {name!r}")

    @staticmethod
    def column_null(name: str) -> int | float:
        """The sentinel that marks null in an optional event column."""
        if name in _NUMERIC_COLUMNS:
            return _NUMERIC_COLUMNS[name][1]
        if name in _CODED_COLUMNS:
            return -1
        raise KeyError(f"unknown event column {name!r}")

    # ------------------------------------------------------------------ filling
    def _grow(self, need: int) -> None:
        """Make room for ``need`` rows: new arrays pre-filled with the null sentinels, old rows copied."""
        cap = max(need, 2 * self._cap, self._want)
        n = self.n if self._cap else 0

        def grown(name: str, dtype: np.dtype, fill: int | float | None) -> np.ndarray:
            new = np.empty(cap, dtype=dtype) if fill is None else np.full(cap, fill, dtype=dtype)
            if n:
                new[:n] = (self.cols[name] if name in self.cols else getattr(self, name))[:n]
            return new

        ts = grown("ts", np.dtype(np.int64), None)
        player = grown("player", np.dtype(np.int64), None)
        kind = grown("kind", np.dtype(np.int8), None)
        cols = {name: grown(name, dtype, fill) for name, (dtype, fill) in _NUMERIC_COLUMNS.items()}
        cols |= {name: grown(name, np.dtype(np.int8), -1) for name in _CODED_COLUMNS}
        self.ts, self.player, self.kind, self.cols = ts, player, kind, cols
        self._cap = self._want = cap

    def begin_tick(self, tick_start_rel_us: int, config_version: int) -> None:
        """Start a tick: events appended from now on belong to it (their event ids restart at 0)."""
        if not self._cap:
            self._grow(0)
        if self._ticks and self._ticks[-1][0] == self.n:
            self._ticks[-1] = (self.n, tick_start_rel_us, config_version)  # previous tick had no events
        else:
            self._ticks.append((self.n, tick_start_rel_us, config_version))

    def append(
        self,
        kind: int | np.ndarray,
        ts: np.ndarray | int,
        player: np.ndarray | int,
        k: int,
        cols: dict[str, np.ndarray | int | float],
    ) -> None:
        """Append ``k`` events of kind code ``kind`` (or one code per event); ``cols`` are arrays of length k or scalars."""
        if not self._ticks:
            raise RuntimeError("EventBuffer.append before begin_tick")
        a = self.n
        b = a + k
        if b > self._cap:
            self._grow(b)
        self.ts[a:b] = ts
        self.player[a:b] = player
        self.kind[a:b] = kind
        for name, values in cols.items():
            self.cols[name][a:b] = values
        self.n = b

    def _reset(self) -> None:
        """Start afresh on new arrays of the current capacity (the old ones now belong to a table)."""
        self.n = 0
        self._cap = 0
        self._ticks = []
        self.cols = {}

    def kind_counts(self, start: int = 0) -> dict[str, int]:
        """Events per kind from row ``start`` on."""
        counts = np.bincount(self.kind[start : self.n], minlength=len(KINDS))
        return {KINDS[i]: int(c) for i, c in enumerate(counts) if c}

    # ------------------------------------------------------------------- table
    def to_table(self) -> pa.Table:
        """All buffered events as one SCHEMA_V1 table (no reordering); the buffer is emptied."""
        n = self.n
        if n == 0:
            self._ticks = []
            return SCHEMA_V1.empty_table()
        starts = np.array([t[0] for t in self._ticks] + [n], dtype=np.int64)
        counts = np.diff(starts)
        versions = np.array([t[2] for t in self._ticks], dtype=np.int32)
        arrays: dict[str, pa.Array] = {
            "event_id": self._event_ids(starts),
            "ts": _primitive(pa.timestamp("us", tz="UTC"), self.ts[:n]),
            "schema_version": _primitive(pa.int16(), np.full(n, SCHEMA_VERSION, dtype=np.int16)),
            "region": _constant_strings(self.region, n),
            "shard_id": _constant_strings(self.shard_id, n),
            "player_id": _nullable(pa.int64(), self.player[:n], self.player[:n] < 0),
            "kind": pc.take(_KIND_VOCAB, _primitive(pa.int8(), self.kind[:n])),
        }
        for name, (dtype, _) in _NUMERIC_COLUMNS.items():
            values = self.cols[name][:n]
            null = np.isnan(values) if dtype.kind == "f" else values == _NUMERIC_COLUMNS[name][1]
            arrays[name] = _nullable(SCHEMA_V1.field(name).type, values, null)
        for name in _CODED_COLUMNS:
            codes = self.cols[name][:n]
            null = codes < 0
            if null.all():
                arrays[name] = pa.nulls(n, pa.string())
            else:
                arrays[name] = pc.take(_CODED_VOCAB[name], _nullable(pa.int8(), codes, null))
        arrays["config_version"] = _primitive(pa.int32(), np.repeat(versions, counts))
        table = pa.Table.from_arrays([arrays[c] for c in SCHEMA_V1.names], schema=SCHEMA_V1)
        self._reset()
        return table

    def _event_ids(self, starts: np.ndarray) -> pa.Array:
        """``<shard>-<instance>-<tick start, 13 hex>-<sequence in tick, 7 hex>`` (no ``<instance>-``
        without an instance): one fixed-width byte matrix."""
        n = self.n
        head = f"{self.shard_id}-{self.instance}-".encode() if self.instance else f"{self.shard_id}-".encode()
        p = len(head)
        width = p + _TICK_DIGITS + 1 + _SEQ_DIGITS
        mat = np.empty((n, width), dtype=np.uint8)
        mat[:, :p] = np.frombuffer(head, dtype=np.uint8)
        for (a, rel_us, _), b in zip(self._ticks, starts[1:], strict=True):
            if b > a:
                mid = f"{rel_us:0{_TICK_DIGITS}x}-".encode()
                mat[a:b, p : p + _TICK_DIGITS + 1] = np.frombuffer(mid, dtype=np.uint8)
                mat[a:b, p + _TICK_DIGITS + 1 :] = _SEQ_HEX.upto(int(b - a))
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(mat))


def _primitive(type_: pa.DataType, values: np.ndarray) -> pa.Array:
    """A non-null arrow array over ``values`` (contiguous), without copying."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _nullable(type_: pa.DataType, values: np.ndarray, null: np.ndarray) -> pa.Array:
    """An arrow array over ``values`` whose ``null`` rows are null (validity bitmap, no value copy)."""
    n = len(values)
    nulls = int(np.count_nonzero(null))
    if nulls == n:
        return pa.nulls(n, type=type_)
    if nulls == 0:
        return _primitive(type_, values)
    bitmap = np.packbits(~null, bitorder="little")
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, n, [pa.py_buffer(bitmap), pa.py_buffer(values)], null_count=nulls)


def _constant_strings(value: str, n: int) -> pa.Array:
    raw = value.encode()
    offsets = np.arange(0, (n + 1) * len(raw), len(raw), dtype=np.int32) if raw else np.zeros(n + 1, np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def check_instance_id(instance: str) -> str:
    """``instance`` when it is a world instance id (INSTANCE_DIGITS lowercase hex), else ValueError."""
    if not isinstance(instance, str) or not _INSTANCE_RE.fullmatch(instance):
        raise ValueError(f"a world instance id is {INSTANCE_DIGITS} lowercase hex digits, got {instance!r}")
    return instance


def stamp_instance(table: pa.Table, shard_id: str, instance: str) -> pa.Table:
    """The simulator's table with ``<shard>-`` ids turned into ``<shard>-<instance>-`` ids.

    :meth:`ShardSim.step` tables (and the world server's journal of them) carry
    ids unique within one world; the landing writer stamps its world's instance
    into them, so they land exactly as the ids :class:`EventBuffer` builds with
    an ``instance`` (the runner's path). A table whose ids do not start with
    ``<shard>-`` is not that shard's simulator output: ValueError.
    """
    check_instance_id(instance)
    if table.num_rows == 0:
        return table
    ids = table.column("event_id")
    head = f"{shard_id}-"
    if not pc.all(pc.starts_with(ids, head)).as_py():
        raise ValueError(f"event ids of shard {shard_id} must start with {head!r} to be stamped")
    rest = pc.utf8_slice_codeunits(ids, len(head))
    stamped = pc.binary_join_element_wise(f"{head}{instance}-", rest, "")
    i = table.schema.get_field_index("event_id")
    return table.set_column(i, table.schema.field(i), stamped)


def check_columns(cols: dict[str, object]) -> None:
    """Refuse a column name the buffer does not know (a programming error in the simulator)."""
    unknown = set(cols) - _ALL_COLUMNS
    if unknown:
        raise KeyError(f"unknown event columns {sorted(unknown)}")
