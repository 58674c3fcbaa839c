"""Telemetry schema version 1: the contract between game shards and the lake.

One wide table; columns that do not apply to an event kind are null. The world
server writes it, Kinesis Firehose writes it in production, and the bronze
validator (assets/telemetry) checks every landed row against what is declared
here: the types, the kind enum, the fields each kind requires and the value
ranges. Nothing else in the project restates these facts.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1

KINDS: tuple[str, ...] = (
    "session_start",
    "session_end",
    "quest_start",
    "quest_stage",
    "quest_complete",
    "quest_abandon",
    "combat_death",
    "currency_source",
    "currency_sink",
    "item_drop",
    "trade",
    "server_tick",
    "reconnect",
)

SCHEMA_V1 = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("player_id", pa.int64()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("quest_id", pa.int32()),
        pa.field("stage", pa.int32()),
        pa.field("zone", pa.int32()),
        pa.field("x", pa.float32()),
        pa.field("y", pa.float32()),
        pa.field("cause", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("amount", pa.int64()),
        pa.field("item_id", pa.int32()),
        pa.field("price", pa.int64()),
        pa.field("tick_ms", pa.float32()),
        pa.field("players_online", pa.int32()),
        pa.field("config_version", pa.int32()),
    ],
    metadata={"aegis.telemetry.schema_version": str(SCHEMA_VERSION)},
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA_V1.names)

# Fields present on every event (besides the schema's non-nullable ones).
COMMON_REQUIRED: tuple[str, ...] = (
    "event_id",
    "ts",
    "schema_version",
    "region",
    "shard_id",
    "kind",
    "config_version",
)

# Fields each kind must carry (non-null) in addition to COMMON_REQUIRED.
REQUIRED_BY_KIND: dict[str, tuple[str, ...]] = {
    "session_start": ("player_id",),
    "session_end": ("player_id",),
    "quest_start": ("player_id", "quest_id", "stage"),
    "quest_stage": ("player_id", "quest_id", "stage"),
    "quest_complete": ("player_id", "quest_id", "stage"),
    "quest_abandon": ("player_id", "quest_id", "stage"),
    "combat_death": ("player_id", "zone", "x", "y", "cause"),
    "currency_source": ("player_id", "currency", "amount", "cause"),
    "currency_sink": ("player_id", "currency", "amount", "cause"),
    "item_drop": ("player_id", "item_id", "zone"),
    "trade": ("player_id", "item_id", "price", "currency"),
    "server_tick": ("tick_ms", "players_online"),
    "reconnect": ("player_id",),
}

# Inclusive value ranges a valid row respects (absurd values are quarantined).
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "player_id": (0, 2**40),
    "quest_id": (0, 10_000),
    "stage": (1, 64),
    "zone": (0, 255),
    "x": (0.0, 1024.0),
    "y": (0.0, 1024.0),
    "amount": (1, 10_000_000),
    "item_id": (0, 1_000_000),
    "price": (1, 100_000_000),
    "tick_ms": (0.0, 60_000.0),
    "players_online": (0, 10_000_000),
    "config_version": (1, 2**31 - 1),
}

# Longest string accepted per string column (oversized strings are quarantined).
MAX_STRING_LENGTH: dict[str, int] = {
    "event_id": 80,  # <shard, <= 40>-<world instance, 8>-<tick, 13>-<seq, 7> (aegis.world.sim_events)
    "region": 32,
    "shard_id": 64,
    "kind": 32,
    "cause": 64,
    "currency": 16,
}

CURRENCIES: tuple[str, ...] = ("gold", "gems")

# The world began at this instant (game time); earlier timestamps are impossible.
WORLD_EPOCH = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def landing_path(landing_root: Path, ts: datetime, shard_id: str, batch_id: str) -> Path:
    """``landing/telemetry/date=YYYY-MM-DD/hour=HH/shard=<id>/<batch-id>.parquet``."""
    return (
        landing_root / f"date={ts:%Y-%m-%d}" / f"hour={ts:%H}" / f"shard={shard_id}" / f"{batch_id}.parquet"
    )


def new_batch_id() -> str:
    return uuid.uuid4().hex


def write_atomic(table: pa.Table, path: Path, compression: str = "zstd", **write_options: Any) -> Path:
    """Write a Parquet file under a temporary name and rename it into place.

    The one atomic Parquet writer of the project (landing batches, bronze,
    quarantine, manifests): readers list ``*.parquet``; the temporary name starts
    with a dot and ends in ``.tmp`` so no reader ever sees a partial file, and
    ``os.replace`` is atomic on POSIX. ``write_options`` go to
    :func:`pyarrow.parquet.write_table` as they are (each caller keeps its own
    tuning); on any failure the temporary file is removed and the error re-raised,
    so a failed write leaves neither a partial file nor litter behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression, **write_options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write ``data`` under :func:`write_atomic`'s temporary name and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------ world clock
# The game clock runs faster than the wall clock (60x under ``aegis up``) and may be
# ahead of or behind it, so "an event from the future" cannot be judged by the wall
# clock. A world that lands telemetry also lands its clock beside the batches: the
# newest game time it has landed (or is landing) plus its tick length. The bronze
# validator bounds ``ts`` by it when the file exists, by the wall clock otherwise
# (a studio backend in production stamps real time).
WORLD_CLOCK_FILE = "_world_clock.json"


@dataclass(frozen=True)
class WorldClock:
    """The newest game time a world has landed, and the tick length of its writer."""

    game_time: datetime
    tick_seconds: float

    @property
    def bound(self) -> datetime:
        """No event landed so far can be later than this (before any skew allowance)."""
        return self.game_time + timedelta(seconds=self.tick_seconds)

    def to_json(self) -> str:
        return json.dumps({"game_time": self.game_time.isoformat(), "tick_seconds": self.tick_seconds})


