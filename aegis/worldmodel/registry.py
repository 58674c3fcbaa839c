"""MLflow tracking and registry for the world model: runs, versions, the champion alias.

The registry is the only place a model is promoted: ``challenger`` names the
newest trained version, ``champion`` the one the proposal and canary stages
use. Every version carries the dataset hash it was trained on; every decision
to move (or not move) ``champion`` is a tag on the challenger, so the registry
alone tells why a model serves.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import _model_registry as _registry_pkg
from mlflow.tracking import _tracking_service as _tracking_pkg

from aegis.worldmodel.dataset import WorldModelDataset
from aegis.worldmodel.model import WorldModel
from aegis.worldmodel.pyfunc import ARTIFACT_KEY, WorldModelPyfunc, predict_frame
from aegis.worldmodel.settings import CHALLENGER, CHAMPION, EXPERIMENT, MODEL_NAME

# Explicit requirements: inference would import and run the model in a subprocess on every log.
_tracking_utils = _tracking_pkg.utils
_registry_utils = _registry_pkg.utils
PIP_REQUIREMENTS = ["torch>=2.13,<2.14", "numpy", "pandas", "pydantic>=2.7", "scipy", "mlflow>=3.1,<4"]


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    run_id: str
    uri: str
    dataset_hash: str | None


class ModelRegistry:
    """A thin, explicit wrapper around one MLflow tracking server and model name."""

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str | None = None,
        experiment: str = EXPERIMENT,
        model_name: str = MODEL_NAME,
        registry_uri: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Point MLflow's fluent API at this server for the duration, then restore.

        The previous values are read from MLflow's module state, not through
        ``get_tracking_uri()``: that getter resolves (and creates) the default
        ``./mlflow.db`` when nothing is set, which would litter the working directory.
        """
        prev_t = getattr(_tracking_utils, "_tracking_uri", None)
        prev_r = getattr(_registry_utils, "_registry_uri", None)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        try:
            yield
        finally:
            _tracking_utils._tracking_uri = prev_t
            _registry_utils._registry_uri = prev_r

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    # ------------------------------------------------------------- logging

    def log_training(
        self,
        model: WorldModel,
        dataset: WorldModelDataset,
        example_rows: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        epoch_metrics: list[dict[str, float]] | None = None,
        tags: dict[str, str] | None = None,
        report_md: str | None = None,
    ) -> RegisteredModel:
        """Log a trained model as a pyfunc run and register it as the new ``challenger``."""
        exp_id = self.experiment_id()
        with self._active(), tempfile.TemporaryDirectory() as tmp:
            tmpdir = Path(tmp)
            model_file = model.save(tmpdir / "world_model.pt")
            output = predict_frame(model, example_rows)
            signature = infer_signature(example_rows, output)
            with mlflow.start_run(experiment_id=exp_id) as run:
                mlflow.set_tags(
                    {"dataset_hash": dataset.content_hash, "aegis.component": "world_model", **(tags or {})}
                )
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                for step, row in enumerate(epoch_metrics or []):
                    mlflow.log_metrics(row, step=step)
                mlflow.log_dict(dataset.summary(), "dataset/summary.json")
                if report_md:
                    mlflow.log_text(report_md, "evaluation/report.md")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=WorldModelPyfunc(),
                    artifacts={ARTIFACT_KEY: str(model_file)},
                    signature=signature,
                    input_example=example_rows,
                    pip_requirements=PIP_REQUIREMENTS,
                )
                mv = mlflow.register_model(
                    info.model_uri, self.model_name, tags={"dataset_hash": dataset.content_hash}
                )
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, mv.version)
        return RegisteredModel(str(mv.version), run.info.run_id, self.uri(CHALLENGER), dataset.content_hash)

    # ------------------------------------------------------------- reading

    def uri(self, alias: str) -> str:
        return f"models:/{self.model_name}@{alias}"

    def version(self, alias: str) -> ModelVersion | None:
        """The version behind ``alias``, or None when the alias (or the model) does not exist yet."""
        try:
            return self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None

    def load(self, alias: str) -> tuple[ModelVersion, WorldModel] | None:
        mv = self.version(alias)
        if mv is None:
            return None
        with self._active():
            pyfunc = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{mv.version}")
        return mv, pyfunc.unwrap_python_model().world_model

    # ------------------------------------------------------------- deciding

    def promote(self, version: str, reason: str, details: dict[str, Any] | None = None) -> None:
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        self.record_decision(version, "promoted", reason, details)

    def record_decision(
        self, version: str, decision: str, reason: str, details: dict[str, Any] | None = None
    ) -> None:
        self.client.set_model_version_tag(self.model_name, version, "aegis.decision", decision)
        self.client.set_model_version_tag(self.model_name, version, "aegis.decision_reason", reason[:4900])
        if details:
            self.client.set_model_version_tag(
                self.model_name, version, "aegis.decision_details", json.dumps(details, default=str)[:4900]
            )
        mv = self.client.get_model_version(self.model_name, version)
        if mv.run_id:
            self.client.set_tag(mv.run_id, "aegis.decision", decision)
            self.client.set_tag(mv.run_id, "aegis.decision_reason", reason[:4900])
