"""Memory (RSS) and start-up time of each process `aegis up` starts, with and without its tuning.

Each child is started alone on a scratch AEGIS_HOME and free loopback ports, exactly
as `aegis up` builds it (``aegis.stack.build_children``), timed until its readiness
probe answers, then measured after a short settle: the RSS of its whole process
group (a server and every worker it forked), summed. The "untuned" MLflow run sets
the variable `aegis up` turns off back to MLflow's default, in the same command, so
the two figures compare like with like on the same machine state.

    .venv/bin/python benchmarks/stack_footprint.py [--settle 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegis.config import AegisPaths
from aegis.stack import MLFLOW_ENV, Child, dagster_child, mlflow_child, world_child, write_dagster_yaml

READY_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_rss_mb(pgid: int) -> tuple[float, int]:
    total, count = 0, 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                total += proc.memory_info().rss
                count += 1
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total / 2**20, count


def measure(child: Child, env: dict[str, str], settle_s: float) -> dict[str, float]:
    started = time.monotonic()
    child.start(env)
    assert child.proc is not None
    try:
        while not child.check_ready():
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}")
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.25)
        ready_s = time.monotonic() - started
        time.sleep(settle_s)
        rss, procs = group_rss_mb(child.proc.pid)
    finally:
        child.signal_group(signal.SIGTERM)
        try:
            child.proc.wait(timeout=30)
        except Exception:
            child.signal_group(signal.SIGKILL)
        time.sleep(1)
        child.signal_group(signal.SIGKILL)
    return {"ready_s": ready_s, "rss_mb": rss, "processes": procs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after ready before measuring")
    parser.add_argument("--skip-dagster", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aegis-footprint-") as tmp:
        p = AegisPaths(Path(tmp)).ensure()
        env = {**os.environ, "AEGIS_HOME": str(p.home), "DAGSTER_HOME": str(p.dagster_home)}
        for key in MLFLOW_ENV:
            env.pop(key, None)
        write_dagster_yaml(p.dagster_home)
        rows: list[tuple[str, dict[str, float]]] = []
        untuned = mlflow_child(p, free_port())
        untuned.defaults = {k: "true" for k in MLFLOW_ENV}  # MLflow's own default
        rows.append(("mlflow (MLflow defaults: job runner on)", measure(untuned, env, args.settle)))
        rows.append(("mlflow (as aegis up runs it)", measure(mlflow_child(p, free_port()), env, args.settle)))
        rows.append(("world server", measure(world_child(free_port(), 60.0, 2000), env, args.settle)))
        if not args.skip_dagster:
            rows.append(("dagster dev", measure(dagster_child(free_port()), env, args.settle)))
    print(f"{'process':<44} {'ready s':>8} {'RSS MiB':>9} {'procs':>6}")
    for name, r in rows:
        print(f"{name:<44} {r['ready_s']:>8.1f} {r['rss_mb']:>9.0f} {r['processes']:>6.0f}")
    before, after = rows[0][1]["rss_mb"], rows[1][1]["rss_mb"]
    print(f"mlflow RSS as aegis up runs it / MLflow defaults: {after / before:.2f}")
    tuned_total = sum(r["rss_mb"] for name, r in rows[1:])
    print(
        f"stack total as aegis up runs it: {tuned_total:.0f} MiB; with MLflow defaults: "
        f"{tuned_total - after + before:.0f} MiB"
    )


if __name__ == "__main__":
    main()
