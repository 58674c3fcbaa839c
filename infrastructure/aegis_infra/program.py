"""The Aegis stack: wires the components together, region by region, and returns the stack outputs.

Order of concerns: one ``aws.Provider`` per region (nothing lands in a default
region), a KMS key and a network per region, an EKS cluster per region (game
inference near players, and a warm target for failover), GPU pools where the
stack says, the data plane in the primary region with its replicas, alerting,
DNS, and the platform in the control region. The cost estimate is computed from
the same settings and the program refuses to run when the ceiling exceeds the
budget; the CrossGuard pack checks the same thing again from the declared
resources.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from aegis_infra import cost
from aegis_infra.alerting import AlarmTargets, Alerting, AlertingArgs
from aegis_infra.cluster import ClusterArgs, EksCluster
from aegis_infra.config import StackSettings, load_settings
from aegis_infra.data_plane import (
    DB_PORT,
    LANDING_PREFIX,
    AuroraGlobal,
    BackupArgs,
    Backups,
    DatabaseArgs,
    IngestArgs,
    Storage,
    StorageArgs,
    StreamReplica,
    StreamReplicaArgs,
    TelemetryIngest,
)
from aegis_infra.dns import GameDns, GameDnsArgs
from aegis_infra.gpu import GpuAddons, GpuNodePool, GpuPoolArgs
from aegis_infra.keys import RegionalKey, RegionalKeyArgs
from aegis_infra.network import Network, NetworkArgs
from aegis_infra.platform import MLFLOW_URL, Platform, PlatformArgs

NATS_PER_REGION = 3


def cluster_name(env: str, region: str) -> str:
    return f"aegis-{env}-{region}"


def estimate_cost(s: StackSettings) -> cost.CostEstimate:
    """The stack's monthly cost from its settings (the same items the policy pack finds in the resources)."""
    items: list[cost.LineItem] = []
    for region in s.region_names:
        items.append(cost.LineItem(region, "eks", "control-plane", f"{region}/eks", 1, 1))
        items.append(
            cost.LineItem(region, "nat", "nat-gateway", f"{region}/nat", NATS_PER_REGION, NATS_PER_REGION)
        )
        sn = s.system_nodes
        items.append(
            cost.LineItem(region, "ec2", sn.instance_type, f"{region}/system", sn.size.desired, sn.size.max)
        )
        for g in s.gpu_groups_in(region):
            items.append(
                cost.LineItem(
                    region, "ec2", g.instance_type, f"{region}/gpu-{g.name}", g.size.desired, g.size.max
                )
            )
        n = s.aurora.primary_instances if region == s.primary_region else s.aurora.secondary_instances
        items.append(cost.LineItem(region, "aurora", s.aurora.instance_class, f"{region}/aurora", n, n))
    items.append(
        cost.LineItem(
            s.primary_region, "kinesis", "shard", "telemetry-stream", s.kinesis_shards, s.kinesis_shards
        )
    )
    if s.lake_replica_region:
        items.append(
            cost.LineItem(
                s.lake_replica_region,
                "kinesis",
                "shard",
                "telemetry-stream-replica",
                s.kinesis_shards,
                s.kinesis_shards,
            )
        )
    return cost.estimate(items)


@dataclass(frozen=True)
class RegionalBase:
    """Per region: the provider everything there goes through, its KMS key's ARN, and its network."""

    providers: dict[str, aws.Provider]
    key_arns: dict[str, pulumi.Output[str]]
    networks: dict[str, Network]


@dataclass(frozen=True)
class Compute:
    """Per region: the EKS cluster, and each GPU group's autoscaling group name (for the alarms)."""

    clusters: dict[str, EksCluster]
    gpu_asgs: dict[str, list[tuple[str, pulumi.Output[str]]]]


@dataclass(frozen=True)
class DataPlane:
    """The lake and audit buckets, telemetry ingest (and its replica stream), and the Aurora global database."""

    storage: Storage
    ingest: TelemetryIngest
    stream_replica: StreamReplica | None
    db: AuroraGlobal


def check_budget(s: StackSettings) -> cost.CostEstimate:
    """The stack's estimate; refuse (``pulumi.RunError``) when its ceiling exceeds the budget."""
    estimate = estimate_cost(s)
    refusal = cost.over_budget_message(estimate, s.monthly_budget_usd)
    if refusal:
        raise pulumi.RunError(refusal)
    return estimate


def declare_regional_base(s: StackSettings) -> RegionalBase:
    """One explicit provider per region (nothing lands in a default region), then its KMS key and network."""
    env = s.environment
    providers = {
        r: aws.Provider(f"aws-{r}", region=r, default_tags={"tags": {"project": "aegis", "environment": env}})
        for r in s.region_names
    }
    keys = {r: RegionalKey(f"key-{r}", RegionalKeyArgs(env, r), providers[r]) for r in s.region_names}
    key_arns = {r: k.arn for r, k in keys.items()}
    networks = {
        r.name: Network(
            f"net-{r.name}",
            NetworkArgs(
                env, r.name, r.cidr, s.availability_zones, cluster_name(env, r.name), key_arns[r.name]
            ),
            providers[r.name],
        )
        for r in s.regions
    }
    return RegionalBase(providers, key_arns, networks)


