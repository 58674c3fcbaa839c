"""A synthetic bronze lake: SCHEMA_V1 events and world configs, written fast.

Why this exists beside the world simulator: the warehouse must be tested and
benchmarked at sizes the simulator cannot reach on a laptop in seconds (the
marts benchmark needs 10 million events), and its tests must not depend on
another area's progress. The generator is vectorised numpy, writes exactly the
bronze contract (SCHEMA_V1 + ``batch_id`` + ``ingested_at`` under
``bronze/date=YYYY-MM-DD/<batch-id>.parquet``) and the config change feed
(``landing/configs/shard=<id>/v<version>.parquet``), and can inject the faults the
marts must show (a crashed shard, a latency spike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aegis.config import AegisPaths
from aegis.domain import N_STAGES, N_ZONES, WorldParams
from aegis.telemetry import (
    SCHEMA_V1,
    WORLD_EPOCH,
    config_landing_path,
    config_schema,
    new_batch_id,
    write_atomic,
)

SERVER_TICK_SECONDS = 10  # one server_tick per shard every 10 game seconds
DEATH_CAUSES: tuple[str, ...] = ("mob", "elite", "fall", "pvp")
SOURCE_CAUSES: tuple[str, ...] = ("loot", "quest_reward", "vendor_sale")
SINK_CAUSES: tuple[str, ...] = ("repair", "fee", "tax")
# Per player-hour event rates (Poisson means).
RATES: dict[str, float] = {
    "session_start": 1.0,
    "quest_attempt": 1.5,
    "combat_death": 3.0,
    "currency_source": 12.0,
    "currency_sink": 8.0,
    "item_drop": 6.0,
    "trade": 2.0,
    "reconnect": 0.05,
}
# Probability of abandoning at each stage (given the stage was reached).
ABANDON_P: tuple[float, ...] = (0.10, 0.08, 0.15, 0.12, 0.06)
STAGE_MINUTES = 6.0


@dataclass(frozen=True)
class Fault:
    """A window of game time in which one shard misbehaves."""

    shard_id: str
    kind: str  # "crash" (no events at all) or "latency" (tick_ms x 20)
    start: datetime
    end: datetime


@dataclass
class LakeSummary:
    events: int = 0
    batches: int = 0
    shards: list[str] = field(default_factory=list)
    start: datetime = WORLD_EPOCH
    end: datetime = WORLD_EPOCH


def _shard_ids(n_shards: int) -> list[tuple[str, str]]:
    regions = ("eu-west-1", "us-east-1", "ap-northeast-1")
    return [
        (f"{regions[i % len(regions)].split('-')[0]}-{i + 1}", regions[i % len(regions)])
        for i in range(n_shards)
    ]


def write_configs(
    paths: AegisPaths,
    shard_id: str,
    region: str,
    versions: list[tuple[int, datetime, WorldParams]],
    capacity: int,
) -> None:
    """Land one config file per version, as the world server does."""
    for version, valid_from, params in versions:
        row: dict[str, list[object]] = {
            "shard_id": [shard_id],
            "region": [region],
            "config_version": [version],
            "valid_from": [valid_from],
            "capacity": [capacity],
            "source": ["initial" if version == 1 else "api"],
        }
        for name, value in zip(WorldParams.vector_names(), params.to_vector(), strict=True):
            row[f"p_{name}"] = [float(value)]
        write_atomic(
            pa.table(row, schema=config_schema()),
            config_landing_path(paths.landing_telemetry, shard_id, version),
        )


HOUR_US = 3_600_000_000


class _HourEvents:
    """One shard-hour's event tables as they are drawn: the generator, the fixed columns, the parts so far."""

    def __init__(
        self,
        rng: np.random.Generator,
        shard_id: str,
        region: str,
        hour_start: datetime,
        players: int,
        config_version: int,
    ) -> None:
        self.rng = rng
        self.players = players
        self.t0 = np.datetime64(hour_start.replace(tzinfo=None), "us")
        self.player_base = 1_000_000 * (sum(map(ord, shard_id)) % 1000)  # stable, distinct per shard
        self.fixed = {
            "schema_version": 1,
            "region": region,
            "shard_id": shard_id,
            "config_version": config_version,
        }
        self.parts: list[pa.Table] = []

    def add(self, kind: str, offsets_us: np.ndarray, **cols: np.ndarray) -> None:
        """One kind's events as a SCHEMA_V1 table; absent columns are null."""
        n = len(offsets_us)
        if n == 0:
            return
        ts = (self.t0 + offsets_us.astype("timedelta64[us]")).astype("datetime64[us]")
        arrays = []
        for f in SCHEMA_V1:
            if f.name == "ts":
                arrays.append(pa.array(ts, type=pa.timestamp("us")).cast(f.type))
            elif f.name == "kind":
                arrays.append(pa.array([kind] * n, type=f.type))
            elif f.name in self.fixed:
                arrays.append(pa.array([self.fixed[f.name]] * n, type=f.type))
            elif f.name in cols:
                arrays.append(pa.array(cols[f.name], type=f.type))
            else:
                arrays.append(pa.nulls(n, f.type))
        self.parts.append(pa.Table.from_arrays(arrays, schema=SCHEMA_V1))

    def uniform(self, n: int) -> np.ndarray:
        """``n`` offsets spread evenly over the hour."""
        return self.rng.integers(0, HOUR_US, n)

    def player_ids(self, n: int) -> np.ndarray:
        """``n`` players of this shard, drawn with replacement."""
        return self.rng.integers(0, self.players, n) + self.player_base

    def n_of(self, rate_key: str, scale: float = 1.0) -> int:
        """How many events of a kind this hour: Poisson around the per-player-hour rate."""
        return int(self.rng.poisson(RATES[rate_key] * self.players * scale))


