"""Import time of the Dagster code location, printed as markdown for docs/benchmarks.md.

    .venv/bin/python benchmarks/import_time.py [--rounds 5] [--root PATH ...]

Every Dagster run subprocess and every code-server start imports
``pipelines.definitions`` before it does anything, so its import time is paid
per run. Each round imports it in a fresh interpreter under ``-X importtime``
and reads the cumulative times from that report (the interpreter's own start-up
is excluded), beside ``import dagster`` in a fresh interpreter as the baseline
measured in the same round: the machine is noisy, the ratio is the figure to
compare. The table also says which heavy libraries the import pulled in (torch
and mlflow belong only to the training and evaluation runs).

``--root`` may be given several times (say, this tree and a ``git worktree`` of
an older commit): the roots are measured alternately in each round, so a
before/after comparison shares the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = "pipelines.definitions"
BASELINE = "dagster"
HEAVY = ("torch", "mlflow", "dagster_dbt", "pandas", "numpy", "duckdb", "sqlalchemy")
DEFAULT_ROUNDS = 5
TIMEOUT_S = 300


def import_profile(root: Path, module: str) -> dict[str, float]:
    """Cumulative import seconds per top-level module of one fresh ``import module`` under root."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import {module} under {root} failed:\n{proc.stderr[-4000:]}")
    seconds: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|", 2))
        if not cumulative.isdigit():  # the header line
            continue
        # the first (outermost) import of a module is the one that paid for it
        seconds.setdefault(name, int(cumulative) / 1e6)
    if module not in seconds:
        raise RuntimeError(f"no -X importtime line for {module} under {root}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--root", type=Path, action="append", help="repository root(s); default: this one")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    roots = [r.resolve() for r in (args.root or [REPO])]
    for root in roots:
        if not (root / "pipelines" / "definitions.py").is_file():
            parser.error(f"{root} has no pipelines/definitions.py")

    target: dict[Path, list[float]] = {r: [] for r in roots}
    ratio: dict[Path, list[float]] = {r: [] for r in roots}
    heavy: dict[Path, dict[str, list[float]]] = {r: {h: [] for h in HEAVY} for r in roots}
    for _ in range(args.rounds):
        for root in roots:
            base = import_profile(root, BASELINE)[BASELINE]
            prof = import_profile(root, TARGET)
            target[root].append(prof[TARGET])
            ratio[root].append(prof[TARGET] / base)
            for h in HEAVY:
                if h in prof:
                    heavy[root][h].append(prof[h])

    print(f"## Code location import time ({platform.python_version()}, {os.cpu_count()} CPUs)\n")
    print(f"`import {TARGET}` in a fresh interpreter, {args.rounds} rounds; ratio to `import {BASELINE}`.\n")
    print("| root | median s | min s | median ratio to dagster | heavy imports (median s) |")
    print("|---|---:|---:|---:|---|")
    for root in roots:
        pulled = ", ".join(f"{h} {statistics.median(v):.2f}" for h, v in heavy[root].items() if v) or "none"
        print(
            f"| {root} | {statistics.median(target[root]):.2f} | {min(target[root]):.2f} | "
            f"{statistics.median(ratio[root]):.2f} | {pulled} |"
        )


if __name__ == "__main__":
    main()
