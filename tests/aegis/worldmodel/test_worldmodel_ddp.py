"""The distributed path: two gloo processes under torchrun train a model of the same kind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aegis.worldmodel.model import WorldModel
from aegis.worldmodel.synthetic import synthetic_kpis


@pytest.mark.slow  # two torch processes start and train: ~20-40 s on a shared CPU
def test_torchrun_two_gloo_processes(tmp_path, port: int) -> None:
    src = tmp_path / "kpis.parquet"
    synthetic_kpis(shards=6, hours=36, seed=0).to_parquet(src)
    out = tmp_path / "ddp.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "aegis.worldmodel.ddp",
        "--source",
        str(src),
        "--out",
        str(out),
        "--epochs",
        "12",
        "--members",
        "2",
        "--hidden",
        "32",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=400, env={"CUDA_VISIBLE_DEVICES": "", **_env()}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    model = WorldModel.load(out)
    assert model.info["distributed"]["world_size"] == 2
    wm = report["reports"]["world_model"]["splits"]
    for split in ("test_time", "test_shard"):
        assert wm[split]["relative_mae"] < 1.0, split  # the same kind of result: better than persistence
        assert 0.6 < wm[split]["coverage"] <= 1.0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
