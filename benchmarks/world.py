"""World simulator throughput: player-steps/s simulated and telemetry events/s landed as Parquet.

Prints, for a world of ``--players`` total population slots (split over the
default 9 shards) run for ``--minutes`` game minutes (1-minute ticks):

* simulate only: player-steps/s and events/s produced (SCHEMA_V1 tables in memory);
* end to end: events/s landed through LandingWriter (zstd Parquet, 5-minute batches);
* ceiling: events/s pyarrow alone achieves writing the same batches with
  ``write_atomic``, and the end-to-end rate as a share of that ceiling;
* where the time goes (cProfile top entries of the simulation) with ``--profile``.

Usage: ``.venv/bin/python benchmarks/world.py [--players 100000] [--minutes 30] [--profile]``.
The machine is shared: compare the ratio, not absolute rates, across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from aegis.telemetry import landing_path, write_atomic
from aegis.world.landing import LandingWriter
from aegis.world.sim import DEFAULT_SHARDS_PER_REGION, REGIONS, World

N_SHARDS = len(REGIONS) * DEFAULT_SHARDS_PER_REGION


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--players", type=int, default=100_000, help="total population over all shards")
    ap.add_argument("--minutes", type=int, default=30, help="game minutes (ticks) to simulate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print where simulation time goes")
    args = ap.parse_args()
    per_shard = max(args.players // N_SHARDS, 1)
    slots = per_shard * N_SHARDS

    # 1. simulate only (keep the tables for the ceiling measurement)
    world = World(seed=args.seed, players_per_shard=per_shard)
    t0 = time.perf_counter()
    ticks: list[tuple] = []
    for _ in range(args.minutes):
        now = world.game_time
        ticks.append((now, world.step()))
    sim_s = time.perf_counter() - t0
    events = sum(t.num_rows for _, tabs in ticks for t in tabs.values())
    print(
        f"world: {N_SHARDS} shards x {per_shard} players = {slots} slots, {args.minutes} ticks, {events} events"
    )
    print(
        f"simulate only : {slots * args.minutes / sim_s:12,.0f} player-steps/s  {events / sim_s:12,.0f} events/s"
    )

    tmp = Path(tempfile.mkdtemp(prefix="aegis-bench-world-"))
    try:
        # 2. end to end: simulate + land (a fresh world with the same seed: identical events)
        world = World(seed=args.seed, players_per_shard=per_shard)
        writer = LandingWriter(tmp / "e2e" / "telemetry", retention_hours=None)
        t0 = time.perf_counter()
        for _ in range(args.minutes):
            now = world.game_time
            writer.add_tick(world.shards, world.step(), now)
        writer.flush()
        e2e_s = time.perf_counter() - t0
        print(
            f"end to end    : {slots * args.minutes / e2e_s:12,.0f} player-steps/s  "
            f"{writer.events_landed / e2e_s:12,.0f} events/s landed "
            f"({writer.files_landed} files, {writer.bytes_landed / 1e6:.1f} MB, "
            f"{writer.bytes_landed / max(writer.events_landed, 1):.1f} B/event)"
        )

        # 3. ceiling: pyarrow writing the same 5-minute batches alone
        batches: dict[tuple[str, int], list[pa.Table]] = defaultdict(list)
        for i, (_, tabs) in enumerate(ticks):
            for sid, t in tabs.items():
                batches[(sid, i // 5)].append(t)
        tables = [(sid, w, pa.concat_tables(ts)) for (sid, w), ts in batches.items()]
        t0 = time.perf_counter()
        for sid, w, t in tables:
            write_atomic(t, landing_path(tmp / "ceiling", ticks[w * 5][0], sid, f"b{w}"))
        ceil_s = time.perf_counter() - t0
        ceiling = events / ceil_s
        print(f"ceiling       : {ceiling:12,.0f} events/s (pyarrow write_atomic of the same batches alone)")
        print(
            f"end-to-end / ceiling = {writer.events_landed / e2e_s / ceiling:.2f}; "
            f"time split: simulate {sim_s:.2f}s, write {ceil_s:.2f}s, end to end {e2e_s:.2f}s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if args.profile:
        world = World(seed=args.seed, players_per_shard=per_shard)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(min(args.minutes, 10)):
            world.step()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
