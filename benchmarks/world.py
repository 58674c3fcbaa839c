"""World simulator throughput: player-steps/s simulated and telemetry events/s landed as Parquet.

Prints, for a world of ``--players`` total population slots (split over the
default 9 shards) run for ``--minutes`` game minutes (1-minute ticks):

* simulate only: player-steps/s and events/s produced (one SCHEMA_V1 table per
  shard and 5-minute window, in memory, as the landing writer builds them);
* simulate shard by shard: the same world stepped one shard at a time (the
  call pattern before the fused :class:`~aegis.world.sim_tick.ShardGroup`), and the ratio;
* end to end: events/s landed by :func:`run_world` as ``aegis world run`` runs it
  (exploration on, zstd Parquet in 5-minute batches, config feed) with ``workers=1``
  and ``--workers`` (default ``os.cpu_count()``), for ``--minutes`` and for
  ``--long-minutes`` game minutes, and the worker start-up measured on its own
  (one-tick runs) so the steady rate can be read without it;
* ceiling: events/s pyarrow alone achieves writing the same window tables, with
  the landing writer's options and with pyarrow's defaults (``write_atomic``),
  and the end-to-end rate as a share of the former;
* CPU seconds next to wall seconds: on a shared machine wall time also counts
  other people's work, CPU time (per process, children included) does not.

Usage: ``.venv/bin/python benchmarks/world.py [--players 100000] [--minutes 30] [--long-minutes 120]
[--workers N] [--profile]``.
The machine is shared: compare ratios measured in the same run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from aegis.config import AegisPaths
from aegis.telemetry import landing_path, write_atomic
from aegis.world.landing import DEFAULT_BATCH_MINUTES, write_batch_atomic
from aegis.world.runner import run_world
from aegis.world.sim import DEFAULT_SHARDS_PER_REGION, REGIONS, World
from aegis.world.sim_events import EventBuffer

N_SHARDS = len(REGIONS) * DEFAULT_SHARDS_PER_REGION
WINDOW_TICKS = int(DEFAULT_BATCH_MINUTES)  # 1-minute ticks per landing window


def cpu_now() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def simulate(
    seed: int, per_shard: int, minutes: int, fused: bool = True
) -> tuple[float, float, list[tuple[str, datetime, pa.Table]]]:
    """Step the world into one buffer per shard and window; return wall s, CPU s and the window tables.

    ``fused``: one :class:`ShardGroup` tick for all shards (what ``run_world`` does);
    otherwise each shard is stepped alone (the previous engine's call pattern).
    """
    world = World(seed=seed, players_per_shard=per_shard)
    group = world.group()
    bufs = [EventBuffer(sid, s.region) for sid, s in world.shards.items()]
    tables: list[tuple[str, datetime, pa.Table]] = []
    t0, c0 = time.perf_counter(), cpu_now()
    start = world.game_time
    for i in range(minutes):
        now = start + timedelta(minutes=i)
        if fused:
            group.step_into(1.0, now, bufs)
        else:
            for shard, buf in zip(world.shards.values(), bufs, strict=True):
                shard.step_into(1.0, now, buf)
        if (i + 1) % WINDOW_TICKS == 0 or i == minutes - 1:
            window_start = start + timedelta(minutes=i - i % WINDOW_TICKS)
            tables += [(buf.shard_id, window_start, buf.to_table()) for buf in bufs]
    return time.perf_counter() - t0, cpu_now() - c0, tables


def end_to_end(
    tmp: Path, tag: str, seed: int, per_shard: int, minutes: int, workers: int
) -> tuple[Any, float]:
    """``run_world`` as ``aegis world run`` runs it (exploration on), landing under a fresh home."""
    world = World(seed=seed, players_per_shard=per_shard)
    c0 = cpu_now()
    summary = run_world(
        AegisPaths(tmp / f"e2e-{tag}-w{workers}"),
        minutes / 60,
        world=world,
        retention_hours=None,
        workers=workers,
    )
    return summary, cpu_now() - c0


def ceiling(tables: list[tuple[str, datetime, pa.Table]], root: Path, tuned: bool) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), cpu_now()
    for i, (sid, start, t) in enumerate(tables):
        path = landing_path(root, start, sid, f"b{i}")
        if tuned:
            write_batch_atomic(t, path)
        else:
            write_atomic(t, path)
    return time.perf_counter() - t0, cpu_now() - c0


def main() -> None:
    args = _parse_args()
    per_shard = max(args.players // N_SHARDS, 1)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machines: read ratios)"
    )
    sim_s, sim_cpu, tables = _simulate_report(args, per_shard)
    events = sum(t.num_rows for _, _, t in tables)
    tmp = Path(tempfile.mkdtemp(prefix="aegis-bench-world-"))
    try:
        tuned_s, tuned_cpu, default_s = _ceiling_report(tables, tmp, events)
        _end_to_end_report(tmp, args, per_shard, events / tuned_s)
        print(
            f"time split (wall): simulate {sim_s:.2f}s, write {tuned_s:.2f}s "
            f"(defaults {default_s:.2f}s); CPU: simulate {sim_cpu:.2f}s, write {tuned_cpu:.2f}s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.profile:
        _profile(args.seed, per_shard, args.minutes)


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--players", type=int, default=100_000, help="total population over all shards")
    ap.add_argument("--minutes", type=int, default=30, help="game minutes (ticks) to simulate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="simulate-only repetitions (best kept)")
    ap.add_argument(
        "--long-minutes", type=int, default=120, help="game minutes of the longer end-to-end runs"
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the parallel run")
    ap.add_argument("--profile", action="store_true", help="print where simulation time goes")
    return ap.parse_args()


def _simulate_report(
    args: argparse.Namespace, per_shard: int
) -> tuple[float, float, list[tuple[str, datetime, pa.Table]]]:
    """Simulate only, fused and shard by shard; print both; return the fused wall s, CPU s and tables."""
    slots = per_shard * N_SHARDS
    steps = slots * args.minutes
    # Fused and shard by shard, alternated and the best of --repeat kept: on a shared machine
    # other people's work inflates even CPU time (caches, frequency), so the minimum is the figure.
    sim_s = sim_cpu = solo_s = solo_cpu = float("inf")
    for _ in range(args.repeat):
        s_s, s_cpu, _ = simulate(args.seed, per_shard, args.minutes, fused=False)
        f_s, f_cpu, tables = simulate(args.seed, per_shard, args.minutes)
        solo_s, solo_cpu = min(solo_s, s_s), min(solo_cpu, s_cpu)
        sim_s, sim_cpu = min(sim_s, f_s), min(sim_cpu, f_cpu)
    events = sum(t.num_rows for _, _, t in tables)
    print(
        f"world: {N_SHARDS} shards x {per_shard} players = {slots} slots, {args.minutes} ticks, {events} events"
    )
    print(
        f"simulate fused: {steps / sim_s:12,.0f} player-steps/s {events / sim_s:12,.0f} events/s"
        f"   (CPU: {steps / sim_cpu:12,.0f} player-steps/CPU-s {events / sim_cpu:12,.0f} events/CPU-s)"
    )
    print(
        f"shard by shard: {steps / solo_s:12,.0f} player-steps/s {events / solo_s:12,.0f} events/s"
        f"   (CPU: {steps / solo_cpu:12,.0f} player-steps/CPU-s {events / solo_cpu:12,.0f} events/CPU-s);"
        f" fused is {solo_cpu / sim_cpu:.2f}x less CPU"
    )
    return sim_s, sim_cpu, tables


def _ceiling_report(
    tables: list[tuple[str, datetime, pa.Table]], tmp: Path, events: int
) -> tuple[float, float, float]:
    """pyarrow alone writing the window tables, tuned and with defaults; print both; return their times."""
    tuned_s, tuned_cpu = ceiling(tables, tmp / "ceiling-tuned", tuned=True)
    default_s, default_cpu = ceiling(tables, tmp / "ceiling-default", tuned=False)
    print(
        f"ceiling       : {events / tuned_s:12,.0f} events/s written by pyarrow alone, landing options"
        f"   (CPU: {events / tuned_cpu:12,.0f} events/CPU-s)"
    )
    print(
        f"                {events / default_s:12,.0f} events/s with pyarrow defaults (write_atomic)"
        f"   (CPU: {events / default_cpu:12,.0f} events/CPU-s)"
    )
    return tuned_s, tuned_cpu, default_s


def _end_to_end_report(tmp: Path, args: argparse.Namespace, per_shard: int, ceil: float) -> None:
    """``run_world`` end to end (worker start-up measured on its own) at both lengths; print each run."""
    # Worker start-up (spawned interpreters importing numpy/pyarrow, state shipped both
    # ways): the wall time of a one-tick run with workers beyond the same run in-process.
    one_1, _ = end_to_end(tmp, "startup", args.seed, per_shard, 1, 1)
    one_n, _ = end_to_end(tmp, "startup", args.seed, per_shard, 1, args.workers)
    startup = max(one_n.seconds - one_1.seconds, 0.0)
    print(f"worker start-up: {startup:.2f}s wall for workers={args.workers} (one-tick runs)")
    for minutes in sorted({args.minutes, args.long_minutes}):
        for workers in [1] + ([args.workers] if args.workers > 1 else []):
            s, cpu = end_to_end(tmp, f"m{minutes}", args.seed, per_shard, minutes, workers)
            steady = s.events / max(s.seconds - (startup if workers > 1 else 0.0), 1e-9)
            print(
                f"end to end {minutes:4d} min w={workers}: {s.player_steps_per_second:12,.0f} player-steps/s "
                f"{s.events_per_second:12,.0f} events/s landed = {s.events_per_second / ceil:.2f} x ceiling"
                f" ({steady:12,.0f} events/s without start-up)"
                f"   (CPU: {s.events / cpu:12,.0f} events/CPU-s; {s.seconds:.2f}s wall, {cpu:.2f}s CPU, "
                f"{s.files} files, {s.config_files} config files, {s.bytes / max(s.events, 1):.1f} B/event)"
            )


def _profile(seed: int, per_shard: int, minutes: int) -> None:
    """Where the fused tick's time goes (cProfile, up to 10 ticks)."""
    world = World(seed=seed, players_per_shard=per_shard)
    group = world.group()
    bufs = [EventBuffer(sid, s.region) for sid, s in world.shards.items()]
    prof = cProfile.Profile()
    prof.enable()
    for i in range(min(minutes, 10)):
        group.step_into(1.0, world.game_time + timedelta(minutes=i), bufs)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
