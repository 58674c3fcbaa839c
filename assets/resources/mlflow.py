"""``MlflowResource``: the one door to MLflow tracking and the model registry.

Local: a SQLite tracking database under ``AEGIS_HOME/mlflow`` with artifacts
beside it (``mlflow ui --backend-store-uri <that uri>`` shows them); prod: the
MLflow server on EKS (stack output ``mlflowTrackingUri``), whose own artifact
store (S3) applies. Assets never call ``mlflow`` directly: they ask this
resource for a :class:`aegis.worldmodel.registry.ModelRegistry`, so the server,
experiment and model name are configured in one place (``pipelines.profiles``).

Import cost: the code location imports this module to build its definitions,
in every run subprocess and code server, while only a run that trains or judges
a model talks to MLflow. So the resource's fields come from the light
:mod:`aegis.worldmodel.settings`, and :mod:`aegis.worldmodel.registry` (mlflow,
torch: about 2 s) is imported in :meth:`MlflowResource.registry`, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from aegis.config import AegisPaths
from aegis.worldmodel.settings import EXPERIMENT, MODEL_NAME

if TYPE_CHECKING:
    from aegis.worldmodel.registry import ModelRegistry


class MlflowResource(ConfigurableResource):
    """Tracking server, registry and names of the world model's experiment and model."""

    tracking_uri: str | None = Field(default=None, description="Default: AEGIS_HOME's SQLite database")
    registry_uri: str | None = Field(default=None, description="Default: the tracking URI")
    artifact_location: str | None = Field(
        default=None,
        description="Where a new experiment stores artifacts; default: AEGIS_HOME/mlflow/artifacts locally",
    )
    experiment: str = Field(default=EXPERIMENT)
    model_name: str = Field(default=MODEL_NAME)
    home: str | None = Field(default=None, description="AEGIS_HOME to use; default: the environment's")

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return AegisPaths.from_env(self.home).mlflow_tracking_uri

    def registry(self) -> ModelRegistry:
        from aegis.worldmodel.registry import ModelRegistry  # heavy: see the module docstring

        artifact_location = self.artifact_location
        if not self.tracking_uri:  # local: make the layout and keep artifacts inside AEGIS_HOME
            local = AegisPaths.from_env(self.home).ensure()
            artifact_location = artifact_location or local.mlflow_artifacts.as_uri()
        return ModelRegistry(
            tracking_uri=self.resolved_tracking_uri(),
            artifact_location=artifact_location,
            experiment=self.experiment,
            model_name=self.model_name,
            registry_uri=self.registry_uri,
        )
