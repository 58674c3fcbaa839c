"""The bundled game world: shards of a persistent population, simulated tick by tick.

One :class:`ShardSim` holds a shard's players as numpy arrays (one slot per
player), its :class:`~aegis.domain.WorldParams`, its own PCG64 generator and its
fault state; :meth:`ShardSim.step` advances it one tick and returns that tick's
telemetry in SCHEMA_V1. :class:`World` is the set of shards of all regions on
one clock. docs/world.md explains the model and why it reacts as it does.

Common random numbers: every tick draws the same fixed-size block whatever the
parameters and the state: one uint32 per population slot for each of the
``_N_PRIMARY`` Bernoulli streams (one ``random_raw`` call) plus ``_N_GLOBAL``
server values, the last of which keys a counter-based generator for the
secondary uniforms (where in the tick, which item, how much...) that only the
players with an event need. Two copies of one shard state with one generator
state therefore consume the generator identically, so a changed copy differs
from an unchanged one only by the change, not by noise (the simulation gate
relies on this).

Speed: the tick touches every slot only for the few cheap full passes it needs
(logins, arrivals, offline engagement drift); everything else runs on the
online players, and per-player probabilities are thinned (compare the uniform
with the bound of the probability first, compute the exact probability only
for the few candidates). Events go straight into an
:class:`~aegis.world.sim_events.EventBuffer`; docs/world.md has the figures.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from aegis.domain import N_STAGES, N_ZONES, SAVE_SCHEMA_VERSION, Fault, FaultKind, Integrity, WorldParams
from aegis.telemetry import WORLD_EPOCH
from aegis.world import sim_catalog as C
from aegis.world.sim_events import (
    CAUSE_CODE,
    CURRENCY_CODE,
    INT32_NULL,
    KIND_CODE,
    KIND_TS_RANK,
    PLAYER_SPREAD,
    EventBuffer,
)

REGIONS: tuple[str, ...] = ("eu-west", "us-east", "ap-southeast")
DEFAULT_PLAYERS_PER_SHARD = 5000
DEFAULT_SHARDS_PER_REGION = 3
DEFAULT_TICK_MINUTES = 1.0
DEFAULT_START = WORLD_EPOCH + timedelta(days=1)
STATE_FORMAT = 1  # version of the state_dict layout

_US = 1_000_000
_EPOCH_US = int(WORLD_EPOCH.timestamp()) * _US
# Player ids: shard_index << _PLAYER_SHIFT | sequence; 2**12 shards x 2**28 players < 2**40.
_PLAYER_SHIFT = 28
_MAX_SHARD_INDEX = 2**12 - 1

# Primary uniforms: one uint32 per population slot per stream per tick, drawn in a single
# ``random_raw`` call whatever the state (fixed order and size!). Every Bernoulli decision
# that may concern many players reads one of these.
_PRIMARY = (
    "recon",
    "login",
    "qstart",
    "death",
    "abandon",
    "stage",
    "drop",
    "loot",
    "vsell",
    "vbuy",
    "fee",
    "gem_buy",
    "gem_shop",
    "trade",
    "exploit",
    "logout",
    "disc",
    "arrive",
)
_P = {name: i for i, name in enumerate(_PRIMARY)}
_N_PRIMARY = len(_PRIMARY)
assert _N_PRIMARY % 2 == 0  # two uint32 per raw 64-bit draw
# Secondary uniforms: what a player's triggered event needs next (where in the tick, which
# quest, item, cause, amount, partner...). Few players need them, so they are computed on
# demand by a counter-based generator keyed by the tick (see ShardSim._sec), never drawn.
_SECONDARY = (
    "ts",
    "qpick",
    "dcause",
    "hot",
    "x",
    "y",
    "reward",
    "gems_q",
    "item",
    "loot_amt",
    "vitem",
    "vbuy_amt",
    "pack",
    "cost",
    "titem",
    "partner",
    "price",
    "exploit_amt",
    "churn",
    "new_skill",
    "new_eng",
)
_Q = {name: i for i, name in enumerate(_SECONDARY)}
_N_SECONDARY = len(_SECONDARY)
_N_GLOBAL = 5  # map event start, map event zone, tick noise (2 for Box-Muller), tick key
_INV32 = 2.0**-32
_INV53 = 2.0**-53
_TWO32 = 2**32
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MAX_ENGAGEMENT = 1.0  # engagement is clipped to [0.02, 1]
_NO_SLOTS = np.empty(0, dtype=np.int64)

_ARRAY_FIELDS: dict[str, np.dtype] = {
    "player_id": np.dtype(np.int64),
    "active": np.dtype(bool),
    "on": np.dtype(bool),
    "pending": np.dtype(bool),
    "pending_until_us": np.dtype(np.int64),
    "skill": np.dtype(np.float32),
    "engagement": np.dtype(np.float32),
    "level": np.dtype(np.int16),
    "gold": np.dtype(np.int64),
    "gems": np.dtype(np.int64),
    "inventory": np.dtype(np.int32),
    "quest_id": np.dtype(np.int32),
    "stage": np.dtype(np.int8),
    "stage_deaths": np.dtype(np.int16),
    "ref_stock": np.dtype(np.float64),
}
_SCALAR_FIELDS = (
    "shard_id",
    "region",
    "capacity",
    "shard_index",
    "config_version",
    "config_source",
    "config_valid_from_us",
    "next_player_seq",
    "clock_us",
    "price_level",
    "money_ref",
    "event_until_us",
    "event_zone",
    "down_until_us",
    "latency_until_us",
    "latency_mult",
    "exploit_until_us",
    "exploit_mag",
    "last_tick_ms",
)


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    if ts.tzinfo is None:
        raise ValueError(f"game time must be timezone-aware (UTC), got naive {ts.isoformat()}")
    delta = ts - datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def from_us(us: int) -> datetime:
    return WORLD_EPOCH + timedelta(microseconds=us - _EPOCH_US)


def _p(rate_per_min: np.ndarray | float, minutes: float) -> np.ndarray | float:
    """Probability of at least one Poisson event in ``minutes`` at ``rate_per_min``."""
    return -np.expm1(-np.asarray(rate_per_min, dtype=np.float64) * minutes)


def _pc(rate_per_min: float, minutes: float) -> float:
    """:func:`_p` of a scalar rate, in plain floats (no numpy call for a scalar)."""
    return -math.expm1(-rate_per_min * minutes)


def _thr(p: float) -> int:
    """The uint32 threshold of probability ``p``: ``u < _thr(p)`` exactly when ``u * 2**-32 < p``."""
    if not p > 0.0:
        return 0
    if p >= 1.0:
        return _TWO32
    return math.ceil(p * 4294967296.0)


def _thr_vec(p: np.ndarray) -> np.ndarray:
    """:func:`_thr` of each element (int64, so that 2**32 fits)."""
    return np.ceil(np.clip(p, 0.0, 1.0) * 4294967296.0).astype(np.int64)


def _bound(p: float) -> float:
    """A probability a hair above ``p``, so that no vectorised rounding of p can exceed it (thinning)."""
    return min(1.0, p * (1.0 + 1e-9) + 1e-15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: a well-mixed 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _checksum(*cols: np.ndarray) -> str:
    """Order-independent checksum of rows (sum mod 2**64 of a per-row hash), as 16 hex digits."""
    with np.errstate(over="ignore"):
        h = np.zeros(len(cols[0]), dtype=np.uint64)
        for c in cols:
            h = _mix64(h ^ _mix64(c.astype(np.int64).view(np.uint64)))
        total = int(h.sum(dtype=np.uint64)) if len(h) else 0
    return f"{total:016x}"


class ShardSim:
    """One shard: its population arrays, params, generator, clock and fault state.

    Public attributes: ``shard_id``, ``region``, ``capacity`` (players online the
    shard serves before logins queue), ``params``, ``config_version``,
    ``config_source`` (who set the config: initial | api | exploration | restore),
    ``shard_index`` (makes player ids unique across shards).
    """

    def __init__(
        self,
        shard_id: str,
        region: str,
        *,
        seed: int | np.random.SeedSequence = 7,
        players: int = DEFAULT_PLAYERS_PER_SHARD,
        capacity: int | None = None,
        params: WorldParams | None = None,
        config_version: int = 1,
        shard_index: int = 0,
        start: datetime = DEFAULT_START,
    ) -> None:
        if not shard_id or len(shard_id) > 40:
            raise ValueError(f"shard_id must be 1..40 characters, got {shard_id!r}")
        if players < 1:
            raise ValueError(f"a shard needs at least one player slot, got players={players}")
        if not 0 <= shard_index <= _MAX_SHARD_INDEX:
            raise ValueError(f"shard_index must be in [0, {_MAX_SHARD_INDEX}], got {shard_index}")
        if config_version < 1:
            raise ValueError(f"config_version must be >= 1, got {config_version}")
        self.shard_id = shard_id
        self.region = region
        self.capacity = (
            int(capacity) if capacity is not None else max(1, int(players * C.DEFAULT_CAPACITY_SHARE))
        )
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.shard_index = int(shard_index)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.params = params if params is not None else WorldParams()
        self.config_version = int(config_version)
        self.config_source = "initial"
        self.clock_us = to_us(start)
        self.config_valid_from_us = self.clock_us
        self.next_player_seq = 0
        self._corrupt_pending: list[float] = []
        self._init_population(players)
        self._derive()
        self.event_until_us = 0
        self.event_zone = 0
        self.down_until_us = 0
        self.latency_until_us = 0
        self.latency_mult = 1.0
        self.exploit_until_us = 0
        self.exploit_mag = 0.0
        self.last_tick_ms = 0.0
        self.kind_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ population
    def _init_population(self, n: int) -> None:
        """A world that has been running: levels spread over all zones, wealth by level."""
        rng = self.rng
        self.player_id = (np.int64(self.shard_index) << _PLAYER_SHIFT) + np.arange(n, dtype=np.int64)
        self.next_player_seq = n
        self.active = np.ones(n, dtype=bool)
        self.pending = np.zeros(n, dtype=bool)
        self.pending_until_us = np.zeros(n, dtype=np.int64)
        self.level = rng.integers(1, C.MAX_LEVEL + 1, n).astype(np.int16)
        innate = np.exp(rng.normal(0.0, 0.22, n))
        self.skill = np.minimum(innate * (0.9 + 0.004 * self.level), C.SKILL_CAP).astype(np.float32)
        self.engagement = rng.uniform(0.45, 0.95, n).astype(np.float32)
        self.gold = (C.START_GOLD * (1 + self.level / 8.0) * np.exp(rng.normal(0.0, 0.5, n))).astype(np.int64)
        self.gems = rng.integers(0, 200, n).astype(np.int64)
        zone = self._level_zone(self.level)
        lam = np.where(
            (np.arange(C.N_ITEMS) // C.ITEMS_PER_ZONE)[None, :] <= zone[:, None],
            3.0 / (1.0 + np.arange(C.N_ITEMS) % C.ITEMS_PER_ZONE)[None, :] ** 1.3,
            0.0,
        )
        self.inventory = rng.poisson(lam).astype(np.int32)
        has_quest = rng.random(n) < 0.5
        q = zone + N_ZONES * rng.integers(0, C.QUESTS_PER_ZONE, n)
        self.quest_id = np.where(has_quest, q, -1).astype(np.int32)
        self.stage = np.where(has_quest, rng.integers(1, N_STAGES + 1, n), 0).astype(np.int8)
        self.stage_deaths = np.zeros(n, dtype=np.int16)
        # Start in steady state: each player is online with the share of time they play.
        rate = C.LOGIN_RATE_PER_MIN * self._diurnal(self.clock_us) * self.engagement
        session = C.MEAN_SESSION_MIN / (1.3 - 0.6 * self.engagement)
        share = rate * session / (1.0 + rate * session)
        u_on = rng.random(n)
        self.on = np.zeros(n, dtype=bool)
        self.on[self._admit(np.flatnonzero(u_on < share), u_on, self.capacity)] = True
        self.ref_stock = np.maximum(self.inventory.sum(axis=0) / n, 0.05)
        self.money_ref = float(self.gold.mean())
        self.price_level = 1.0

    @staticmethod
    def _level_zone(level: np.ndarray) -> np.ndarray:
        return np.minimum((level.astype(np.int32) - 1) // C.LEVELS_PER_ZONE, N_ZONES - 1)

    def _derive(self) -> None:
        """Turn params into per-zone / per-stage rate vectors once per config change."""
        p = self.params
        spawn = np.asarray(p.spawn_rate)
        elite = np.asarray(p.elite_share)
        self._death_zone = (
            C.ZONE_BASE_DEATH_PER_MIN
            * p.npc_aggression**C.AGGRESSION_EXPONENT
            * (1.0 + C.ELITE_DEATH_FACTOR * elite)
            * spawn**C.SPAWN_DEATH_EXPONENT
        )
        # Death cause mix per zone: elite share of kills grows with elite share and aggression.
        elite_kill = np.clip(
            elite * (1.0 + C.ELITE_DEATH_FACTOR) / (1.0 + C.ELITE_DEATH_FACTOR * elite), 0.0, 0.95
        )
        npc_share = 1.0 - C.PVP_SHARE_BY_ZONE - C.FALL_SHARE
        self._cause_cut = np.stack(
            [
                npc_share * elite_kill,  # elite
                npc_share,  # npc
                npc_share + C.FALL_SHARE,  # fall; rest is pvp
            ],
            axis=1,
        )
        self._stage_diff = C.STAGE_BASE_DIFFICULTY * np.asarray(p.quest_difficulty)
        self._drop_zone = C.DROP_RATE_PER_MIN * p.drop_rate * spawn**C.SPAWN_DROP_EXPONENT
        self._loot_zone = C.LOOT_GOLD_RATE_PER_MIN * spawn**0.5
        self._death_zone_max = float(self._death_zone.max())
        self._mean_stage_diff = float(np.mean(self._stage_diff))
        # Items held per type: kept up to date by every inventory change in the tick, and
        # recounted here (construction, restore, config change) so it can never drift.
        self._stock = self.inventory.sum(axis=0, dtype=np.int64)

    # ------------------------------------------------------------------ properties
    @property
    def online(self) -> bool:
        """Whether the shard is up (a crashed shard is down until its fault ends)."""
        return self.down_until_us <= self.clock_us

    @property
    def players_online(self) -> int:
        return int(self.on.sum())

    @property
    def players_total(self) -> int:
        return int(self.active.sum())

    @property
    def clock(self) -> datetime:
        """Game time up to which the shard has been simulated."""
        return from_us(self.clock_us)

    @property
    def slots(self) -> int:
        return len(self.active)

    # --------------------------------------------------------------------- control
    def set_params(self, params: WorldParams, version: int, source: str = "api") -> None:
        """Put ``params`` in force from the next tick under config ``version``.

        The caller (world server) owns optimistic concurrency; the shard only
        refuses versions that are not positive integers.
        """
        if not isinstance(params, WorldParams):
            raise TypeError(f"params must be WorldParams, got {type(params).__name__}")
        if int(version) < 1:
            raise ValueError(f"config version must be >= 1, got {version}")
        self.params = params.model_copy(deep=True)
        self.config_version = int(version)
        self.config_source = source
        self.config_valid_from_us = self.clock_us
        self._derive()

    def inject(self, fault: Fault, now: datetime) -> None:
        """Start a fault at game time ``now``; it lasts ``fault.duration_minutes``."""
        if fault.shard_id != self.shard_id:
            raise ValueError(f"fault is for shard {fault.shard_id!r}, not {self.shard_id!r}")
        now_us = to_us(now)
        until = now_us + int(fault.duration_minutes * 60 * _US)
        if fault.kind == FaultKind.LATENCY_SPIKE:
            self.latency_until_us = until
            self.latency_mult = max(1.0, float(fault.magnitude))
        elif fault.kind == FaultKind.SHARD_CRASH:
            self.down_until_us = max(self.down_until_us, until)
            # The crash drops every session; players may reconnect once it is back.
            self.pending |= self.on
            self.pending_until_us[self.on] = until + int(C.CRASH_RECONNECT_WINDOW_MIN * 60 * _US)
            self.on[:] = False
        elif fault.kind == FaultKind.DUPLICATION_EXPLOIT:
            self.exploit_until_us = until
            self.exploit_mag = float(fault.magnitude)
        elif fault.kind == FaultKind.CORRUPT_TELEMETRY:
            self._corrupt_pending.append(float(fault.magnitude))
        else:  # pragma: no cover - FaultKind is closed
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def consume_corrupt_telemetry(self) -> float | None:
        """Pop one pending corrupt_telemetry fault (its magnitude); the landing writer corrupts a batch."""
        return self._corrupt_pending.pop(0) if self._corrupt_pending else None

    @property
    def active_faults(self) -> list[str]:
        out = []
        if self.latency_until_us > self.clock_us:
            out.append(FaultKind.LATENCY_SPIKE.value)
        if self.down_until_us > self.clock_us:
            out.append(FaultKind.SHARD_CRASH.value)
        if self.exploit_until_us > self.clock_us:
            out.append(FaultKind.DUPLICATION_EXPLOIT.value)
        if self._corrupt_pending:
            out.append(FaultKind.CORRUPT_TELEMETRY.value)
        return out

    # ------------------------------------------------------------------------ tick
    def step(self, minutes: float, now: datetime) -> pa.Table:
        """Advance one tick of ``minutes`` starting at game time ``now``; return its events.

        The table is SCHEMA_V1 with one ``server_tick`` row; it is empty while the
        shard is down (crashed). ``now`` must not be earlier than the shard clock.
        """
        events = EventBuffer(self.shard_id, self.region, capacity=self.slots // 4)
        self.step_into(minutes, now, events)
        return events.to_table()

    def step_into(self, minutes: float, now: datetime, events: EventBuffer) -> int:
        """:meth:`step`, appending the tick's events to ``events`` instead of returning a table.

        The batch runner keeps one buffer per shard and landing window, so a
        window becomes one table instead of one per tick. Returns the number of
        events appended (0 while the shard is down).
        """
        if not (minutes > 0 and math.isfinite(minutes)):
            raise ValueError(f"tick minutes must be a positive number, got {minutes}")
        now_us = to_us(now)
        if now_us < self.clock_us:
            raise ValueError(
                f"game time {now.isoformat()} is before the shard clock {self.clock.isoformat()}"
            )
        tick_us = round(minutes * 60 * _US)
        if self.down_until_us > now_us:
            self.clock_us = now_us + tick_us
            return 0

        # The tick's whole random block, always the same size (common random numbers).
        n = self.slots
        bits = self.rng.bit_generator
        u = bits.random_raw(n * (_N_PRIMARY // 2)).view(np.uint32).reshape(_N_PRIMARY, n)
        g = bits.random_raw(_N_GLOBAL)
        gf = (g[:4] >> np.uint64(11)).astype(np.float64) * _INV53
        self._key = g[4]
        dt = float(minutes)
        p = self.params
        on, active, pending = self.on, self.active, self.pending
        events.begin_tick(now_us - _EPOCH_US, self.config_version)
        first_row = events.n
        self._events = events
        self._tick_start_us = now_us
        self._tick_us = tick_us
        self._tsb = tsb = np.empty(n, dtype=np.int64)  # per slot: the instant of its activity this tick
        spread = tick_us * PLAYER_SPREAD
        n_on = int(np.count_nonzero(on))

        # --- map events: a shard-wide event in one zone draws players and loot.
        if self.event_until_us <= now_us and gf[0] < _pc(p.map_event_frequency / 1440.0, dt):
            self.event_until_us = now_us + int(C.MAP_EVENT_MINUTES * 60 * _US)
            self.event_zone = int(gf[1] * N_ZONES)
        event_on = self.event_until_us > now_us

        # --- reconnects (within the window) and expired disconnects.
        rec_idx = expired = _NO_SLOTS
        if pending.any():
            cand = np.flatnonzero(pending)
            until = self.pending_until_us[cand]
            hit = u[_P["recon"], cand] < _thr(_pc(C.RECONNECT_RATE_PER_MIN, dt))
            rec_idx = self._admit(cand[hit & (until >= now_us)], u[_P["recon"]], self.capacity - n_on)
            on[rec_idx] = True
            pending[rec_idx] = False
            n_on += len(rec_idx)
            expired = cand[until < now_us]
            pending[expired] = False

        # --- logins: engagement x time of day x map event, capped by capacity. Thinned:
        # only slots under the bound of the most engaged player's probability are looked at.
        rate = C.LOGIN_RATE_PER_MIN * self._diurnal(now_us) * (C.MAP_EVENT_LOGIN_BOOST if event_on else 1.0)
        cand = np.flatnonzero(u[_P["login"]] < _thr(_bound(_pc(rate * _MAX_ENGAGEMENT, dt))))
        cand = cand[active[cand] & ~on[cand] & ~pending[cand]]
        eng = self.engagement[cand].astype(np.float64)
        hit = u[_P["login"], cand] * _INV32 < -np.expm1(-rate * eng * dt)
        login_idx = self._admit(cand[hit], u[_P["login"]], self.capacity - n_on)
        on[login_idx] = True
        n_on += len(login_idx)

        idx = np.flatnonzero(on)
        tsb[idx] = now_us + (self._sec(_Q["ts"], idx) * spread).astype(np.int64)
        self._emit("reconnect", rec_idx)
        self._emit("session_start", login_idx)
        if len(expired):
            tsb[expired] = now_us + (self._sec(_Q["ts"], expired) * spread).astype(np.int64)
            self._emit("session_end", expired, cause=CAUSE_CODE["disconnect"])

        # --- server load: a queueing-style tick time from saturation.
        rho = n_on / self.capacity
        noise = math.sqrt(-2.0 * math.log(max(gf[2], 1e-12))) * math.cos(2 * math.pi * gf[3])
        tick_ms = C.TICK_BASE_MS * (1.0 + 0.5 * rho) / (1.0 - min(rho, C.RHO_MAX))
        tick_ms *= math.exp(C.TICK_NOISE_SIGMA * noise)
        if self.latency_until_us > now_us:
            tick_ms *= self.latency_mult
        tick_ms = min(tick_ms, C.TICK_MS_MAX)
        self.last_tick_ms = tick_ms

        d_eng = np.zeros(len(idx), dtype=np.float32)
        if len(idx):
            uu = u.take(idx, axis=1)  # (streams, online): gathered once
            self._play(idx, uu, dt, d_eng, event_on, now_us)
            self._sessions_end(idx, uu, dt, d_eng, tick_ms, now_us)
        self._arrivals(u, dt)

        # --- engagement: online experience and offline drift.
        engagement = self.engagement
        if len(idx):
            lag = C.LAG_ENGAGEMENT_PER_MIN * dt if tick_ms > C.LAG_ENGAGEMENT_MS else 0.0
            engagement[idx] = np.clip(
                engagement[idx] + d_eng - np.float32(C.ONLINE_BOREDOM * dt + lag), 0.02, 1.0
            )
        drift = (np.float32(C.OFFLINE_ENGAGEMENT_TARGET) - engagement) * np.float32(
            C.OFFLINE_ENGAGEMENT_RATE * dt
        )
        drift *= active & ~on
        engagement += drift

        # --- prices respond to money per active player and to item scarcity.
        n_active = max(int(np.count_nonzero(active)), 1)
        money = float(self.gold.sum()) / n_active  # vacant slots hold nothing
        target = (max(money, 1.0) / self.money_ref) ** C.PRICE_MONEY_ELASTICITY
        self.price_level += (1.0 - math.exp(-dt / C.PRICE_ADJUST_MIN)) * (target - self.price_level)

        events.append(
            KIND_CODE["server_tick"],
            now_us + tick_us - 1,
            -1,
            1,
            {"tick_ms": tick_ms, "players_online": int(np.count_nonzero(on))},
        )
        self.clock_us = now_us + tick_us
        for kind, count in events.kind_counts(first_row).items():
            self.kind_counts[kind] = self.kind_counts.get(kind, 0) + count
        self._events = None
        self._tsb = None
        return events.n - first_row

    def _sec(self, stream: int, slots: np.ndarray) -> np.ndarray:
        """Secondary uniforms in [0, 1) of ``slots`` for ``stream`` this tick (53 bits).

        SplitMix64 at counter ``slot * _N_SECONDARY + stream`` from this tick's
        key: a pure function of (key, slot, stream), so whoever asks for it and
        in whatever order, both copies of a paired run see the same number.
        """
        z = self._key + (slots.astype(np.uint64) * np.uint64(_N_SECONDARY) + np.uint64(stream + 1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        return (z >> np.uint64(11)).astype(np.float64) * _INV53

    def _emit(self, kind: str, slots: np.ndarray, **cols: np.ndarray | int | float) -> None:
        """Append one ``kind`` event per slot in ``slots`` (at the slot's instant, offset by kind)."""
        k = len(slots)
        if not k:
            return
        offset = int(KIND_TS_RANK[kind] * self._tick_us * (1.0 - PLAYER_SPREAD) / len(KIND_TS_RANK))
        self._events.append(KIND_CODE[kind], self._tsb[slots] + offset, self.player_id[slots], k, cols)

    def _diurnal(self, now_us: int) -> float:
        """Time-of-day factor of logins: peaks at PEAK_LOCAL_HOUR in the region's time zone."""
        hour = ((now_us - _EPOCH_US) / (3600 * _US) + C.REGION_UTC_OFFSET_H.get(self.region, 0.0)) % 24.0
        return 1.0 + C.DIURNAL_AMPLITUDE * math.cos(2 * math.pi * (hour - C.PEAK_LOCAL_HOUR) / 24.0)

    @staticmethod
    def _admit(idx: np.ndarray, u: np.ndarray, free: int) -> np.ndarray:
        """Admit at most ``free`` of ``idx`` (the ones with the smallest draw: a fair queue)."""
        free = max(free, 0)
        if len(idx) <= free:
            return idx
        return np.sort(idx[np.argsort(u[idx], kind="stable")[:free]])

    def _play(
        self,
        idx: np.ndarray,
        uu: np.ndarray,
        dt: float,
        d_eng: np.ndarray,
        event_on: bool,
        now_us: int,
    ) -> None:
        """Quests, combat, loot, economy and trades of the online players ``idx``.

        Positions below index ``idx`` (``uu`` columns, ``d_eng``). Every Bernoulli
        draw compares a primary uint32 uniform with ``_thr(p)`` (scalar or per
        zone) or, where p is per player, first with the bound of p (thinning)
        and then exactly on the few candidates.
        """
        p = self.params
        quest = self.quest_id[idx]
        level_zone = self._level_zone(self.level[idx])

        # --- quest starts for players without one.
        start = np.flatnonzero((uu[_P["qstart"]] < _thr(_pc(C.QUEST_START_RATE_PER_MIN, dt))) & (quest < 0))
        if len(start):
            s_idx = idx[start]
            pick = np.minimum(
                (self._sec(_Q["qpick"], s_idx) * C.QUESTS_PER_ZONE).astype(np.int32), C.QUESTS_PER_ZONE - 1
            )
            new_q = (level_zone[start] + N_ZONES * pick).astype(np.int32)
            quest[start] = new_q
            self.quest_id[s_idx] = new_q
            self.stage[s_idx] = 1
            self.stage_deaths[s_idx] = 0
            self._emit("quest_start", s_idx, quest_id=new_q, stage=1)
        stage = self.stage[idx]
        in_quest = quest >= 0
        zone = np.where(in_quest, quest % N_ZONES, level_zone)
        s0 = np.maximum(stage.astype(np.int32) - 1, 0)
        qdiff = np.where(
            in_quest, C.QUEST_BASE_DIFFICULTY[np.maximum(quest, 0)] * self._stage_diff[s0], C.GRIND_DIFFICULTY
        )
        gap = qdiff - self.skill[idx]
        gap_max = float(gap.max())

        # --- combat deaths: zone danger x difficulty gap.
        h_max = self._death_zone_max * math.exp(C.DEATH_GAP_K * gap_max)
        c = np.flatnonzero(uu[_P["death"]] < _thr(_bound(_pc(h_max, dt))))
        h = self._death_zone[zone[c]] * np.exp(C.DEATH_GAP_K * gap[c])
        die = c[uu[_P["death"], c] * _INV32 < -np.expm1(-h * dt)]
        if len(die):
            didx = idx[die]
            dz = zone[die]
            uc = self._sec(_Q["dcause"], didx)
            cut = self._cause_cut[dz]
            cause = np.where(
                uc < cut[:, 0],
                CAUSE_CODE["elite"],
                np.where(
                    uc < cut[:, 1],
                    CAUSE_CODE["npc"],
                    np.where(uc < cut[:, 2], CAUSE_CODE["fall"], CAUSE_CODE["pvp"]),
                ),
            )
            hot = np.minimum((self._sec(_Q["hot"], didx) * 3).astype(np.int32), 2)
            centre = C.ZONE_HOTSPOTS[dz, hot]
            spread = 2 * C.HOTSPOT_SPREAD
            x = np.clip(centre[:, 0] + (self._sec(_Q["x"], didx) - 0.5) * spread, 0.0, 1023.9)
            y = np.clip(centre[:, 1] + (self._sec(_Q["y"], didx) - 0.5) * spread, 0.0, 1023.9)
            # Deaths inside a quest carry its quest and stage (nullable columns) so marts can
            # attribute deaths to stage bands; open-world deaths leave them null.
            dq = quest[die]
            self._emit(
                "combat_death",
                didx,
                quest_id=np.where(dq >= 0, dq, INT32_NULL),
                stage=np.where(dq >= 0, stage[die].astype(np.int32), INT32_NULL),
                zone=dz,
                x=x,
                y=y,
                cause=cause,
            )
            self.stage_deaths[didx] += 1
            d_eng[die] += C.ENG_DEATH
            repair = np.minimum(
                np.round(C.REPAIR_COST[dz] * p.sink_multiplier).astype(np.int64), self.gold[didx]
            )
            pay = repair >= 1
            self.gold[didx[pay]] -= repair[pay]
            self._emit(
                "currency_sink",
                didx[pay],
                currency=CURRENCY_CODE["gold"],
                amount=repair[pay],
                cause=CAUSE_CODE["repair"],
            )

        # --- quest progress: abandonment competes with finishing the stage.
        if in_quest.any():
            self._quests(idx, uu, dt, d_eng, quest, stage, zone, s0, gap, gap_max, in_quest, start)

        # --- loot: item drops and gold, with the map event zone boosted.
        boost = np.ones(N_ZONES)
        if event_on:
            boost[self.event_zone] = C.MAP_EVENT_DROP_BOOST
        drop = np.flatnonzero(uu[_P["drop"]] < _thr_vec(_p(self._drop_zone * boost, dt))[zone])
        if len(drop):
            di = idx[drop]
            dz = zone[drop]
            rarity = np.minimum(
                (C.ITEMS_PER_ZONE * self._sec(_Q["item"], di) ** C.RARITY_EXPONENT).astype(np.int32),
                C.ITEMS_PER_ZONE - 1,
            )
            item = dz * C.ITEMS_PER_ZONE + rarity
            self.inventory[di, item] += 1
            self._stock += np.bincount(item, minlength=C.N_ITEMS)
            self._emit("item_drop", di, item_id=item, zone=dz)
            d_eng[drop] += C.ENG_DROP
        loot = np.flatnonzero(uu[_P["loot"]] < _thr_vec(_p(self._loot_zone, dt))[zone])
        if len(loot):
            li = idx[loot]
            amt = np.round(
                C.LOOT_GOLD[zone[loot]] * p.source_multiplier * (0.5 + self._sec(_Q["loot_amt"], li))
            ).astype(np.int64)
            ok = amt >= 1
            self.gold[li[ok]] += amt[ok]
            self._emit(
                "currency_source",
                li[ok],
                currency=CURRENCY_CODE["gold"],
                amount=amt[ok],
                cause=CAUSE_CODE["loot"],
            )

        # --- vendors: selling loot is a faucet, consumables and travel are sinks.
        vs = np.flatnonzero(uu[_P["vsell"]] < _thr(_pc(C.VENDOR_SELL_RATE_PER_MIN, dt)))
        if len(vs):
            vi = idx[vs]
            vitem = zone[vs] * C.ITEMS_PER_ZONE + np.minimum(
                (self._sec(_Q["vitem"], vi) * C.ITEMS_PER_ZONE).astype(np.int32), C.ITEMS_PER_ZONE - 1
            )
            vamt = np.round(C.ITEM_VALUE[vitem] * C.VENDOR_SELL_SHARE * p.source_multiplier).astype(np.int64)
            ok = (self.inventory[vi, vitem] > 0) & (vamt >= 1)
            vi, vitem, vamt = vi[ok], vitem[ok], vamt[ok]
            self.inventory[vi, vitem] -= 1
            self._stock -= np.bincount(vitem, minlength=C.N_ITEMS)
            self.gold[vi] += vamt
            self._emit(
                "currency_source", vi, currency=CURRENCY_CODE["gold"], amount=vamt, cause=CAUSE_CODE["vendor"]
            )
        vb = np.flatnonzero(uu[_P["vbuy"]] < _thr(_pc(C.VENDOR_BUY_RATE_PER_MIN, dt)))
        if len(vb):
            bi = idx[vb]
            want = C.VENDOR_COST[zone[vb]] * p.sink_multiplier * (0.6 + 0.8 * self._sec(_Q["vbuy_amt"], bi))
            self._spend(bi, want, "vendor")
        fee = np.flatnonzero(uu[_P["fee"]] < _thr(_pc(C.FEE_RATE_PER_MIN, dt)))
        if len(fee):
            self._spend(idx[fee], C.TRAVEL_FEE[zone[fee]] * p.sink_multiplier, "fee")

        # --- gems: real-money purchases in, cosmetic shop out.
        gb = np.flatnonzero(uu[_P["gem_buy"]] < _thr(_pc(C.GEM_PURCHASE_RATE_PER_MIN, dt)))
        if len(gb):
            gi = idx[gb]
            pack = C.GEM_PURCHASE_PACKS[np.minimum((self._sec(_Q["pack"], gi) * 3).astype(np.int32), 2)]
            self.gems[gi] += pack
            self._emit(
                "currency_source",
                gi,
                currency=CURRENCY_CODE["gems"],
                amount=pack,
                cause=CAUSE_CODE["purchase"],
            )
        gs = np.flatnonzero(uu[_P["gem_shop"]] < _thr(_pc(C.GEM_SHOP_RATE_PER_MIN, dt)))
        if len(gs):
            if len(gb):
                bought = np.zeros(len(idx), dtype=bool)
                bought[gb] = True
                gs = gs[~bought[gs]]
            si = idx[gs]
            cost = C.GEM_SHOP_COSTS[np.minimum((self._sec(_Q["cost"], si) * 3).astype(np.int32), 2)]
            ok = self.gems[si] >= cost
            self.gems[si[ok]] -= cost[ok]
            self._emit(
                "currency_sink",
                si[ok],
                currency=CURRENCY_CODE["gems"],
                amount=cost[ok],
                cause=CAUSE_CODE["shop"],
            )

        self._trades(idx, uu, dt, zone, event_on)

        # --- duplication exploit: a few players dupe items and sell the copies.
        if self.exploit_until_us > now_us and self.exploit_mag > 0:
            ex = np.flatnonzero(uu[_P["exploit"]] < _thr(_pc(C.EXPLOIT_RATE_PER_MIN * self.exploit_mag, dt)))
            if len(ex):
                exi = idx[ex]
                rare = zone[ex] * C.ITEMS_PER_ZONE + C.ITEMS_PER_ZONE - 1
                self.inventory[exi, rare] += C.EXPLOIT_ITEMS
                self._stock += C.EXPLOIT_ITEMS * np.bincount(rare, minlength=C.N_ITEMS)
                gain = np.round(
                    C.EXPLOIT_GOLD * self.exploit_mag * (0.5 + self._sec(_Q["exploit_amt"], exi))
                    + C.ITEM_VALUE[rare]
                ).astype(np.int64)
                self.gold[exi] += gain
                self._emit(
                    "currency_source",
                    exi,
                    currency=CURRENCY_CODE["gold"],
                    amount=gain,
                    cause=CAUSE_CODE["vendor"],
                )

    def _quests(
        self,
        idx: np.ndarray,
        uu: np.ndarray,
        dt: float,
        d_eng: np.ndarray,
        quest: np.ndarray,
        stage: np.ndarray,
        zone: np.ndarray,
        s0: np.ndarray,
        gap: np.ndarray,
        gap_max: float,
        in_quest: np.ndarray,
        start: np.ndarray,
    ) -> None:
        """Abandonment competes with finishing the stage; the last stage completes the quest."""
        p = self.params
        pacing = p.quest_pacing
        sd = self.stage_deaths[idx]  # after this tick's deaths
        h_max = (
            C.ABANDON_RATE_PER_MIN
            * math.exp(C.ABANDON_GAP_K * gap_max)
            * pacing**0.7
            * (1.0 + C.ABANDON_PER_DEATH * float(sd.max()))
        )
        c = np.flatnonzero(uu[_P["abandon"]] < _thr(_bound(_pc(h_max, dt))))
        fresh = np.zeros(len(idx), dtype=bool)
        fresh[start] = True  # a quest started this tick is not abandoned in the same tick
        c = c[in_quest[c] & ~fresh[c]]
        h_ab = (
            C.ABANDON_RATE_PER_MIN
            * np.exp(C.ABANDON_GAP_K * gap[c])
            * pacing**0.7
            * (1.0 + C.ABANDON_PER_DEATH * sd[c].astype(np.float64))
        )
        ab = c[uu[_P["abandon"], c] * _INV32 < -np.expm1(-h_ab * dt)]
        self._emit("quest_abandon", idx[ab], quest_id=quest[ab], stage=stage[ab])
        d_eng[ab] += C.ENG_ABANDON

        h_max = 1.0 / (float(C.STAGE_MINUTES.min()) * pacing)
        c = np.flatnonzero(uu[_P["stage"]] < _thr(_bound(_pc(h_max, dt))))
        fresh[:] = False
        fresh[ab] = True
        c = c[in_quest[c] & ~fresh[c]]
        h_stage = 1.0 / (
            C.STAGE_MINUTES[s0[c]] * pacing * (1.0 + C.STAGE_SLOWDOWN_PER_GAP * np.maximum(gap[c], 0))
        )
        done = c[uu[_P["stage"], c] * _INV32 < -np.expm1(-h_stage * dt)]
        d_idx = idx[done]
        self._emit("quest_stage", d_idx, quest_id=quest[done], stage=stage[done])
        d_eng[done] += C.ENG_STAGE
        self.skill[d_idx] = np.minimum(self.skill[d_idx] + np.float32(C.SKILL_PER_STAGE), C.SKILL_CAP)
        last = stage[done] >= N_STAGES
        fin = done[last]
        fidx = idx[fin]
        self._emit("quest_complete", fidx, quest_id=quest[fin], stage=stage[fin])
        d_eng[fin] += C.ENG_QUEST
        if len(fin):
            fz = zone[fin]
            mean_diff = self._mean_stage_diff
            reward = np.round(
                C.QUEST_REWARD_GOLD[fz]
                * p.quest_reward
                * math.sqrt(mean_diff)
                * (0.8 + 0.4 * self._sec(_Q["reward"], fidx))
            ).astype(np.int64)
            paid = reward >= 1
            self.gold[fidx[paid]] += reward[paid]
            self._emit(
                "currency_source",
                fidx[paid],
                currency=CURRENCY_CODE["gold"],
                amount=reward[paid],
                cause=CAUSE_CODE["quest_reward"],
            )
            gems = np.round((1 + fz // 2) * p.quest_reward).astype(np.int64)
            gem = (self._sec(_Q["gems_q"], fidx) < C.QUEST_GEM_CHANCE) & (gems >= 1)
            self.gems[fidx[gem]] += gems[gem]
            self._emit(
                "currency_source",
                fidx[gem],
                currency=CURRENCY_CODE["gems"],
                amount=gems[gem],
                cause=CAUSE_CODE["quest_reward"],
            )
            self.level[fidx] = np.minimum(self.level[fidx] + 1, C.MAX_LEVEL)
        cleared = idx[np.concatenate([ab, fin])]
        self.quest_id[cleared] = -1
        self.stage[cleared] = 0
        advance = d_idx[~last]
        self.stage[advance] += 1
        self.stage_deaths[cleared] = 0
        self.stage_deaths[advance] = 0

    def _spend(self, slots: np.ndarray, amount: np.ndarray, cause: str) -> None:
        """A gold sink for the players who want it, can afford it and owe at least 1 gold."""
        amt = np.round(amount).astype(np.int64)
        ok = (amt >= 1) & (self.gold[slots] >= amt)
        self.gold[slots[ok]] -= amt[ok]
        self._emit(
            "currency_sink",
            slots[ok],
            currency=CURRENCY_CODE["gold"],
            amount=amt[ok],
            cause=CAUSE_CODE[cause],
        )

    def _trades(self, idx: np.ndarray, uu: np.ndarray, dt: float, zone: np.ndarray, event_on: bool) -> None:
        """Player-to-player trades: a buyer meets a random online seller holding the item."""
        n_on = len(idx)
        if n_on < 2:
            return
        rate = C.TRADE_RATE_PER_MIN * (C.MAP_EVENT_TRADE_BOOST if event_on else 1.0)
        b = np.flatnonzero(uu[_P["trade"]] < _thr(_pc(rate, dt)))
        if not len(b):
            return
        buyer = idx[b]
        want = zone[b] * C.ITEMS_PER_ZONE + np.minimum(
            (C.ITEMS_PER_ZONE * self._sec(_Q["titem"], buyer) ** 1.5).astype(np.int32), C.ITEMS_PER_ZONE - 1
        )
        seller = idx[np.minimum((self._sec(_Q["partner"], buyer) * n_on).astype(np.int64), n_on - 1)]
        n_active = max(int(np.count_nonzero(self.active)), 1)
        stock = self._stock / n_active  # vacant slots hold nothing
        scarcity = np.clip(
            (self.ref_stock / np.maximum(stock, 1e-3)) ** C.PRICE_SCARCITY_ELASTICITY, *C.SCARCITY_CLIP
        )
        price = np.round(
            C.ITEM_VALUE[want]
            * self.price_level
            * scarcity[want]
            * (0.85 + 0.3 * self._sec(_Q["price"], buyer))
        ).astype(np.int64)
        ok = (
            (seller != buyer)
            & (self.inventory[seller, want] > 0)
            & (price >= 1)
            & (self.gold[buyer] >= price)
        )
        k = np.flatnonzero(ok)
        if not len(k):
            return
        # One sale per (seller, item) per tick: the seller holds at least one, maybe only one.
        key = seller[k].astype(np.int64) * C.N_ITEMS + want[k]
        _, first = np.unique(key, return_index=True)
        k = np.sort(k[first])
        # A player who sells in this tick does not also buy (keeps gold checks exact).
        selling = np.zeros(self.slots, dtype=bool)
        selling[seller[k]] = True
        k = k[~selling[buyer[k]]]
        if not len(k):
            return
        bi, si, it, pr = buyer[k], seller[k], want[k], price[k]
        self.gold[bi] -= pr
        tax = np.round(pr * C.TRADE_TAX * self.params.sink_multiplier).astype(np.int64)
        tax = np.minimum(tax, pr)
        np.add.at(self.gold, si, pr - tax)
        self.inventory[si, it] -= 1
        self.inventory[bi, it] += 1
        self._emit("trade", bi, item_id=it, price=pr, currency=CURRENCY_CODE["gold"])
        taxed = tax >= 1
        self._emit(
            "currency_sink",
            si[taxed],
            currency=CURRENCY_CODE["gold"],
            amount=tax[taxed],
            cause=CAUSE_CODE["tax"],
        )

    def _sessions_end(
        self,
        idx: np.ndarray,
        uu: np.ndarray,
        dt: float,
        d_eng: np.ndarray,
        tick_ms: float,
        now_us: int,
    ) -> None:
        """Logouts (some of which are churn) and disconnects (which may reconnect)."""
        h_max = 1.3 / C.MEAN_SESSION_MIN  # engagement >= 0
        c = np.flatnonzero(uu[_P["logout"]] < _thr(_bound(_pc(h_max, dt))))
        eng = self.engagement[idx[c]].astype(np.float64)
        h_logout = (1.3 - 0.6 * eng) / C.MEAN_SESSION_MIN
        hit = uu[_P["logout"], c] * _INV32 < -np.expm1(-h_logout * dt)
        leave = c[hit]
        eng = eng[hit]
        churn_p = C.CHURN_BASE + C.CHURN_SLOPE * (1.0 - np.clip(eng + d_eng[leave], 0.0, 1.0)) ** 3
        is_churn = self._sec(_Q["churn"], idx[leave]) < churn_p
        h_disc = C.DISCONNECT_RATE_PER_MIN * (1.0 + (tick_ms / C.DISCONNECT_TICK_MS) ** 2)
        disc = np.flatnonzero(uu[_P["disc"]] < _thr(_pc(h_disc, dt)))
        if len(disc) and len(leave):
            left = np.zeros(len(idx), dtype=bool)
            left[leave] = True
            disc = disc[~left[disc]]

        li = idx[leave]
        ci = li[is_churn]
        self._emit("session_end", li[~is_churn], cause=CAUSE_CODE["logout"])
        self._emit("session_end", ci, cause=CAUSE_CODE["churn"])
        di = idx[disc]
        self.on[li] = False
        self.on[di] = False
        self.pending[di] = True
        self.pending_until_us[di] = now_us + int(C.RECONNECT_WINDOW_MIN * 60 * _US)
        if len(ci):
            # The player leaves the game: the slot is vacant until a newcomer arrives.
            self._stock -= self.inventory[ci].sum(axis=0, dtype=np.int64)
            self.active[ci] = False
            self.quest_id[ci] = -1
            self.stage[ci] = 0
            self.inventory[ci] = 0
            self.gold[ci] = 0
            self.gems[ci] = 0

    def _arrivals(self, u: np.ndarray, dt: float) -> None:
        """New players fill vacant slots at a steady rate: the population is persistent but alive."""
        new = np.flatnonzero(u[_P["arrive"]] < _thr(_pc(C.ARRIVAL_RATE_PER_MIN, dt)))
        new = new[~self.active[new]]
        k = len(new)
        if not k:
            return
        self.player_id[new] = (
            (np.int64(self.shard_index) << _PLAYER_SHIFT) + self.next_player_seq + np.arange(k)
        )
        self.next_player_seq += k
        if self.next_player_seq >= 2**_PLAYER_SHIFT:
            raise OverflowError(f"shard {self.shard_id} ran out of player ids")
        self.active[new] = True
        self.on[new] = False
        self.pending[new] = False
        self.level[new] = 1
        self.skill[new] = (0.65 + 0.6 * self._sec(_Q["new_skill"], new)).astype(np.float32)
        lo, hi = C.NEW_ENGAGEMENT
        self.engagement[new] = (lo + (hi - lo) * self._sec(_Q["new_eng"], new)).astype(np.float32)
        self.gold[new] = C.START_GOLD
        self.gems[new] = 0
        self._stock -= self.inventory[new].sum(axis=0, dtype=np.int64)
        self.inventory[new] = 0
        self.quest_id[new] = -1
        self.stage[new] = 0
        self.stage_deaths[new] = 0

    # ------------------------------------------------------------------- integrity
    def integrity(self) -> Integrity:
        """Counts and order-independent checksums of active inventories and quests."""
        act = np.flatnonzero(self.active)
        inv = self.inventory[act]
        r, c = np.nonzero(inv)
        counts = inv[r, c]
        pids = self.player_id[act]
        q_act = act[self.quest_id[act] >= 0]
        return Integrity(
            shard_id=self.shard_id,
            players=len(act),
            active_inventory_items=int(counts.sum()),
            active_inventory_checksum=_checksum(pids[r], c, counts),
            active_quests=len(q_act),
            active_quest_checksum=_checksum(self.player_id[q_act], self.quest_id[q_act], self.stage[q_act]),
            save_schema_version=SAVE_SCHEMA_VERSION,
        )

    def economy(self) -> dict[str, float]:
        """Current money supply and price level (for the server's metrics and for tests)."""
        act = self.active
        n_active = max(int(act.sum()), 1)
        return {
            "gold_supply": float(self.gold[act].sum()),
            "gold_per_player": float(self.gold[act].sum()) / n_active,
            "gems_supply": float(self.gems[act].sum()),
            "price_level": float(self.price_level),
        }

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: arrays (copied), scalars, rng, faults."""
        state: dict[str, Any] = {"format": STATE_FORMAT}
        for name in _ARRAY_FIELDS:
            state[name] = getattr(self, name).copy()
        for name in _SCALAR_FIELDS:
            state[name] = getattr(self, name)
        state["params_json"] = self.params.model_dump_json()
        state["rng_state"] = json.loads(json.dumps(self.rng.bit_generator.state))
        state["corrupt_pending"] = list(self._corrupt_pending)
        state["kind_counts"] = dict(self.kind_counts)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ShardSim:
        """Rebuild a shard from :meth:`state_dict`; it continues exactly where the original was."""
        self = cls.__new__(cls)
        self.load_state_dict(state)
        return self

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Become the shard of :meth:`state_dict` ``state`` in place (the runner's workers hand
        their final states back this way, so callers' references to the shard stay valid).
        A bad state raises ValueError and leaves this shard untouched."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"unsupported shard state format {state.get('format')!r}; expected {STATE_FORMAT}"
            )
        missing = [k for k in (*_ARRAY_FIELDS, *_SCALAR_FIELDS, "params_json", "rng_state") if k not in state]
        if missing:
            raise ValueError(f"shard state is missing {', '.join(missing)}")
        loaded = ShardSim.__new__(ShardSim)
        loaded._load(state)
        self.__dict__.clear()
        self.__dict__.update(loaded.__dict__)

    def _load(self, state: dict[str, Any]) -> None:
        n = len(state["active"])
        for name, dtype in _ARRAY_FIELDS.items():
            arr = np.array(state[name], dtype=dtype, copy=True)
            if name != "ref_stock" and len(arr) != n:
                raise ValueError(f"shard state array {name} has {len(arr)} rows, expected {n}")
            setattr(self, name, arr)
        if self.inventory.shape != (n, C.N_ITEMS):
            raise ValueError(f"inventory shape {self.inventory.shape} != ({n}, {C.N_ITEMS})")
        for name in _SCALAR_FIELDS:
            setattr(self, name, state[name])
        for name in (
            "capacity",
            "shard_index",
            "config_version",
            "config_valid_from_us",
            "next_player_seq",
            "clock_us",
            "event_until_us",
            "event_zone",
            "down_until_us",
            "latency_until_us",
            "exploit_until_us",
        ):
            setattr(self, name, int(getattr(self, name)))
        for name in ("price_level", "money_ref", "latency_mult", "exploit_mag", "last_tick_ms"):
            setattr(self, name, float(getattr(self, name)))
        self.shard_id, self.region, self.config_source = (
            str(self.shard_id),
            str(self.region),
            str(self.config_source),
        )
        self.params = WorldParams.model_validate_json(state["params_json"])
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state["rng_state"]
        self._corrupt_pending = [float(m) for m in state.get("corrupt_pending", [])]
        self.kind_counts = {str(k): int(v) for k, v in dict(state.get("kind_counts", {})).items()}
        self._derive()

    def clone(self) -> ShardSim:
        """An independent copy with the same generator state (common random numbers)."""
        return ShardSim.from_state_dict(self.state_dict())

    def to_bytes(self) -> bytes:
        """Serialise :meth:`state_dict` as a compressed ``.npz`` (no pickle): snapshots on disk."""
        state = self.state_dict()
        arrays = {k: state[k] for k in _ARRAY_FIELDS}
        meta = {k: v for k, v in state.items() if k not in _ARRAY_FIELDS}
        buf = io.BytesIO()
        np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardSim:
        """Inverse of :meth:`to_bytes`; a damaged blob raises ValueError, never a half state."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                state: dict[str, Any] = json.loads(npz["__meta__"].tobytes().decode())
                for k in _ARRAY_FIELDS:
                    state[k] = npz[k]
        except (OSError, KeyError, ValueError, zlib.error, json.JSONDecodeError) as exc:
            raise ValueError(f"shard snapshot is unreadable: {exc}") from exc
        return cls.from_state_dict(state)


def shard_ids(
    regions: tuple[str, ...] = REGIONS, shards_per_region: int = DEFAULT_SHARDS_PER_REGION
) -> list[str]:
    return [f"{r}-{i}" for r in regions for i in range(1, shards_per_region + 1)]


class World:
    """All shards of all regions on one game clock."""

    def __init__(
        self,
        seed: int = 7,
        players_per_shard: int = DEFAULT_PLAYERS_PER_SHARD,
        shards_per_region: int = DEFAULT_SHARDS_PER_REGION,
        regions: tuple[str, ...] = REGIONS,
        start: datetime = DEFAULT_START,
        tick_minutes: float = DEFAULT_TICK_MINUTES,
        capacity: int | None = None,
    ) -> None:
        if shards_per_region < 1:
            raise ValueError(f"shards_per_region must be >= 1, got {shards_per_region}")
        if not regions or len(set(regions)) != len(regions):
            raise ValueError(f"regions must be distinct and non-empty, got {regions!r}")
        if not (tick_minutes > 0 and math.isfinite(tick_minutes)) or tick_minutes * 60 < 1:
            raise ValueError(f"tick_minutes must be at least 1 second, got {tick_minutes}")
        if start < WORLD_EPOCH:
            raise ValueError(f"start {start.isoformat()} is before the world epoch {WORLD_EPOCH.isoformat()}")
        self.seed = int(seed)
        self.tick_minutes = float(tick_minutes)
        self.game_time = start
        self.shards: dict[str, ShardSim] = {}
        for r_i, region in enumerate(regions):
            for s_i in range(1, shards_per_region + 1):
                shard_index = r_i * shards_per_region + (s_i - 1)
                sid = f"{region}-{s_i}"
                # Seeded by (seed, region, shard number): adding shards never reseeds the others.
                seq = np.random.SeedSequence([self.seed, zlib.crc32(region.encode()), s_i])
                self.shards[sid] = ShardSim(
                    sid,
                    region,
                    seed=seq,
                    players=players_per_shard,
                    capacity=capacity,
                    shard_index=shard_index,
                    start=start,
                )

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.region for s in self.shards.values()))

    def step(self) -> dict[str, pa.Table]:
        """Advance every shard one tick at the current game time; the clock moves on by one tick."""
        now = self.game_time
        out = {sid: shard.step(self.tick_minutes, now) for sid, shard in self.shards.items()}
        self.game_time = now + timedelta(minutes=self.tick_minutes)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "tick_minutes": self.tick_minutes,
            "game_time": self.game_time.isoformat(),
            "shards": {sid: s.state_dict() for sid, s in self.shards.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> World:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"unsupported world state format {state.get('format')!r}; expected {STATE_FORMAT}"
            )
        self = cls.__new__(cls)
        self.seed = int(state["seed"])
        self.tick_minutes = float(state["tick_minutes"])
        self.game_time = datetime.fromisoformat(state["game_time"])
        self.shards = {sid: ShardSim.from_state_dict(s) for sid, s in state["shards"].items()}
        return self
