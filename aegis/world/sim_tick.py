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
player. Thinning bounds are taken over the group (a larger bound only adds
candidates that the exact test then rejects). So a shard produces bit for bit
the same events and state in a group of any size, alone included:
:meth:`ShardSim.step_into` is a group of one (tested against whole worlds).

Events of a tick are emitted kind by kind over the group (slots ascending, so
grouped by shard), then split into the shards' :class:`EventBuffer` in shard
order with a stable sort: each shard sees its events in the order it would
have emitted them alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from aegis.domain import N_STAGES, N_ZONES
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

if TYPE_CHECKING:  # pragma: no cover
    from aegis.world.sim import ShardSim

_US = 1_000_000
_PLAYER_SHIFT = 28
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
    return np.minimum((level.astype(np.int32) - 1) // C.LEVELS_PER_ZONE, N_ZONES - 1)


class ShardGroup:
    """Shards stepped together: their slot arrays packed side by side, one fused tick for all.

    ``pack=True`` (a world's group) copies the shards' arrays into one block per
    field and makes each shard's attributes views of its slice; ``pack=False``
    (a single shard) uses the shard's own arrays. If a shard's arrays are
    replaced (``load_state_dict``), the group notices and packs again.
    """

    def __init__(self, shards: Sequence[ShardSim], *, pack: bool = True) -> None:
        if not shards:
            raise ValueError("a shard group needs at least one shard")
        ids = [s.shard_id for s in shards]
        if len(set(ids)) != len(ids):
            raise ValueError(f"shard ids in a group must be distinct, got {ids}")
        self.shards = list(shards)
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
        from aegis.world.sim import to_us  # local: sim imports this module

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
        tick_us = round(minutes * 60 * _US)
        if len(self.shards) > 1 and any(s.down_until_us > now_us for s in self.shards):
            return [s.step_into(minutes, now, b) for s, b in zip(self.shards, buffers, strict=True)]
        if self.shards[0].down_until_us > now_us:  # a group of one
            self.shards[0].clock_us = now_us + tick_us
            return [0]
        self.ensure_packed()
        return _Tick(self, float(minutes), now_us, tick_us, buffers).run()


class _Tick:
    """The state of one fused tick (scratch arrays, per-shard vectors, the event block)."""

    def __init__(
        self, group: ShardGroup, dt: float, now_us: int, tick_us: int, buffers: Sequence[EventBuffer]
    ) -> None:
        from aegis.world.sim import _EPOCH_US

        self.g = group
        self.shards = group.shards
        self.S = len(self.shards)
        self.A = group.arrays
        self.dt = dt
        self.now_us = now_us
        self.tick_us = tick_us
        self.buffers = buffers
        self.epoch_us = _EPOCH_US
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

    def per_slot(
        self, values: Sequence[Any] | np.ndarray, slots_shard: np.ndarray, dtype: Any = np.float64
    ) -> np.ndarray:
        """A per-shard value for each slot (by the slots' shard indices)."""
        arr = np.asarray(values, dtype=dtype)
        return arr[slots_shard]

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
        g, A, S, dt, now_us = self.g, self.A, self.S, self.dt, self.now_us
        shards = self.shards
        # The tick's whole random block per shard, always the same size (common random numbers).
        keys = np.empty(S, dtype=np.uint64)
        gf = np.empty((S, 4))
        blocks = []
        for i, s in enumerate(shards):
            bits = s.rng.bit_generator
            n_s = s.slots
            blocks.append(bits.random_raw(n_s * (N_PRIMARY // 2)).view(np.uint32).reshape(N_PRIMARY, n_s))
            gr = bits.random_raw(N_GLOBAL)
            gf[i] = (gr[:4] >> np.uint64(11)).astype(np.float64) * _INV53
            keys[i] = gr[4]
        if S == 1:
            u = blocks[0]
        else:
            assert g.u is not None  # allocated for groups of more than one shard
            u = g.u
            np.concatenate(blocks, axis=1, out=u)
        self.key = keys
        on, active, pending = A["on"], A["active"], A["pending"]
        sh = g.sh
        tsb = g.tsb
        spread = self.tick_us * PLAYER_SPREAD
        caps = np.array([s.capacity for s in shards], dtype=np.int64)
        on_idx = np.flatnonzero(on)
        n_on = self.shard_counts(on_idx)

        # --- map events: a shard-wide event in one zone draws players and loot.
        event_on = np.zeros(S, dtype=bool)
        for i, s in enumerate(shards):
            if s.event_until_us <= now_us and gf[i, 0] < pc(s.params.map_event_frequency / 1440.0, dt):
                s.event_until_us = now_us + int(C.MAP_EVENT_MINUTES * 60 * _US)
                s.event_zone = int(gf[i, 1] * N_ZONES)
            event_on[i] = s.event_until_us > now_us
        self.event_on = event_on

        # --- reconnects (within the window) and expired disconnects.
        rec_idx = expired = _NO_SLOTS
        cand = np.flatnonzero(pending)
        if len(cand):
            until = A["pending_until_us"][cand]
            hit = u[_P["recon"], cand] < thr(pc(C.RECONNECT_RATE_PER_MIN, dt))
            rec_idx = self.admit(cand[hit & (until >= now_us)], u[_P["recon"]], caps - n_on)
            on[rec_idx] = True
            pending[rec_idx] = False
            n_on = n_on + self.shard_counts(rec_idx)
            expired = cand[until < now_us]
            pending[expired] = False

        # --- logins: engagement x time of day x map event, capped by capacity. Thinned.
        rates = [
            C.LOGIN_RATE_PER_MIN * s._diurnal(now_us) * (C.MAP_EVENT_LOGIN_BOOST if event_on[i] else 1.0)
            for i, s in enumerate(shards)
        ]
        cand = np.flatnonzero(u[_P["login"]] < thr(bound(pc(max(rates) * MAX_ENGAGEMENT, dt))))
        cand = cand[active[cand] & ~on[cand] & ~pending[cand]]
        eng = A["engagement"][cand].astype(np.float64)
        rate = self.per_slot(rates, sh[cand]) if S > 1 else rates[0]
        hit = u[_P["login"], cand] * _INV32 < -np.expm1(-rate * eng * dt)
        login_idx = self.admit(cand[hit], u[_P["login"]], caps - n_on)
        on[login_idx] = True
        n_on = n_on + self.shard_counts(login_idx)

        idx = np.flatnonzero(on)
        tsb[idx] = now_us + (self.sec(_Q["ts"], idx) * spread).astype(np.int64)
        self.emit("reconnect", rec_idx)
        self.emit("session_start", login_idx)
        if len(expired):
            tsb[expired] = now_us + (self.sec(_Q["ts"], expired) * spread).astype(np.int64)
            self.emit("session_end", expired, cause=CAUSE_CODE["disconnect"])

        # --- server load: a queueing-style tick time from saturation.
        tick_ms = np.empty(S)
        for i, s in enumerate(shards):
            rho = int(n_on[i]) / s.capacity
            noise = math.sqrt(-2.0 * math.log(max(gf[i, 2], 1e-12))) * math.cos(2 * math.pi * gf[i, 3])
            t_ms = C.TICK_BASE_MS * (1.0 + 0.5 * rho) / (1.0 - min(rho, C.RHO_MAX))
            t_ms *= math.exp(C.TICK_NOISE_SIGMA * noise)
            if s.latency_until_us > now_us:
                t_ms *= s.latency_mult
            t_ms = min(t_ms, C.TICK_MS_MAX)
            s.last_tick_ms = t_ms
            tick_ms[i] = t_ms

        # Items held per type and shard, updated by every inventory change of the tick.
        self.stock = np.stack([s._stock for s in shards])
        d_eng = np.zeros(len(idx), dtype=np.float32)
        if len(idx):
            self.sho = sh[idx]
            self.on_start = np.searchsorted(idx, g.off[:-1])
            self.n_on = n_on
            uu = u.take(idx, axis=1)  # (streams, online): gathered once
            self.play(idx, uu, d_eng)
            self.sessions_end(idx, uu, d_eng, tick_ms)
        self.arrivals(u)

        # --- engagement: online experience and offline drift.
        engagement = A["engagement"]
        if len(idx):
            sub = [
                np.float32(
                    C.ONLINE_BOREDOM * dt
                    + (C.LAG_ENGAGEMENT_PER_MIN * dt if tick_ms[i] > C.LAG_ENGAGEMENT_MS else 0.0)
                )
                for i in range(S)
            ]
            sub_slot = self.per_slot(sub, self.sho, np.float32) if S > 1 else sub[0]
            engagement[idx] = np.clip(engagement[idx] + d_eng - sub_slot, 0.02, 1.0)
        drift = (np.float32(C.OFFLINE_ENGAGEMENT_TARGET) - engagement) * np.float32(
            C.OFFLINE_ENGAGEMENT_RATE * dt
        )
        drift *= active & ~on
        engagement += drift

        # --- prices respond to money per active player (per shard).
        starts = g.off[:-1]
        n_active = np.add.reduceat(active, starts, dtype=np.int64)
        gold_sum = np.add.reduceat(A["gold"], starts)
        players_online = np.add.reduceat(on, starts, dtype=np.int64)
        for i, s in enumerate(shards):
            money = float(gold_sum[i]) / max(int(n_active[i]), 1)
            target = (max(money, 1.0) / s.money_ref) ** C.PRICE_MONEY_ELASTICITY
            s.price_level += (1.0 - math.exp(-dt / C.PRICE_ADJUST_MIN)) * (target - s.price_level)
            s._stock[:] = self.stock[i]
            s.clock_us = now_us + self.tick_us
        return self.flush(tick_ms, players_online)

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
        """Quests, combat, loot, economy and trades of the online players ``idx`` (all shards)."""
        A, S, dt, shards, sho = self.A, self.S, self.dt, self.shards, self.sho
        params = [s.params for s in shards]
        multi = S > 1
        sink = [p.sink_multiplier for p in params]
        source = [p.source_multiplier for p in params]
        quest = A["quest_id"][idx]
        lz = level_zone(A["level"][idx])

        # --- quest starts for players without one.
        start = np.flatnonzero((uu[_P["qstart"]] < thr(pc(C.QUEST_START_RATE_PER_MIN, dt))) & (quest < 0))
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
        stage = A["stage"][idx]
        in_quest = quest >= 0
        zone = np.where(in_quest, quest % N_ZONES, lz)
        s0 = np.maximum(stage.astype(np.int32) - 1, 0)
        stage_diff = np.stack([s._stage_diff for s in shards])
        qdiff = np.where(
            in_quest,
            C.QUEST_BASE_DIFFICULTY[np.maximum(quest, 0)]
            * (stage_diff[sho, s0] if multi else stage_diff[0][s0]),
            C.GRIND_DIFFICULTY,
        )
        gap = qdiff - A["skill"][idx]
        gap_max = float(gap.max())

        # --- combat deaths: zone danger x difficulty gap.
        death_zone = np.stack([s._death_zone for s in shards])
        h_max = max(s._death_zone_max for s in shards) * math.exp(C.DEATH_GAP_K * gap_max)
        c = np.flatnonzero(uu[_P["death"]] < thr(bound(pc(h_max, dt))))
        h = (death_zone[sho[c], zone[c]] if multi else death_zone[0][zone[c]]) * np.exp(
            C.DEATH_GAP_K * gap[c]
        )
        die = c[uu[_P["death"], c] * _INV32 < -np.expm1(-h * dt)]
        if len(die):
            didx = idx[die]
            dz = zone[die]
            uc = self.sec(_Q["dcause"], didx)
            cause_cut = np.stack([s._cause_cut for s in shards])
            cut = cause_cut[sho[die], dz] if multi else cause_cut[0][dz]
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
            dq = quest[die]
            self.emit(
                "combat_death",
                didx,
                quest_id=np.where(dq >= 0, dq, INT32_NULL),
                stage=np.where(dq >= 0, stage[die].astype(np.int32), INT32_NULL),
                zone=dz,
                x=x,
                y=y,
                cause=cause,
            )
            A["stage_deaths"][didx] += 1
            d_eng[die] += C.ENG_DEATH
            sink_d = np.asarray(sink)[sho[die]] if multi else sink[0]
            gold = A["gold"]
            repair = np.minimum(np.round(C.REPAIR_COST[dz] * sink_d).astype(np.int64), gold[didx])
            pay = repair >= 1
            gold[didx[pay]] -= repair[pay]
            self.emit(
                "currency_sink",
                didx[pay],
                currency=CURRENCY_CODE["gold"],
                amount=repair[pay],
                cause=CAUSE_CODE["repair"],
            )

        # --- quest progress: abandonment competes with finishing the stage.
        if in_quest.any():
            self.quests(idx, uu, d_eng, quest, stage, zone, s0, gap, gap_max, in_quest, start, params)

        # --- loot: item drops and gold, with the map event zone boosted.
        boost = np.ones((S, N_ZONES))
        for i, s in enumerate(shards):
            if self.event_on[i]:
                boost[i, s.event_zone] = C.MAP_EVENT_DROP_BOOST
        drop_zone = np.stack([s._drop_zone for s in shards])
        drop_thr = thr_vec(p_of_rate(drop_zone * boost, dt))
        drop = np.flatnonzero(uu[_P["drop"]] < (drop_thr[sho, zone] if multi else drop_thr[0][zone]))
        inventory = A["inventory"]
        if len(drop):
            di = idx[drop]
            dz = zone[drop]
            rarity = np.minimum(
                (C.ITEMS_PER_ZONE * self.sec(_Q["item"], di) ** C.RARITY_EXPONENT).astype(np.int32),
                C.ITEMS_PER_ZONE - 1,
            )
            item = dz * C.ITEMS_PER_ZONE + rarity
            inventory[di, item] += 1
            self.stock_add(sho[drop], item, 1)
            self.emit("item_drop", di, item_id=item, zone=dz)
            d_eng[drop] += C.ENG_DROP
        loot_zone = np.stack([s._loot_zone for s in shards])
        loot_thr = thr_vec(p_of_rate(loot_zone, dt))
        loot = np.flatnonzero(uu[_P["loot"]] < (loot_thr[sho, zone] if multi else loot_thr[0][zone]))
        gold = A["gold"]
        if len(loot):
            li = idx[loot]
            src = np.asarray(source)[sho[loot]] if multi else source[0]
            amt = np.round(C.LOOT_GOLD[zone[loot]] * src * (0.5 + self.sec(_Q["loot_amt"], li))).astype(
                np.int64
            )
            ok = amt >= 1
            gold[li[ok]] += amt[ok]
            self.emit(
                "currency_source",
                li[ok],
                currency=CURRENCY_CODE["gold"],
                amount=amt[ok],
                cause=CAUSE_CODE["loot"],
            )

        # --- vendors: selling loot is a faucet, consumables and travel are sinks.
        vs = np.flatnonzero(uu[_P["vsell"]] < thr(pc(C.VENDOR_SELL_RATE_PER_MIN, dt)))
        if len(vs):
            vi = idx[vs]
            vitem = zone[vs] * C.ITEMS_PER_ZONE + np.minimum(
                (self.sec(_Q["vitem"], vi) * C.ITEMS_PER_ZONE).astype(np.int32), C.ITEMS_PER_ZONE - 1
            )
            src = np.asarray(source)[sho[vs]] if multi else source[0]
            vamt = np.round(C.ITEM_VALUE[vitem] * C.VENDOR_SELL_SHARE * src).astype(np.int64)
            ok = (inventory[vi, vitem] > 0) & (vamt >= 1)
            vi, vitem, vamt = vi[ok], vitem[ok], vamt[ok]
            inventory[vi, vitem] -= 1
            self.stock_add(sho[vs][ok], vitem, -1)
            gold[vi] += vamt
            self.emit(
                "currency_source", vi, currency=CURRENCY_CODE["gold"], amount=vamt, cause=CAUSE_CODE["vendor"]
            )
        vb = np.flatnonzero(uu[_P["vbuy"]] < thr(pc(C.VENDOR_BUY_RATE_PER_MIN, dt)))
        if len(vb):
            bi = idx[vb]
            snk = np.asarray(sink)[sho[vb]] if multi else sink[0]
            want = C.VENDOR_COST[zone[vb]] * snk * (0.6 + 0.8 * self.sec(_Q["vbuy_amt"], bi))
            self.spend(bi, want, "vendor")
        fee = np.flatnonzero(uu[_P["fee"]] < thr(pc(C.FEE_RATE_PER_MIN, dt)))
        if len(fee):
            snk = np.asarray(sink)[sho[fee]] if multi else sink[0]
            self.spend(idx[fee], C.TRAVEL_FEE[zone[fee]] * snk, "fee")

        # --- gems: real-money purchases in, cosmetic shop out.
        gems = A["gems"]
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

        self.trades(idx, uu, zone, sink)

        # --- duplication exploit: a few players dupe items and sell the copies.
        ex_thr = [
            thr(pc(C.EXPLOIT_RATE_PER_MIN * s.exploit_mag, dt))
            if s.exploit_until_us > self.now_us and s.exploit_mag > 0
            else 0
            for s in shards
        ]
        if any(ex_thr):
            limit = np.asarray(ex_thr, dtype=np.int64)[sho] if multi else ex_thr[0]
            ex = np.flatnonzero(uu[_P["exploit"]] < limit)
            if len(ex):
                exi = idx[ex]
                rare = zone[ex] * C.ITEMS_PER_ZONE + C.ITEMS_PER_ZONE - 1
                inventory[exi, rare] += C.EXPLOIT_ITEMS
                self.stock_add(sho[ex], rare, C.EXPLOIT_ITEMS)
                eg = [C.EXPLOIT_GOLD * s.exploit_mag for s in shards]
                egv = np.asarray(eg)[sho[ex]] if multi else eg[0]
                gain = np.round(egv * (0.5 + self.sec(_Q["exploit_amt"], exi)) + C.ITEM_VALUE[rare]).astype(
                    np.int64
                )
                gold[exi] += gain
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

    def quests(
        self,
        idx: np.ndarray,
        uu: np.ndarray,
        d_eng: np.ndarray,
        quest: np.ndarray,
        stage: np.ndarray,
        zone: np.ndarray,
        s0: np.ndarray,
        gap: np.ndarray,
        gap_max: float,
        in_quest: np.ndarray,
        start: np.ndarray,
        params: list[Any],
    ) -> None:
        """Abandonment competes with finishing the stage; the last stage completes the quest."""
        A, dt, sho, multi = self.A, self.dt, self.sho, self.S > 1
        pacing = [p.quest_pacing for p in params]
        pace07 = [v**0.7 for v in pacing]

        def vec(values: list[float], pos: np.ndarray) -> np.ndarray | float:
            return np.asarray(values, dtype=np.float64)[sho[pos]] if multi else values[0]

        sd = A["stage_deaths"][idx]  # after this tick's deaths
        h_max = (
            C.ABANDON_RATE_PER_MIN
            * math.exp(C.ABANDON_GAP_K * gap_max)
            * max(pace07)
            * (1.0 + C.ABANDON_PER_DEATH * float(sd.max()))
        )
        c = np.flatnonzero(uu[_P["abandon"]] < thr(bound(pc(h_max, dt))))
        fresh = np.zeros(len(idx), dtype=bool)
        fresh[start] = True  # a quest started this tick is not abandoned in the same tick
        c = c[in_quest[c] & ~fresh[c]]
        h_ab = (
            C.ABANDON_RATE_PER_MIN
            * np.exp(C.ABANDON_GAP_K * gap[c])
            * vec(pace07, c)
            * (1.0 + C.ABANDON_PER_DEATH * sd[c].astype(np.float64))
        )
        ab = c[uu[_P["abandon"], c] * _INV32 < -np.expm1(-h_ab * dt)]
        self.emit("quest_abandon", idx[ab], quest_id=quest[ab], stage=stage[ab])
        d_eng[ab] += C.ENG_ABANDON

        h_max = 1.0 / (float(C.STAGE_MINUTES.min()) * min(pacing))
        c = np.flatnonzero(uu[_P["stage"]] < thr(bound(pc(h_max, dt))))
        fresh[:] = False
        fresh[ab] = True
        c = c[in_quest[c] & ~fresh[c]]
        h_stage = 1.0 / (
            C.STAGE_MINUTES[s0[c]] * vec(pacing, c) * (1.0 + C.STAGE_SLOWDOWN_PER_GAP * np.maximum(gap[c], 0))
        )
        done = c[uu[_P["stage"], c] * _INV32 < -np.expm1(-h_stage * dt)]
        d_idx = idx[done]
        self.emit("quest_stage", d_idx, quest_id=quest[done], stage=stage[done])
        d_eng[done] += C.ENG_STAGE
        skill = A["skill"]
        skill[d_idx] = np.minimum(skill[d_idx] + np.float32(C.SKILL_PER_STAGE), C.SKILL_CAP)
        last = stage[done] >= N_STAGES
        fin = done[last]
        fidx = idx[fin]
        self.emit("quest_complete", fidx, quest_id=quest[fin], stage=stage[fin])
        d_eng[fin] += C.ENG_QUEST
        if len(fin):
            fz = zone[fin]
            reward_k = [p.quest_reward for p in params]
            root = [math.sqrt(s._mean_stage_diff) for s in self.shards]
            reward = np.round(
                C.QUEST_REWARD_GOLD[fz]
                * vec(reward_k, fin)
                * vec(root, fin)
                * (0.8 + 0.4 * self.sec(_Q["reward"], fidx))
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
            gems = np.round((1 + fz // 2) * vec(reward_k, fin)).astype(np.int64)
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
        cleared = idx[np.concatenate([ab, fin])]
        A["quest_id"][cleared] = -1
        A["stage"][cleared] = 0
        advance = d_idx[~last]
        A["stage"][advance] += 1
        A["stage_deaths"][cleared] = 0
        A["stage_deaths"][advance] = 0

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

    def trades(self, idx: np.ndarray, uu: np.ndarray, zone: np.ndarray, sink: list[float]) -> None:
        """Player-to-player trades: a buyer meets a random online seller of the same shard."""
        A, S, dt, sho, multi = self.A, self.S, self.dt, self.sho, self.S > 1
        limits = [
            thr(pc(C.TRADE_RATE_PER_MIN * (C.MAP_EVENT_TRADE_BOOST if self.event_on[i] else 1.0), dt))
            for i in range(S)
        ]
        limit = np.asarray(limits, dtype=np.int64)[sho] if multi else limits[0]
        b = np.flatnonzero(uu[_P["trade"]] < limit)
        if not len(b):
            return
        buyer = idx[b]
        want = zone[b] * C.ITEMS_PER_ZONE + np.minimum(
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
        level = [s.price_level for s in self.shards]
        price = np.round(
            C.ITEM_VALUE[want]
            * (np.asarray(level)[sb] if multi else level[0])
            * (scarcity[sb, want] if multi else scarcity[0][want])
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
        snk = np.asarray(sink)[sb[k]] if multi else sink[0]
        tax = np.round(pr * C.TRADE_TAX * snk).astype(np.int64)
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

    def sessions_end(self, idx: np.ndarray, uu: np.ndarray, d_eng: np.ndarray, tick_ms: np.ndarray) -> None:
        """Logouts (some of which are churn) and disconnects (which may reconnect)."""
        A, S, dt, sho, multi = self.A, self.S, self.dt, self.sho, self.S > 1
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
        limit = np.asarray(limits, dtype=np.int64)[sho] if multi else limits[0]
        disc = np.flatnonzero(uu[_P["disc"]] < limit)
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
        A["pending_until_us"][di] = self.now_us + int(C.RECONNECT_WINDOW_MIN * 60 * _US)
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
            [(s.shard_index << _PLAYER_SHIFT) + s.next_player_seq for s in self.shards], dtype=np.int64
        )
        A["player_id"][new] = base[shard_of] + rank
        for i, s in enumerate(self.shards):
            s.next_player_seq += int(counts[i])
            if s.next_player_seq >= 2**_PLAYER_SHIFT:
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
