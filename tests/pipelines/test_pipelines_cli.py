"""``aegis materialize`` as a person runs it: a subprocess, concise output, the DEBUG stream in a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

AEGIS = [sys.executable, "-m", "aegis.cli"]


@pytest.mark.slow
def test_materialize_prints_progress_and_logs_the_debug_stream(tmp_path: Path) -> None:
    env = {**os.environ, "AEGIS_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    subprocess.run(
        [*AEGIS, "world", "run", "--hours", "1", "--seed", "3"], env=env, check=True, capture_output=True
    )
    done = subprocess.run(
        [*AEGIS, "materialize", "telemetry"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    lines = out.strip().splitlines()
    assert len(lines) < 30, out  # one line per asset and a summary, not thousands of events
    assert "DEBUG" not in out and "STEP_START" not in out
    assert re.search(r"✓ fct_shard_kpis +\(row_count [\d,]+\)", out), out
    summary = re.search(r"checks: (\d+) passed, 0 failed", out)
    assert summary and int(summary.group(1)) > 50, out
    log = Path(re.search(r"full log: (\S+\.log)", lines[-1]).group(1))  # type: ignore[union-attr]
    text = log.read_text()
    assert "STEP_START" in text and "Running with dbt=" in text  # Dagster's DEBUG stream and dbt's console
