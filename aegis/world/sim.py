"""The bundled game world: shards of a persistent population, simulated tick by tick.

One :class:`ShardSim` holds a shard's players as numpy arrays (one slot per
player), its :class:`~aegis.domain.WorldParams`, its own PCG64 generator and its
fault state; :meth:`ShardSim.step` advances it one tick and returns that tick's
telemetry in SCHEMA_V1. :class:`World` is the set of shards of all regions on
one clock. docs/world.md explains the model and why it reacts as it does.

Common random numbers: every tick draws the same fixed-size block whatever the
parameters and the state: one uint32 per population slot for each primary
Bernoulli stream (one ``random_raw`` call) plus a few server values, the last of
which keys a counter-based generator for the secondary uniforms that only the
players with an event need. Two copies of one shard state with one generator
state therefore consume the generator identically, so a changed copy differs
from an unchanged one only by the change, not by noise (the simulation gate
relies on this).

Speed: the tick itself lives in :mod:`aegis.world.sim_tick` and runs over a
:class:`~aegis.world.sim_tick.ShardGroup`; :meth:`World.step` steps all shards
as one fused group (their arrays packed side by side, each shard's attributes
views of its slice), :meth:`ShardSim.step` is a group of one, and both give the
same events bit for bit. docs/world.md has the figures.
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
from aegis.world.sim_clock import EPOCH_US, US, from_us, to_us  # from_us, to_us: also imported from here
from aegis.world.sim_events import EventBuffer
from aegis.world.sim_tick import PLAYER_SHIFT, SLOT_FIELDS, ShardGroup, level_zone
from aegis.world.sim_tick import thr as _thr  # noqa: F401  (re-exported for tests)

REGIONS: tuple[str, ...] = ("eu-west", "us-east", "ap-southeast")
DEFAULT_PLAYERS_PER_SHARD = 5000
DEFAULT_SHARDS_PER_REGION = 3
DEFAULT_TICK_MINUTES = 1.0
DEFAULT_START = WORLD_EPOCH + timedelta(days=1)
STATE_FORMAT = 1  # version of the state_dict layout

# Player ids are shard_index << PLAYER_SHIFT | sequence: 2**12 shards x 2**28 players < 2**40.
_MAX_SHARD_INDEX = 2**12 - 1

# Everything ShardSim persists per player slot, plus the per-shard reference stock.
_ARRAY_FIELDS: dict[str, np.dtype] = {**SLOT_FIELDS, "ref_stock": np.dtype(np.float64)}
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
        self.player_id = (np.int64(self.shard_index) << PLAYER_SHIFT) + np.arange(n, dtype=np.int64)
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
        zone = level_zone(self.level)
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
        until = now_us + int(fault.duration_minutes * 60 * US)
        if fault.kind == FaultKind.LATENCY_SPIKE:
            self.latency_until_us = until
            self.latency_mult = max(1.0, float(fault.magnitude))
        elif fault.kind == FaultKind.SHARD_CRASH:
            self.down_until_us = max(self.down_until_us, until)
            # The crash drops every session; players may reconnect once it is back.
            self.pending |= self.on
            self.pending_until_us[self.on] = until + int(C.CRASH_RECONNECT_WINDOW_MIN * 60 * US)
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
        events appended (0 while the shard is down). A shard alone is a
        :class:`~aegis.world.sim_tick.ShardGroup` of one: the same tick as in a
        world's fused group, bit for bit.
        """
        group = self.__dict__.get("_solo")
        if group is None:
            group = self._solo = ShardGroup([self], pack=False)
        return group.step_into(minutes, now, [events])[0]

    def _diurnal(self, now_us: int) -> float:
        """Time-of-day factor of logins: peaks at PEAK_LOCAL_HOUR in the region's time zone."""
        hour = ((now_us - EPOCH_US) / (3600 * US) + C.REGION_UTC_OFFSET_H.get(self.region, 0.0)) % 24.0
        return 1.0 + C.DIURNAL_AMPLITUDE * math.cos(2 * math.pi * (hour - C.PEAK_LOCAL_HOUR) / 24.0)

    @staticmethod
    def _admit(idx: np.ndarray, u: np.ndarray, free: int) -> np.ndarray:
        """Admit at most ``free`` of ``idx`` (the ones with the smallest draw: a fair queue)."""
        free = max(free, 0)
        if len(idx) <= free:
            return idx
        return np.sort(idx[np.argsort(u[idx], kind="stable")[:free]])

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

    def group(self) -> ShardGroup[ShardSim]:
        """The fused group of all shards (their arrays packed side by side), built on first use.

        Rebuilt when the set of shards changes; a shard whose arrays were
        replaced (``load_state_dict``) is packed again by the group itself.
        """
        shards = list(self.shards.values())
        group = self.__dict__.get("_group")
        if (
            group is None
            or len(group.shards) != len(shards)
            or any(a is not b for a, b in zip(group.shards, shards, strict=True))
        ):
            group = self._group = ShardGroup(shards)
        return group

    def step(self) -> dict[str, pa.Table]:
        """Advance every shard one tick at the current game time; the clock moves on by one tick.

        All shards are stepped as one fused :class:`~aegis.world.sim_tick.ShardGroup`:
        the same tables as stepping each shard alone, a fraction of the numpy calls.
        """
        now = self.game_time
        bufs = [EventBuffer(s.shard_id, s.region, capacity=s.slots // 4) for s in self.shards.values()]
        self.group().step_into(self.tick_minutes, now, bufs)
        out = {sid: buf.to_table() for sid, buf in zip(self.shards, bufs, strict=True)}
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
