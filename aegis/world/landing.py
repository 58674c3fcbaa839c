"""Lands shard telemetry in the lake as Firehose would: one Parquet file per shard per batch window.

Files go to ``landing/telemetry/date=YYYY-MM-DD/hour=HH/shard=<id>/<batch-id>.parquet``
(:func:`aegis.telemetry.landing_path`), written under a temporary name and renamed
(:func:`aegis.telemetry.write_atomic`), so a reader listing ``*.parquet`` never sees
a partial file. The batch id starts with the window's start time, so files sort
by game time, and ends in random hex, so a restarted writer never overwrites a
batch that was landed before.

Retention: after each landing, a shard's batches in ``date=/hour=/shard=<id>``
partitions whose hour is more than ``retention_hours`` older than that shard's
newest landed hour are deleted (``None``, the default, keeps everything), and
directories left empty go too. A writer only deletes partitions of the shards it
lands itself, so several writers (the runner's worker processes, the live
server) can share one lake without deleting each other's batches. Retention is
counted in game hours, which pass 60x faster than wall hours under ``aegis up``,
so it must never outrun the ingest: given a ``keep`` predicate (the live server
passes :func:`aegis.lake.manifest.pending_keeper`, true for batches the lake's
manifest has not finished), a batch still pending ingestion is kept past the
retention and deleted by a later pass once ingested; how many were kept is logged.

World clock: before each batch window lands, the writer moves
``landing/telemetry/_world_clock.json`` (:func:`aegis.telemetry.advance_world_clock`)
to the window's end plus its tick length, so the bronze validator judges "in the
future" against game time, not the wall clock (the game clock runs 60x faster).

Speed: :meth:`LandingWriter.add_step` steps a shard straight into the window's
:class:`~aegis.world.sim_events.EventBuffer` (one table per window instead of
one per tick), :meth:`LandingWriter.add_group_step` does so for a fused
:class:`~aegis.world.sim_tick.ShardGroup` (one tick for many shards), and batches are written with zstd level 1, dictionary encoding
only for low-cardinality columns and statistics only where readers prune
(:data:`PARQUET_OPTIONS`): several times cheaper than pyarrow's defaults for
these tables, and smaller files.

The config change feed: whenever a shard's config version differs from the last
one recorded, a one-row Parquet file is landed at
:func:`aegis.telemetry.config_landing_path` (``config_schema()``), so every
event's ``config_version`` joins to the parameters behind it.

World instance: every event id carries the id of the world instance that produced
it (``<shard>-<instance>-<tick>-<seq>``, :mod:`aegis.world.sim_events`), so two worlds
landing into one lake never share an id. The writer builds it into the events it
steps itself (:meth:`LandingWriter.add_step`) and stamps it into the simulator's
tables given to :meth:`LandingWriter.add` (:func:`~aegis.world.sim_events.stamp_instance`),
so both paths land the same ids. Where the id comes from: a world server's world
claims one when it is created and keeps it in its store (:func:`world_instance_id`), so
a restart continues it; a batch run derives it from its starting state
(:func:`aegis.world.runner.run_world`). Every instance that landed here is listed in
``landing/telemetry/_world_instances.json`` (:func:`register_instance`).

Stale temporaries: a writer sweeps the landing area (telemetry and configs) when it
starts, removing the ``.<name>.<pid>.tmp`` files a killed writer left
(:func:`aegis.lake.landing.sweep_stale_tmp`: older than a few minutes and their pid
not running; a fresh one, or one of a live process, is never touched).

Fault ``corrupt_telemetry``: the next batch of that shard is landed corrupt, in
one of four modes chosen by the fault's magnitude (``CORRUPT_MODES[(ceil(m) - 1) % 4]``):
truncated Parquet bytes (unreadable file), bad values (unknown kind, negative
amounts), null required fields, or future timestamps (the last three corrupt
``CORRUPT_ROW_SHARE`` of the rows and keep the rest valid).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aegis.lake.landing import sweep_stale_tmp
from aegis.telemetry import (
    KINDS,
    SCHEMA_V1,
    WORLD_EPOCH,
    advance_world_clock,
    config_columns,
    config_landing_path,
    config_schema,
    landing_path,
    write_atomic,
    write_bytes_atomic,
)
from aegis.world.sim import ShardSim, from_us
from aegis.world.sim_events import INSTANCE_DIGITS, EventBuffer, check_instance_id, stamp_instance
from aegis.world.sim_tick import ShardGroup

# The live server's default retention (game hours); a bounded run keeps everything by default.
DEFAULT_RETENTION_HOURS = 24 * 7
DEFAULT_BATCH_MINUTES = 5.0
CORRUPT_MODES: tuple[str, ...] = ("truncated", "bad_values", "null_required", "future_ts")
CORRUPT_ROW_SHARE = 0.1
UNKNOWN_KIND = "teleport_hack"  # not in KINDS: the validator must reject it
FUTURE_SHIFT = timedelta(days=400)
assert UNKNOWN_KIND not in KINDS
ZSTD_LEVEL = (
    1  # zstd's fastest level: ~8 B/event, most of the gain of higher levels for a fraction of the CPU
)
# Columns with few distinct values: dictionary-encoded. event_id (unique), ts, amounts and
# coordinates are not: hashing them would cost time and a dictionary that overflows anyway.
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "region",
    "shard_id",
    "kind",
    "quest_id",
    "stage",
    "zone",
    "cause",
    "currency",
    "item_id",
    "config_version",
)
# Column statistics (min/max) where readers prune row groups: time, player, kind, version.
STATISTICS_COLUMNS: tuple[str, ...] = ("ts", "player_id", "kind", "config_version")

# Every world instance that landed into this lake, with what it was derived from.
INSTANCE_REGISTRY_FILE = "_world_instances.json"
# The world store's meta key holding its world's instance id.
WORLD_INSTANCE_META_KEY = "world_instance_id"
# The world server's options that decide what a new world's events are (the others,
# speed, retention, landing, do not).
WORLD_DEFINING_OPTIONS: tuple[str, ...] = (
    "seed",
    "players_per_shard",
    "shards_per_region",
    "explore",
    "explore_every_hours",
)

log = logging.getLogger(__name__)


def new_instance_id() -> str:
    """A random world instance id: for a writer that is not told which world it lands."""
    return uuid.uuid4().hex[:INSTANCE_DIGITS]


def derive_instance_id(*parts: object) -> str:
    """A world instance id that is a digest of ``parts`` (JSON): the same parts, the same id."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()[:INSTANCE_DIGITS]


