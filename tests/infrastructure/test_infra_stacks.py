"""The Pulumi program for both stacks, under mocks: what a reviewer checks in a diff of the cloud."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.telemetry import SCHEMA_V1

PROD_REGIONS = {"us-east-1", "eu-west-1", "ap-southeast-1"}


def of_type(graph: dict[str, Any], typ: str) -> list[dict[str, Any]]:
    return [r for r in graph["resources"] if r["type"] == typ]


def one(graph: dict[str, Any], typ: str, name_part: str = "") -> dict[str, Any]:
    found = [r for r in of_type(graph, typ) if name_part in r["name"]]
    assert len(found) == 1, f"expected one {typ} named *{name_part}*, found {[r['name'] for r in found]}"
    return found[0]


def by_urn(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["urn"]: r for r in graph["resources"]}


# ------------------------------------------------------------------ regions and providers
def test_every_aws_resource_goes_through_an_explicit_regional_provider(graph: dict[str, Any]) -> None:
    expected = PROD_REGIONS if graph["stack"] == "prod" else {"us-east-1"}
    providers = of_type(graph, "pulumi:providers:aws")
    assert sorted(p["inputs"]["region"] for p in providers) == sorted(expected)
    aws_resources = [r for r in graph["resources"] if r["type"].startswith("aws:")]
    assert aws_resources
    stray = [r["name"] for r in aws_resources if not r["provider"] or "default_" in r["provider"]]
    assert stray == [], f"resources on the default provider: {stray}"
    assert {r["region"] for r in aws_resources} == expected


def test_prod_places_a_cluster_network_and_database_in_each_region(prod_graph: dict[str, Any]) -> None:
    for typ in ("aws:ec2/vpc:Vpc", "aws:eks/cluster:Cluster", "aws:rds/cluster:Cluster", "aws:kms/key:Key"):
        assert {r["region"] for r in of_type(prod_graph, typ)} == PROD_REGIONS, typ
    nats = of_type(prod_graph, "aws:ec2/natGateway:NatGateway")
    assert len(nats) == 9  # one per zone per region
    endpoints = {r["inputs"]["serviceName"] for r in of_type(prod_graph, "aws:ec2/vpcEndpoint:VpcEndpoint")}
    for region in PROD_REGIONS:
        assert {
            f"com.amazonaws.{region}.s3",
            f"com.amazonaws.{region}.ecr.api",
            f"com.amazonaws.{region}.ecr.dkr",
        } <= endpoints
    assert len(of_type(prod_graph, "aws:ec2/flowLog:FlowLog")) == 3


def test_subnets_span_three_zones_and_workloads_are_private(graph: dict[str, Any]) -> None:
    subnets = of_type(graph, "aws:ec2/subnet:Subnet")
    for region in {s["region"] for s in subnets}:
        private = [s for s in subnets if s["region"] == region and "private" in s["name"]]
        assert len({s["inputs"]["availabilityZone"] for s in private}) == 3
    assert all(not s["inputs"].get("mapPublicIpOnLaunch") for s in subnets)
    for cluster in of_type(graph, "aws:eks/cluster:Cluster"):
        subnet_ids = set(cluster["inputs"]["vpcConfig"]["subnetIds"])
        assert all("private" in sid for sid in subnet_ids)


# ------------------------------------------------------------------ EKS and GPUs
def test_eks_secrets_encrypted_and_irsa_ready(graph: dict[str, Any]) -> None:
    clusters = of_type(graph, "aws:eks/cluster:Cluster")
    for c in clusters:
        enc = c["inputs"]["encryptionConfig"]
        assert enc["resources"] == ["secrets"] and enc["provider"]["keyArn"].startswith("arn:aws:kms:")
        assert c["inputs"]["accessConfig"]["authenticationMode"] == "API"
        assert "audit" in c["inputs"]["enabledClusterLogTypes"]
    oidc = of_type(graph, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert {o["region"] for o in oidc} == {c["region"] for c in clusters}
    assert all(o["inputs"]["clientIdLists"] == ["sts.amazonaws.com"] for o in oidc)


def test_launch_templates_require_imdsv2_and_encrypt_volumes(graph: dict[str, Any]) -> None:
    templates = of_type(graph, "aws:ec2/launchTemplate:LaunchTemplate")
    assert templates
    for lt in templates:
        assert lt["inputs"]["metadataOptions"]["httpTokens"] == "required"
        assert lt["inputs"]["metadataOptions"]["httpPutResponseHopLimit"] == 1
        for m in lt["inputs"]["blockDeviceMappings"]:
            assert m["ebs"]["encrypted"] == "true" and m["ebs"]["kmsKeyId"].startswith("arn:aws:kms:")
    urns = {lt["urn"] for lt in templates}
    for ng in of_type(graph, "aws:eks/nodeGroup:NodeGroup"):
        assert set(ng["propertyDependencies"]["launchTemplate"]) & urns, ng["name"]


def gpu_groups(graph: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        n
        for n in of_type(graph, "aws:eks/nodeGroup:NodeGroup")
        if n["inputs"]["amiType"] == "AL2023_x86_64_NVIDIA"
    ]


def test_gpu_node_groups_are_tainted_labelled_and_on_the_nvidia_ami(graph: dict[str, Any]) -> None:
    groups = gpu_groups(graph)
    assert groups
    for ng in groups:
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in ng["inputs"]["taints"]
        labels = ng["inputs"]["labels"]
        assert labels["nvidia.com/gpu.present"] == "true" and labels["aegis.io/gpu-role"] in {
            "training",
            "inference",
            "general",
        }
        assert (
            ng["inputs"]["tags"]["k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"]
            == "true:NoSchedule"
        )
    system = [n for n in of_type(graph, "aws:eks/nodeGroup:NodeGroup") if n not in groups]
    assert system and all(not n["inputs"].get("taints") for n in system)


def test_dev_has_one_small_gpu_group_that_scales_to_zero(dev_graph: dict[str, Any]) -> None:
    (ng,) = gpu_groups(dev_graph)
    assert ng["inputs"]["scalingConfig"]["minSize"] == 0 and ng["inputs"]["scalingConfig"]["maxSize"] <= 2
    assert ng["inputs"]["instanceTypes"] == ["g6.xlarge"]


def test_prod_training_is_p5_with_efa_in_the_primary_and_inference_g6e_everywhere(
    prod_graph: dict[str, Any],
) -> None:
    groups = gpu_groups(prod_graph)
    training = [g for g in groups if g["inputs"]["labels"]["aegis.io/gpu-role"] == "training"]
    inference = [g for g in groups if g["inputs"]["labels"]["aegis.io/gpu-role"] == "inference"]
    assert [(g["region"], g["inputs"]["instanceTypes"]) for g in training] == [("us-east-1", ["p5.48xlarge"])]
    assert {g["region"] for g in inference} == PROD_REGIONS
    assert all(g["inputs"]["instanceTypes"][0].startswith("g6e.") for g in inference)
    assert len(training[0]["inputs"]["subnetIds"]) == 1  # cluster placement group: one zone
    lt = one(prod_graph, "aws:ec2/launchTemplate:LaunchTemplate", "training")
    (nic,) = lt["inputs"]["networkInterfaces"]
    assert nic["interfaceType"] == "efa"
    assert lt["inputs"]["placement"]["groupName"]
    assert (
        one(prod_graph, "aws:ec2/placementGroup:PlacementGroup", "training")["inputs"]["strategy"]
        == "cluster"
    )


def test_gpu_addons_are_helm_releases_through_each_clusters_own_provider(graph: dict[str, Any]) -> None:
    urns = by_urn(graph)
    k8s_providers = {p["urn"]: p for p in of_type(graph, "pulumi:providers:kubernetes")}
    releases = of_type(graph, "kubernetes:helm.sh/v3:Release")
    gpu_regions = {g["region"] for g in gpu_groups(graph)}
    for chart in ("nvidia-device-plugin", "dcgm-exporter"):
        found = [r for r in releases if r["inputs"]["chart"] == chart]
        assert len(found) == len(gpu_regions), chart
        for rel in found:
            assert rel["provider"] in k8s_providers
            assert rel["inputs"]["values"]["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
    for p in k8s_providers.values():
        kubeconfig = p["inputs"]["kubeconfig"]
        assert '"get-token"' in kubeconfig and urns  # exec auth, no static token
    assert sum(r["inputs"]["chart"] == "cluster-autoscaler" for r in releases) == len(
        of_type(graph, "aws:eks/cluster:Cluster")
    )


# ------------------------------------------------------------------ data plane
def test_buckets_are_kms_encrypted_versioned_and_private(graph: dict[str, Any]) -> None:
    buckets = of_type(graph, "aws:s3/bucket:Bucket")
    assert {b["inputs"]["tags"]["component"] for b in buckets} >= {"lake", "audit", "platform"}
    for typ in (
        "BucketServerSideEncryptionConfiguration",
        "BucketVersioning",
        "BucketPublicAccessBlock",
        "BucketPolicy",
    ):
        attached = [r for r in graph["resources"] if r["type"].endswith(f":{typ}")]
        targets = {u for r in attached for u in r["propertyDependencies"].get("bucket", [])}
        assert targets == {b["urn"] for b in buckets}, typ
    for sse in of_type(
        graph, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ):
        assert sse["inputs"]["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"


def bucket_of(graph: dict[str, Any], component: str) -> dict[str, Any]:
    (bucket,) = [
        b for b in of_type(graph, "aws:s3/bucket:Bucket") if b["inputs"]["tags"]["component"] == component
    ]
    return bucket


def lock_of(graph: dict[str, Any], bucket: dict[str, Any]) -> dict[str, Any]:
    (lock,) = [
        r
        for r in of_type(graph, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
        if r["propertyDependencies"]["bucket"] == [bucket["urn"]]
    ]
    return lock


def test_audit_bucket_has_compliance_object_lock(graph: dict[str, Any]) -> None:
    audit = bucket_of(graph, "audit")
    assert audit["inputs"]["objectLockEnabled"] is True
    lock = lock_of(graph, audit)
    assert lock["inputs"]["rule"]["defaultRetention"]["mode"] == "COMPLIANCE"


def test_prod_buckets_replicate_to_the_replica_region_with_kms_and_rtc(prod_graph: dict[str, Any]) -> None:
    configs = of_type(prod_graph, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert len(configs) == 3
    for component in ("lake", "platform", "audit"):
        source, replica = bucket_of(prod_graph, component), bucket_of(prod_graph, f"{component}-replica")
        (rep,) = [c for c in configs if c["propertyDependencies"]["bucket"] == [source["urn"]]]
        assert replica["region"] == "eu-west-1" and rep["region"] == source["region"] == "us-east-1"
        (rule,) = rep["inputs"]["rules"]
        dest = rule["destination"]
        assert dest["bucket"] == replica["outputs"]["arn"]
        assert ":eu-west-1:" in dest["encryptionConfiguration"]["replicaKmsKeyId"]
        assert dest["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
        assert rule["sourceSelectionCriteria"]["sseKmsEncryptedObjects"]["status"] == "Enabled"
    # The witness's copy is as immutable as the original, and no delete marker reaches it.
    audit, audit_replica = bucket_of(prod_graph, "audit"), bucket_of(prod_graph, "audit-replica")
    assert audit_replica["inputs"]["objectLockEnabled"] is True
    assert (
        lock_of(prod_graph, audit_replica)["inputs"]["rule"] == lock_of(prod_graph, audit)["inputs"]["rule"]
    )
    (audit_rep,) = [c for c in configs if c["propertyDependencies"]["bucket"] == [audit["urn"]]]
    assert audit_rep["inputs"]["rules"][0]["deleteMarkerReplication"]["status"] == "Disabled"
    lifecycle = one(prod_graph, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert any(r.get("noncurrentVersionExpiration") for r in lifecycle["inputs"]["rules"])
    out = prod_graph["outputs"]
    assert out["auditReplicaBucket"] == audit_replica["outputs"]["bucket"]
    assert out["platformReplicaBucket"] == bucket_of(prod_graph, "platform-replica")["outputs"]["bucket"]


def test_dev_has_no_cross_region_replication(dev_graph: dict[str, Any]) -> None:
    assert of_type(dev_graph, "aws:s3/bucketReplicationConfig:BucketReplicationConfig") == []
    assert of_type(dev_graph, "aws:lambda/function:Function") == []
    assert of_type(dev_graph, "aws:rds/clusterParameterGroup:ClusterParameterGroup") == []
    for key in (
        "lakeReplicaBucket",
        "auditReplicaBucket",
        "platformReplicaBucket",
        "telemetryReplicaStreamName",
    ):
        assert dev_graph["outputs"][key] is None, key


def test_telemetry_ingest_kinesis_kms_firehose_parquet_schema_v1(graph: dict[str, Any]) -> None:
    stream = one(graph, "aws:kinesis/stream:Stream", "ingest-stream")
    assert stream["inputs"]["retentionPeriod"] >= 24  # Firehose and a replay can re-read a day at least
    assert stream["inputs"]["encryptionType"] == "KMS" and stream["inputs"]["kmsKeyId"].startswith(
        "arn:aws:kms:"
    )
    table = one(graph, "aws:glue/catalogTable:CatalogTable")
    cols = table["inputs"]["storageDescriptor"]["columns"]
    assert [c["name"] for c in cols] == SCHEMA_V1.names
    assert {c["name"]: c["type"] for c in cols}["ts"] == "timestamp"
    assert [k["name"] for k in table["inputs"]["partitionKeys"]] == ["date", "hour", "shard"]
    s3 = one(graph, "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream")["inputs"][
        "extendedS3Configuration"
    ]
    assert s3["prefix"] == (
        "landing/telemetry/date=!{partitionKeyFromQuery:date}/hour=!{partitionKeyFromQuery:hour}/shard=!{partitionKeyFromQuery:shard}/"
    )
    assert s3["dynamicPartitioningConfiguration"]["enabled"] is True
    conv = s3["dataFormatConversionConfiguration"]
    assert "parquetSerDe" in conv["outputFormatConfiguration"]["serializer"]
    assert conv["schemaConfiguration"]["tableName"] == table["inputs"]["name"]
    assert s3["bufferingInterval"] <= 300  # lake freshness; the RPO rests on the stream (see below)
    assert s3["kmsKeyArn"].startswith("arn:aws:kms:")


def test_aurora_global_database_encrypted_protected_and_backed_up(graph: dict[str, Any]) -> None:
    glob = one(graph, "aws:rds/globalCluster:GlobalCluster")
    assert glob["inputs"]["storageEncrypted"] is True and glob["inputs"]["deletionProtection"] is True
    clusters = of_type(graph, "aws:rds/cluster:Cluster")
    expected_regions = PROD_REGIONS if graph["stack"] == "prod" else {"us-east-1"}
    assert {c["region"] for c in clusters} == expected_regions
    for c in clusters:
        i = c["inputs"]
        assert i["storageEncrypted"] is True and i["kmsKeyId"].startswith(f"arn:aws:kms:{c['region']}:")
        assert i["deletionProtection"] is True and i["backupRetentionPeriod"] >= 7
        assert glob["urn"] in c["propertyDependencies"]["globalClusterIdentifier"]
        assert "masterPassword" not in i
    primary = [c for c in clusters if c["region"] == "us-east-1"]
    assert len(primary) == 1 and primary[0]["inputs"]["masterPasswordWoVersion"] >= 1
    assert all(
        not r["inputs"]["publiclyAccessible"]
        for r in of_type(graph, "aws:rds/clusterInstance:ClusterInstance")
    )
    secret = one(graph, "aws:secretsmanager/secret:Secret", "master")
    assert {r["region"] for r in secret["inputs"].get("replicas", [])} == expected_regions - {"us-east-1"}


def test_backups_hourly_and_daily_copied_to_the_replica_region(prod_graph: dict[str, Any]) -> None:
    plan = one(prod_graph, "aws:backup/plan:Plan")
    vaults = of_type(prod_graph, "aws:backup/vault:Vault")
    assert {v["region"] for v in vaults} == {"us-east-1", "eu-west-1"}
    for rule in plan["inputs"]["rules"]:
        assert rule["lifecycle"]["deleteAfter"] >= 7
        (copy,) = rule["copyActions"]
        assert ":eu-west-1:" in copy["destinationVaultArn"]
    selection = one(prod_graph, "aws:backup/selection:Selection")
    assert any(":cluster:aegis-prod-us-east-1" in a for a in selection["inputs"]["resources"])


# ------------------------------------------------------------------ alerting and DNS
def test_alarms_flow_through_regional_topics_into_one_queue(graph: dict[str, Any]) -> None:
    queue = next(q for q in of_type(graph, "aws:sqs/queue:Queue") if q["name"] == "alerting-alerts")
    dlq = next(q for q in of_type(graph, "aws:sqs/queue:Queue") if q["name"] == "alerting-alerts-dlq")
    assert dlq["outputs"]["arn"] in queue["inputs"]["redrivePolicy"]
    topics = of_type(graph, "aws:sns/topic:Topic")
    subs = of_type(graph, "aws:sns/topicSubscription:TopicSubscription")
    assert {t["region"] for t in topics} == {s["region"] for s in subs}
    assert all(
        s["inputs"]["endpoint"] == queue["outputs"]["arn"] and s["inputs"]["protocol"] == "sqs" for s in subs
    )
    assert all(t["inputs"]["kmsMasterKeyId"].startswith("arn:aws:kms:") for t in topics)
    alarms = of_type(graph, "aws:cloudwatch/metricAlarm:MetricAlarm")
    metrics = {a["inputs"]["metricName"] for a in alarms}
    assert {"DeliveryToS3.Success", "StatusCheckFailed"} <= metrics
    topic_by_region = {t["region"]: t["outputs"]["arn"] for t in topics}
    for a in alarms:
        assert a["inputs"]["alarmActions"] == [topic_by_region[a["region"]]]  # same-region topic


def test_prod_alarms_on_global_replica_lag_in_each_secondary(prod_graph: dict[str, Any]) -> None:
    lag = [
        a
        for a in of_type(prod_graph, "aws:cloudwatch/metricAlarm:MetricAlarm")
        if a["inputs"]["metricName"] == "AuroraGlobalDBReplicationLag"
    ]
    assert {a["region"] for a in lag} == {"eu-west-1", "ap-southeast-1"}
    assert all(a["inputs"]["threshold"] < 300_000 for a in lag)  # fires well inside RPO 5 minutes


def test_route53_health_checks_and_latency_records_per_region(graph: dict[str, Any]) -> None:
    checks = of_type(graph, "aws:route53/healthCheck:HealthCheck")
    records = of_type(graph, "aws:route53/record:Record")
    regions = PROD_REGIONS if graph["stack"] == "prod" else {"us-east-1"}
    assert {r["inputs"]["setIdentifier"] for r in records} == regions
    for r in records:
        assert r["inputs"]["latencyRoutingPolicies"] == [{"region": r["inputs"]["setIdentifier"]}]
        assert r["inputs"]["healthCheckId"]
    assert all(c["inputs"]["resourcePath"] == "/v1/health" for c in checks) and len(checks) == len(regions)


# ------------------------------------------------------------------ platform
def dagster_values(graph: dict[str, Any]) -> dict[str, Any]:
    return next(
        r for r in of_type(graph, "kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == "dagster"
    )["inputs"]["values"]


def test_dagster_uses_aurora_k8s_run_launcher_with_gpu_tolerations_and_s3_logs(graph: dict[str, Any]) -> None:
    v = dagster_values(graph)
    assert v["postgresql"]["enabled"] is False
    assert v["postgresql"]["postgresqlHost"] == graph["outputs"]["dbWriterEndpoint"]
    assert (
        v["generatePostgresqlPasswordSecret"] is False
        and v["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    )
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    pod = v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert v["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert (
        v["computeLogManager"]["config"]["s3ComputeLogManager"]["bucket"]
        == graph["outputs"]["platformBucket"]
    )
    assert v["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam:")
    (dep,) = v["dagster-user-deployments"]["deployments"]
    assert dep["dagsterApiGrpcArgs"] == ["--module-name", "pipelines.definitions"]


def test_user_code_gets_every_stack_output_under_its_contract_name(graph: dict[str, Any]) -> None:
    from pipelines.stack_outputs import STACK_OUTPUT_ENV

    (dep,) = dagster_values(graph)["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert env["AEGIS_PROFILE"] == "prod"
    for output, var in STACK_OUTPUT_ENV.items():
        assert env[var] == str(graph["outputs"][output]), var


def test_secrets_come_from_secrets_manager_never_literals(graph: dict[str, Any]) -> None:
    from stack_runner import MOCK_PASSWORD

    holders = [r["type"] for r in graph["resources"] if MOCK_PASSWORD in repr(r["inputs"])]
    assert sorted(holders) == ["aws:rds/cluster:Cluster", "aws:secretsmanager/secretVersion:SecretVersion"]
    primary = next(c for c in of_type(graph, "aws:rds/cluster:Cluster") if MOCK_PASSWORD in repr(c["inputs"]))
    assert "masterPasswordWo" in primary["inputs"]  # write-only: never stored in the Pulumi state
    kinds = {
        r["inputs"].get("kind") for r in of_type(graph, "kubernetes:external-secrets.io/v1:ExternalSecret")
    }
    assert kinds == {"ExternalSecret"}
    store = one(graph, "kubernetes:external-secrets.io/v1:ClusterSecretStore")
    assert store["inputs"]["spec"]["provider"]["aws"]["service"] == "SecretsManager"
    # The alert receiver's own token: a Secrets Manager secret with no value in the program or state.
    tokens = one(graph, "aws:secretsmanager/secret:Secret", "service-tokens")
    control = graph["outputs"]["controlRegion"]
    assert tokens["region"] == control and f":kms:{control}:" in tokens["inputs"]["kmsKeyId"]
    assert not [
        v
        for v in of_type(graph, "aws:secretsmanager/secretVersion:SecretVersion")
        if tokens["urn"] in v["propertyDependencies"].get("secretId", [])
    ]
    (ext,) = [
        e
        for e in of_type(graph, "kubernetes:external-secrets.io/v1:ExternalSecret")
        if e["inputs"]["metadata"]["name"] == "aegis-service-tokens"
    ]
    assert ext["inputs"]["spec"]["dataFrom"] == [{"extract": {"key": tokens["outputs"]["name"]}}]
    assert ext["inputs"]["spec"]["target"]["template"]["data"] == {"AEGIS_TOKEN_ALERTS": "{{ .alerts }}"}


def test_mlflow_and_alert_receiver_run_with_their_own_service_accounts(graph: dict[str, Any]) -> None:
    deployments = {
        d["inputs"]["metadata"]["name"]: d for d in of_type(graph, "kubernetes:apps/v1:Deployment")
    }
    assert set(deployments) == {"mlflow", "alert-receiver"}
    mlflow = deployments["mlflow"]["inputs"]["spec"]["template"]["spec"]
    assert mlflow["serviceAccountName"] == "mlflow"
    cmd = mlflow["containers"][0]["command"]
    assert cmd[cmd.index("--artifacts-destination") + 1].startswith(
        f"s3://{graph['outputs']['platformBucket']}/"
    )
    services = {s["inputs"]["metadata"]["name"] for s in of_type(graph, "kubernetes:core/v1:Service")}
    assert {"mlflow", "alert-receiver"} <= services


def test_irsa_roles_trust_exactly_one_service_account(graph: dict[str, Any]) -> None:
    import json

    roles = [
        r for r in of_type(graph, "aws:iam/role:Role") if "serviceAccount" in (r["inputs"].get("tags") or {})
    ]
    assert len(roles) >= 5
    for role in roles:
        (stmt,) = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"]
        (sub,) = [v for k, v in stmt["Condition"]["StringEquals"].items() if k.endswith(":sub")]
        ns, sa = role["inputs"]["tags"]["serviceAccount"].split("/")
        assert sub == f"system:serviceaccount:{ns}:{sa}"


# ------------------------------------------------------------------ outputs and cost
def test_outputs_cover_what_the_deployment_needs(graph: dict[str, Any]) -> None:
    from pipelines.stack_outputs import STACK_OUTPUT_ENV

    out = graph["outputs"]
    missing = [k for k in STACK_OUTPUT_ENV if not out.get(k)]
    assert missing == []
    assert out["lakeLandingPrefix"] == "landing/telemetry/"
    assert out["mlflowTrackingUri"].startswith("http://mlflow.")
    assert out["monthlyCostEstimateUsd"] <= out["monthlyBudgetUsd"]
    assert 0 < out["monthlyCostBaselineUsd"] <= out["monthlyCostEstimateUsd"]


def test_cost_read_from_resources_equals_the_programs_estimate(graph: dict[str, Any]) -> None:
    from aegis_guard import cost_model
    from aegis_guard.offline import policy_resources
    from aegis_guard.policies import stack_cost_items

    est = cost_model.estimate(stack_cost_items(policy_resources(graph)))
    assert est.monthly_ceiling_usd == pytest.approx(graph["outputs"]["monthlyCostEstimateUsd"], abs=0.05)
    assert est.monthly_baseline_usd == pytest.approx(graph["outputs"]["monthlyCostBaselineUsd"], abs=0.05)


# ------------------------------------------------------------------ RPO 5 minutes
def test_prod_aurora_enforces_a_managed_rpo_on_every_cluster(prod_graph: dict[str, Any]) -> None:
    """rds.global_db_rpo turns Aurora's typical sub-second lag into a bound: commits wait instead."""
    from aegis_infra.data_plane import GLOBAL_DB_RPO_SECONDS

    assert 20 <= GLOBAL_DB_RPO_SECONDS <= 120  # Aurora's minimum; well inside RPO 5 minutes
    groups = {g["urn"]: g for g in of_type(prod_graph, "aws:rds/clusterParameterGroup:ClusterParameterGroup")}
    clusters = of_type(prod_graph, "aws:rds/cluster:Cluster")
    assert len(clusters) == 3
    for c in clusters:
        (urn,) = c["propertyDependencies"]["dbClusterParameterGroupName"]
        g = groups[urn]
        assert g["region"] == c["region"]
        assert g["inputs"]["family"] == "aurora-postgresql" + c["inputs"]["engineVersion"].split(".")[0]
        (param,) = g["inputs"]["parameters"]
        assert param["name"] == "rds.global_db_rpo" and int(param["value"]) == GLOBAL_DB_RPO_SECONDS


