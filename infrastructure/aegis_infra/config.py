"""Typed stack settings: what differs between stacks, read from ``Pulumi.<stack>.yaml``.

Every value the program needs is validated here, once, with pydantic, so a typo
in a stack file is a readable error at preview time, not a half-created cloud.
Code holds what does not differ between stacks (encryption, IMDSv2, taints...).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_NAMESPACE = "aegis"
MIN_BACKUP_RETENTION_DAYS = 7


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RegionSpec(_Model):
    name: str
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v)
        if net.prefixlen > 18:
            raise ValueError(f"{v}: a region VPC needs at least a /18 (six /21 subnets)")
        return v


class PoolSize(_Model):
    min: int = Field(ge=0)
    desired: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _order(self) -> PoolSize:
        if not self.min <= self.desired <= self.max:
            raise ValueError(f"need min <= desired <= max, got {self.min}, {self.desired}, {self.max}")
        return self


class SystemNodes(_Model):
    instance_type: str = Field(alias="instanceType")
    size: PoolSize
    disk_gib: int = Field(default=100, alias="diskGiB", ge=20)


class GpuNodeGroup(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,20}$")
    role: Literal["training", "inference", "general"]
    instance_type: str = Field(alias="instanceType")
    gpus_per_node: int = Field(alias="gpusPerNode", ge=1, le=16)
    size: PoolSize
    efa: bool = False
    disk_gib: int = Field(default=500, alias="diskGiB", ge=50)
    regions: list[str] | None = None  # None: every region of the stack


class AuroraSpec(_Model):
    engine_version: str = Field(alias="engineVersion")
    instance_class: str = Field(alias="instanceClass")
    primary_instances: int = Field(alias="primaryInstances", ge=1, le=15)
    secondary_instances: int = Field(default=1, alias="secondaryInstances", ge=1, le=15)
    backup_retention_days: int = Field(alias="backupRetentionDays", ge=MIN_BACKUP_RETENTION_DAYS, le=35)
    password_version: int = Field(default=1, alias="passwordVersion", ge=1)


class DnsSpec(_Model):
    hosted_zone_id: str = Field(alias="hostedZoneId")
    record_name: str = Field(alias="recordName")
    # Regional game API endpoints (the studio's load balancers), one per stack region.
    regional_endpoints: dict[str, str] = Field(alias="regionalEndpoints")
    health_path: str = Field(default="/v1/health", alias="healthPath")


class Images(_Model):
    # One image built from this repository runs user code, MLflow and the alert receiver.
    platform: str
    alert_receiver_command: list[str] = Field(alias="alertReceiverCommand", min_length=1)


class StackSettings(_Model):
    environment: Literal["dev", "prod"]
    regions: list[RegionSpec] = Field(min_length=1, max_length=6)
    availability_zones: list[str] = Field(default=["a", "b", "c"], alias="availabilityZones")
    kubernetes_version: str = Field(alias="kubernetesVersion")
    api_public_cidrs: list[str] = Field(default=[], alias="apiPublicCidrs")
    system_nodes: SystemNodes = Field(alias="systemNodes")
    gpu_node_groups: list[GpuNodeGroup] = Field(alias="gpuNodeGroups", min_length=1)
    aurora: AuroraSpec
    kinesis_shards: int = Field(alias="kinesisShards", ge=1, le=500)
    audit_retention_days: int = Field(alias="auditRetentionDays", ge=1)
    lake_replica_region: str | None = Field(default=None, alias="lakeReplicaRegion")
    platform_region: str | None = Field(default=None, alias="platformRegion")
    dns: DnsSpec
    images: Images
    monthly_budget_usd: float = Field(alias="monthlyBudgetUsd", gt=0)

    @property
    def primary_region(self) -> str:
        return self.regions[0].name

    @property
    def secondary_regions(self) -> list[str]:
        return [r.name for r in self.regions[1:]]

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    @property
    def control_region(self) -> str:
        """Where Dagster, MLflow and the alert receiver run (a DR failover moves it)."""
        return self.platform_region or self.primary_region

    def gpu_groups_in(self, region: str) -> list[GpuNodeGroup]:
        return [g for g in self.gpu_node_groups if g.regions is None or region in g.regions]

    @model_validator(mode="after")
    def _consistent(self) -> StackSettings:
        names = self.region_names
        if len(set(names)) != len(names):
            raise ValueError(f"regions repeat: {names}")
        nets = [ipaddress.ip_network(r.cidr) for r in self.regions]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(
                        f"region CIDRs overlap: {a} and {b} (peering and failover need them apart)"
                    )
        if len(self.availability_zones) != 3:
            raise ValueError("availabilityZones must name exactly three zone suffixes")
        for extra, label in (
            (self.lake_replica_region, "lakeReplicaRegion"),
            (self.platform_region, "platformRegion"),
        ):
            if extra is not None and extra not in names:
                raise ValueError(f"{label} {extra!r} is not one of the stack's regions {names}")
        if self.lake_replica_region == self.primary_region:
            raise ValueError("lakeReplicaRegion must differ from the primary region")
        if self.environment == "prod":
            if len(names) < 3:
                raise ValueError("prod runs in at least three regions")
            if self.lake_replica_region is None:
                raise ValueError("prod needs lakeReplicaRegion (cross-region replication of the lake)")
        group_names = [g.name for g in self.gpu_node_groups]
        if len(set(group_names)) != len(group_names):
            raise ValueError(f"gpuNodeGroups names repeat: {group_names}")
        for g in self.gpu_node_groups:
            for r in g.regions or []:
                if r not in names:
                    raise ValueError(
                        f"gpu node group {g.name!r} names region {r!r} outside the stack {names}"
                    )
        missing = [r for r in names if r not in self.dns.regional_endpoints]
        if missing:
            raise ValueError(f"dns.regionalEndpoints lacks a game API endpoint for {missing}")
        return self


class StackConfigError(ValueError):
    """The stack file is wrong; the message lists every problem at once."""


def _coerce(raw: str | None) -> Any:
    """Pulumi hands structured config over as JSON text; scalars stay strings for pydantic."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_settings(values: dict[str, Any]) -> StackSettings:
    """Validate a ``{key-without-namespace: value}`` mapping into settings, or raise readable errors."""
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(stack)"
            lines.append(f"  {CONFIG_NAMESPACE}:{where}: {err['msg']}")
        raise StackConfigError("invalid stack configuration:\n" + "\n".join(lines)) from None


SETTING_KEYS = tuple(f.alias or name for name, f in StackSettings.model_fields.items())


def load_settings() -> StackSettings:
    """Read the ``aegis:*`` keys of the current stack through ``pulumi.Config``."""
    import pulumi

    cfg = pulumi.Config(CONFIG_NAMESPACE)
    values = {key: _coerce(cfg.get(key)) for key in SETTING_KEYS}
    return parse_settings({k: v for k, v in values.items() if v is not None})