def registry_path(landing_root: Path) -> Path:
    """``landing/telemetry/_world_instances.json`` (not a batch: readers list ``*.parquet`` only)."""
    return landing_root / INSTANCE_REGISTRY_FILE


def read_instances(landing_root: Path) -> list[dict[str, Any]]:
    """The instances registered in this landing area, oldest first ([] if none).

    A damaged registry is logged and read as empty: it is rewritten whole on the
    next registration, and ids stay distinct (a new id is checked against the ids
    in the file, and derived ids of different worlds differ anyway).
    """
    path = registry_path(landing_root)
    try:
        data = json.loads(path.read_text())
        return [dict(x) for x in data["instances"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("the world instance registry %s is damaged (%s); starting it afresh", path, exc)
        return []


def register_instance(landing_root: Path, producer: str, basis: Mapping[str, Any], *, new: bool) -> str:
    """The instance id for a world defined by ``basis``, recorded in the lake's registry.

    ``new=False`` (a batch run: a pure function of its basis) returns the id the
    basis derives, so the same inputs land the same ids and a repeat is counted as
    duplicates. ``new=True`` (a world server creating a world) returns an id no
    instance in this lake has used: derived from the basis and how many worlds of
    that basis this lake has seen, so the first world of a basis gets the same id in
    any lake (reproducible), and a second one here a different id. Under a lock on
    the landing directory (several writers share it); the file is written atomically.
    """
    landing_root.mkdir(parents=True, exist_ok=True)
    basis_digest = derive_instance_id(producer, dict(basis))
    fd = os.open(landing_root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        instances = read_instances(landing_root)
        used = {str(x.get("id")) for x in instances}
        if not new:
            instance = derive_instance_id(basis_digest, 0)
            if instance in used:
                return instance
        else:
            generation = sum(1 for x in instances if x.get("basis") == basis_digest)
            instance = derive_instance_id(basis_digest, generation)
            while instance in used:  # a 32-bit clash with another basis: move on
                generation += 1
                instance = derive_instance_id(basis_digest, generation)
        instances.append(
            {
                "id": instance,
                "producer": producer,
                "basis": basis_digest,
                "defined_by": {k: basis[k] for k in sorted(basis) if k != "state_digest"},
                "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        payload = json.dumps({"instances": instances}, indent=1, default=str).encode()
        write_bytes_atomic(payload, registry_path(landing_root))
        return instance
    finally:
        os.close(fd)  # releases the lock


class _MetaStore(Protocol):
    def get_meta(self, key: str) -> Any | None: ...

    def set_meta(self, key: str, value: Any) -> None: ...


def world_instance_id(store: _MetaStore, landing_root: Path, options: object) -> str:
    """The instance id of the world server's world: the stored one, else a new one, stored.

    A restart of the same world (its store) continues its id, so events replayed
    from its journal land under the ids they had; a new world (a new store) claims
    a new id from the lake's registry (:func:`register_instance`), defined by the
    options that shape its events (WORLD_DEFINING_OPTIONS; a stored world's own
    seed and sizes win over the options, as they do for the world itself).
    """
    stored = store.get_meta(WORLD_INSTANCE_META_KEY)
    if stored is not None:
        return check_instance_id(str(stored))
    basis = {name: getattr(options, name, None) for name in WORLD_DEFINING_OPTIONS}
    for name in ("seed", "players_per_shard", "shards_per_region"):
        value = store.get_meta(name)
        if value is not None:
            basis[name] = value
    instance = register_instance(landing_root, "world-server", basis, new=True)
    store.set_meta(WORLD_INSTANCE_META_KEY, instance)
    return instance


def parquet_options(compression: str) -> dict[str, object]:
    """``pyarrow.parquet.write_table`` options of a landed batch."""
    opts: dict[str, object] = {
        "compression": compression,
        "use_dictionary": list(DICTIONARY_COLUMNS),
        "write_statistics": list(STATISTICS_COLUMNS),
    }
    if compression == "zstd":
        opts["compression_level"] = ZSTD_LEVEL
    return opts


def write_batch_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> Path:
    """Write a landed batch with :func:`aegis.telemetry.write_atomic` and :func:`parquet_options`."""
    options = parquet_options(compression)
    del options["compression"]
    return write_atomic(table, path, compression, **options)


def corrupt_mode(magnitude: float) -> str:
    """The corruption a ``corrupt_telemetry`` fault of this magnitude produces."""
    return CORRUPT_MODES[(max(math.ceil(magnitude), 1) - 1) % len(CORRUPT_MODES)]


@dataclass
class LandingStats:
    events: int = 0
    files: int = 0
    bytes: int = 0
    config_files: int = 0
    corrupt_batches: int = 0
    deleted_files: int = 0
    kept_files: int = (
        0  # batches now kept past the retention (pending ingestion), as of each shard's last pass
    )
    stale_tmp_removed: int = 0  # temporary files of killed writers swept at start
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pending:
    window: int  # batch window index since WORLD_EPOCH
    tables: list[pa.Table] = field(default_factory=list)
    corrupt: str | None = None
    landed: bool = False
    events: EventBuffer | None = None  # the add_step path: the window's events, not yet a table

    @property
    def has_data(self) -> bool:
        return bool(self.tables) or (self.events is not None and self.events.n > 0)


class LandingWriter:
    """Buffers per-shard tick tables and lands one Parquet file per shard per batch window."""

    def __init__(
        self,
        landing_root: Path,
        retention_hours: float | None = None,
        batch_minutes: float = DEFAULT_BATCH_MINUTES,
        compression: str = "zstd",
        *,
        keep: Callable[[Path], bool] | None = None,
        tick_minutes: float | None = None,
        instance_id: str | None = None,
    ) -> None:
        """``keep(path)`` true spares a landed batch from retention (one pending ingestion).

        ``tick_minutes``: the world's tick length, for the landed world clock; the
        stepping methods learn it, and until then one batch window stands in.
        ``instance_id``: the world instance the events belong to (module docstring);
        ``None`` makes a new random one (a writer not told its world is a new world).
        Set :attr:`instance_id` before the first tick is added, never after.
        """
        if not batch_minutes > 0:
            raise ValueError(f"batch_minutes must be > 0, got {batch_minutes}")
        if retention_hours is not None and not retention_hours > 0:
            raise ValueError(f"retention_hours must be > 0 or None, got {retention_hours}")
        self.landing_root = Path(landing_root)
        self.retention_hours = retention_hours
        self.batch_minutes = float(batch_minutes)
        self.compression = compression
        self.keep = keep
        if tick_minutes is not None and not tick_minutes > 0:
            raise ValueError(f"tick_minutes must be > 0 or None, got {tick_minutes}")
        self.tick_minutes = tick_minutes
        self._clock_window = -1  # the newest window whose end the landed world clock covers
        self._kept: dict[str, int] = {}  # per shard: batches its last retention pass kept
        self.stats = LandingStats()
        self._pending: dict[str, _Pending] = {}
        self._config_versions: dict[str, int] = {}
        self._newest_hour: dict[str, int] = {}  # per shard: hours since WORLD_EPOCH of its newest batch
        self._buffers: dict[str, EventBuffer] = {}
        self.instance_id = check_instance_id(instance_id) if instance_id is not None else new_instance_id()
        swept = [
            *sweep_stale_tmp(self.landing_root),
            *sweep_stale_tmp(self.landing_root.parent / "configs"),  # config_landing_path's tree
        ]
        self.stats.stale_tmp_removed = len(swept)
        if swept:
            log.warning(
                "removed %d stale temporary file(s) of killed writers under the landing area", len(swept)
            )

    def join_world(self, store: _MetaStore, options: object) -> str:
        """Land as the world server's world: take its stored instance id, or claim one for a
        new world (:func:`world_instance_id`). Call before the first tick is added."""
        self.instance_id = world_instance_id(store, self.landing_root, options)
        return self.instance_id

    # --------------------------------------------------------------- telemetry
    def add(self, shard: ShardSim, table: pa.Table, now: datetime | None = None) -> None:
        """Buffer one tick of ``shard`` (its :meth:`ShardSim.step` output) starting at game time ``now``.

        ``now`` defaults to the start of the tick the shard just simulated. A
        tick in a later batch window lands the shard's previous window first.
        The table's ``<shard>-`` event ids land as ``<shard>-<instance>-`` ids.
        """
        if not table.schema.equals(SCHEMA_V1):
            raise ValueError(f"table for shard {shard.shard_id} does not match SCHEMA_V1")
        tick_start = now if now is not None else self._tick_start(shard, table)
        pend = self._open_window(shard, tick_start)
        if table.num_rows:
            pend.tables.append(table)

    def add_step(self, shard: ShardSim, minutes: float, now: datetime) -> int:
        """Step ``shard`` one tick of ``minutes`` at ``now`` straight into its landing window.

        Equivalent to ``add(shard, shard.step(minutes, now), now)`` (same events,
        same files) without building a table per tick. Returns the tick's event count.
        """
        self._learn_tick(minutes)
        return shard.step_into(minutes, now, self._window_events(shard, now))

    def add_group_step(self, group: ShardGroup, minutes: float, now: datetime) -> list[int]:
        """Step every shard of ``group`` one fused tick at ``now`` into their landing windows.

        Equivalent to :meth:`add_step` for each shard of the group in turn (same
        events, same files: a shard's tick is the same in a group as alone),
        with one fused tick instead of one per shard. Returns the events per shard.
        """
        self._learn_tick(minutes)
        buffers = [self._window_events(shard, now) for shard in group.shards]
        return group.step_into(minutes, now, buffers)

    def _window_events(self, shard: ShardSim, now: datetime) -> EventBuffer:
        """The event buffer of the shard's window for a tick at ``now`` (the shard's emptied one reused)."""
        pend = self._open_window(shard, now)
        if pend.events is None:
            buf = self._buffers.pop(shard.shard_id, None)
            if buf is None or buf.instance != self.instance_id:
                buf = EventBuffer(shard.shard_id, shard.region, instance=self.instance_id)
            pend.events = buf
        return pend.events

    def _learn_tick(self, minutes: float) -> None:
        if self.tick_minutes is None or minutes > self.tick_minutes:
            self.tick_minutes = float(minutes)

    def _advance_clock(self, window: int) -> None:
        """Land the world clock up to the end of ``window`` before that window's batch lands.

        Before, not after: an ingest that sees the batch then always sees a clock
        covering it. The window's end (not the batch's newest ``ts``) so a
        corrupt batch's future timestamps never move the clock.
        """
        if window <= self._clock_window:
            return
        end = WORLD_EPOCH + timedelta(minutes=(window + 1) * self.batch_minutes)
        tick = self.tick_minutes if self.tick_minutes is not None else self.batch_minutes
        advance_world_clock(self.landing_root, end, tick * 60.0)
        self._clock_window = window

    def _open_window(self, shard: ShardSim, tick_start: datetime) -> _Pending:
        """The shard's pending window for a tick at ``tick_start`` (landing the previous one first)."""
        self._record_config_if_changed(shard)
        mode = shard.consume_corrupt_telemetry()
        window = self._window(tick_start)
        pend = self._pending.get(shard.shard_id)
        carry: str | None = None
        if pend is not None and pend.window != window:
            # A corrupt fault raised in a window without data (shard down) waits for data.
            carry = None if pend.has_data else pend.corrupt
            self._land(shard.shard_id, pend)
            pend = None
        if pend is None:
            pend = self._pending[shard.shard_id] = _Pending(window, corrupt=carry)
        if mode is not None:
            pend.corrupt = corrupt_mode(mode)
        return pend

    def add_tick(self, shards: Mapping[str, ShardSim], tables: Mapping[str, pa.Table], now: datetime) -> None:
        """Buffer one :meth:`World.step` result (``tables`` by shard id) for the tick at ``now``."""
        for sid, table in tables.items():
            self.add(shards[sid], table, now)

    def flush(self) -> None:
        """Land every buffered window now (end of a run, or before a snapshot)."""
        for sid, pend in list(self._pending.items()):
            self._land(sid, pend)
            if pend.corrupt is None or pend.landed:
                del self._pending[sid]

    @staticmethod
    def _tick_start(shard: ShardSim, table: pa.Table) -> datetime:
        if table.num_rows:
            return table.column("ts")[0].as_py()
        return shard.clock  # an empty (down) tick: any instant inside the window will do

    def _window(self, ts: datetime) -> int:
        return int((ts - WORLD_EPOCH).total_seconds() // (self.batch_minutes * 60))

    def _land(self, shard_id: str, pend: _Pending) -> None:
        if not pend.has_data:
            return  # nothing landed for an empty window (a corrupt fault waits for data)
        start = WORLD_EPOCH + timedelta(minutes=pend.window * self.batch_minutes)
        parts = [stamp_instance(t, shard_id, self.instance_id) for t in pend.tables]
        kinds: dict[str, int] = {}  # events per kind: from the buffer's codes, not by hashing strings
        for part in parts:
            for item in pc.value_counts(part.column("kind")).to_pylist():
                kinds[item["values"]] = kinds.get(item["values"], 0) + item["counts"]
        if pend.events is not None:
            if pend.events.n:
                for kind, n in pend.events.kind_counts().items():
                    kinds[kind] = kinds.get(kind, 0) + n
                parts.append(pend.events.to_table())
            self._buffers[shard_id] = pend.events  # emptied: reused by the shard's next window
            pend.events = None
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        batch_id = f"{start:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        path = landing_path(self.landing_root, start, shard_id, batch_id)
        self._advance_clock(pend.window)
        if pend.corrupt is not None:
            self._land_corrupt(table, path, pend.corrupt)
        else:
            write_batch_atomic(table, path, compression=self.compression)
            self.stats.events += table.num_rows
            for kind, n in kinds.items():
                self.stats.kinds[kind] = self.stats.kinds.get(kind, 0) + n
        self.stats.files += 1
        self.stats.bytes += path.stat().st_size
        pend.tables = []
        pend.landed = True
        hour = int((start - WORLD_EPOCH).total_seconds() // 3600)
        newest = self._newest_hour.get(shard_id)
        if newest is None or hour > newest:
            self._newest_hour[shard_id] = hour
            self._enforce_retention(shard_id)

    # ------------------------------------------------------------- corruption
    def _land_corrupt(self, table: pa.Table, path: Path, mode: str) -> None:
        """Land ``table`` damaged in ``mode``, atomically like any other batch."""
        self.stats.corrupt_batches += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "truncated":
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression=self.compression)
            data = sink.getvalue().to_pybytes()
            write_bytes_atomic(data[: max(len(data) // 2, 1)], path)
            return
        n = table.num_rows
        # Every tenth row (at least one): deterministic, so a test knows how many to expect.
        bad = np.zeros(n, dtype=bool)
        bad[:: max(round(1 / CORRUPT_ROW_SHARE), 1)] = True
        mask = pa.array(bad)
        cols = {name: table.column(name) for name in table.column_names}
        if mode == "bad_values":
            cols["kind"] = pc.if_else(mask, pa.scalar(UNKNOWN_KIND), cols["kind"])
            amount = pc.fill_null(cols["amount"], 1)
            cols["amount"] = pc.if_else(mask, pc.negate(pc.abs(amount)), cols["amount"])
        elif mode == "null_required":
            # Kind-required fields (nullable columns) go missing: player_id, amount, item_id.
            for name in ("player_id", "amount", "item_id", "tick_ms"):
                col = cols[name]
                cols[name] = pc.if_else(mask, pa.scalar(None, type=col.type), col)
        elif mode == "future_ts":
            shifted = pc.add(cols["ts"], pa.scalar(FUTURE_SHIFT, type=pa.duration("us")))
            cols["ts"] = pc.if_else(mask, shifted, cols["ts"])
        else:  # pragma: no cover - CORRUPT_MODES is closed
            raise ValueError(f"unknown corruption mode {mode!r}")
        bad_table = pa.Table.from_arrays([cols[c] for c in SCHEMA_V1.names], schema=SCHEMA_V1)
        write_batch_atomic(bad_table, path, compression=self.compression)
        self.stats.events += bad_table.num_rows

    # --------------------------------------------------------------- retention
    def _enforce_retention(self, shard_id: str) -> None:
        """Delete ``shard_id``'s batches older than the retention (except those ``keep`` spares), then empty directories."""
        newest = self._newest_hour.get(shard_id)
        if self.retention_hours is None or newest is None or not self.landing_root.is_dir():
            return
        cutoff = newest - self.retention_hours
        kept = 0
        for date_dir in sorted(self.landing_root.glob("date=*")):
            try:
                day = datetime.fromisoformat(date_dir.name.removeprefix("date=") + "T00:00:00+00:00")
            except ValueError:
                continue  # not ours: leave foreign directories alone
            if int((day - WORLD_EPOCH).total_seconds() // 3600) >= cutoff:
                continue  # no hour of this day is old enough
            for hour_dir in sorted(date_dir.glob("hour=*")):
                try:
                    hh = int(hour_dir.name.removeprefix("hour="))
                except ValueError:
                    continue
                hour = int(((day - WORLD_EPOCH).total_seconds()) // 3600) + hh
                if hour >= cutoff:
                    continue
                shard_dir = hour_dir / f"shard={shard_id}"
                if shard_dir.is_dir():
                    kept += self._expire(shard_dir)
                _remove_if_empty(hour_dir)
            _remove_if_empty(date_dir)
        self._kept[shard_id] = kept
        self.stats.kept_files = sum(self._kept.values())
        if kept:
            log.warning(
                "retention (%g game h): kept %d batch(es) of shard %s past the retention: not yet ingested",
                self.retention_hours,
                kept,
                shard_id,
            )

    def _expire(self, shard_dir: Path) -> int:
        """Delete an expired partition's batches, sparing those ``keep`` says to; return how many were kept."""
        if self.keep is None:
            self.stats.deleted_files += sum(1 for _ in shard_dir.glob("*.parquet"))
            shutil.rmtree(shard_dir, ignore_errors=True)
            return 0
        kept = 0
        for batch in sorted(shard_dir.glob("*.parquet")):
            if self.keep(batch):
                kept += 1
                continue
            batch.unlink(missing_ok=True)
            self.stats.deleted_files += 1
        if not kept:
            shutil.rmtree(shard_dir, ignore_errors=True)  # with any temporary litter
        return kept

    # ----------------------------------------------------------------- configs
    def record_config(
        self, shard: ShardSim, source: str | None = None, valid_from: datetime | None = None
    ) -> Path:
        """Land the shard's config in force (one row of the config change feed)."""
        params = shard.params.to_vector()
        row: dict[str, list] = {
            "shard_id": [shard.shard_id],
            "region": [shard.region],
            "config_version": [shard.config_version],
            "valid_from": [valid_from if valid_from is not None else from_us(shard.config_valid_from_us)],
            "capacity": [shard.capacity],
            "source": [source if source is not None else shard.config_source],
        }
        for name, value in zip(config_columns(), params, strict=True):
            row[name] = [float(value)]
        table = pa.Table.from_pydict(row, schema=config_schema())
        path = config_landing_path(self.landing_root, shard.shard_id, shard.config_version)
        write_atomic(table, path, compression=self.compression)
        self._config_versions[shard.shard_id] = shard.config_version
        self.stats.config_files += 1
        return path

    def _record_config_if_changed(self, shard: ShardSim) -> None:
        if self._config_versions.get(shard.shard_id) != shard.config_version:
            self.record_config(shard)


def _remove_if_empty(directory: Path) -> None:
    """rmdir that tolerates a directory another writer just filled or removed."""
    try:
        directory.rmdir()
    except OSError:
        pass
