"""Simulate H game hours of the world as fast as possible and land its telemetry.

The batch counterpart of the live world server: it steps a :class:`World`,
lands every tick through a :class:`LandingWriter` (telemetry and the config
change feed), and, unless told otherwise, explores each shard's parameters on
its schedule so the lake holds the variation the world model learns from.
``aegis world run --hours H`` wraps :func:`run_world`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from pydantic import BaseModel, Field

from aegis.config import AegisPaths
from aegis.world import exploration
from aegis.world.exploration import DEFAULT_EXPLORE_EVERY_HOURS, exploration_epoch
from aegis.world.landing import DEFAULT_BATCH_MINUTES, DEFAULT_RETENTION_HOURS, LandingWriter
from aegis.world.sim import DEFAULT_PLAYERS_PER_SHARD, World


class RunSummary(BaseModel):
    """What one run landed and how fast."""

    hours: float
    ticks: int
    shards: int
    players: int = Field(description="Population slots over all shards")
    events: int
    files: int
    bytes: int
    config_files: int
    corrupt_batches: int
    deleted_files: int
    seconds: float
    events_per_second: float
    player_steps_per_second: float
    kinds: dict[str, int] = Field(description="Events landed per kind")
    game_time_end: str


def run_world(
    paths: AegisPaths,
    hours: float,
    seed: int = 7,
    players_per_shard: int = DEFAULT_PLAYERS_PER_SHARD,
    explore: bool = True,
    progress: bool = False,
    world: World | None = None,
    *,
    explore_every_hours: float = DEFAULT_EXPLORE_EVERY_HOURS,
    no_explore_shards: Iterable[str] = (),
    retention_hours: float | None = DEFAULT_RETENTION_HOURS,
    batch_minutes: float = DEFAULT_BATCH_MINUTES,
) -> RunSummary:
    """Simulate ``hours`` of game time from ``world`` (or a new one) and land it under ``paths``.

    ``no_explore_shards`` names shards (canaries) whose parameters exploration
    must not touch. The world is advanced in place, so a caller can keep going.
    """
    if not (hours > 0 and math.isfinite(hours)):
        raise ValueError(f"hours must be a positive number, got {hours}")
    w = world if world is not None else World(seed=seed, players_per_shard=players_per_shard)
    paths.landing_telemetry.mkdir(parents=True, exist_ok=True)
    writer = LandingWriter(
        paths.landing_telemetry, retention_hours=retention_hours, batch_minutes=batch_minutes
    )
    frozen = set(no_explore_shards)
    unknown = frozen - set(w.shards)
    if unknown:
        raise ValueError(
            f"no_explore_shards names unknown shards {sorted(unknown)}; known: {sorted(w.shards)}"
        )
    for shard in w.shards.values():
        writer.record_config(shard)
    epochs = {sid: exploration_epoch(w.game_time, sid, explore_every_hours) for sid in w.shards}
    ticks = max(round(hours * 60 / w.tick_minutes), 1)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=ticks, unit="tick", desc="world", mininterval=0.5)
    started = time.perf_counter()
    try:
        for _ in range(ticks):
            now = w.game_time
            if explore:
                for sid, shard in w.shards.items():
                    if sid in frozen:
                        continue
                    epoch = exploration_epoch(now, sid, explore_every_hours)
                    if epoch != epochs[sid]:
                        epochs[sid] = epoch
                        new = exploration.explore(shard.params, w.seed, sid, epoch)
                        shard.set_params(new, shard.config_version + 1, "exploration")
            tables = w.step()
            writer.add_tick(w.shards, tables, now)
            if bar is not None:
                bar.update(1)
        writer.flush()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    slots = sum(s.slots for s in w.shards.values())
    st = writer.stats
    return RunSummary(
        hours=ticks * w.tick_minutes / 60,
        ticks=ticks,
        shards=len(w.shards),
        players=slots,
        events=st.events,
        files=st.files,
        bytes=st.bytes,
        config_files=st.config_files,
        corrupt_batches=st.corrupt_batches,
        deleted_files=st.deleted_files,
        seconds=seconds,
        events_per_second=st.events / seconds if seconds > 0 else 0.0,
        player_steps_per_second=slots * ticks / seconds if seconds > 0 else 0.0,
        kinds=dict(sorted(st.kinds.items())),
        game_time_end=w.game_time.isoformat(),
    )
