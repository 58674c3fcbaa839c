"""What durability costs the world server: per-tick SQLite commit vs simulating the tick.

Every tick the server commits every shard's full state (and the tick's unlanded
telemetry) in one transaction, so a ``kill -9`` loses at most one tick. This
prints, for the default world and a small one, the wall time per tick of
simulating + landing, of encoding the state, and of the commit, and the highest
``--speed`` the server can sustain (game seconds per wall second) with and
without persistence. Run: ``.venv/bin/python benchmarks/world_server.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from aegis.config import AegisPaths
from aegis.world.service import ServiceOptions, WorldService
from aegis.world.store import encode_state

TICKS = 20
WARMUP = 3


def measure(players: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        svc = WorldService(AegisPaths(Path(tmp)), ServiceOptions(speed=0, players_per_shard=players))
        try:
            svc.step(WARMUP)
            t0 = time.perf_counter()
            svc.step(TICKS)
            total = (time.perf_counter() - t0) / TICKS
            enc = []
            for _ in range(3):
                t = time.perf_counter()
                _ws, states = svc._split_state()
                sizes = [len(encode_state(s)[1]) for s in states.values()]
                enc.append(time.perf_counter() - t)
            persist = svc.metrics.persist_seconds.collect()[0]
            p_sum = next(s.value for s in persist.samples if s.name.endswith("_sum"))
            p_count = next(s.value for s in persist.samples if s.name.endswith("_count"))
            per_persist = p_sum / p_count
        finally:
            svc.stop()
    tick_s = 60.0  # one game minute per tick
    return {
        "players": players * 9,
        "tick_total_ms": total * 1000,
        "persist_ms": per_persist * 1000,
        "encode_ms": statistics.median(enc) * 1000,
        "state_mb": sum(sizes) / 1e6,
        "persist_share": per_persist / total,
        "max_speed": tick_s / total,
        "max_speed_no_persist": tick_s / max(total - per_persist, 1e-9),
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [300, 5000]
    print(
        f"{'players':>8} {'tick ms':>9} {'persist ms':>11} {'encode ms':>10} {'state MB':>9} "
        f"{'persist %':>10} {'max speed':>10} {'w/o persist':>12}"
    )
    for n in sizes:
        r = measure(n)
        print(
            f"{r['players']:>8} {r['tick_total_ms']:>9.1f} {r['persist_ms']:>11.1f} {r['encode_ms']:>10.1f} "
            f"{r['state_mb']:>9.2f} {100 * r['persist_share']:>9.1f}% {r['max_speed']:>10.0f} "
            f"{r['max_speed_no_persist']:>12.0f}"
        )


if __name__ == "__main__":
    main()
