"""``aegis model train|predict|effects`` on a Parquet of KPI rows, and their errors."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from aegis.cli import cli
from aegis.domain import AutonomousChangeSet, ParamChange
from aegis.worldmodel.synthetic import synthetic_kpis


def test_train_predict_effects_from_parquet(tmp_path, aegis_home) -> None:
    rows = synthetic_kpis(shards=3, hours=14, seed=2)
    src = tmp_path / "kpis.parquet"
    rows.to_parquet(src)
    model = tmp_path / "wm.pt"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "model",
            "train",
            "--source",
            str(src),
            "--out",
            str(model),
            "--window",
            "6",
            "--epochs",
            "2",
            "--members",
            "2",
            "--hidden",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    assert model.exists()
    assert "| **relative MAE** |" in res.output and "persistence" in res.output
    res = runner.invoke(
        cli, ["model", "predict", "--model", str(model), "--source", str(src), "--shard", "shard-01"]
    )
    assert res.exit_code == 0, res.output
    pred = json.loads(res.output)
    assert (
        pred["shard_id"] == "shard-01"
        and pred["deaths_early_low"] <= pred["deaths_early"] <= pred["deaths_early_high"]
    )
    cs = AutonomousChangeSet(target="shard-01", diff={"sink_multiplier": ParamChange(before=1.0, after=1.2)})
    cs_file = tmp_path / "cs.json"
    cs_file.write_text(cs.model_dump_json())
    res = runner.invoke(cli, ["model", "effects", str(cs_file), "--model", str(model), "--source", str(src)])
    assert res.exit_code == 0, res.output
    effects = json.loads(res.output)
    assert set(effects["currency_sinks"]) == {"delta", "low", "high", "baseline", "expected"}


def test_cli_errors_are_messages_not_tracebacks(tmp_path, aegis_home) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["model", "train"])  # no warehouse yet
    assert res.exit_code != 0 and "does not exist" in res.output and "Traceback" not in res.output
    one = tmp_path / "one.csv"
    synthetic_kpis(shards=1, hours=6).to_csv(one, index=False)
    res = runner.invoke(cli, ["model", "train", "--source", str(one)])
    assert res.exit_code != 0 and "at least 2" in res.output
    res = runner.invoke(cli, ["model", "predict", "--model", str(tmp_path / "nope.pt"), "--shard", "x"])
    assert res.exit_code != 0 and "does not exist" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"target": "s", "diff": {"npc_aggresion": {"before": 1, "after": 2}}}))
    res = runner.invoke(cli, ["model", "effects", str(bad), "--model", str(tmp_path / "nope.pt")])
    assert res.exit_code != 0 and "npc_aggresion" in res.output
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "junk.parquet")
    res = runner.invoke(cli, ["model", "train", "--source", str(tmp_path / "junk.parquet")])
    assert res.exit_code != 0 and "contract column" in res.output
