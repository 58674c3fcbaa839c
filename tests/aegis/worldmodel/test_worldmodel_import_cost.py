"""The code location stays cheap to import: torch and mlflow load only when a model is trained or judged.

Every Dagster run subprocess and code server imports ``pipelines.definitions``;
torch and mlflow add about 2 s (far more on a loaded box) to each. These tests
import in a fresh interpreter, because this test process has long since
imported both.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis.config import AegisPaths

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "mlflow")
HEAVY_WORLDMODEL_MODULES = ("dataset", "metrics", "registry", "pipeline", "train")
IMPORT_TIMEOUT_S = 300


def _fresh_python(code: str) -> dict[str, object]:
    """Run code in a new interpreter at the repo root; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_code_location_import_pulls_in_neither_torch_nor_mlflow(aegis_home: AegisPaths) -> None:
    out = _fresh_python(
        "import json, sys\n"
        "from pipelines.definitions import defs\n"
        # resolving the graph and the training job reads config classes, I/O types and
        # resource fields: all of that must stay light too
        "graph = defs.resolve_asset_graph()\n"
        "job = defs.resolve_job_def('world_model_training_job')\n"
        "keys = sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'keys': keys}))\n"
    )
    assert {"training_dataset", "world_model", "model_evaluation"} <= set(out["keys"])  # type: ignore[arg-type]
    assert out["heavy"] == [], f"importing the code location imported {out['heavy']}"


def test_assets_load_torch_and_mlflow_when_they_run(aegis_home: AegisPaths) -> None:
    """The lazy imports are real: the resource's registry and the check's metrics bring them in."""
    out = _fresh_python(
        "import json, sys\n"
        "from assets.resources.mlflow import MlflowResource\n"
        "before = [m for m in ('torch', 'mlflow') if m in sys.modules]\n"
        "registry = MlflowResource().registry()\n"
        "print(json.dumps({'before': before, 'after': [m for m in ('torch', 'mlflow') if m in sys.modules],\n"
        "                  'type': type(registry).__module__ + '.' + type(registry).__name__}))\n"
    )
    assert out["before"] == []
    assert out["after"] == ["torch", "mlflow"]
    assert out["type"] == "aegis.worldmodel.registry.ModelRegistry"


def test_settings_import_only_the_standard_library() -> None:
    out = _fresh_python(
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import aegis.worldmodel.settings\n"
        "new = sorted({m.split('.')[0] for m in set(sys.modules) - before})\n"
        "print(json.dumps({'new': new, 'stdlib': sorted(sys.stdlib_module_names)}))\n"
    )
    outside = [m for m in out["new"] if m not in out["stdlib"] and m != "aegis"]  # type: ignore[union-attr]
    assert outside == [], f"aegis.worldmodel.settings imports {outside}"


def _module_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("module", HEAVY_WORLDMODEL_MODULES)
def test_settings_are_defined_once(module: str) -> None:
    """A value the heavy modules need comes from settings, never a second definition that could drift."""
    package = REPO / "aegis" / "worldmodel"
    settings = _module_level_names(package / "settings.py")
    assert {
        "MODEL_NAME",
        "CHAMPION",
        "DEFAULT_MARGIN",
        "COVERAGE_BAND",
        "KPI_TABLE",
        "DEFAULT_EPOCHS",
    } <= settings
    redefined = settings & _module_level_names(package / f"{module}.py")
    assert not redefined, (
        f"aegis/worldmodel/{module}.py defines {sorted(redefined)} again; import them from settings"
    )


def test_heavy_modules_reexport_the_settings() -> None:
    """Callers that import a constant from its old home still get the same object."""
    from aegis.worldmodel import dataset, metrics, registry, settings, train

    assert registry.MODEL_NAME is settings.MODEL_NAME and registry.CHAMPION is settings.CHAMPION
    assert (
        metrics.COVERAGE_BAND is settings.COVERAGE_BAND and metrics.DEFAULT_MARGIN is settings.DEFAULT_MARGIN
    )
    assert dataset.KPI_TABLE is settings.KPI_TABLE and dataset.DEFAULT_WINDOW is settings.DEFAULT_WINDOW
    cfg = train.TrainConfig()
    assert (cfg.epochs, cfg.patience, cfg.batch_size, cfg.lr, cfg.hidden, cfg.members, cfg.device) == (
        settings.DEFAULT_EPOCHS,
        settings.DEFAULT_PATIENCE,
        settings.DEFAULT_BATCH,
        settings.DEFAULT_LR,
        settings.DEFAULT_HIDDEN,
        settings.DEFAULT_MEMBERS,
        settings.DEFAULT_DEVICE,
    )
    split = dataset.SplitConfig()
    assert (split.window, split.test_shard_fraction, split.test_time_fraction, split.val_fraction) == (
        settings.DEFAULT_WINDOW,
        settings.DEFAULT_TEST_SHARD_FRACTION,
        settings.DEFAULT_TEST_TIME_FRACTION,
        settings.DEFAULT_VAL_FRACTION,
    )