def declare_cluster(s: StackSettings, region: str, base: RegionalBase) -> EksCluster:
    """The region's EKS cluster on its network's private subnets, secrets under the region's key."""
    net = base.networks[region]
    return EksCluster(
        f"eks-{region}",
        ClusterArgs(
            env=s.environment,
            region=region,
            cluster_name=cluster_name(s.environment, region),
            kubernetes_version=s.kubernetes_version,
            vpc_id=net.vpc.id,
            private_subnet_ids=net.private_subnet_ids,
            kms_key_arn=base.key_arns[region],
            api_public_cidrs=s.api_public_cidrs,
            system_instance_type=s.system_nodes.instance_type,
            system_size=s.system_nodes.size,
            system_disk_gib=s.system_nodes.disk_gib,
        ),
        base.providers[region],
    )


def declare_gpu_pools(
    s: StackSettings, region: str, cl: EksCluster, base: RegionalBase
) -> list[tuple[str, pulumi.Output[str]]]:
    """The region's GPU node pools (and the GPU add-ons when it has any), children of its cluster.

    Returns each group's name with its autoscaling group name, for the capacity alarms.
    """
    groups = s.gpu_groups_in(region)
    asgs: list[tuple[str, pulumi.Output[str]]] = []
    for g in groups:
        pool = GpuNodePool(
            f"gpu-{region}-{g.name}",
            GpuPoolArgs(s.environment, region, g, base.key_arns[region], base.networks[region].vpc.id),
            cl,
            base.providers[region],
            opts=pulumi.ResourceOptions(parent=cl),
        )
        asgs.append((g.name, pool.asg_name))
    if groups:
        GpuAddons(
            f"gpu-addons-{region}",
            cl,
            efa=any(g.efa for g in groups),
            opts=pulumi.ResourceOptions(parent=cl),
        )
    return asgs


def declare_compute(s: StackSettings, base: RegionalBase) -> Compute:
    """Region by region: the EKS cluster, then its GPU pools."""
    clusters: dict[str, EksCluster] = {}
    gpu_asgs: dict[str, list[tuple[str, pulumi.Output[str]]]] = {}
    for r in s.regions:
        clusters[r.name] = declare_cluster(s, r.name, base)
        asgs = declare_gpu_pools(s, r.name, clusters[r.name], base)
        if asgs:
            gpu_asgs[r.name] = asgs
    return Compute(clusters, gpu_asgs)


def declare_data_plane(s: StackSettings, base: RegionalBase) -> DataPlane:
    """Buckets, ingest and its replica stream, the Aurora global database, and backups of it and the audit bucket."""
    env, primary, key_arns, providers = s.environment, s.primary_region, base.key_arns, base.providers
    storage = Storage(
        "storage",
        StorageArgs(env, primary, s.lake_replica_region, key_arns, s.audit_retention_days),
        providers,
    )
    ingest = TelemetryIngest(
        "ingest",
        IngestArgs(env, primary, key_arns[primary], storage.lake.arn, s.kinesis_shards),
        providers[primary],
    )
    stream_replica = (
        StreamReplica(
            "ingest-replica",
            StreamReplicaArgs(
                env, primary, s.lake_replica_region, s.kinesis_shards, ingest.stream.arn, key_arns
            ),
            providers,
        )
        if s.lake_replica_region
        else None
    )
    db = AuroraGlobal(
        "aurora",
        DatabaseArgs(
            env=env,
            primary_region=primary,
            secondary_regions=s.secondary_regions,
            spec=s.aurora,
            kms_key_arns=key_arns,
            vpc_ids={r: n.vpc.id for r, n in base.networks.items()},
            vpc_cidrs={r.name: r.cidr for r in s.regions},
            private_subnet_ids={r: n.private_subnet_ids for r, n in base.networks.items()},
        ),
        providers,
    )
    Backups(
        "backup",
        BackupArgs(
            env,
            primary,
            s.lake_replica_region,
            key_arns,
            [db.clusters[primary].arn, storage.audit.arn],
        ),
        providers,
    )
    return DataPlane(storage, ingest, stream_replica, db)


