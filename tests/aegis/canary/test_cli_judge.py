"""``aegis canary judge DIR --json`` as a user runs it: a subprocess on a directory of real KPI rows."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from aegis.canary.cli import judge_cmd
from aegis.canary.scenarios import inject
from tests.support import AEGIS, REPO

DATA = REPO / "tests" / "data"
START = pd.Timestamp("2026-01-03T18:00:00Z")
CONTROLS = ["eu-west-3", "us-east-1", "us-east-3", "ap-southeast-1"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AEGIS, "canary", "judge", *args], capture_output=True, text=True, timeout=120)


def _case(
    tmp_path: Path,
    effects: dict[str, float] | None = None,
    spec: object = None,
    kpis: pd.DataFrame | None = None,
) -> Path:
    df = pd.read_parquet(DATA / "kpis_world.parquet") if kpis is None else kpis
    if effects:
        df = inject(df, "eu-west-2", START.to_pydatetime(), effects)
    # Rows up to the budget only: the directory an auditor would be handed.
    df = df[pd.to_datetime(df["bucket_start"], utc=True) < START + timedelta(hours=14)]
    df.to_parquet(tmp_path / "kpis.parquet", index=False)
    if spec is None:
        spec = {
            "canary": "eu-west-2",
            "controls": CONTROLS,
            "start": START.isoformat().replace("+00:00", "Z"),
            "max_buckets": 144,
        }
    (tmp_path / "canary.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return tmp_path


def test_judge_json_rolls_back_a_harmful_change(tmp_path: Path) -> None:
    proc = _run(str(_case(tmp_path, {"deaths": 0.35})), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"verdict", "buckets_observed", "decided_at", "metrics", "reason"}
    assert out["verdict"] == "rollback"
    assert 1 <= out["buckets_observed"] <= 72
    assert pd.Timestamp(out["decided_at"]) >= START
    deaths = next(m for m in out["metrics"] if m["name"] == "deaths_per_player")
    assert deaths["status"] == "regressed" and deaths["interval"][0] > 0 and deaths["effect"] > 0.15
    assert all(set(m) == {"name", "effect", "interval", "status"} for m in out["metrics"])


def test_judge_a_a_is_not_rolled_back_and_table_reads(tmp_path: Path) -> None:
    case = _case(tmp_path)
    out = json.loads(_run(str(case), "--json").stdout)
    assert out["verdict"] in ("promote", "inconclusive")
    table = CliRunner().invoke(judge_cmd, [str(case)])  # the same command in-process: the readable table
    assert table.exit_code == 0, table.output
    assert "verdict:" in table.output and "deaths_per_player" in table.output
    assert out["verdict"] in table.output


def test_data_ending_early_is_inconclusive_with_no_decision_time(tmp_path: Path) -> None:
    df = pd.read_parquet(DATA / "kpis_world.parquet")
    df = df[pd.to_datetime(df["bucket_start"], utc=True) < START + timedelta(minutes=30)]
    out = json.loads(_run(str(_case(tmp_path, kpis=df)), "--json").stdout)
    assert out["verdict"] == "inconclusive" and out["decided_at"] is None
    assert out["buckets_observed"] == 6


BAD_INPUT = {
    "missing column": (lambda d, s: (d.drop(columns=["tick_p95_ms"]), s), "missing columns"),
    "unknown shard": (lambda d, s: (d, {**s, "canary": "mars-1"}), "mars-1"),
    "start after the data": (lambda d, s: (d, {**s, "start": "2027-06-01T00:00:00Z"}), "outside"),
    "malformed json": (lambda d, s: (d, "{not json"), "not valid JSON"),
    "start before the data": (lambda d, s: (d, {**s, "start": "2026-01-01T00:00:00Z"}), "outside"),
    "zero budget": (lambda d, s: (d, {**s, "max_buckets": 0}), "max_buckets"),
    "no controls": (lambda d, s: (d, {k: v for k, v in s.items() if k != "controls"}), "controls"),
    "naive start": (lambda d, s: (d, {**s, "start": "2026-01-03T18:00:00"}), "time zone"),
    "spec not an object": (lambda d, s: (d, "[1, 2]"), "JSON object"),
}
# These run as a subprocess, exactly as a user would; the rest through click in-process (same code, faster).
SUBPROCESS_CASES = ("missing column", "unknown shard", "start after the data", "malformed json")


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_INPUT[case]
    df = pd.read_parquet(DATA / "kpis_world.parquet")
    spec = {"canary": "eu-west-2", "controls": CONTROLS, "start": START.isoformat(), "max_buckets": 144}
    df, spec = mutate(df, spec)
    directory = str(_case(tmp_path, spec=spec, kpis=df))
    if case in SUBPROCESS_CASES:
        proc = _run(directory, "--json")
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        res = CliRunner().invoke(judge_cmd, [directory, "--json"])
        code, out, err = res.exit_code, res.stdout, res.stderr
    assert code == 2, (out, err)
    assert message in err
    assert out == ""


def test_missing_files_exit_2(tmp_path: Path) -> None:
    proc = _run(str(tmp_path), "--json")
    assert proc.returncode == 2 and "kpis.parquet" in proc.stderr
    (tmp_path / "kpis.parquet").write_text("not parquet")
    (tmp_path / "canary.json").write_text("{}")
    proc = _run(str(tmp_path), "--json")
    assert proc.returncode == 2


def test_real_parameter_change_in_the_world_run_is_rolled_back(tmp_path: Path) -> None:
    """eu-west-1 got NPC aggression 1.6 at the fixture's change time: the command finds the deaths."""
    meta = json.loads((DATA / "kpis_world.json").read_text())
    controls = ["eu-west-2", "eu-west-3", "us-east-1", "ap-southeast-1"]
    pd.read_parquet(DATA / "kpis_world.parquet").to_parquet(tmp_path / "kpis.parquet", index=False)
    spec = {"canary": "eu-west-1", "controls": controls, "start": meta["change_start"], "max_buckets": 144}
    (tmp_path / "canary.json").write_text(json.dumps(spec))
    res = CliRunner().invoke(judge_cmd, [str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] == "rollback"
    assert {m["name"]: m["status"] for m in out["metrics"]}["deaths_per_player"] == "regressed"


@pytest.mark.parametrize(("name", "verdict"), [("canary-good", "promote"), ("canary-harmful", "rollback")])
def test_the_shipped_example_directories_replay_as_the_readme_says(name: str, verdict: str) -> None:
    """README's first hour replays tests/data/canary-good; both example dirs are real world runs."""
    done = _run(str(REPO / "tests" / "data" / name), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == verdict
