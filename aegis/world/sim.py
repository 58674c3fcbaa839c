"""The bundled game world: shards of a persistent population, simulated tick by tick.

One :class:`ShardSim` holds a shard's players as numpy arrays (one slot per
player), its :class:`~aegis.domain.WorldParams`, its own PCG64 generator and its
fault state; :meth:`ShardSim.step` advances it one tick and returns that tick's
telemetry in SCHEMA_V1. :class:`World` is the set of shards of all regions on
one clock. docs/world.md explains the model and why it reacts as it does.

Common random numbers: every tick draws the same fixed-shape block of uniforms
(``_N_STREAMS`` x population slots, plus ``_N_GLOBAL`` server uniforms) whatever
the parameters, and turns them into events by comparison and transformation.
Two copies of one shard state with one generator state therefore consume the
generator identically, so a changed copy differs from an unchanged one only by
the change, not by noise (the simulation gate relies on this).
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
from aegis.telemetry import SCHEMA_V1, WORLD_EPOCH
from aegis.world import sim_catalog as C
from aegis.world.sim_events import CAUSE_CODE, CURRENCY_CODE, EventBatch

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

# Uniform streams drawn every tick, one value per population slot (fixed order!).
_STREAMS = (
    "ts",
    "recon",
    "login",
    "qstart",
    "qpick",
    "death",
    "dcause",
    "hot",
    "x",
    "y",
    "abandon",
    "stage",
    "gems_q",
    "drop",
    "item",
    "loot",
    "loot_amt",
    "vsell",
    "vitem",
    "vbuy",
    "vbuy_amt",
    "fee",
    "trade",
    "titem",
    "partner",
    "price",
    "gem_buy",
    "gem_shop",
    "exploit",
    "logout",
    "churn",
    "disc",
    "arrive",
    "new_skill",
    "new_eng",
)
_S = {name: i for i, name in enumerate(_STREAMS)}
_N_STREAMS = len(_STREAMS)
_N_GLOBAL = 4  # map event start, map event zone, tick noise (2 for Box-Muller)

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
            return SCHEMA_V1.empty_table()

        n = self.slots
        u = self.rng.random((_N_STREAMS, n), dtype=np.float32)
        g = self.rng.random(_N_GLOBAL)
        ev = EventBatch(now_us, tick_us, u[_S["ts"]])
        dt = float(minutes)
        p = self.params
        on, active, pending = self.on, self.active, self.pending

        # --- map events: a shard-wide event in one zone draws players and loot.
        if self.event_until_us <= now_us and g[0] < _p(p.map_event_frequency / 1440.0, dt):
            self.event_until_us = now_us + int(C.MAP_EVENT_MINUTES * 60 * _US)
            self.event_zone = int(g[1] * N_ZONES)
        event_on = self.event_until_us > now_us

        # --- reconnects (within the window) and expired disconnects.
        if pending.any():
            rec = (
                pending
                & (u[_S["recon"]] < _p(C.RECONNECT_RATE_PER_MIN, dt))
                & (self.pending_until_us >= now_us)
            )
            free = self.capacity - int(on.sum())
            rec_idx = self._admit(np.flatnonzero(rec), u[_S["recon"]], free)
            on[rec_idx] = True
            pending[rec_idx] = False
            ev.add("reconnect", rec_idx)
            expired = np.flatnonzero(pending & (self.pending_until_us < now_us))
            pending[expired] = False
            ev.add("session_end", expired, cause=CAUSE_CODE["disconnect"])

        # --- logins: engagement x time of day x map event, capped by capacity.
        diurnal = self._diurnal(now_us)
        boost = C.MAP_EVENT_LOGIN_BOOST if event_on else 1.0
        cand = active & ~on & ~pending
        login_rate = C.LOGIN_RATE_PER_MIN * diurnal * boost * self.engagement
        login = cand & (u[_S["login"]] < _p(login_rate, dt))
        login_idx = self._admit(np.flatnonzero(login), u[_S["login"]], self.capacity - int(on.sum()))
        on[login_idx] = True
        ev.add("session_start", login_idx)

        # --- server load: a queueing-style tick time from saturation.
        n_on = int(on.sum())
        rho = n_on / self.capacity
        noise = math.sqrt(-2.0 * math.log(max(g[2], 1e-12))) * math.cos(2 * math.pi * g[3])
        tick_ms = C.TICK_BASE_MS * (1.0 + 0.5 * rho) / (1.0 - min(rho, C.RHO_MAX))
        tick_ms *= math.exp(C.TICK_NOISE_SIGMA * noise)
        if self.latency_until_us > now_us:
            tick_ms *= self.latency_mult
        tick_ms = min(tick_ms, C.TICK_MS_MAX)
        self.last_tick_ms = tick_ms

        idx = np.flatnonzero(on)
        d_eng = np.zeros(len(idx), dtype=np.float32)
        if len(idx):
            self._play(idx, u, dt, ev, d_eng, event_on, now_us)
            self._sessions_end(idx, u, dt, ev, d_eng, tick_ms, now_us)
        self._arrivals(u, dt)

        # --- engagement: online experience and offline drift.
        if len(idx):
            lag = C.LAG_ENGAGEMENT_PER_MIN * dt if tick_ms > C.LAG_ENGAGEMENT_MS else 0.0
            self.engagement[idx] = np.clip(
                self.engagement[idx] + d_eng - np.float32(C.ONLINE_BOREDOM * dt + lag), 0.02, 1.0
            )
        off = active & ~on
        self.engagement[off] += np.float32(C.OFFLINE_ENGAGEMENT_RATE * dt) * (
            np.float32(C.OFFLINE_ENGAGEMENT_TARGET) - self.engagement[off]
        )

        # --- prices respond to money per active player and to item scarcity.
        n_active = max(int(active.sum()), 1)
        money = float(self.gold.sum()) / n_active  # vacant slots hold nothing
        target = (max(money, 1.0) / self.money_ref) ** C.PRICE_MONEY_ELASTICITY
        self.price_level += (1.0 - math.exp(-dt / C.PRICE_ADJUST_MIN)) * (target - self.price_level)

        ev.add_server("server_tick", tick_ms=tick_ms, players_online=int(on.sum()))
        self.clock_us = now_us + tick_us
        for kind, count in ev.counts().items():
            self.kind_counts[kind] = self.kind_counts.get(kind, 0) + count
        prefix = f"{self.shard_id}-{now_us - _EPOCH_US:013x}-".encode()
        return ev.to_table(
            shard_id=self.shard_id,
            region=self.region,
            config_version=self.config_version,
            player_ids=self.player_id,
            id_prefix=prefix,
        )

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
        u: np.ndarray,
        dt: float,
        ev: EventBatch,
        d_eng: np.ndarray,
        event_on: bool,
        now_us: int,
    ) -> None:
        """Quests, combat, loot, economy and trades of the online players ``idx``."""
        p = self.params
        uu = u[:, idx]  # (streams, online): gathered once
        quest = self.quest_id[idx]
        level_zone = self._level_zone(self.level[idx])
        skill = self.skill[idx].astype(np.float64)

        # --- quest starts for players without one.
        start = (quest < 0) & (uu[_S["qstart"]] < _p(C.QUEST_START_RATE_PER_MIN, dt))
        new_q = level_zone + N_ZONES * np.minimum((uu[_S["qpick"]] * C.QUESTS_PER_ZONE).astype(np.int32), 9)
        quest = np.where(start, new_q, quest).astype(np.int32)
        stage = np.where(start, 1, self.stage[idx]).astype(np.int8)
        self.quest_id[idx] = quest
        self.stage[idx] = stage
        self.stage_deaths[idx[start]] = 0
        ev.add("quest_start", idx[start], quest_id=quest[start], stage=1)

        in_quest = quest >= 0
        zone = np.where(in_quest, quest % N_ZONES, level_zone)
        s0 = np.clip(stage.astype(np.int32) - 1, 0, N_STAGES - 1)
        qdiff = np.where(
            in_quest,
            C.QUEST_BASE_DIFFICULTY[np.maximum(quest, 0)] * self._stage_diff[s0],
            C.GRIND_DIFFICULTY,
        )
        gap = qdiff - skill

        # --- combat deaths: zone danger x difficulty gap.
        h_death = self._death_zone[zone] * np.exp(C.DEATH_GAP_K * gap)
        die = uu[_S["death"]] < _p(h_death, dt)
        if die.any():
            dz = zone[die]
            uc = uu[_S["dcause"], die]
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
            hot = np.minimum((uu[_S["hot"], die] * 3).astype(np.int32), 2)
            centre = C.ZONE_HOTSPOTS[dz, hot]
            x = np.clip(centre[:, 0] + (uu[_S["x"], die] - 0.5) * 2 * C.HOTSPOT_SPREAD, 0.0, 1023.9)
            y = np.clip(centre[:, 1] + (uu[_S["y"], die] - 0.5) * 2 * C.HOTSPOT_SPREAD, 0.0, 1023.9)
            didx = idx[die]
            dq = quest[die]
            ev_cols: dict[str, Any] = {"zone": dz, "x": x, "y": y, "cause": cause.astype(np.int8)}
            # Deaths inside a quest carry its quest and stage (nullable columns) so marts can
            # attribute deaths to stage bands.
            qd = dq >= 0
            ev.add(
                "combat_death",
                didx[qd],
                quest_id=dq[qd],
                stage=stage[die][qd],
                **{k: v[qd] for k, v in ev_cols.items()},
            )
            ev.add("combat_death", didx[~qd], **{k: v[~qd] for k, v in ev_cols.items()})
            self.stage_deaths[didx] += 1
            d_eng[die] += C.ENG_DEATH
            repair = np.minimum(
                np.round(C.REPAIR_COST[dz] * p.sink_multiplier).astype(np.int64), self.gold[didx]
            )
            pay = repair >= 1
            self.gold[didx[pay]] -= repair[pay]
            ev.add(
                "currency_sink",
                didx[pay],
                currency=CURRENCY_CODE["gold"],
                amount=repair[pay],
                cause=CAUSE_CODE["repair"],
            )

        # --- quest progress: abandonment competes with finishing the stage.
        if in_quest.any():
            sd = self.stage_deaths[idx].astype(np.float64)
            h_ab = (
                C.ABANDON_RATE_PER_MIN
                * np.exp(C.ABANDON_GAP_K * gap)
                * p.quest_pacing**0.7
                * (1.0 + C.ABANDON_PER_DEATH * sd)
            )
            abandon = in_quest & ~start & (uu[_S["abandon"]] < _p(h_ab, dt))
            ev.add("quest_abandon", idx[abandon], quest_id=quest[abandon], stage=stage[abandon])
            d_eng[abandon] += C.ENG_ABANDON
            h_stage = 1.0 / (
                C.STAGE_MINUTES[s0] * p.quest_pacing * (1.0 + C.STAGE_SLOWDOWN_PER_GAP * np.maximum(gap, 0))
            )
            done = in_quest & ~abandon & (uu[_S["stage"]] < _p(h_stage, dt))
            ev.add("quest_stage", idx[done], quest_id=quest[done], stage=stage[done])
            d_eng[done] += C.ENG_STAGE
            self.skill[idx[done]] = np.minimum(
                self.skill[idx[done]] + np.float32(C.SKILL_PER_STAGE), C.SKILL_CAP
            )
            finish = done & (stage >= N_STAGES)
            fidx = idx[finish]
            ev.add("quest_complete", fidx, quest_id=quest[finish], stage=stage[finish])
            d_eng[finish] += C.ENG_QUEST
            fz = zone[finish]
            mean_diff = float(np.mean(self._stage_diff))
            reward = np.round(
                C.QUEST_REWARD_GOLD[fz]
                * p.quest_reward
                * math.sqrt(mean_diff)
                * (0.8 + 0.4 * uu[_S["loot_amt"], finish])
            ).astype(np.int64)
            paid = reward >= 1
            self.gold[fidx[paid]] += reward[paid]
            ev.add(
                "currency_source",
                fidx[paid],
                currency=CURRENCY_CODE["gold"],
                amount=reward[paid],
                cause=CAUSE_CODE["quest_reward"],
            )
            gems = np.round((1 + fz // 2) * p.quest_reward).astype(np.int64)
            gem = (uu[_S["gems_q"], finish] < C.QUEST_GEM_CHANCE) & (gems >= 1)
            self.gems[fidx[gem]] += gems[gem]
            ev.add(
                "currency_source",
                fidx[gem],
                currency=CURRENCY_CODE["gems"],
                amount=gems[gem],
                cause=CAUSE_CODE["quest_reward"],
            )
            self.level[fidx] = np.minimum(self.level[fidx] + 1, C.MAX_LEVEL)
            cleared = abandon | finish
            self.quest_id[idx[cleared]] = -1
            self.stage[idx[cleared]] = 0
            advance = done & ~finish
            self.stage[idx[advance]] += 1
            self.stage_deaths[idx[advance | cleared]] = 0

        # --- loot: item drops and gold, with the map event zone boosted.
        ev_zone = event_on & (zone == self.event_zone)
        drop_p = _p(self._drop_zone[zone] * np.where(ev_zone, C.MAP_EVENT_DROP_BOOST, 1.0), dt)
        drop = uu[_S["drop"]] < drop_p
        rarity = np.minimum(
            (C.ITEMS_PER_ZONE * uu[_S["item"]] ** C.RARITY_EXPONENT).astype(np.int32), C.ITEMS_PER_ZONE - 1
        )
        item = zone * C.ITEMS_PER_ZONE + rarity
        self.inventory[idx[drop], item[drop]] += 1
        ev.add("item_drop", idx[drop], item_id=item[drop], zone=zone[drop])
        d_eng[drop] += C.ENG_DROP
        loot = uu[_S["loot"]] < _p(self._loot_zone[zone], dt)
        amt = np.round(C.LOOT_GOLD[zone] * p.source_multiplier * (0.5 + uu[_S["loot_amt"]])).astype(np.int64)
        loot &= amt >= 1
        self.gold[idx[loot]] += amt[loot]
        ev.add(
            "currency_source",
            idx[loot],
            currency=CURRENCY_CODE["gold"],
            amount=amt[loot],
            cause=CAUSE_CODE["loot"],
        )

        # --- vendors: selling loot is a faucet, consumables and travel are sinks.
        vsell = uu[_S["vsell"]] < _p(C.VENDOR_SELL_RATE_PER_MIN, dt)
        vitem = zone * C.ITEMS_PER_ZONE + np.minimum((uu[_S["vitem"]] * C.ITEMS_PER_ZONE).astype(np.int32), 7)
        vsell &= self.inventory[idx, vitem] > 0
        vamt = np.round(C.ITEM_VALUE[vitem] * C.VENDOR_SELL_SHARE * p.source_multiplier).astype(np.int64)
        vsell &= vamt >= 1
        self.inventory[idx[vsell], vitem[vsell]] -= 1
        self.gold[idx[vsell]] += vamt[vsell]
        ev.add(
            "currency_source",
            idx[vsell],
            currency=CURRENCY_CODE["gold"],
            amount=vamt[vsell],
            cause=CAUSE_CODE["vendor"],
        )
        self._spend(
            idx,
            uu[_S["vbuy"]] < _p(C.VENDOR_BUY_RATE_PER_MIN, dt),
            C.VENDOR_COST[zone] * p.sink_multiplier * (0.6 + 0.8 * uu[_S["vbuy_amt"]]),
            "vendor",
            ev,
        )
        self._spend(
            idx, uu[_S["fee"]] < _p(C.FEE_RATE_PER_MIN, dt), C.TRAVEL_FEE[zone] * p.sink_multiplier, "fee", ev
        )

        # --- gems: real-money purchases in, cosmetic shop out.
        gbuy = uu[_S["gem_buy"]] < _p(C.GEM_PURCHASE_RATE_PER_MIN, dt)
        pack = C.GEM_PURCHASE_PACKS[np.minimum((uu[_S["gem_shop"]] * 3).astype(np.int32), 2)]
        self.gems[idx[gbuy]] += pack[gbuy]
        ev.add(
            "currency_source",
            idx[gbuy],
            currency=CURRENCY_CODE["gems"],
            amount=pack[gbuy],
            cause=CAUSE_CODE["purchase"],
        )
        gshop = uu[_S["gem_shop"]] < _p(C.GEM_SHOP_RATE_PER_MIN, dt)
        cost = C.GEM_SHOP_COSTS[np.minimum((uu[_S["vbuy_amt"]] * 3).astype(np.int32), 2)]
        gshop &= ~gbuy & (self.gems[idx] >= cost)
        self.gems[idx[gshop]] -= cost[gshop]
        ev.add(
            "currency_sink",
            idx[gshop],
            currency=CURRENCY_CODE["gems"],
            amount=cost[gshop],
            cause=CAUSE_CODE["shop"],
        )

        self._trades(idx, uu, dt, zone, event_on, ev)

        # --- duplication exploit: a few players dupe items and sell the copies.
        if self.exploit_until_us > now_us and self.exploit_mag > 0:
            ex = uu[_S["exploit"]] < _p(C.EXPLOIT_RATE_PER_MIN * self.exploit_mag, dt)
            exi = idx[ex]
            rare = zone[ex] * C.ITEMS_PER_ZONE + C.ITEMS_PER_ZONE - 1
            self.inventory[exi, rare] += C.EXPLOIT_ITEMS
            gain = np.round(
                C.EXPLOIT_GOLD * self.exploit_mag * (0.5 + uu[_S["loot_amt"], ex]) + C.ITEM_VALUE[rare]
            ).astype(np.int64)
            self.gold[exi] += gain
            ev.add(
                "currency_source",
                exi,
                currency=CURRENCY_CODE["gold"],
                amount=gain,
                cause=CAUSE_CODE["vendor"],
            )

    def _spend(
        self, idx: np.ndarray, want: np.ndarray, amount: np.ndarray, cause: str, ev: EventBatch
    ) -> None:
        """A gold sink for the players who want it, can afford it and owe at least 1 gold."""
        amt = np.round(amount).astype(np.int64)
        ok = want & (amt >= 1) & (self.gold[idx] >= amt)
        self.gold[idx[ok]] -= amt[ok]
        ev.add(
            "currency_sink", idx[ok], currency=CURRENCY_CODE["gold"], amount=amt[ok], cause=CAUSE_CODE[cause]
        )

    def _trades(
        self, idx: np.ndarray, uu: np.ndarray, dt: float, zone: np.ndarray, event_on: bool, ev: EventBatch
    ) -> None:
        """Player-to-player trades: a buyer meets a random online seller holding the item."""
        n_on = len(idx)
        if n_on < 2:
            return
        rate = C.TRADE_RATE_PER_MIN * (C.MAP_EVENT_TRADE_BOOST if event_on else 1.0)
        buy = uu[_S["trade"]] < _p(rate, dt)
        want = zone * C.ITEMS_PER_ZONE + np.minimum(
            (C.ITEMS_PER_ZONE * uu[_S["titem"]] ** 1.5).astype(np.int32), 7
        )
        seller_pos = np.minimum((uu[_S["partner"]] * n_on).astype(np.int64), n_on - 1)
        seller = idx[seller_pos]
        buy &= seller != idx
        buy &= self.inventory[seller, want] > 0
        n_active = max(int(self.active.sum()), 1)
        stock = self.inventory.sum(axis=0, dtype=np.int64) / n_active  # vacant slots hold nothing
        scarcity = np.clip(
            (self.ref_stock / np.maximum(stock, 1e-3)) ** C.PRICE_SCARCITY_ELASTICITY, *C.SCARCITY_CLIP
        )
        price = np.round(
            C.ITEM_VALUE[want] * self.price_level * scarcity[want] * (0.85 + 0.3 * uu[_S["price"]])
        ).astype(np.int64)
        buy &= (price >= 1) & (self.gold[idx] >= price)
        b = np.flatnonzero(buy)
        if not len(b):
            return
        # One sale per (seller, item) per tick: the seller holds at least one, maybe only one.
        key = seller[b].astype(np.int64) * C.N_ITEMS + want[b]
        _, first = np.unique(key, return_index=True)
        b = np.sort(b[first])
        # A player who sells in this tick does not also buy (keeps gold checks exact).
        b = b[~np.isin(idx[b], seller[b])]
        if not len(b):
            return
        bi, si, it, pr = idx[b], seller[b], want[b], price[b]
        self.gold[bi] -= pr
        tax = np.round(pr * C.TRADE_TAX * self.params.sink_multiplier).astype(np.int64)
        tax = np.minimum(tax, pr)
        np.add.at(self.gold, si, pr - tax)
        self.inventory[si, it] -= 1
        self.inventory[bi, it] += 1
        ev.add("trade", bi, item_id=it, price=pr, currency=CURRENCY_CODE["gold"])
        taxed = tax >= 1
        ev.add(
            "currency_sink",
            si[taxed],
            currency=CURRENCY_CODE["gold"],
            amount=tax[taxed],
            cause=CAUSE_CODE["tax"],
        )

    def _sessions_end(
        self,
        idx: np.ndarray,
        u: np.ndarray,
        dt: float,
        ev: EventBatch,
        d_eng: np.ndarray,
        tick_ms: float,
        now_us: int,
    ) -> None:
        """Logouts (some of which are churn) and disconnects (which may reconnect)."""
        eng = self.engagement[idx].astype(np.float64)
        h_logout = (1.3 - 0.6 * eng) / C.MEAN_SESSION_MIN
        leave = u[_S["logout"], idx] < _p(h_logout, dt)
        churn_p = C.CHURN_BASE + C.CHURN_SLOPE * (1.0 - np.clip(eng + d_eng, 0.0, 1.0)) ** 3
        churn = leave & (u[_S["churn"], idx] < churn_p)
        logout = leave & ~churn
        h_disc = C.DISCONNECT_RATE_PER_MIN * (1.0 + (tick_ms / C.DISCONNECT_TICK_MS) ** 2)
        disc = ~leave & (u[_S["disc"], idx] < _p(h_disc, dt))

        ev.add("session_end", idx[logout], cause=CAUSE_CODE["logout"])
        ev.add("session_end", idx[churn], cause=CAUSE_CODE["churn"])
        self.on[idx[leave | disc]] = False
        di = idx[disc]
        self.pending[di] = True
        self.pending_until_us[di] = now_us + int(C.RECONNECT_WINDOW_MIN * 60 * _US)
        ci = idx[churn]
        if len(ci):
            # The player leaves the game: the slot is vacant until a newcomer arrives.
            self.active[ci] = False
            self.quest_id[ci] = -1
            self.stage[ci] = 0
            self.inventory[ci] = 0
            self.gold[ci] = 0
            self.gems[ci] = 0

    def _arrivals(self, u: np.ndarray, dt: float) -> None:
        """New players fill vacant slots at a steady rate: the population is persistent but alive."""
        vacant = ~self.active
        if not vacant.any():
            return
        new = np.flatnonzero(vacant & (u[_S["arrive"]] < _p(C.ARRIVAL_RATE_PER_MIN, dt)))
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
        self.skill[new] = (0.65 + 0.6 * u[_S["new_skill"], new]).astype(np.float32)
        lo, hi = C.NEW_ENGAGEMENT
        self.engagement[new] = (lo + (hi - lo) * u[_S["new_eng"], new]).astype(np.float32)
        self.gold[new] = C.START_GOLD
        self.gems[new] = 0
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
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"unsupported shard state format {state.get('format')!r}; expected {STATE_FORMAT}"
            )
        missing = [k for k in (*_ARRAY_FIELDS, *_SCALAR_FIELDS, "params_json", "rng_state") if k not in state]
        if missing:
            raise ValueError(f"shard state is missing {', '.join(missing)}")
        self = cls.__new__(cls)
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
        return self

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