def declare_alerting(s: StackSettings, base: RegionalBase, compute: Compute, data: DataPlane) -> Alerting:
    """Alarms in every region (replica lag, Firehose, the stream replicator, GPU capacity) into one queue."""
    replica = data.stream_replica
    return Alerting(
        "alerting",
        AlertingArgs(
            env=s.environment,
            queue_region=s.control_region,
            regions=s.region_names,
            kms_key_arns=base.key_arns,
            targets=AlarmTargets(
                replica_clusters={r: data.db.clusters[r].cluster_identifier for r in s.secondary_regions},
                firehose=(s.primary_region, data.ingest.firehose.name),
                stream_replicator=(s.primary_region, replica.function.name) if replica else None,
                gpu_asgs=compute.gpu_asgs,
            ),
        ),
        base.providers,
    )


def declare_dns(s: StackSettings, base: RegionalBase) -> GameDns:
    """The game API's latency records and health checks, one per regional endpoint."""
    d = s.dns
    return GameDns(
        "dns",
        GameDnsArgs(s.environment, d.hosted_zone_id, d.record_name, d.regional_endpoints, d.health_path),
        base.providers[s.primary_region],
    )


def stack_outputs(
    s: StackSettings,
    estimate: cost.CostEstimate,
    compute: Compute,
    data: DataPlane,
    alerting: Alerting,
    dns: GameDns,
) -> dict[str, object]:
    """The stack outputs (name -> value or Output): what deployments and user code read."""
    storage, ingest, replica, db = data.storage, data.ingest, data.stream_replica, data.db
    clusters = compute.clusters
    return {
        "environment": s.environment,
        "primaryRegion": s.primary_region,
        "regions": s.region_names,
        "controlRegion": s.control_region,
        "lakeBucket": storage.lake.bucket,
        "lakeLandingPrefix": LANDING_PREFIX,
        "lakeReplicaBucket": storage.replica.bucket if storage.replica is not None else None,
        "auditBucket": storage.audit.bucket,
        "auditReplicaBucket": storage.audit_replica.bucket if storage.audit_replica is not None else None,
        "platformReplicaBucket": (
            storage.platform_replica.bucket if storage.platform_replica is not None else None
        ),
        "platformBucket": storage.platform.bucket,
        "telemetryStreamName": ingest.stream.name,
        "firehoseName": ingest.firehose.name,
        "telemetryReplicaStreamName": replica.stream.name if replica else None,
        "telemetryReplicaRegion": s.lake_replica_region,
        "glueDatabase": ingest.glue_db.name,
        "glueTable": ingest.glue_table.name,
        "alertQueueUrl": alerting.queue.url,
        "alertQueueArn": alerting.queue.arn,
        "dbWriterEndpoint": db.writer_endpoint,
        "dbReaderEndpoint": db.reader_endpoint,
        "dbPort": str(DB_PORT),
        "dbSecretArn": db.secret.arn,
        "dagsterDatabase": "dagster",
        "ledgerDatabase": "ledger",
        "dbGlobalClusterId": db.global_cluster.id,
        "clusterName": clusters[s.control_region].cluster.name,
        "clusterNames": {r: c.cluster.name for r, c in clusters.items()},
        "mlflowTrackingUri": MLFLOW_URL,
        "gameApiUrl": dns.url,
        "monthlyCostEstimateUsd": estimate.monthly_ceiling_usd,
        "monthlyCostBaselineUsd": estimate.monthly_baseline_usd,
        "monthlyBudgetUsd": s.monthly_budget_usd,
        "costEstimate": estimate.summary(),
    }


def declare_platform(
    s: StackSettings,
    base: RegionalBase,
    compute: Compute,
    data: DataPlane,
    alerting: Alerting,
    outputs: dict[str, object],
) -> Platform:
    """Dagster, MLflow and the alert receiver on the control region's cluster; user code gets the outputs."""
    control, primary = s.control_region, s.primary_region
    return Platform(
        "platform",
        PlatformArgs(
            env=s.environment,
            region=control,
            image_repository=s.image_repository,
            image_tag=s.image_tag,
            kms_key_arn=base.key_arns[primary],
            region_kms_key_arn=base.key_arns[control],
            lake_bucket=data.storage.lake,
            platform_bucket=data.storage.platform,
            audit_bucket=data.storage.audit,
            alert_queue=alerting.queue,
            db_secret=data.db.secret,
            db_writer_endpoint=data.db.writer_endpoint,
            stack_outputs={k: v for k, v in outputs.items() if isinstance(v, (str, pulumi.Output))},  # type: ignore[misc]
        ),
        compute.clusters[control],
        base.providers[control],
    )


def build(settings: StackSettings | None = None) -> dict[str, object]:
    """Declare every resource of the stack; return the stack outputs (name -> value or Output)."""
    s = settings or load_settings()
    estimate = check_budget(s)
    base = declare_regional_base(s)
    compute = declare_compute(s, base)
    data = declare_data_plane(s, base)
    alerting = declare_alerting(s, base, compute, data)
    dns = declare_dns(s, base)
    outputs = stack_outputs(s, estimate, compute, data, alerting, dns)
    declare_platform(s, base, compute, data, alerting, outputs)
    return outputs