def world_clock_path(landing_root: Path) -> Path:
    """``landing/telemetry/_world_clock.json`` (not a batch: readers list ``*.parquet`` only)."""
    return landing_root / WORLD_CLOCK_FILE


def read_world_clock(landing_root: Path) -> WorldClock | None:
    """The landed world clock, ``None`` when no world lands here; a damaged file is a clear error."""
    path = world_clock_path(landing_root)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        game_time = datetime.fromisoformat(data["game_time"])
        tick_seconds = float(data["tick_seconds"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"the world clock file {path} is damaged ({type(exc).__name__}: {exc}); "
            "the world rewrites it on its next landing, or delete it to judge timestamps by the wall clock"
        ) from exc
    if game_time.tzinfo is None:
        raise ValueError(f"the world clock file {path} holds a game time without a time zone: {raw!r}")
    if not (tick_seconds >= 0 and math.isfinite(tick_seconds)):
        raise ValueError(f"the world clock file {path} holds an invalid tick length {tick_seconds!r}")
    return WorldClock(game_time.astimezone(UTC), tick_seconds)


def advance_world_clock(landing_root: Path, game_time: datetime, tick_seconds: float) -> WorldClock:
    """Move the landed world clock forward to ``game_time`` (never back), atomically; return it.

    Several writers share one landing (the runner's worker processes, the live
    server): under a file lock, the clock becomes the latest of theirs, with the
    longest tick, so one writer's older clock never shrinks another's bound.
    A damaged clock file is replaced.
    """
    landing_root.mkdir(parents=True, exist_ok=True)
    # The lock is on the landing directory itself: no lock file for readers to trip over.
    fd = os.open(landing_root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = read_world_clock(landing_root)
        except ValueError:
            current = None
        clock = WorldClock(game_time.astimezone(UTC), float(tick_seconds))
        if current is not None:
            clock = WorldClock(
                max(current.game_time, clock.game_time), max(current.tick_seconds, clock.tick_seconds)
            )
        if clock != current:
            write_bytes_atomic(clock.to_json().encode(), world_clock_path(landing_root))
        return clock
    finally:
        os.close(fd)  # releases the lock


def empty_table() -> pa.Table:
    return SCHEMA_V1.empty_table()


# Why a session ended; ``churn`` means the player left the game for good.
SESSION_END_CAUSES: tuple[str, ...] = ("logout", "disconnect", "churn")

# ----------------------------------------------------------------- world configs
# The world parameters in force are not telemetry events: each shard lands one
# small Parquet file per config version (a change-data feed), so the warehouse can
# join every event's ``config_version`` to the parameters behind it.


def config_columns() -> list[str]:
    from aegis.domain import WorldParams

    return [f"p_{name}" for name in WorldParams.vector_names()]


def config_schema() -> pa.Schema:
    fields = [
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("config_version", pa.int32(), nullable=False),
        pa.field("valid_from", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("capacity", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # exploration | api | restore | initial
    ]
    fields += [pa.field(c, pa.float64(), nullable=False) for c in config_columns()]
    return pa.schema(fields)


def config_landing_path(landing_root: Path, shard_id: str, version: int) -> Path:
    """``landing/configs/shard=<id>/v<version:08d>.parquet`` beside ``landing/telemetry``."""
    return landing_root.parent / "configs" / f"shard={shard_id}" / f"v{version:08d}.parquet"


# ------------------------------------------------------------------ shard KPIs
# The columns of the ``fct_shard_kpis`` mart (one row per shard per KPI bucket):
# the world model's input. Parameters in force follow as ``config_columns()``.
KPI_BUCKET_MINUTES = 5
# Stage bands: quest stages 1-2 early, 3 mid, 4-5 late; zones 0-1 early, 2-3 mid, 4-5 late.
STAGE_BANDS: dict[str, tuple[int, ...]] = {"early": (1, 2), "mid": (3,), "late": (4, 5)}
ZONE_BANDS: dict[str, tuple[int, ...]] = {"early": (0, 1), "mid": (2, 3), "late": (4, 5)}

KPI_KEY_COLUMNS: tuple[str, ...] = ("shard_id", "region", "bucket_start", "config_version")
KPI_COLUMNS: tuple[str, ...] = (
    "players_online",  # mean of server_tick.players_online
    "sessions_started",
    "deaths_early",
    "deaths_mid",
    "deaths_late",
    "quest_starts",
    "completions_early",  # quest_stage events (a stage finished) per stage band
    "completions_mid",
    "completions_late",
    "quest_completions",
    "abandons_early",
    "abandons_mid",
    "abandons_late",
    "abandon_rate",  # abandons / (abandons + quest_completions), 0 when none
    "currency_sources",  # sum of gold amounts from sources
    "currency_sinks",
    "net_inflow",  # sources - sinks
    "money_supply",  # cumulative net inflow per shard up to this bucket
    "trade_volume",  # sum of gold trade prices
    "trades",
    "price_index",  # mean trade price / the shard's mean trade price in its first hour
    "inflation",  # relative change of price_index against the previous bucket
    "velocity",  # trade_volume / money_supply
    "tick_p50_ms",
    "tick_p95_ms",
    "tick_p99_ms",
    "saturation",  # players_online / capacity
    "reconnects",
    "reconnect_rate",  # reconnects / players_online
    "churned",  # session_end with cause 'churn'
    "churn_rate",  # churned / players_online
)
