"""Typed stack settings: what differs between stacks, read from ``Pulumi.<stack>.yaml``.

Every value the program needs is validated here, once, with pydantic, so a typo
in a stack file is a readable error at preview time, not a half-created cloud.
Code holds what does not differ between stacks (encryption, IMDSv2, taints...).

The values are read through ``pulumi.Config`` exactly as the CLI hands them to
the program: every value is a string (``PULUMI_CONFIG``, a JSON object of
``"aegis:key" -> string``); structured values are JSON text. Each key therefore
has one declared kind (:data:`SETTING_KINDS`) and is read with the matching
getter: ``get`` for strings (``aegis:kubernetesVersion: "1.33"`` stays the
string ``"1.33"``), ``get_int``/``get_float`` for numbers, ``get_object`` for
lists and maps. Nothing is JSON-decoded on a guess.
"""

from __future__ import annotations

import ipaddress
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
    # The one image built from this repository (Dockerfile) runs the Dagster code
    # location, MLflow and the alert receiver: ``<imageRepository>:<imageTag>``.
    image_repository: str = Field(alias="imageRepository", pattern=r"^[a-z0-9][a-z0-9./_:-]*[a-z0-9]$")
    image_tag: str = Field(alias="imageTag", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    monthly_budget_usd: float = Field(alias="monthlyBudgetUsd", gt=0)

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

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


def parse_settings(values: dict[str, Any]) -> StackSettings:
    """Validate a ``{key-without-namespace: value}`` mapping into settings, or raise readable errors."""
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        raise StackConfigError("invalid stack configuration:\n" + "\n".join(_error_lines(exc))) from None


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(stack)"
        lines.append(f"  {CONFIG_NAMESPACE}:{where}: {err['msg']}")
    return lines


SettingKind = Literal["string", "int", "float", "object"]

# How the CLI's string for each key is read (see the module docstring).
SETTING_KINDS: dict[str, SettingKind] = {
    "environment": "string",
    "regions": "object",
    "availabilityZones": "object",
    "kubernetesVersion": "string",
    "apiPublicCidrs": "object",
    "systemNodes": "object",
    "gpuNodeGroups": "object",
    "aurora": "object",
    "kinesisShards": "int",
    "auditRetentionDays": "int",
    "lakeReplicaRegion": "string",
    "platformRegion": "string",
    "dns": "object",
    "imageRepository": "string",
    "imageTag": "string",
    "monthlyBudgetUsd": "float",
}

SETTING_KEYS = tuple(f.alias or name for name, f in StackSettings.model_fields.items())
if set(SETTING_KEYS) != set(SETTING_KINDS):  # pragma: no cover - a programming error, caught on import
    raise RuntimeError(f"SETTING_KINDS and StackSettings disagree: {set(SETTING_KEYS) ^ set(SETTING_KINDS)}")


def _configured_keys() -> set[str]:
    """Every ``aegis:*`` key the CLI handed over (explicit config and ``PULUMI_CONFIG``), namespace stripped.

    ``pulumi.Config`` has no listing call; the runtime's own config map and the
    ``PULUMI_CONFIG`` bag are where ``Config.get`` looks, so they are what a typo
    must be found in.
    """
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{CONFIG_NAMESPACE}:"
    return {k[len(prefix) :] for k in keys if k.startswith(prefix)}


def load_settings() -> StackSettings:
    """Read the ``aegis:*`` keys of the current stack through ``pulumi.Config``, each with its kind's getter.

    Every problem is reported at once: a key that is not a setting, a value the
    getter cannot read (``aegis:kinesisShards: four``), then pydantic's checks.
    """
    import pulumi

    cfg = pulumi.Config(CONFIG_NAMESPACE)
    problems = [
        f"  {CONFIG_NAMESPACE}:{key}: not a setting of this program (known: {', '.join(SETTING_KEYS)})"
        for key in sorted(_configured_keys() - set(SETTING_KEYS))
    ]
    values: dict[str, Any] = {}
    getters = {"string": cfg.get, "int": cfg.get_int, "float": cfg.get_float, "object": cfg.get_object}
    for key, kind in SETTING_KINDS.items():
        try:
            value = getters[kind](key)
        except pulumi.ConfigTypeError as exc:
            problems.append(f"  {CONFIG_NAMESPACE}:{key}: {exc}")
            continue
        if value is not None:
            values[key] = value
    try:
        settings = StackSettings.model_validate(values)
    except ValidationError as exc:
        problems.extend(_error_lines(exc))
    if problems:
        raise StackConfigError("invalid stack configuration:\n" + "\n".join(problems))
    return settings
