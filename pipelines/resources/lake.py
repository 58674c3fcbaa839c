"""``LakeResource``: where the telemetry lake lives, and the ingest's tunables.

Local: a directory (``AEGIS_HOME/lake``), which the core (:mod:`aegis.lake`)
reads and writes directly.  Prod: the lake is S3 (Firehose writes the landing
prefix).  The core's ingest works on a POSIX directory today; pointing it at S3
is a seam, not a feature of this build, so the S3 shape is declared here (bucket,
prefix, region, the dagster-aws S3 resource beside it in the prod profile) and
ingesting from it raises :class:`LakeNotConfigured` with that explanation
instead of pretending.
"""

from __future__ import annotations

from datetime import timedelta

from dagster import ConfigurableResource
from pydantic import Field

from aegis.config import AegisPaths
from aegis.lake.validate import DEFAULT_FUTURE_SKEW


class LakeNotConfigured(RuntimeError):
    """The lake this profile names cannot be used by this build."""


class LakeResource(ConfigurableResource):
    """The telemetry lake: local directory now, S3 seam for prod."""

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
        """The local layout; for an S3 lake, a clear error (see the module docstring)."""
        if self.is_s3:
            raise LakeNotConfigured(
                f"the lake is s3://{self.s3_bucket}/{self.s3_landing_prefix} (profile prod), but this build "
                "ingests from a local directory only; run the ingest with AEGIS_PROFILE=local, or stage the "
                "landing prefix locally first"
            )
        return AegisPaths.from_env(self.home).ensure()

    def describe(self) -> str:
        if self.is_s3:
            return f"s3://{self.s3_bucket}/{self.s3_landing_prefix}"
        return str(AegisPaths.from_env(self.home).lake)