def test_prod_telemetry_stream_is_copied_to_the_replica_region(prod_graph: dict[str, Any]) -> None:
    """Landing objects the lake replica lacks after losing us-east-1 are re-derived from this copy."""
    from aegis_infra.data_plane import FIREHOSE_BUFFER_SECONDS, REPLICATION_SLA_MINUTES

    primary = one(prod_graph, "aws:kinesis/stream:Stream", "ingest-stream")
    copy = one(prod_graph, "aws:kinesis/stream:Stream", "ingest-replica-stream")
    assert (primary["region"], copy["region"]) == ("us-east-1", "eu-west-1")
    assert copy["inputs"]["shardCount"] == primary["inputs"]["shardCount"]
    assert copy["inputs"]["encryptionType"] == "KMS" and ":eu-west-1:" in copy["inputs"]["kmsKeyId"]
    # The copy outlives the window it must fill (Firehose buffer + RTC bound) many times over.
    window_h = (FIREHOSE_BUFFER_SECONDS + REPLICATION_SLA_MINUTES * 60) / 3600
    assert copy["inputs"]["retentionPeriod"] >= 168 > 24 * window_h
    fn = one(prod_graph, "aws:lambda/function:Function", "replicator")
    assert fn["region"] == "us-east-1"
    assert fn["inputs"]["environment"]["variables"] == {
        "TARGET_REGION": "eu-west-1",
        "TARGET_STREAM": copy["outputs"]["name"],
    }
    esm = one(prod_graph, "aws:lambda/eventSourceMapping:EventSourceMapping")
    assert esm["inputs"]["eventSourceArn"] == primary["outputs"]["arn"]
    assert esm["inputs"]["functionName"] == fn["outputs"]["arn"]
    assert esm["inputs"]["maximumRetryAttempts"] == -1 and esm["inputs"]["maximumRecordAgeInSeconds"] == -1
    assert esm["inputs"]["maximumBatchingWindowInSeconds"] <= 5
    (lag,) = [
        a
        for a in of_type(prod_graph, "aws:cloudwatch/metricAlarm:MetricAlarm")
        if a["inputs"]["metricName"] == "IteratorAge"
    ]
    assert lag["region"] == "us-east-1" and lag["inputs"]["threshold"] <= 60_000
    assert lag["inputs"]["dimensions"] == {"FunctionName": fn["outputs"]["name"]}
    assert prod_graph["outputs"]["telemetryReplicaStreamName"] == copy["outputs"]["name"]


