"""Simulate H game hours of the world as fast as possible and land its telemetry.

The batch counterpart of the live world server: it steps a :class:`World`,
lands every tick through a :class:`LandingWriter` (telemetry and the config
change feed), and, unless told otherwise, explores each shard's parameters on
its schedule so the lake holds the variation the world model learns from.
``aegis world run --hours H`` wraps :func:`run_world`.

Parallelism: shards are independent (own generator, own state; the clock is
shared and exploration is a pure function of (seed, shard, epoch)), so with
``workers > 1`` the shards are split over worker processes (spawned, not
forked: pyarrow's threads do not survive a fork), each stepping its shards and
landing their batches with its own writer. The landed events and the final
world state are identical whatever the number of workers; only the random
suffixes of batch file names differ, as between any two runs.

World instance: the event ids a run lands carry an instance id (see
:mod:`aegis.world.landing`) derived from the run's starting point: every shard's
full state (generator included), the game clock and the exploration plan. A run is
a pure function of those, so running it again lands the same events under the same
ids (the lake counts them as duplicates, never twice), and a run from any other
world (another seed, other sizes, a world advanced further) lands under another
instance: two worlds in one lake never share an id.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from aegis.config import AegisPaths
from aegis.world import exploration
from aegis.world.exploration import DEFAULT_EXPLORE_EVERY_HOURS, exploration_epoch
from aegis.world.landing import (
    DEFAULT_BATCH_MINUTES,
    LandingStats,
    LandingWriter,
    derive_instance_id,
    register_instance,
)
from aegis.world.sim import DEFAULT_PLAYERS_PER_SHARD, ShardSim, World
from aegis.world.sim_events import check_instance_id
from aegis.world.sim_tick import ShardGroup

# Below this many player-steps a run stays in-process when workers is left to choose:
# starting a worker (a fresh interpreter importing numpy/pyarrow) costs ~1 s.
AUTO_PARALLEL_MIN_PLAYER_STEPS = 20_000_000
_WORKER_POLL_S = 0.2


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
    kept_files: int = Field(default=0, description="Batches kept past the retention: not yet ingested")
    seconds: float
    events_per_second: float
    player_steps_per_second: float
    kinds: dict[str, int] = Field(description="Events landed per kind")
    game_time_end: str
    workers: int = Field(default=1, description="Processes that stepped shards")
    cpu_seconds: float = Field(
        default=0.0, description="CPU time of the simulation and landing, all processes"
    )
    instance_id: str = Field(default="", description="The world instance the landed event ids carry")


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs besides its shards' states (picklable)."""

    landing_root: str
    ticks: int
    tick_minutes: float
    start: str  # ISO game time of the first tick
    seed: int
    explore: bool
    explore_every_hours: float
    frozen: tuple[str, ...]
    retention_hours: float | None
    batch_minutes: float
    home: str | None = None  # AEGIS_HOME: its lake's manifest says which batches retention must keep
    instance_id: str = ""  # the world instance of the events; "" derives one from the plan (direct callers)

    def instance(self) -> str:
        """:attr:`instance_id`, or one derived from the plan's event-shaping fields."""
        if self.instance_id:
            return self.instance_id
        return derive_instance_id(
            "world-run-plan", self.start, self.tick_minutes, self.seed, self.explore, self.explore_every_hours
        )


def _simulate(
    plan: _Plan, shards: list[ShardSim], progress: Any = None, group: ShardGroup | None = None
) -> LandingStats:
    """Step ``shards`` for the plan's ticks, exploring and landing: the loop every worker runs.

    ``group``: the shards' fused group if the caller has one (a world's), else one is made.
    """
    keep = None
    if plan.retention_hours is not None and plan.home is not None:
        from aegis.lake.manifest import pending_keeper

        keep = pending_keeper(AegisPaths(Path(plan.home)))
    writer = LandingWriter(
        Path(plan.landing_root),
        retention_hours=plan.retention_hours,
        batch_minutes=plan.batch_minutes,
        keep=keep,
        tick_minutes=plan.tick_minutes,
        instance_id=plan.instance(),
    )
    for shard in shards:
        writer.record_config(shard)
    start = datetime.fromisoformat(plan.start)
    epochs = {s.shard_id: exploration_epoch(start, s.shard_id, plan.explore_every_hours) for s in shards}
    frozen = set(plan.frozen)
    # One fused tick for all of this process's shards (same events as stepping them one by one).
    group = group if group is not None else ShardGroup(shards)
    for i in range(plan.ticks):
        now = start + timedelta(minutes=plan.tick_minutes * i)
        for shard in shards:
            if plan.explore and shard.shard_id not in frozen:
                epoch = exploration_epoch(now, shard.shard_id, plan.explore_every_hours)
                if epoch != epochs[shard.shard_id]:
                    epochs[shard.shard_id] = epoch
                    new = exploration.explore(shard.params, plan.seed, shard.shard_id, epoch)
                    shard.set_params(new, shard.config_version + 1, "exploration")
        writer.add_group_step(group, plan.tick_minutes, now)
        if progress is not None:
            progress(i + 1)
    writer.flush()
    return writer.stats


