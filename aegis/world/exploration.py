"""Live-ops exploration: each shard's parameters are re-drawn inside safe bands every few hours.

A live game's designers nudge tuning all the time; that variation is what lets
the world model (assets/training) learn how each parameter moves the KPIs. Here
it is made explicit and reproducible: :func:`explore` is a pure function of
(seed, shard, epoch), and the bands in :data:`SAFE_BANDS` are narrower than
:data:`aegis.domain.PARAM_BOUNDS` so exploration never makes the world absurd.

Bands are absolute (around the designers' baseline, not around the current
value), so repeated exploration never drifts: whatever a shard was set to, the
explored value lies in its band. Each epoch re-draws a random subset of the
parameters (each with probability :data:`REDRAW_PROBABILITY`, at least one) and
keeps the others, so effects are not all confounded in one jump. Canary shards
are never explored; the caller decides which shards are canaries.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

import numpy as np

from aegis.domain import PARAM_BOUNDS, WorldParams
from aegis.telemetry import WORLD_EPOCH

DEFAULT_EXPLORE_EVERY_HOURS = 6.0
REDRAW_PROBABILITY = 0.5

# (low, high) of every tunable during exploration; per-element for vectors.
SAFE_BANDS: dict[str, tuple[float, float]] = {
    "npc_aggression": (0.70, 1.35),
    "spawn_rate": (0.70, 1.35),
    "elite_share": (0.05, 0.20),
    "quest_difficulty": (0.70, 1.35),
    "quest_pacing": (0.75, 1.30),
    "quest_reward": (0.70, 1.35),
    "drop_rate": (0.70, 1.35),
    "source_multiplier": (0.70, 1.35),
    "sink_multiplier": (0.70, 1.35),
    "map_event_frequency": (1.00, 4.00),
}
assert set(SAFE_BANDS) == set(PARAM_BOUNDS)
assert all(PARAM_BOUNDS[k][0] <= lo < hi <= PARAM_BOUNDS[k][1] for k, (lo, hi) in SAFE_BANDS.items())


def _shard_key(shard_id: str) -> int:
    """A stable (not per-process salted) integer for a shard id."""
    return zlib.crc32(shard_id.encode())


def explore(params: WorldParams, rng_seed: int, shard_id: str, epoch: int) -> WorldParams:
    """A new parameter set inside SAFE_BANDS, deterministic in (rng_seed, shard_id, epoch)."""
    if epoch < 0:
        raise ValueError(f"exploration epoch must be >= 0, got {epoch}")
    rng = np.random.default_rng(
        np.random.SeedSequence([int(rng_seed) & 0xFFFFFFFF, _shard_key(shard_id), int(epoch)])
    )
    names = list(SAFE_BANDS)
    redraw = rng.random(len(names)) < REDRAW_PROBABILITY
    if not redraw.any():
        redraw[int(rng.integers(len(names)))] = True
    data = params.model_dump()
    for name, chosen in zip(names, redraw, strict=True):
        lo, hi = SAFE_BANDS[name]
        current = data[name]
        if isinstance(current, list):
            draw = rng.uniform(lo, hi, len(current))  # drawn even when kept: fixed consumption
            if chosen:
                data[name] = [round(float(v), 4) for v in draw]
        else:
            value = float(rng.uniform(lo, hi))
            if chosen:
                data[name] = round(value, 4)
    return WorldParams.model_validate(data)


def shard_offset_minutes(shard_id: str, every_hours: float = DEFAULT_EXPLORE_EVERY_HOURS) -> float:
    """Per-shard phase of the exploration schedule, so shards do not all change at once."""
    period = max(int(every_hours * 60), 1)
    return float(_shard_key(shard_id) % period)


def exploration_epoch(
    game_time: datetime, shard_id: str, every_hours: float = DEFAULT_EXPLORE_EVERY_HOURS
) -> int:
    """Which exploration epoch ``shard_id`` is in at ``game_time`` (epoch 0 = before its first change)."""
    if not every_hours > 0:
        raise ValueError(f"every_hours must be > 0, got {every_hours}")
    elapsed = (
        game_time - WORLD_EPOCH - timedelta(minutes=shard_offset_minutes(shard_id, every_hours))
    ).total_seconds()
    return max(int(elapsed // (every_hours * 3600)) + 1, 0)
