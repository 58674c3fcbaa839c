"""pipelines/stack_outputs.py: the env contract between the stack outputs and the prod profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.stack_outputs import (
    STACK_OUTPUT_ENV,
    MissingStackOutputsError,
    env_from_outputs,
    read_stack_env,
)

REPO = Path(__file__).resolve().parents[2]


def full_env() -> dict[str, str]:
    return {var: f"value-of-{out}" for out, var in STACK_OUTPUT_ENV.items()}


def test_reads_every_output_back_by_name() -> None:
    values = read_stack_env(full_env())
    assert values == {out: f"value-of-{out}" for out in STACK_OUTPUT_ENV}


def test_missing_variables_are_all_listed() -> None:
    env = full_env()
    del env["AEGIS_LAKE_BUCKET"]
    env["AEGIS_DB_HOST"] = "  "
    with pytest.raises(MissingStackOutputsError) as err:
        read_stack_env(env)
    msg = str(err.value)
    assert "AEGIS_LAKE_BUCKET (stack output 'lakeBucket')" in msg and "AEGIS_DB_HOST" in msg
    assert "AEGIS_AUDIT_BUCKET" not in msg


def test_env_names_are_unique_and_shell_safe() -> None:
    names = list(STACK_OUTPUT_ENV.values())
    assert len(names) == len(set(names))
    assert all(n.isupper() and n.replace("_", "").isalnum() for n in names)


def test_env_from_outputs_and_cli(tmp_path: Path) -> None:
    outputs = {out: f"v {out}" for out in STACK_OUTPUT_ENV} | {"extra": "ignored"}
    assert env_from_outputs(outputs)["AEGIS_ALERT_QUEUE_URL"] == "v alertQueueUrl"
    with pytest.raises(MissingStackOutputsError, match="lakeBucket"):
        env_from_outputs({k: v for k, v in outputs.items() if k != "lakeBucket"})
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.stack_outputs"],
        input=json.dumps(outputs),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "export AEGIS_LAKE_BUCKET='v lakeBucket'" in proc.stdout.splitlines()
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.stack_outputs"],
        input="[]",
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr
