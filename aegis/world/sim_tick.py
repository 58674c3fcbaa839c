"""One simulation tick of a group of shards, fused: every numpy call covers all their players.

:class:`ShardGroup` steps several :class:`~aegis.world.sim.ShardSim` at once. Their
population arrays are packed into one structure of arrays (each shard's
attributes become views of its slice), so a tick costs ~500 numpy calls for the
whole group instead of ~500 per shard: at 11k players per shard that call
overhead, not the arithmetic, was most of the time.

Common random numbers are untouched: each shard still draws its tick's fixed
block (``random_raw``) from its own generator, in the same order and size as
when it runs alone; the blocks are laid side by side and every decision after
that is element-wise or per shard, never across shards. Per-shard scalars
(rates, multipliers, capacity, tick time) become per-shard vectors gathered per
player (:meth:`_Tick.per_shard`). Thinning bounds are taken over the group (a
larger bound only adds candidates that the exact test then rejects). So a shard
produces bit for bit the same events and state in a group of any size, alone
included: :meth:`ShardSim.step_into` is a group of one (tested against whole
worlds, and pinned by tests/aegis/world/test_sim_determinism.py).

Events of a tick are emitted kind by kind over the group (slots ascending, so
grouped by shard), then split into the shards' :class:`EventBuffer` in shard
order with a stable sort: each shard sees its events in the order it would
have emitted them alone.

This module does not import :mod:`aegis.world.sim` (which imports it): what the
tick needs of a shard is the :class:`TickShard` protocol, and game time comes
from :mod:`aegis.world.sim_clock`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from aegis.domain import N_STAGES, N_ZONES, WorldParams
from aegis.world import sim_catalog as C
from aegis.world.sim_clock import EPOCH_US, US, to_us
from aegis.world.sim_events import (
    CAUSE_CODE,
    CURRENCY_CODE,
    INT32_NULL,
    KIND_CODE,
    KIND_TS_RANK,
    PLAYER_SPREAD,
    EventBuffer,
)

# Player ids: shard_index << PLAYER_SHIFT | sequence (2**12 shards x 2**28 players < 2**40).
PLAYER_SHIFT = 28
# Primary uniforms: one uint32 per population slot per stream per tick, drawn in a single
# ``random_raw`` call per shard whatever the state (fixed order and size!).
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
N_PRIMARY = len(_PRIMARY)
assert N_PRIMARY % 2 == 0  # two uint32 per raw 64-bit draw
# Secondary uniforms: computed on demand by a counter-based generator keyed by the tick.
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
N_SECONDARY = len(_SECONDARY)
N_GLOBAL = 5  # map event start, map event zone, tick noise (2 for Box-Muller), tick key
_INV32 = 2.0**-32
_INV53 = 2.0**-53
_TWO32 = 2**32
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
MAX_ENGAGEMENT = 1.0
_NO_SLOTS = np.empty(0, dtype=np.int64)
_EVENT_COLS = ("quest_id", "stage", "zone", "x", "y", "amount", "item_id", "price", "cause", "currency")
# Population arrays packed per group (one row per slot; ref_stock is per shard, not per slot).
SLOT_FIELDS: dict[str, np.dtype] = {
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
}


# ------------------------------------------------------------------ probability helpers
def p_of_rate(rate_per_min: np.ndarray | float, minutes: float) -> np.ndarray | float:
    """Probability of at least one Poisson event in ``minutes`` at ``rate_per_min``."""
    return -np.expm1(-np.asarray(rate_per_min, dtype=np.float64) * minutes)


def pc(rate_per_min: float, minutes: float) -> float:
    """:func:`p_of_rate` of a scalar rate, in plain floats (no numpy call for a scalar)."""
    return -math.expm1(-rate_per_min * minutes)


def thr(p: float) -> int:
    """The uint32 threshold of probability ``p``: ``u < thr(p)`` exactly when ``u * 2**-32 < p``."""
    if not p > 0.0:
        return 0
    if p >= 1.0:
        return _TWO32
    return math.ceil(p * 4294967296.0)


def thr_vec(p: np.ndarray | float) -> np.ndarray:
    """:func:`thr` of each element (int64, so that 2**32 fits)."""
    return np.ceil(np.clip(p, 0.0, 1.0) * 4294967296.0).astype(np.int64)


def bound(p: float) -> float:
    """A probability a hair above ``p``, so that no vectorised rounding of p can exceed it (thinning)."""
    return min(1.0, p * (1.0 + 1e-9) + 1e-15)


def level_zone(level: np.ndarray) -> np.ndarray:
    """The zone of each player ``level`` (where a player without a quest plays)."""
    return np.minimum((level.astype(np.int32) - 1) // C.LEVELS_PER_ZONE, N_ZONES - 1)


class TickShard(Protocol):
    """What a tick reads and writes on a shard; :class:`~aegis.world.sim.ShardSim` is one.

    Declared here rather than imported so that the tick does not depend on the
    module that owns the shards. The slot arrays of :data:`SLOT_FIELDS` are
    attributes too: the group reads and replaces them by name.
    """

    shard_id: str
    capacity: int
    shard_index: int
    config_version: int
    rng: np.random.Generator
    params: WorldParams
    clock_us: int
    next_player_seq: int
    kind_counts: dict[str, int]
    # Faults and the shard's economy, read and advanced by the tick.
    down_until_us: int
    latency_until_us: int
    latency_mult: float
    exploit_until_us: int
    exploit_mag: float
    event_until_us: int
    event_zone: int
    last_tick_ms: float
    price_level: float
    money_ref: float
    ref_stock: np.ndarray
    # Derived from params by the shard (ShardSim._derive); _stock: items held per type.
    _stock: np.ndarray
    _stage_diff: np.ndarray
    _mean_stage_diff: float
    _death_zone: np.ndarray
    _death_zone_max: float
    _cause_cut: np.ndarray
    _drop_zone: np.ndarray
    _loot_zone: np.ndarray

    @property
    def slots(self) -> int: ...

    @property
    def clock(self) -> datetime: ...

    def _diurnal(self, now_us: int) -> float: ...

    def step_into(self, minutes: float, now: datetime, events: EventBuffer) -> int: ...


ShardT = TypeVar("ShardT", bound=TickShard)


class ShardGroup(Generic[ShardT]):
    """Shards stepped together: their slot arrays packed side by side, one fused tick for all.

    ``pack=True`` (a world's group) copies the shards' arrays into one block per
    field and makes each shard's attributes views of its slice; ``pack=False``
    (a single shard) uses the shard's own arrays. If a shard's arrays are
    replaced (``load_state_dict``), the group notices and packs again.
    """

    def __init__(self, shards: Sequence[ShardT], *, pack: bool = True) -> None:
        if not shards:
            raise ValueError("a shard group needs at least one shard")
        ids = [s.shard_id for s in shards]
        if len(set(ids)) != len(ids):
            raise ValueError(f"shard ids in a group must be distinct, got {ids}")
        self.shards: list[ShardT] = list(shards)
        self._pack = pack or len(self.shards) > 1
        self._views: list[dict[str, np.ndarray]] = []
        self._layout()

    # ------------------------------------------------------------------ layout
    def _layout(self) -> None:
        shards = self.shards
        sizes = np.array([s.slots for s in shards], dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(sizes)])
        self.n = int(self.off[-1])
        if self._pack:
            self.arrays = {name: np.concatenate([getattr(s, name) for s in shards]) for name in SLOT_FIELDS}
            self._views = []
            for i, s in enumerate(shards):
                a, b = int(self.off[i]), int(self.off[i + 1])
                views = {name: arr[a:b] for name, arr in self.arrays.items()}
                for name, view in views.items():
                    setattr(s, name, view)
                self._views.append(views)
        else:
            self.arrays = {name: getattr(shards[0], name) for name in SLOT_FIELDS}
            self._views = [dict(self.arrays)]
        s_count = len(shards)
        self.sh = np.repeat(np.arange(s_count, dtype=np.intp), sizes)
        local = np.arange(self.n, dtype=np.int64) - self.off[self.sh]
        self.ctr = local.astype(np.uint64) * np.uint64(N_SECONDARY)  # secondary counter base per slot
        self.u = np.empty((N_PRIMARY, self.n), dtype=np.uint32) if s_count > 1 else None
        self.tsb = np.empty(self.n, dtype=np.int64)

    def _intact(self) -> bool:
        """Whether every shard still holds the group's arrays (not replaced by a restore)."""
        for s, views in zip(self.shards, self._views, strict=True):
            for name, view in views.items():
                if getattr(s, name) is not view:
                    return False
        return True

    def ensure_packed(self) -> None:
        if not self._intact():
            self._layout()

    # -------------------------------------------------------------------- step
    def step_into(self, minutes: float, now: datetime, buffers: Sequence[EventBuffer]) -> list[int]:
        """Advance every shard one tick at ``now``, appending each shard's events to its buffer.

        Down (crashed) shards only advance their clock; if any shard is down the
        others are stepped one by one (same results, a crash is rare). Returns
        the events appended per shard.
        """
        if len(buffers) != len(self.shards):
            raise ValueError(f"need one buffer per shard: {len(self.shards)} shards, {len(buffers)} buffers")
        if not (minutes > 0 and math.isfinite(minutes)):
            raise ValueError(f"tick minutes must be a positive number, got {minutes}")
        now_us = to_us(now)
        for s in self.shards:
            if now_us < s.clock_us:
                raise ValueError(
                    f"game time {now.isoformat()} is before the shard clock {s.clock.isoformat()}"
                )
        tick_us = round(minutes * 60 * US)
        if len(self.shards) > 1 and any(s.down_until_us > now_us for s in self.shards):
            return [s.step_into(minutes, now, b) for s, b in zip(self.shards, buffers, strict=True)]
        if self.shards[0].down_until_us > now_us:  # a group of one
            self.shards[0].clock_us = now_us + tick_us
            return [0]
        self.ensure_packed()
        return _Tick(self, float(minutes), now_us, tick_us, buffers).run()


@dataclass
class _Online:
    """The players online in a tick and what the phases of play share about them.

    Every array is aligned with ``idx`` (their slots, ascending): position ``r``
    is slot ``idx[r]``. ``quest``, ``stage``, ``zone`` and ``gap`` are as they
    stand after this tick's quest starts; the phases write through to the slot
    arrays, not to these copies.
    """

    idx: np.ndarray
    uu: np.ndarray  # their primary uniforms: (streams, online)
    d_eng: np.ndarray  # their engagement change this tick (float32), summed by the phases
    quest: np.ndarray  # quest id, -1 without one
    stage: np.ndarray
    started: np.ndarray  # positions that started their quest this tick
    in_quest: np.ndarray
    zone: np.ndarray  # the quest's zone, or the level's zone without a quest
    s0: np.ndarray  # zero-based stage (0 without a quest)
    gap: np.ndarray  # difficulty minus skill
    gap_max: float


class _Tick:
    """The state of one fused tick (scratch arrays, per-shard vectors, the event block)."""

    def __init__(
        self, group: ShardGroup[Any], dt: float, now_us: int, tick_us: int, buffers: Sequence[EventBuffer]
    ) -> None:
        self.g = group
        self.shards: list[TickShard] = group.shards
        self.S = len(self.shards)
        self.A = group.arrays
        self.dt = dt
        self.now_us = now_us
        self.tick_us = tick_us
        self.buffers = buffers
        self.epoch_us = EPOCH_US
        self.params = [s.params for s in self.shards]
        self.sink = [p.sink_multiplier for p in self.params]
        self.source = [p.source_multiplier for p in self.params]
        # The event block of this tick: one chunk per emit, all shards together.
        self.chunks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]] = []

    # ---------------------------------------------------------------- helpers
    def sec(self, stream: int, slots: np.ndarray) -> np.ndarray:
        """Secondary uniforms in [0, 1) of ``slots`` for ``stream`` this tick (53 bits).

        SplitMix64 at counter ``local slot * N_SECONDARY + stream`` from the slot's
        shard's tick key: a pure function of (key, slot, stream).
        """
        key = self.key[0] if self.S == 1 else self.key[self.g.sh[slots]]
        z = key + (self.g.ctr[slots] + np.uint64(stream + 1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        return (z >> np.uint64(11)).astype(np.float64) * _INV53

    def emit(self, kind: str, slots: np.ndarray, **cols: Any) -> None:
        """Queue one ``kind`` event per slot (at the slot's instant, offset by kind)."""
        if not len(slots):
            return
        offset = int(KIND_TS_RANK[kind] * self.tick_us * (1.0 - PLAYER_SPREAD) / len(KIND_TS_RANK))
        # The player id is read now: a slot vacated by churn may be refilled later in the tick.
        self.chunks.append(
            (KIND_CODE[kind], slots, self.g.tsb[slots] + offset, self.A["player_id"][slots], cols)
        )

    def per_shard(
        self,
        values: Sequence[Any] | np.ndarray,
        rows: np.ndarray | None = None,
        *,
        col: np.ndarray | None = None,
        slots: np.ndarray | None = None,
        dtype: Any = None,
    ) -> Any:
        """Each player's own shard's entry of ``values`` (one per shard): a value, or ``[col]`` of a row.

        The players are the online ones at positions ``rows`` (all of them when
        None) or, with ``slots``, those population slots. In a group of one this
        is ``values[0]`` (``values[0][col]``) itself: no gather, and a Python
        scalar stays one, so the single-shard tick keeps its dtypes. ``dtype``
        is that of the per-shard vector (inferred from ``values`` when None).
        """
        if self.S == 1:
            return values[0] if col is None else values[0][col]
        if slots is not None:
            shard = self.g.sh[slots]
        elif rows is not None:
            shard = self.sho[rows]
        else:
            shard = self.sho
        table = np.asarray(values, dtype=dtype)
        return table[shard] if col is None else table[shard, col]

    def admit(self, idx: np.ndarray, u: np.ndarray, free: np.ndarray) -> np.ndarray:
        """Per shard, admit at most ``free[s]`` of its ``idx`` (smallest draws: a fair queue)."""
        free = np.maximum(free, 0)
        if not len(idx):
            return idx
        bounds = np.searchsorted(idx, self.g.off)
        counts = np.diff(bounds)
        over = np.flatnonzero(counts > free)
        if not len(over):
            return idx
        parts = []
        prev = 0
        for i in over:
            a, b = int(bounds[i]), int(bounds[i + 1])
            parts.append(idx[prev:a])
            seg = idx[a:b]
            parts.append(np.sort(seg[np.argsort(u[seg], kind="stable")[: int(free[i])]]))
            prev = b
        parts.append(idx[prev:])
        return np.concatenate(parts)

    def shard_counts(self, slots: np.ndarray) -> np.ndarray:
        """How many of the ascending ``slots`` fall in each shard."""
        return np.diff(np.searchsorted(slots, self.g.off))

    # -------------------------------------------------------------------- tick
    def run(self) -> list[int]:
        """The tick, phase by phase; every phase covers all the shards of the group at once."""
        u, gf = self.draw()
        self.map_events(gf)
        idx, n_on = self.connect(u)
        tick_ms = self.server_load(gf, n_on)
        # Items held per type and shard, updated by every inventory change of the tick.
        self.stock = np.stack([s._stock for s in self.shards])
        d_eng = np.zeros(len(idx), dtype=np.float32)
        if len(idx):
            self.sho = self.g.sh[idx]
            self.on_start = np.searchsorted(idx, self.g.off[:-1])
            self.n_on = n_on
            uu = u.take(idx, axis=1)  # (streams, online): gathered once
            self.play(idx, uu, d_eng)
            self.sessions_end(idx, uu, d_eng, tick_ms)
        self.arrivals(u)
        self.update_engagement(idx, d_eng, tick_ms)
        return self.flush(tick_ms, self.settle())

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """The tick's whole random block per shard, always the same size (common random numbers).

        Returns the primary uniforms (streams x slots, uint32) and each shard's
        four server uniforms (map event start and zone, tick noise); the keys of
        the secondary uniforms (:meth:`sec`) go to ``self.key``.
        """
        S = self.S
        keys = np.empty(S, dtype=np.uint64)
        gf = np.empty((S, 4))
        blocks = []
        for i, s in enumerate(self.shards):
            bits = s.rng.bit_generator
            n_s = s.slots
            blocks.append(bits.random_raw(n_s * (N_PRIMARY // 2)).view(np.uint32).reshape(N_PRIMARY, n_s))
            gr = bits.random_raw(N_GLOBAL)
            gf[i] = (gr[:4] >> np.uint64(11)).astype(np.float64) * _INV53
            keys[i] = gr[4]
        if S == 1:
            u = blocks[0]
        else:
            assert self.g.u is not None  # allocated for groups of more than one shard
            u = self.g.u
            np.concatenate(blocks, axis=1, out=u)
        self.key = keys
        return u, gf

    def map_events(self, gf: np.ndarray) -> None:
        """Map events: a shard-wide event in one zone draws players and loot (``self.event_on``)."""
        now_us = self.now_us
        event_on = np.zeros(self.S, dtype=bool)
        for i, s in enumerate(self.shards):
            if s.event_until_us <= now_us and gf[i, 0] < pc(s.params.map_event_frequency / 1440.0, self.dt):
                s.event_until_us = now_us + int(C.MAP_EVENT_MINUTES * 60 * US)
                s.event_zone = int(gf[i, 1] * N_ZONES)
            event_on[i] = s.event_until_us > now_us
        self.event_on = event_on

    def connect(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reconnects, expired disconnects and logins; stamps each online player's instant in the tick.

        Returns the online players' slots and the players online per shard.
        """
        A, now_us = self.A, self.now_us
        caps = np.array([s.capacity for s in self.shards], dtype=np.int64)
        n_on = self.shard_counts(np.flatnonzero(A["on"]))
        rec_idx, expired = self.reconnects(u, caps - n_on)
        n_on = n_on + self.shard_counts(rec_idx)
        login_idx = self.logins(u, caps - n_on)
        n_on = n_on + self.shard_counts(login_idx)

        idx = np.flatnonzero(A["on"])
        tsb = self.g.tsb
        spread = self.tick_us * PLAYER_SPREAD
        tsb[idx] = now_us + (self.sec(_Q["ts"], idx) * spread).astype(np.int64)
        self.emit("reconnect", rec_idx)
        self.emit("session_start", login_idx)
        if len(expired):
            tsb[expired] = now_us + (self.sec(_Q["ts"], expired) * spread).astype(np.int64)
            self.emit("session_end", expired, cause=CAUSE_CODE["disconnect"])
        return idx, n_on

    def reconnects(self, u: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Disconnected players back within their window (up to ``free`` per shard); the expired ones."""
        A, now_us = self.A, self.now_us
        pending = A["pending"]
        cand = np.flatnonzero(pending)
        if not len(cand):
            return _NO_SLOTS, _NO_SLOTS
        until = A["pending_until_us"][cand]
        hit = u[_P["recon"], cand] < thr(pc(C.RECONNECT_RATE_PER_MIN, self.dt))
        rec_idx = self.admit(cand[hit & (until >= now_us)], u[_P["recon"]], free)
        A["on"][rec_idx] = True
        pending[rec_idx] = False
        expired = cand[until < now_us]
        pending[expired] = False
        return rec_idx, expired

    def logins(self, u: np.ndarray, free: np.ndarray) -> np.ndarray:
        """Logins: engagement x time of day x map event, up to ``free`` per shard (capacity). Thinned."""
        A, dt, on = self.A, self.dt, self.A["on"]
        rates = [
            C.LOGIN_RATE_PER_MIN
            * s._diurnal(self.now_us)
            * (C.MAP_EVENT_LOGIN_BOOST if self.event_on[i] else 1.0)
            for i, s in enumerate(self.shards)
        ]
        cand = np.flatnonzero(u[_P["login"]] < thr(bound(pc(max(rates) * MAX_ENGAGEMENT, dt))))
        cand = cand[A["active"][cand] & ~on[cand] & ~A["pending"][cand]]
        eng = A["engagement"][cand].astype(np.float64)
        rate = self.per_shard(rates, slots=cand, dtype=np.float64)
        hit = u[_P["login"], cand] * _INV32 < -np.expm1(-rate * eng * dt)
        login_idx = self.admit(cand[hit], u[_P["login"]], free)
        on[login_idx] = True
        return login_idx

    def server_load(self, gf: np.ndarray, n_on: np.ndarray) -> np.ndarray:
        """Server load: a queueing-style tick time per shard from saturation (and any latency fault)."""
        tick_ms = np.empty(self.S)
        for i, s in enumerate(self.shards):
            rho = int(n_on[i]) / s.capacity
            noise = math.sqrt(-2.0 * math.log(max(gf[i, 2], 1e-12))) * math.cos(2 * math.pi * gf[i, 3])
            t_ms = C.TICK_BASE_MS * (1.0 + 0.5 * rho) / (1.0 - min(rho, C.RHO_MAX))
            t_ms *= math.exp(C.TICK_NOISE_SIGMA * noise)
            if s.latency_until_us > self.now_us:
                t_ms *= s.latency_mult
            t_ms = min(t_ms, C.TICK_MS_MAX)
            s.last_tick_ms = t_ms
            tick_ms[i] = t_ms
        return tick_ms

    def update_engagement(self, idx: np.ndarray, d_eng: np.ndarray, tick_ms: np.ndarray) -> None:
        """Engagement: the online players' experience of the tick (``d_eng``, lag), offline drift."""
        A, dt = self.A, self.dt
        engagement = A["engagement"]
        if len(idx):
            sub = [
                np.float32(
                    C.ONLINE_BOREDOM * dt
                    + (C.LAG_ENGAGEMENT_PER_MIN * dt if tick_ms[i] > C.LAG_ENGAGEMENT_MS else 0.0)
                )
                for i in range(self.S)
            ]
            sub_slot = self.per_shard(sub, dtype=np.float32)
            engagement[idx] = np.clip(engagement[idx] + d_eng - sub_slot, 0.02, 1.0)
        drift = (np.float32(C.OFFLINE_ENGAGEMENT_TARGET) - engagement) * np.float32(
            C.OFFLINE_ENGAGEMENT_RATE * dt
        )
        drift *= A["active"] & ~A["on"]
        engagement += drift

    def settle(self) -> np.ndarray:
        """Prices respond to money per active player; stock and clocks go back to the shards.

        Returns the players online per shard at the end of the tick.
        """
        A, dt = self.A, self.dt
        starts = self.g.off[:-1]
        n_active = np.add.reduceat(A["active"], starts, dtype=np.int64)
        gold_sum = np.add.reduceat(A["gold"], starts)
        players_online = np.add.reduceat(A["on"], starts, dtype=np.int64)
        for i, s in enumerate(self.shards):
            money = float(gold_sum[i]) / max(int(n_active[i]), 1)
            target = (max(money, 1.0) / s.money_ref) ** C.PRICE_MONEY_ELASTICITY
            s.price_level += (1.0 - math.exp(-dt / C.PRICE_ADJUST_MIN)) * (target - s.price_level)
            s._stock[:] = self.stock[i]
            s.clock_us = self.now_us + self.tick_us
        return players_online

    # ------------------------------------------------------------------ events
    def flush(self, tick_ms: np.ndarray, players_online: np.ndarray) -> list[int]:
        """Split the tick's event block by shard (stable: each shard's own order) into the buffers."""
        S = self.S
        chunks = self.chunks
        sizes = [len(c[1]) for c in chunks]
        n = sum(sizes)
        kind = (
            np.repeat(np.array([c[0] for c in chunks], dtype=np.int8), sizes) if n else np.empty(0, np.int8)
        )
        slots = np.concatenate([c[1] for c in chunks]) if n else _NO_SLOTS
        ts = np.concatenate([c[2] for c in chunks]) if n else _NO_SLOTS
        pids = np.concatenate([c[3] for c in chunks]) if n else _NO_SLOTS
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        cols: dict[str, np.ndarray] = {}
        for name in _EVENT_COLS:
            present = [(j, c[4][name]) for j, c in enumerate(chunks) if name in c[4]]
            if not present:
                continue
            col = np.full(n, EventBuffer.column_null(name), dtype=EventBuffer.column_dtype(name))
            for j, v in present:
                col[bounds[j] : bounds[j + 1]] = v
            cols[name] = col
        if S == 1:
            order = None
            counts = np.array([n])
        else:
            ev_shard = self.g.sh[slots]
            order = np.argsort(ev_shard, kind="stable")
            counts = np.bincount(ev_shard, minlength=S)
        out = []
        a = 0
        for i, s in enumerate(self.shards):
            buf = self.buffers[i]
            first = buf.n
            buf.begin_tick(self.now_us - self.epoch_us, s.config_version)
            b = a + int(counts[i])
            if b > a:
                sel = slice(a, b) if order is None else order[a:b]
                buf.append(
                    kind[sel],
                    ts[sel],
                    pids[sel],
                    b - a,
                    {name: col[sel] for name, col in cols.items()},
                )
            buf.append(
                KIND_CODE["server_tick"],
                self.now_us + self.tick_us - 1,
                -1,
                1,
                {"tick_ms": float(tick_ms[i]), "players_online": int(players_online[i])},
            )
            for k, c in buf.kind_counts(first).items():
                s.kind_counts[k] = s.kind_counts.get(k, 0) + c
            out.append(buf.n - first)
            a = b
        return out

    # -------------------------------------------------------------------- play
    def play(self, idx: np.ndarray, uu: np.ndarray, d_eng: np.ndarray) -> None:
        """Quests, combat, loot, economy and trades of the online players ``idx`` (all shards), in order."""
        o = self.online(idx, uu, d_eng)
        self.combat(o)
        if o.in_quest.any():
            self.quests(o)
        self.loot(o)
        self.vendors(o)
        self.gems(o)
        self.trades(o)
        self.exploit(o)

    def online(self, idx: np.ndarray, uu: np.ndarray, d_eng: np.ndarray) -> _Online:
        """Quest starts for players without one, then where each online player is and how hard it is."""
        A = self.A
        quest = A["quest_id"][idx]
        lz = level_zone(A["level"][idx])
        started = self.quest_starts(idx, uu, quest, lz)
        stage = A["stage"][idx]
        in_quest = quest >= 0
        zone = np.where(in_quest, quest % N_ZONES, lz)
        s0 = np.maximum(stage.astype(np.int32) - 1, 0)
        stage_diff = [s._stage_diff for s in self.shards]
        qdiff = np.where(
            in_quest,
            C.QUEST_BASE_DIFFICULTY[np.maximum(quest, 0)] * self.per_shard(stage_diff, col=s0),
            C.GRIND_DIFFICULTY,
        )
        gap = qdiff - A["skill"][idx]
        return _Online(idx, uu, d_eng, quest, stage, started, in_quest, zone, s0, gap, float(gap.max()))

    def quest_starts(self, idx: np.ndarray, uu: np.ndarray, quest: np.ndarray, lz: np.ndarray) -> np.ndarray:
        """Players without a quest start one of their level's zone (``quest`` updated); their positions."""
        A = self.A
        start = np.flatnonzero(
            (uu[_P["qstart"]] < thr(pc(C.QUEST_START_RATE_PER_MIN, self.dt))) & (quest < 0)
        )
        if len(start):
            s_idx = idx[start]
            pick = np.minimum(
                (self.sec(_Q["qpick"], s_idx) * C.QUESTS_PER_ZONE).astype(np.int32), C.QUESTS_PER_ZONE - 1
            )
            new_q = (lz[start] + N_ZONES * pick).astype(np.int32)
            quest[start] = new_q
            A["quest_id"][s_idx] = new_q
            A["stage"][s_idx] = 1
            A["stage_deaths"][s_idx] = 0
            self.emit("quest_start", s_idx, quest_id=new_q, stage=1)
        return start

    def combat(self, o: _Online) -> None:
        """Combat deaths: zone danger x difficulty gap; the dead pay for repairs."""
        A, dt, uu, zone = self.A, self.dt, o.uu, o.zone
        h_max = max(s._death_zone_max for s in self.shards) * math.exp(C.DEATH_GAP_K * o.gap_max)
        c = np.flatnonzero(uu[_P["death"]] < thr(bound(pc(h_max, dt))))
        death_zone = [s._death_zone for s in self.shards]
        h = self.per_shard(death_zone, c, col=zone[c]) * np.exp(C.DEATH_GAP_K * o.gap[c])
        die = c[uu[_P["death"], c] * _INV32 < -np.expm1(-h * dt)]
        if not len(die):
            return
        didx = o.idx[die]
        dz = zone[die]
        uc = self.sec(_Q["dcause"], didx)
        cut = self.per_shard([s._cause_cut for s in self.shards], die, col=dz)
        cause = np.where(
            uc < cut[:, 0],
            CAUSE_CODE["elite"],
            np.where(
                uc < cut[:, 1],
                CAUSE_CODE["npc"],
                np.where(uc < cut[:, 2], CAUSE_CODE["fall"], CAUSE_CODE["pvp"]),
            ),
        )
        hot = np.minimum((self.sec(_Q["hot"], didx) * 3).astype(np.int32), 2)
        centre = C.ZONE_HOTSPOTS[dz, hot]
        spread = 2 * C.HOTSPOT_SPREAD
        x = np.clip(centre[:, 0] + (self.sec(_Q["x"], didx) - 0.5) * spread, 0.0, 1023.9)
        y = np.clip(centre[:, 1] + (self.sec(_Q["y"], didx) - 0.5) * spread, 0.0, 1023.9)
        dq = o.quest[die]
        self.emit(
            "combat_death",
            didx,
            quest_id=np.where(dq >= 0, dq, INT32_NULL),
            stage=np.where(dq >= 0, o.stage[die].astype(np.int32), INT32_NULL),
            zone=dz,
            x=x,
            y=y,
            cause=cause,
        )
        A["stage_deaths"][didx] += 1
        o.d_eng[die] += C.ENG_DEATH
        gold = A["gold"]
        repair = np.minimum(
            np.round(C.REPAIR_COST[dz] * self.per_shard(self.sink, die)).astype(np.int64), gold[didx]
        )
        pay = repair >= 1
        gold[didx[pay]] -= repair[pay]
        self.emit(
            "currency_sink",
            didx[pay],
            currency=CURRENCY_CODE["gold"],
            amount=repair[pay],
            cause=CAUSE_CODE["repair"],
        )

    def quests(self, o: _Online) -> None:
        """Abandonment competes with finishing the stage; the last stage completes the quest."""
        A, idx = self.A, o.idx
        ab = self.abandons(o)
        done = self.stages(o, ab)
        last = o.stage[done] >= N_STAGES
        fin = done[last]
        fidx = idx[fin]
        self.emit("quest_complete", fidx, quest_id=o.quest[fin], stage=o.stage[fin])
        o.d_eng[fin] += C.ENG_QUEST
        if len(fin):
            self.quest_rewards(o, fin)
        cleared = idx[np.concatenate([ab, fin])]
        A["quest_id"][cleared] = -1
        A["stage"][cleared] = 0
        advance = idx[done][~last]
        A["stage"][advance] += 1
        A["stage_deaths"][cleared] = 0
        A["stage_deaths"][advance] = 0

    def abandons(self, o: _Online) -> np.ndarray:
        """Quests given up (more often far over one's head and after deaths); their positions."""
        dt, uu = self.dt, o.uu
        pace07 = [p.quest_pacing**0.7 for p in self.params]
        sd = self.A["stage_deaths"][o.idx]  # after this tick's deaths
        h_max = (
            C.ABANDON_RATE_PER_MIN
            * math.exp(C.ABANDON_GAP_K * o.gap_max)
            * max(pace07)
            * (1.0 + C.ABANDON_PER_DEATH * float(sd.max()))
        )
        c = np.flatnonzero(uu[_P["abandon"]] < thr(bound(pc(h_max, dt))))
        fresh = np.zeros(len(o.idx), dtype=bool)
        fresh[o.started] = True  # a quest started this tick is not abandoned in the same tick
        c = c[o.in_quest[c] & ~fresh[c]]
        h_ab = (
            C.ABANDON_RATE_PER_MIN
            * np.exp(C.ABANDON_GAP_K * o.gap[c])
            * self.per_shard(pace07, c, dtype=np.float64)
            * (1.0 + C.ABANDON_PER_DEATH * sd[c].astype(np.float64))
        )
        ab = c[uu[_P["abandon"], c] * _INV32 < -np.expm1(-h_ab * dt)]
        self.emit("quest_abandon", o.idx[ab], quest_id=o.quest[ab], stage=o.stage[ab])
        o.d_eng[ab] += C.ENG_ABANDON
        return ab

    def stages(self, o: _Online, ab: np.ndarray) -> np.ndarray:
        """Stages finished (slower with pacing and difficulty gap) by players who did not abandon."""
        A, dt, uu = self.A, self.dt, o.uu
        pacing = [p.quest_pacing for p in self.params]
        h_max = 1.0 / (float(C.STAGE_MINUTES.min()) * min(pacing))
        c = np.flatnonzero(uu[_P["stage"]] < thr(bound(pc(h_max, dt))))
        fresh = np.zeros(len(o.idx), dtype=bool)
        fresh[ab] = True
        c = c[o.in_quest[c] & ~fresh[c]]
        h_stage = 1.0 / (
            C.STAGE_MINUTES[o.s0[c]]
            * self.per_shard(pacing, c, dtype=np.float64)
            * (1.0 + C.STAGE_SLOWDOWN_PER_GAP * np.maximum(o.gap[c], 0))
        )
        done = c[uu[_P["stage"], c] * _INV32 < -np.expm1(-h_stage * dt)]
        d_idx = o.idx[done]
        self.emit("quest_stage", d_idx, quest_id=o.quest[done], stage=o.stage[done])
        o.d_eng[done] += C.ENG_STAGE
        skill = A["skill"]
        skill[d_idx] = np.minimum(skill[d_idx] + np.float32(C.SKILL_PER_STAGE), C.SKILL_CAP)
        return done

    def quest_rewards(self, o: _Online, fin: np.ndarray) -> None:
        """Gold (and sometimes gems) for the completed quests ``fin``, and a level up."""
        A = self.A
        fidx = o.idx[fin]
        fz = o.zone[fin]
        reward_k = self.per_shard([p.quest_reward for p in self.params], fin, dtype=np.float64)
        root = self.per_shard([math.sqrt(s._mean_stage_diff) for s in self.shards], fin, dtype=np.float64)
        reward = np.round(
            C.QUEST_REWARD_GOLD[fz] * reward_k * root * (0.8 + 0.4 * self.sec(_Q["reward"], fidx))
        ).astype(np.int64)
        paid = reward >= 1
        A["gold"][fidx[paid]] += reward[paid]
        self.emit(
            "currency_source",
            fidx[paid],
            currency=CURRENCY_CODE["gold"],
            amount=reward[paid],
            cause=CAUSE_CODE["quest_reward"],
        )
        gems = np.round((1 + fz // 2) * reward_k).astype(np.int64)
        gem = (self.sec(_Q["gems_q"], fidx) < C.QUEST_GEM_CHANCE) & (gems >= 1)
        A["gems"][fidx[gem]] += gems[gem]
        self.emit(
            "currency_source",
            fidx[gem],
            currency=CURRENCY_CODE["gems"],
            amount=gems[gem],
            cause=CAUSE_CODE["quest_reward"],
        )
        A["level"][fidx] = np.minimum(A["level"][fidx] + 1, C.MAX_LEVEL)

    def loot(self, o: _Online) -> None:
        """Loot: item drops and gold, with the map event zone boosted for drops."""
        A, S, dt, uu, zone = self.A, self.S, self.dt, o.uu, o.zone
        boost = np.ones((S, N_ZONES))
        for i, s in enumerate(self.shards):
            if self.event_on[i]:
                boost[i, s.event_zone] = C.MAP_EVENT_DROP_BOOST
        drop_zone = np.stack([s._drop_zone for s in self.shards])
        drop_thr = thr_vec(p_of_rate(drop_zone * boost, dt))
        drop = np.flatnonzero(uu[_P["drop"]] < self.per_shard(drop_thr, col=zone))
        if len(drop):
            di = o.idx[drop]
            dz = zone[drop]
            rarity = np.minimum(
                (C.ITEMS_PER_ZONE * self.sec(_Q["item"], di) ** C.RARITY_EXPONENT).astype(np.int32),
                C.ITEMS_PER_ZONE - 1,
            )
            item = dz * C.ITEMS_PER_ZONE + rarity
            A["inventory"][di, item] += 1
            self.stock_add(self.sho[drop], item, 1)
            self.emit("item_drop", di, item_id=item, zone=dz)
            o.d_eng[drop] += C.ENG_DROP
        loot_thr = thr_vec(p_of_rate(np.stack([s._loot_zone for s in self.shards]), dt))
        loot = np.flatnonzero(uu[_P["loot"]] < self.per_shard(loot_thr, col=zone))
        if len(loot):
            li = o.idx[loot]
            src = self.per_shard(self.source, loot)
            amt = np.round(C.LOOT_GOLD[zone[loot]] * src * (0.5 + self.sec(_Q["loot_amt"], li))).astype(
                np.int64
            )
            ok = amt >= 1
            A["gold"][li[ok]] += amt[ok]
            self.emit(
                "currency_source",
                li[ok],
                currency=CURRENCY_CODE["gold"],
                amount=amt[ok],
                cause=CAUSE_CODE["loot"],
            )

    def vendors(self, o: _Online) -> None:
        """Vendors: selling loot is a faucet, consumables and travel are sinks."""
        A, dt, uu, zone = self.A, self.dt, o.uu, o.zone
        inventory = A["inventory"]
        vs = np.flatnonzero(uu[_P["vsell"]] < thr(pc(C.VENDOR_SELL_RATE_PER_MIN, dt)))
        if len(vs):
            vi = o.idx[vs]
            vitem = zone[vs] * C.ITEMS_PER_ZONE + np.minimum(
                (self.sec(_Q["vitem"], vi) * C.ITEMS_PER_ZONE).astype(np.int32), C.ITEMS_PER_ZONE - 1
            )
            vamt = np.round(
                C.ITEM_VALUE[vitem] * C.VENDOR_SELL_SHARE * self.per_shard(self.source, vs)
            ).astype(np.int64)
            ok = (inventory[vi, vitem] > 0) & (vamt >= 1)
            vi, vitem, vamt = vi[ok], vitem[ok], vamt[ok]
            inventory[vi, vitem] -= 1
            self.stock_add(self.sho[vs][ok], vitem, -1)
            A["gold"][vi] += vamt
            self.emit(
                "currency_source", vi, currency=CURRENCY_CODE["gold"], amount=vamt, cause=CAUSE_CODE["vendor"]
            )
        vb = np.flatnonzero(uu[_P["vbuy"]] < thr(pc(C.VENDOR_BUY_RATE_PER_MIN, dt)))
        if len(vb):
            bi = o.idx[vb]
            snk = self.per_shard(self.sink, vb)
            want = C.VENDOR_COST[zone[vb]] * snk * (0.6 + 0.8 * self.sec(_Q["vbuy_amt"], bi))
            self.spend(bi, want, "vendor")
        fee = np.flatnonzero(uu[_P["fee"]] < thr(pc(C.FEE_RATE_PER_MIN, dt)))
        if len(fee):
            self.spend(o.idx[fee], C.TRAVEL_FEE[zone[fee]] * self.per_shard(self.sink, fee), "fee")

    def gems(self, o: _Online) -> None:
        """Gems: real-money purchases in, the cosmetic shop out (not both in one tick)."""
        dt, idx, uu = self.dt, o.idx, o.uu
        gems = self.A["gems"]
        gb = np.flatnonzero(uu[_P["gem_buy"]] < thr(pc(C.GEM_PURCHASE_RATE_PER_MIN, dt)))
        if len(gb):
            gi = idx[gb]
            pack = C.GEM_PURCHASE_PACKS[np.minimum((self.sec(_Q["pack"], gi) * 3).astype(np.int32), 2)]
            gems[gi] += pack
            self.emit(
                "currency_source",
                gi,
                currency=CURRENCY_CODE["gems"],
                amount=pack,
                cause=CAUSE_CODE["purchase"],
            )
        gs = np.flatnonzero(uu[_P["gem_shop"]] < thr(pc(C.GEM_SHOP_RATE_PER_MIN, dt)))
        if len(gs):
            if len(gb):
                bought = np.zeros(len(idx), dtype=bool)
                bought[gb] = True
                gs = gs[~bought[gs]]
            si = idx[gs]
            cost = C.GEM_SHOP_COSTS[np.minimum((self.sec(_Q["cost"], si) * 3).astype(np.int32), 2)]
            ok = gems[si] >= cost
            gems[si[ok]] -= cost[ok]
            self.emit(
                "currency_sink",
                si[ok],
                currency=CURRENCY_CODE["gems"],
                amount=cost[ok],
                cause=CAUSE_CODE["shop"],
            )

    def trades(self, o: _Online) -> None:
        """Player-to-player trades: a buyer meets a random online seller of the same shard."""
        A, dt, idx, sho = self.A, self.dt, o.idx, self.sho
        limits = [
            thr(pc(C.TRADE_RATE_PER_MIN * (C.MAP_EVENT_TRADE_BOOST if self.event_on[i] else 1.0), dt))
            for i in range(self.S)
        ]
        b = np.flatnonzero(o.uu[_P["trade"]] < self.per_shard(limits, dtype=np.int64))
        if not len(b):
            return
        buyer = idx[b]
        want = o.zone[b] * C.ITEMS_PER_ZONE + np.minimum(
            (C.ITEMS_PER_ZONE * self.sec(_Q["titem"], buyer) ** 1.5).astype(np.int32), C.ITEMS_PER_ZONE - 1
        )
        sb = sho[b]
        n_on = self.n_on[sb]
        start = self.on_start[sb]
        seller = idx[start + np.minimum((self.sec(_Q["partner"], buyer) * n_on).astype(np.int64), n_on - 1)]
        n_active = np.maximum(np.add.reduceat(A["active"], self.g.off[:-1], dtype=np.int64), 1)
        stock = self.stock / n_active[:, None]  # vacant slots hold nothing
        ref = np.stack([s.ref_stock for s in self.shards])
        scarcity = np.clip((ref / np.maximum(stock, 1e-3)) ** C.PRICE_SCARCITY_ELASTICITY, *C.SCARCITY_CLIP)
        price = np.round(
            C.ITEM_VALUE[want]
            * self.per_shard([s.price_level for s in self.shards], b)
            * self.per_shard(scarcity, b, col=want)
            * (0.85 + 0.3 * self.sec(_Q["price"], buyer))
        ).astype(np.int64)
        inventory, gold = A["inventory"], A["gold"]
        ok = (seller != buyer) & (inventory[seller, want] > 0) & (price >= 1) & (gold[buyer] >= price)
        k = np.flatnonzero(ok)
        if not len(k):
            return
        # One sale per (seller, item) per tick: the seller holds at least one, maybe only one.
        key = seller[k].astype(np.int64) * C.N_ITEMS + want[k]
        _, first = np.unique(key, return_index=True)
        k = np.sort(k[first])
        # A player who sells in this tick does not also buy (keeps gold checks exact).
        selling = np.zeros(self.g.n, dtype=bool)
        selling[seller[k]] = True
        k = k[~selling[buyer[k]]]
        if not len(k):
            return
        bi, si, it, pr = buyer[k], seller[k], want[k], price[k]
        gold[bi] -= pr
        tax = np.round(pr * C.TRADE_TAX * self.per_shard(self.sink, b[k])).astype(np.int64)
        tax = np.minimum(tax, pr)
        np.add.at(gold, si, pr - tax)
        inventory[si, it] -= 1
        inventory[bi, it] += 1
        self.emit("trade", bi, item_id=it, price=pr, currency=CURRENCY_CODE["gold"])
        taxed = tax >= 1
        self.emit(
            "currency_sink",
            si[taxed],
            currency=CURRENCY_CODE["gold"],
            amount=tax[taxed],
            cause=CAUSE_CODE["tax"],
        )

    def exploit(self, o: _Online) -> None:
        """Duplication exploit (a fault): a few players dupe a rare item and sell the copies."""
        A, zone = self.A, o.zone
        ex_thr = [
            thr(pc(C.EXPLOIT_RATE_PER_MIN * s.exploit_mag, self.dt))
            if s.exploit_until_us > self.now_us and s.exploit_mag > 0
            else 0
            for s in self.shards
        ]
        if not any(ex_thr):
            return
        ex = np.flatnonzero(o.uu[_P["exploit"]] < self.per_shard(ex_thr, dtype=np.int64))
        if not len(ex):
            return
        exi = o.idx[ex]
        rare = zone[ex] * C.ITEMS_PER_ZONE + C.ITEMS_PER_ZONE - 1
        A["inventory"][exi, rare] += C.EXPLOIT_ITEMS
        self.stock_add(self.sho[ex], rare, C.EXPLOIT_ITEMS)
        eg = self.per_shard([C.EXPLOIT_GOLD * s.exploit_mag for s in self.shards], ex)
        gain = np.round(eg * (0.5 + self.sec(_Q["exploit_amt"], exi)) + C.ITEM_VALUE[rare]).astype(np.int64)
        A["gold"][exi] += gain
        self.emit(
            "currency_source",
            exi,
            currency=CURRENCY_CODE["gold"],
            amount=gain,
            cause=CAUSE_CODE["vendor"],
        )

    def stock_add(self, shard_of: np.ndarray, item: np.ndarray, amount: int) -> None:
        """Items per type and shard: ``amount`` of each ``item`` in shard ``shard_of``."""
        if self.S == 1:
            self.stock[0] += amount * np.bincount(item, minlength=C.N_ITEMS)
        else:
            counts = np.bincount(shard_of * C.N_ITEMS + item, minlength=self.S * C.N_ITEMS)
            self.stock += amount * counts.reshape(self.S, C.N_ITEMS)

    def stock_remove_rows(self, slots: np.ndarray) -> None:
        """Take the whole inventories of ``slots`` out of their shards' stock (churn, arrivals)."""
        if not len(slots):
            return
        if self.S == 1:
            self.stock[0] -= self.A["inventory"][slots].sum(axis=0, dtype=np.int64)
        else:
            per = np.zeros_like(self.stock)
            np.add.at(per, self.g.sh[slots], self.A["inventory"][slots].astype(np.int64))
            self.stock -= per

    def spend(self, slots: np.ndarray, amount: np.ndarray, cause: str) -> None:
        """A gold sink for the players who want it, can afford it and owe at least 1 gold."""
        gold = self.A["gold"]
        amt = np.round(amount).astype(np.int64)
        ok = (amt >= 1) & (gold[slots] >= amt)
        gold[slots[ok]] -= amt[ok]
        self.emit(
            "currency_sink",
            slots[ok],
            currency=CURRENCY_CODE["gold"],
            amount=amt[ok],
            cause=CAUSE_CODE[cause],
        )

    def sessions_end(self, idx: np.ndarray, uu: np.ndarray, d_eng: np.ndarray, tick_ms: np.ndarray) -> None:
        """Logouts (some of which are churn) and disconnects (which may reconnect)."""
        A, S, dt = self.A, self.S, self.dt
        h_max = 1.3 / C.MEAN_SESSION_MIN  # engagement >= 0
        c = np.flatnonzero(uu[_P["logout"]] < thr(bound(pc(h_max, dt))))
        eng = A["engagement"][idx[c]].astype(np.float64)
        h_logout = (1.3 - 0.6 * eng) / C.MEAN_SESSION_MIN
        hit = uu[_P["logout"], c] * _INV32 < -np.expm1(-h_logout * dt)
        leave = c[hit]
        eng = eng[hit]
        churn_p = C.CHURN_BASE + C.CHURN_SLOPE * (1.0 - np.clip(eng + d_eng[leave], 0.0, 1.0)) ** 3
        is_churn = self.sec(_Q["churn"], idx[leave]) < churn_p
        limits = [
            thr(pc(C.DISCONNECT_RATE_PER_MIN * (1.0 + (float(tick_ms[i]) / C.DISCONNECT_TICK_MS) ** 2), dt))
            for i in range(S)
        ]
        disc = np.flatnonzero(uu[_P["disc"]] < self.per_shard(limits, dtype=np.int64))
        if len(disc) and len(leave):
            left = np.zeros(len(idx), dtype=bool)
            left[leave] = True
            disc = disc[~left[disc]]

        li = idx[leave]
        ci = li[is_churn]
        self.emit("session_end", li[~is_churn], cause=CAUSE_CODE["logout"])
        self.emit("session_end", ci, cause=CAUSE_CODE["churn"])
        di = idx[disc]
        on, pending = A["on"], A["pending"]
        on[li] = False
        on[di] = False
        pending[di] = True
        A["pending_until_us"][di] = self.now_us + int(C.RECONNECT_WINDOW_MIN * 60 * US)
        if len(ci):
            # The player leaves the game: the slot is vacant until a newcomer arrives.
            self.stock_remove_rows(ci)
            A["active"][ci] = False
            A["quest_id"][ci] = -1
            A["stage"][ci] = 0
            A["inventory"][ci] = 0
            A["gold"][ci] = 0
            A["gems"][ci] = 0

    def arrivals(self, u: np.ndarray) -> None:
        """New players fill vacant slots at a steady rate: the population is persistent but alive."""
        A = self.A
        new = np.flatnonzero(u[_P["arrive"]] < thr(pc(C.ARRIVAL_RATE_PER_MIN, self.dt)))
        new = new[~A["active"][new]]
        k = len(new)
        if not k:
            return
        counts = self.shard_counts(new)
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        shard_of = self.g.sh[new]
        rank = np.arange(k, dtype=np.int64) - firsts[shard_of]
        base = np.array(
            [(s.shard_index << PLAYER_SHIFT) + s.next_player_seq for s in self.shards], dtype=np.int64
        )
        A["player_id"][new] = base[shard_of] + rank
        for i, s in enumerate(self.shards):
            s.next_player_seq += int(counts[i])
            if s.next_player_seq >= 2**PLAYER_SHIFT:
                raise OverflowError(f"shard {s.shard_id} ran out of player ids")
        A["active"][new] = True
        A["on"][new] = False
        A["pending"][new] = False
        A["level"][new] = 1
        A["skill"][new] = (0.65 + 0.6 * self.sec(_Q["new_skill"], new)).astype(np.float32)
        lo, hi = C.NEW_ENGAGEMENT
        A["engagement"][new] = (lo + (hi - lo) * self.sec(_Q["new_eng"], new)).astype(np.float32)
        A["gold"][new] = C.START_GOLD
        A["gems"][new] = 0
        self.stock_remove_rows(new)
        A["inventory"][new] = 0
        A["quest_id"][new] = -1
        A["stage"][new] = 0
        A["stage_deaths"][new] = 0