def _ticks_and_sessions(ev: _HourEvents) -> None:
    """Server ticks on a steady cadence (players online wander around the population); logins and outs."""
    rng, players = ev.rng, ev.players
    n_ticks = 3600 // SERVER_TICK_SECONDS
    tick_off = np.arange(n_ticks, dtype=np.int64) * SERVER_TICK_SECONDS * 1_000_000
    tick_ms = rng.lognormal(np.log(28.0), 0.35, n_ticks).astype(np.float32)
    online = np.clip(rng.normal(players * 0.8, players * 0.03, n_ticks), 0, None).astype(np.int32)
    ev.add("server_tick", tick_off, tick_ms=tick_ms, players_online=online)

    n = ev.n_of("session_start")
    ev.add("session_start", ev.uniform(n), player_id=ev.player_ids(n))
    n = ev.n_of("session_start")
    ev.add(
        "session_end",
        ev.uniform(n),
        player_id=ev.player_ids(n),
        cause=rng.choice(np.array(("logout", "disconnect", "churn"), dtype=object), n, p=(0.9, 0.08, 0.02)),
    )
    n = ev.n_of("reconnect")
    ev.add("reconnect", ev.uniform(n), player_id=ev.player_ids(n))


def _quests(ev: _HourEvents, params: WorldParams) -> None:
    """Quest attempts: start at stage 1, finish stages until abandoning or completing."""
    rng = ev.rng
    n = ev.n_of("quest_attempt")
    start = ev.uniform(n)
    pid = ev.player_ids(n)
    quest = rng.integers(1, 21, n)
    difficulty = np.asarray(params.quest_difficulty)
    reached = np.full(n, N_STAGES + 1)  # stage abandoned at, N_STAGES+1 = completed
    alive = np.ones(n, dtype=bool)
    for s in range(N_STAGES):
        p = min(0.95, ABANDON_P[s] * difficulty[s])
        quit_here = alive & (rng.random(n) < p)
        reached[quit_here] = s + 1
        alive &= ~quit_here
    stage_us = int(STAGE_MINUTES * 60e6 * params.quest_pacing)
    ev.add("quest_start", start, player_id=pid, quest_id=quest, stage=np.ones(n, dtype=np.int64))
    finished = reached - 1  # stages finished per attempt
    rep = np.repeat(np.arange(n), finished)
    stage_no = np.concatenate([np.arange(1, k + 1) for k in finished]) if n else np.array([], dtype=np.int64)
    ev.add(
        "quest_stage",
        start[rep] + stage_no * stage_us,
        player_id=pid[rep],
        quest_id=quest[rep],
        stage=stage_no,
    )
    done = reached > N_STAGES
    ev.add(
        "quest_complete",
        start[done] + N_STAGES * stage_us + 1,
        player_id=pid[done],
        quest_id=quest[done],
        stage=np.full(int(done.sum()), N_STAGES),
    )
    ab = ~done
    ev.add(
        "quest_abandon",
        start[ab] + (reached[ab] - 1) * stage_us + stage_us // 2,
        player_id=pid[ab],
        quest_id=quest[ab],
        stage=reached[ab],
    )


