"""``LakeResource``: where the telemetry lake lives, and the ingest's tunables.

Local: a directory (``AEGIS_HOME/lake``) with a SQLite manifest.  Prod: the lake
bucket (Firehose writes the landing prefix), the manifest in the platform's
PostgreSQL (schema ``aegis_lake``), the event index a cache in the home
(:class:`aegis.lake.store.Lake`).  :meth:`LakeResource.lake` is what the ingest,
the sensor, the checks and the reports use in both profiles.

The warehouse (the marts' DuckDB file) lives in the home in both profiles: dbt's
prod target reads the S3 lake and keeps the marts there (``dbt/profiles.yml``),
published to the platform bucket after each build (:mod:`aegis.warehouse`), so
:meth:`LakeResource.warehouse_path` answers for an S3 lake too.
:meth:`LakeResource.paths` is the local lake's directory layout and refuses an S3
lake; :meth:`LakeResource.home_paths` is the home in both.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from aegis.config import AegisPaths
from aegis.lake.store import LANDING_TELEMETRY, Lake
from aegis.lake.validate import DEFAULT_FUTURE_SKEW


class LakeNotConfigured(RuntimeError):
    """The lake this profile names cannot be used by this build."""


class LakeResource(ConfigurableResource):
    """The telemetry lake: a local directory, or an S3 bucket (prod)."""

    home: str | None = Field(default=None, description="AEGIS_HOME to use; default: the environment's")
    s3_bucket: str | None = Field(default=None, description="prod: the lake bucket (stack output lakeBucket)")
    s3_landing_prefix: str = Field(default="landing/telemetry", description="prod: Firehose's prefix")
    region: str | None = Field(default=None, description="prod: AWS region of the bucket")
    future_skew_s: float = Field(
        default=DEFAULT_FUTURE_SKEW.total_seconds(),
        ge=0,
        description="How far past the ingest clock an event's ts may be (shard clock skew)",
    )
    max_batches_per_run: int = Field(default=500, ge=1, description="Batches one sensor-requested run takes")

    @property
    def is_s3(self) -> bool:
        return bool(self.s3_bucket)

    @property
    def future_skew(self) -> timedelta:
        return timedelta(seconds=self.future_skew_s)

    def paths(self) -> AegisPaths:
        """The local lake's layout; an S3 lake has none (use :meth:`lake`), a clear error."""
        if self.is_s3:
            raise LakeNotConfigured(
                f"the lake is s3://{self.s3_bucket} (profile prod): it has no local directory layout; "
                "read it through LakeResource.lake()"
            )
        return AegisPaths.from_env(self.home).ensure()

    def home_paths(self) -> AegisPaths:
        """The platform's home (warehouse, stores' local files, caches), whatever the lake."""
        return AegisPaths.from_env(self.home).ensure()

    def lake(self) -> Lake:
        """The lake's files, manifest and ingest state (:class:`aegis.lake.store.Lake`)."""
        home = self.home_paths()
        if not self.is_s3:
            return Lake.local(home)
        from aegis.db import store_url

        state = home.home / "lake-cache" / str(self.s3_bucket)
        return Lake.s3(
            f"s3://{self.s3_bucket}",
            state_dir=state,
            manifest_url=store_url("lake", sqlite_path=state / "manifest.db"),
            region=self.region,
            landing_prefix=self.s3_landing_prefix.strip("/") or LANDING_TELEMETRY,
        )

    def warehouse_path(self) -> Path:
        """The marts' DuckDB file, in the home whatever the lake (see the module docstring)."""
        return AegisPaths.from_env(self.home).ensure().warehouse

    def describe(self) -> str:
        if self.is_s3:
            return f"s3://{self.s3_bucket}/{self.s3_landing_prefix.strip('/')}"
        return str(AegisPaths.from_env(self.home).lake)