def test_the_replicator_copies_every_record_to_the_replica_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda's own code, against Kinesis in moto: every record arrives, bytes and keys unchanged."""
    import base64
    import types

    import boto3
    from aegis_infra.data_plane import STREAM_REPLICATOR_CODE
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("TARGET_REGION", "eu-west-1")
    monkeypatch.setenv("TARGET_STREAM", "copy")
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name="eu-west-1")
        kinesis.create_stream(StreamName="copy", ShardCount=1)
        module = types.ModuleType("replicator")
        exec(compile(STREAM_REPLICATOR_CODE, "index.py", "exec"), module.__dict__)
        sent = [(f'{{"event_id": "e{i}"}}'.encode(), f"shard-{i % 3}") for i in range(1203)]
        event = {
            "Records": [
                {"kinesis": {"data": base64.b64encode(data).decode(), "partitionKey": key}}
                for data, key in sent
            ]
        }
        assert module.handler(event, None) == {"replicated": len(sent)}
        shard = kinesis.list_shards(StreamName="copy")["Shards"][0]["ShardId"]
        it = kinesis.get_shard_iterator(StreamName="copy", ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        got: list[tuple[bytes, str]] = []
        iterator = it["ShardIterator"]
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            got += [(r["Data"], r["PartitionKey"]) for r in page["Records"]]
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        assert got == sent