def _deaths(ev: _HourEvents, params: WorldParams) -> None:
    """Deaths cluster around a hotspot per zone; aggression scales the rate."""
    rng = ev.rng
    n = ev.n_of("combat_death", params.npc_aggression)
    zone = rng.integers(0, N_ZONES, n)
    hot = np.array([[200 + 120 * z, 800 - 100 * z] for z in range(N_ZONES)], dtype=np.float64)
    xy = np.clip(hot[zone] + rng.normal(0, 60, (n, 2)), 0, 1023.9)
    ev.add(
        "combat_death",
        ev.uniform(n),
        player_id=ev.player_ids(n),
        zone=zone,
        x=xy[:, 0].astype(np.float32),
        y=xy[:, 1].astype(np.float32),
        cause=rng.choice(np.array(DEATH_CAUSES, dtype=object), n),
    )


def _economy(ev: _HourEvents, params: WorldParams, hour_index: int) -> None:
    """Gold faucets and sinks, item drops; trade prices drift up slowly (inflation)."""
    rng = ev.rng
    for kind, key, causes, mult in (
        ("currency_source", "currency_source", SOURCE_CAUSES, params.source_multiplier),
        ("currency_sink", "currency_sink", SINK_CAUSES, params.sink_multiplier),
    ):
        n = ev.n_of(key)
        ev.add(
            kind,
            ev.uniform(n),
            player_id=ev.player_ids(n),
            currency=rng.choice(np.array(("gold", "gems"), dtype=object), n, p=(0.95, 0.05)),
            amount=np.maximum(1, rng.lognormal(np.log(50 * mult + 1), 0.6, n)).astype(np.int64),
            cause=rng.choice(np.array(causes, dtype=object), n),
        )
    n = ev.n_of("item_drop", params.drop_rate)
    ev.add(
        "item_drop",
        ev.uniform(n),
        player_id=ev.player_ids(n),
        item_id=rng.integers(1, 500, n),
        zone=rng.integers(0, N_ZONES, n),
    )
    n = ev.n_of("trade")
    drift = 1.0 + 0.002 * hour_index
    ev.add(
        "trade",
        ev.uniform(n),
        player_id=ev.player_ids(n),
        item_id=rng.integers(1, 500, n),
        price=np.maximum(1, rng.lognormal(np.log(200 * drift), 0.5, n)).astype(np.int64),
        currency=np.full(n, "gold", dtype=object),
    )


def _apply_faults(table: pa.Table, shard_id: str, faults: list[Fault], run_end: datetime) -> pa.Table:
    """This shard's faults (crash: drop the window; latency: tick_ms x 20), minus anything from the future."""
    ts = table.column("ts")
    keep = pa.array(np.ones(table.num_rows, dtype=bool))
    for fault in faults:
        if fault.shard_id != shard_id:
            continue
        inside = pc.and_(pc.greater_equal(ts, pa.scalar(fault.start)), pc.less(ts, pa.scalar(fault.end)))
        if fault.kind == "crash":
            keep = pc.and_(keep, pc.invert(inside))
        elif fault.kind == "latency":
            slow = pc.if_else(
                inside,
                pc.multiply(table.column("tick_ms"), pa.scalar(20.0, pa.float32())),
                table.column("tick_ms"),
            )
            table = table.set_column(
                table.schema.get_field_index("tick_ms"), SCHEMA_V1.field("tick_ms"), slow
            )
        else:
            raise ValueError(f"unknown synthetic fault kind {fault.kind!r}; expected 'crash' or 'latency'")
    # Nothing from the future: quests still running at the end of the run stay open.
    keep = pc.and_(keep, pc.less(ts, pa.scalar(run_end)))
    return table.filter(keep)


