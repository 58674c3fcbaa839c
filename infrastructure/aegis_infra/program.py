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


def build(settings: StackSettings | None = None) -> dict[str, object]:
    """Declare every resource of the stack; return the stack outputs (name -> value or Output)."""
    s = settings or load_settings()
    env, primary = s.environment, s.primary_region
    estimate = estimate_cost(s)
    refusal = cost.over_budget_message(estimate, s.monthly_budget_usd)
    if refusal:
        raise pulumi.RunError(refusal)

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
    clusters: dict[str, EksCluster] = {}
    gpu_asgs: dict[str, list[tuple[str, pulumi.Output[str]]]] = {}
    for r in s.regions:
        net = networks[r.name]
        cl = EksCluster(
            f"eks-{r.name}",
            ClusterArgs(
                env=env,
                region=r.name,
                cluster_name=cluster_name(env, r.name),
                kubernetes_version=s.kubernetes_version,
                vpc_id=net.vpc.id,
                private_subnet_ids=net.private_subnet_ids,
                kms_key_arn=key_arns[r.name],
                api_public_cidrs=s.api_public_cidrs,
                system_instance_type=s.system_nodes.instance_type,
                system_size=s.system_nodes.size,
                system_disk_gib=s.system_nodes.disk_gib,
            ),
            providers[r.name],
        )
        clusters[r.name] = cl
        groups = s.gpu_groups_in(r.name)
        for g in groups:
            pool = GpuNodePool(
                f"gpu-{r.name}-{g.name}",
                GpuPoolArgs(env, r.name, g, key_arns[r.name], net.vpc.id),
                cl,
                providers[r.name],
                opts=pulumi.ResourceOptions(parent=cl),
            )
            gpu_asgs.setdefault(r.name, []).append((g.name, pool.asg_name))
        if groups:
            GpuAddons(
                f"gpu-addons-{r.name}",
                cl,
                efa=any(g.efa for g in groups),
                opts=pulumi.ResourceOptions(parent=cl),
            )

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
            vpc_ids={r: n.vpc.id for r, n in networks.items()},
            vpc_cidrs={r.name: r.cidr for r in s.regions},
            private_subnet_ids={r: n.private_subnet_ids for r, n in networks.items()},
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
    alerting = Alerting(
        "alerting",
        AlertingArgs(
            env=env,
            queue_region=s.control_region,
            regions=s.region_names,
            kms_key_arns=key_arns,
            targets=AlarmTargets(
                replica_clusters={r: db.clusters[r].cluster_identifier for r in s.secondary_regions},
                firehose=(primary, ingest.firehose.name),
                stream_replicator=(primary, stream_replica.function.name) if stream_replica else None,
                gpu_asgs=gpu_asgs,
            ),
        ),
        providers,
    )
    dns = GameDns(
        "dns",
        GameDnsArgs(
            env, s.dns.hosted_zone_id, s.dns.record_name, s.dns.regional_endpoints, s.dns.health_path
        ),
        providers[primary],
    )

    control = s.control_region
    outputs: dict[str, object] = {
        "environment": env,
        "primaryRegion": primary,
        "regions": s.region_names,
        "controlRegion": control,
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
        "telemetryReplicaStreamName": stream_replica.stream.name if stream_replica else None,
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
        "clusterName": clusters[control].cluster.name,
        "clusterNames": {r: c.cluster.name for r, c in clusters.items()},
        "mlflowTrackingUri": MLFLOW_URL,
        "gameApiUrl": dns.url,
        "monthlyCostEstimateUsd": estimate.monthly_ceiling_usd,
        "monthlyCostBaselineUsd": estimate.monthly_baseline_usd,
        "monthlyBudgetUsd": s.monthly_budget_usd,
        "costEstimate": estimate.summary(),
    }
    Platform(
        "platform",
        PlatformArgs(
            env=env,
            region=control,
            image_repository=s.image_repository,
            image_tag=s.image_tag,
            kms_key_arn=key_arns[primary],
            region_kms_key_arn=key_arns[control],
            lake_bucket=storage.lake,
            platform_bucket=storage.platform,
            audit_bucket=storage.audit,
            alert_queue=alerting.queue,
            db_secret=db.secret,
            db_writer_endpoint=db.writer_endpoint,
            stack_outputs={k: v for k, v in outputs.items() if isinstance(v, (str, pulumi.Output))},  # type: ignore[misc]
        ),
        clusters[control],
        providers[control],
    )
    return outputs