def _worker(plan: _Plan, states: list[dict[str, Any]], done: Any, results: Any) -> None:
    """Worker process entry point: simulate its shards, send back stats and final states."""
    try:
        shards = [ShardSim.from_state_dict(st) for st in states]

        def progress(ticks: int) -> None:
            done.value = ticks

        stats = _simulate(plan, shards, progress)
        results.put(("ok", asdict(stats), [s.state_dict() for s in shards], time.process_time()))
    except BaseException:
        results.put(("error", traceback.format_exc(), None, 0.0))


def state_digest(world: World) -> str:
    """A digest of every shard's full state (arrays, scalars, generator) and the world clock."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([world.game_time.isoformat(), world.tick_minutes]).encode())
    for sid in sorted(world.shards):
        state = world.shards[sid].state_dict()
        for key in sorted(state):
            value = state[key]
            h.update(key.encode())
            if hasattr(value, "tobytes"):
                h.update(f"{value.dtype}{value.shape}".encode())
                h.update(value.tobytes())
            else:
                h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def run_instance_id(
    paths: AegisPaths,
    world: World,
    explore: bool,
    explore_every_hours: float,
    frozen: Iterable[str],
) -> str:
    """The instance id of a run of ``world`` (module docstring), registered in the lake."""
    basis = {
        "seed": world.seed,
        "shards": len(world.shards),
        "players": sum(s.slots for s in world.shards.values()),
        "start": world.game_time.isoformat(),
        "explore": explore,
        "explore_every_hours": explore_every_hours if explore else None,
        "frozen": sorted(frozen) if explore else [],
        "state_digest": state_digest(world),
    }
    return register_instance(paths.landing_telemetry, "world-run", basis, new=False)


def _split(shards: list[ShardSim], workers: int) -> list[list[ShardSim]]:
    """Shards over workers, balanced by population slots (largest first onto the lightest)."""
    groups: list[list[ShardSim]] = [[] for _ in range(workers)]
    load = [0] * workers
    for shard in sorted(shards, key=lambda s: -s.slots):
        k = load.index(min(load))
        groups[k].append(shard)
        load[k] += shard.slots
    return [g for g in groups if g]


def _merge(total: LandingStats, part: dict[str, Any]) -> None:
    for f in fields(LandingStats):
        if f.name != "kinds":
            setattr(total, f.name, getattr(total, f.name) + int(part[f.name]))
    for kind, n in part["kinds"].items():
        total.kinds[kind] = total.kinds.get(kind, 0) + int(n)


def _run_parallel(plan: _Plan, w: World, workers: int, bar: Any) -> tuple[LandingStats, float]:
    """Run the plan over worker processes; load their final states back into ``w``'s shards."""
    ctx = mp.get_context("spawn")
    groups = _split(list(w.shards.values()), workers)
    results = ctx.Queue()
    counters = [ctx.Value("q", 0) for _ in groups]
    procs = [
        ctx.Process(
            target=_worker,
            args=(plan, [s.state_dict() for s in g], c, results),
            name=f"aegis-world-{i}",
            daemon=True,
        )
        for i, (g, c) in enumerate(zip(groups, counters, strict=True))
    ]
    total = LandingStats()
    cpu = 0.0
    states: dict[str, dict[str, Any]] = {}
    try:
        for proc in procs:
            proc.start()
        pending = len(procs)
        shown = 0
        while pending:
            try:
                status, payload, shard_states, worker_cpu = results.get(timeout=_WORKER_POLL_S)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"world worker {dead[0].name} died with exit code {dead[0].exitcode}"
                    ) from None
            else:
                if status != "ok":
                    raise RuntimeError(f"a world worker failed:\n{payload}")
                _merge(total, payload)
                cpu += worker_cpu
                states.update({st["shard_id"]: st for st in shard_states})
                pending -= 1
            if bar is not None:
                ticks = min(c.value for c in counters)
                bar.update(ticks - shown)
                shown = ticks
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
        results.close()
    for sid, state in states.items():
        w.shards[sid].load_state_dict(state)
    return total, cpu


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
    retention_hours: float | None = None,
    batch_minutes: float = DEFAULT_BATCH_MINUTES,
    workers: int | None = None,
    instance_id: str | None = None,
) -> RunSummary:
    """Simulate ``hours`` of game time from ``world`` (or a new one) and land it under ``paths``.

    ``no_explore_shards`` names shards (canaries) whose parameters exploration
    must not touch. The world is advanced in place, so a caller can keep going.
    ``workers``: processes stepping shards (at most one per shard); ``None``
    picks ``os.cpu_count()`` for runs of at least AUTO_PARALLEL_MIN_PLAYER_STEPS
    player-steps and 1 below. The result does not depend on it.
    ``instance_id``: the world instance the landed event ids carry; by default
    derived from the world's state and the plan (:func:`run_instance_id`).
    ``retention_hours``: ``None`` (the default) keeps every batch the run lands (a
    bounded run keeps what it simulated); a number deletes batches that many game
    hours older than a shard's newest, except those the lake's manifest says are
    still pending ingestion (:func:`aegis.lake.manifest.pending_keeper`).
    """
    _check_run_args(hours, retention_hours, workers)
    w = world if world is not None else World(seed=seed, players_per_shard=players_per_shard)
    plan, workers, slots = _plan_run(
        paths,
        w,
        hours,
        explore,
        explore_every_hours,
        no_explore_shards,
        retention_hours,
        batch_minutes,
        workers,
        instance_id,
    )
    bar = _progress_bar(plan.ticks) if progress else None
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        if workers == 1:
            tick_done = None if bar is None else (lambda k: bar.update(k - bar.n))
            st = _simulate(plan, list(w.shards.values()), tick_done, w.group())
            worker_cpu = 0.0
        else:
            st, worker_cpu = _run_parallel(plan, w, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    w.game_time = datetime.fromisoformat(plan.start) + timedelta(minutes=w.tick_minutes * plan.ticks)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started + worker_cpu
    return _summary(w, plan, st, workers, slots, seconds, cpu)


def _check_run_args(hours: float, retention_hours: float | None, workers: int | None) -> None:
    """:func:`run_world`'s numeric arguments, checked before a world is built."""
    if not (hours > 0 and math.isfinite(hours)):
        raise ValueError(f"hours must be a positive number, got {hours}")
    if retention_hours is not None and not (retention_hours > 0 and math.isfinite(retention_hours)):
        raise ValueError(f"retention_hours must be a positive number or None, got {retention_hours}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _plan_run(
    paths: AegisPaths,
    w: World,
    hours: float,
    explore: bool,
    explore_every_hours: float,
    no_explore_shards: Iterable[str],
    retention_hours: float | None,
    batch_minutes: float,
    workers: int | None,
    instance_id: str | None,
) -> tuple[_Plan, int, int]:
    """:func:`run_world`'s plan, the workers it runs on and the world's population slots.

    Creates the landing directory and registers the run's world instance (unless given one).
    """
    paths.landing_telemetry.mkdir(parents=True, exist_ok=True)
    frozen = set(no_explore_shards)
    unknown = frozen - set(w.shards)
    if unknown:
        raise ValueError(
            f"no_explore_shards names unknown shards {sorted(unknown)}; known: {sorted(w.shards)}"
        )
    ticks = max(round(hours * 60 / w.tick_minutes), 1)
    slots = sum(s.slots for s in w.shards.values())
    if workers is None:
        workers = (os.cpu_count() or 1) if slots * ticks >= AUTO_PARALLEL_MIN_PLAYER_STEPS else 1
    workers = min(workers, len(w.shards))
    if instance_id is None:
        instance_id = run_instance_id(paths, w, explore, explore_every_hours, frozen)
    check_instance_id(instance_id)
    plan = _Plan(
        landing_root=str(paths.landing_telemetry),
        home=str(paths.home),
        instance_id=instance_id,
        ticks=ticks,
        tick_minutes=w.tick_minutes,
        start=w.game_time.isoformat(),
        seed=w.seed,
        explore=explore,
        explore_every_hours=explore_every_hours,
        frozen=tuple(sorted(frozen)),
        retention_hours=retention_hours,
        batch_minutes=batch_minutes,
    )
    return plan, workers, slots


def _progress_bar(ticks: int) -> Any:
    """A progress bar over the run's ticks (``run_world(progress=True)``)."""
    from tqdm import tqdm

    return tqdm(total=ticks, unit="tick", desc="world", mininterval=0.5)


def _summary(
    w: World, plan: _Plan, st: LandingStats, workers: int, slots: int, seconds: float, cpu: float
) -> RunSummary:
    """What the run landed (``st``) and how fast, for ``w`` after it."""
    ticks = plan.ticks
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
        kept_files=st.kept_files,
        seconds=seconds,
        events_per_second=st.events / seconds if seconds > 0 else 0.0,
        player_steps_per_second=slots * ticks / seconds if seconds > 0 else 0.0,
        kinds=dict(sorted(st.kinds.items())),
        game_time_end=w.game_time.isoformat(),
        workers=workers,
        cpu_seconds=cpu,
        instance_id=plan.instance_id,
    )
