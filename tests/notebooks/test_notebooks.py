"""Every notebook under notebooks/ runs top to bottom against one small real world, so none can rot.

One world is built for the module (a few game hours, few players: `aegis world run` then `aegis
materialize telemetry`, `training`, `evaluation`, as the README's first hour does) and each
notebook is executed as a user would: the jupytext percent file read into a notebook and run by
nbclient in a separate ipykernel process with AEGIS_HOME pointing at that world. A cell error fails
the test; so do missing figures, and a stage with nothing to show that does not say so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support import AEGIS, REPO

jupytext = pytest.importorskip("jupytext", reason="the dev extras (jupytext, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

NOTEBOOKS = REPO / "notebooks"
WORLD_HOURS = "3"  # the least that gives the world model enough windows to train and judge
PLAYERS_PER_SHARD = "200"
STEP_TIMEOUT_S = 600
CELL_TIMEOUT_S = 300


def _aegis(home: Path, *args: str) -> str:
    env = {**os.environ, "AEGIS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [AEGIS, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"aegis {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("notebooks") / "home"
    _aegis(
        home,
        "world",
        "run",
        "--hours",
        WORLD_HOURS,
        "--players-per-shard",
        PLAYERS_PER_SHARD,
        "--no-progress",
    )
    for group in ("telemetry", "training", "evaluation"):
        _aegis(home, "materialize", group)
    return home


def run_notebook(name: str, home: Path, out_dir: Path, **extra_env: str) -> Any:
    """Execute notebooks/NAME.py in a fresh kernel (cwd notebooks/); the executed copy is kept in out_dir."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    env = {**os.environ, "AEGIS_HOME": str(home), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("AEGIS_CANARY_SCENARIO", None)
    env.update(extra_env)
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, out_dir / f"{name}.ipynb")
    return nb


def outputs(nb: Any) -> tuple[int, str]:
    """(number of PNG figures, all printed and displayed text) of an executed notebook."""
    images, text = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{out.get('ename')}: {out.get('evalue')}"
            if out["output_type"] == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            images += "image/png" in data
            if "text/plain" in data:
                text.append(data["text/plain"])
    return images, "\n".join(text)


def test_telemetry(world: Path, tmp_path: Path) -> None:
    images, text = outputs(run_notebook("telemetry", world, tmp_path))
    assert images >= 4, text  # funnel, abandonment, death heatmap, economy
    assert str(world) in text and "fct_shard_kpis" in text
    assert "partial" in text  # a 3-hour world has no full day: the notebook says why daily rates are absent


def test_world_model(world: Path, tmp_path: Path) -> None:
    images, text = outputs(run_notebook("world_model", world, tmp_path))
    assert images >= 2, text  # per-KPI error against the baselines, calibration
    assert "('champion')" in text and "relative MAE" in text
    assert "No changeset store" in text  # no canary has run: said, not faked
    assert "No finished canary has both a predicted and an observed effect yet" in text


def test_canary_replay(world: Path, tmp_path: Path) -> None:
    images, text = outputs(run_notebook("canary_replay", world, tmp_path))
    assert "no canary has ever run in this AEGIS_HOME" in text
    assert "bundled judge scenario, NOT this AEGIS_HOME" in text  # never passed off as this world's
    assert "verdict: ROLLBACK" in text  # the bundled change really harmed deaths per player
    assert images >= 2, text  # canary against controls, the confidence sequences

    # A `canary judge` scenario directory: the notebook's replay gives the CLI's verdict.
    scenario = tmp_path / "scenario"
    scenario.mkdir()
    kpis = pd.read_parquet(REPO / "tests" / "data" / "kpis_world.parquet")
    kpis = kpis[pd.to_datetime(kpis["bucket_start"], utc=True) < pd.Timestamp("2026-01-04T08:00Z")]
    kpis.to_parquet(scenario / "kpis.parquet", index=False)
    spec = {"canary": "eu-west-2", "controls": ["eu-west-3", "us-east-1", "us-east-3"]}
    spec |= {"start": "2026-01-03T18:00:00Z", "max_buckets": 144}
    (scenario / "canary.json").write_text(json.dumps(spec))
    cli = json.loads(_aegis(world, "canary", "judge", str(scenario), "--json"))
    images, text = outputs(
        run_notebook("canary_replay", world, tmp_path, AEGIS_CANARY_SCENARIO=str(scenario))
    )
    assert f"Replaying scenario directory {scenario}" in text
    assert f"verdict: {cli['verdict'].upper()} after {cli['buckets_observed']} look(s)" in text
    assert images >= 2, text


def test_incidents(world: Path, tmp_path: Path) -> None:
    images, text = outputs(run_notebook("incidents", world, tmp_path))
    assert images == 0 and "No healing store yet" in text and "No alert inbox yet" in text

    from aegis.alerts.inbox import AlertInbox
    from aegis.config import AegisPaths
    from aegis.domain import Alert

    incident = _aegis(world, "incidents", "open", "--target", "eu-west-1", "--problem", "latency").strip()
    _aegis(world, "incidents", "escalate", incident, "--reason", "taken over by hand")
    inbox = AlertInbox(f"sqlite:///{AegisPaths(world).alerts_db}")
    try:
        inbox.put(
            [
                Alert(
                    source="alertmanager",
                    name="TickLatencyHigh",
                    target="eu-west-1",
                    labels={"shard": "eu-west-1"},
                )
            ]
        )
    finally:
        inbox.close()
    images, text = outputs(run_notebook("incidents", world, tmp_path))
    assert images >= 2, text  # the timeline, the alerts
    assert incident in text and "escalated" in text and "TickLatencyHigh" in text