def _number_events(table: pa.Table, shard_id: str, hour_start: datetime) -> pa.Table:
    """Order by time and give each event its id: ``<shard>-<YYYYmmddHH>-<n>``."""
    table = table.sort_by("ts")
    n = table.num_rows
    prefix = f"{shard_id}-{hour_start:%Y%m%d%H}-"
    ids = pc.binary_join_element_wise(
        pa.array([prefix] * n, pa.string()), pc.cast(pa.array(np.arange(n)), pa.string()), ""
    )
    return table.set_column(0, SCHEMA_V1.field("event_id"), ids)


def _hour_table(
    rng: np.random.Generator,
    shard_id: str,
    region: str,
    hour_start: datetime,
    players: int,
    config_version: int,
    params: WorldParams,
    faults: list[Fault],
    hour_index: int,
    run_end: datetime,
) -> pa.Table:
    """All events of one shard in one game hour, as one Arrow table."""
    ev = _HourEvents(rng, shard_id, region, hour_start, players, config_version)
    # The draw order is the generator's contract: the same seed must give the same lake.
    _ticks_and_sessions(ev)
    _quests(ev, params)
    _deaths(ev, params)
    _economy(ev, params, hour_index)
    table = _apply_faults(pa.concat_tables(ev.parts), shard_id, faults, run_end)
    return _number_events(table, shard_id, hour_start)


def write_synthetic_lake(
    paths: AegisPaths,
    *,
    hours: int = 2,
    n_shards: int = 3,
    players_per_shard: int = 40,
    seed: int = 7,
    faults: list[Fault] | None = None,
    config_change_at_hour: int | None = None,
    start: datetime = WORLD_EPOCH,
    ingested_at: datetime | None = None,
) -> LakeSummary:
    """Write ``hours`` game hours of bronze for ``n_shards`` shards, one batch per shard-hour.

    ``config_change_at_hour`` lands a second config version (harder quests) on
    every shard from that hour on, so joins on ``config_version`` are exercised.
    """
    if hours < 1 or n_shards < 1 or players_per_shard < 1:
        raise ValueError("hours, n_shards and players_per_shard must all be >= 1")
    rng = np.random.default_rng(seed)
    faults = faults or []
    paths.ensure()
    summary = LakeSummary(start=start, end=start + timedelta(hours=hours))
    base = WorldParams()
    harder = base.model_copy(update={"quest_difficulty": [1.4] * N_STAGES, "npc_aggression": 1.3})
    ingest_clock = ingested_at or datetime.now(UTC)
    for shard_id, region in _shard_ids(n_shards):
        summary.shards.append(shard_id)
        versions = [(1, start, base)]
        if config_change_at_hour is not None:
            versions.append((2, start + timedelta(hours=config_change_at_hour), harder))
        write_configs(paths, shard_id, region, versions, capacity=int(players_per_shard * 1.25))
        for h in range(hours):
            hour_start = start + timedelta(hours=h)
            version, params = 1, base
            if config_change_at_hour is not None and h >= config_change_at_hour:
                version, params = 2, harder
            table = _hour_table(
                rng, shard_id, region, hour_start, players_per_shard, version, params, faults, h, summary.end
            )
            if table.num_rows == 0:
                continue
            batch = new_batch_id()
            table = table.append_column("batch_id", pa.array([batch] * table.num_rows, pa.string()))
            stamp = pa.array(
                [ingest_clock + timedelta(seconds=h)] * table.num_rows, pa.timestamp("us", tz="UTC")
            )
            table = table.append_column("ingested_at", stamp)
            write_atomic(table, paths.bronze / f"date={hour_start:%Y-%m-%d}" / f"{batch}.parquet")
            summary.events += table.num_rows
            summary.batches += 1
    return summary
