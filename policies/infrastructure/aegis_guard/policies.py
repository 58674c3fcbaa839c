"""The Aegis CrossGuard policies: what every stack must satisfy before ``pulumi up`` may touch AWS.

Importable without starting anything (the ``PolicyPack``, which starts a gRPC
server when constructed, lives only in ``policies/infrastructure/__main__.py``).
Each policy's validate function can be called directly with crafted arguments,
which is how tests/infrastructure/test_crossguard_policies.py proves each one
rejects what it should.

Resource policies read the inputs of one resource. Stack policies relate
resources (an S3 bucket and its separate encryption / public-access / Object
Lock resources) through property dependencies, which are known in preview even
when bucket names are not, and fall back to comparing names once they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from aegis_guard import cost_model

BUCKET = "aws:s3/bucket:Bucket"
BUCKET_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
BUCKET_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
EBS_VOLUME = "aws:ebs/volume:Volume"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_GLOBAL = "aws:rds/globalCluster:GlobalCluster"
RDS_CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
RDS_INSTANCE = "aws:rds/instance:Instance"
KINESIS_STREAM = "aws:kinesis/stream:Stream"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
BACKUP_PLAN = "aws:backup/plan:Plan"

KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_INSTANCE = re.compile(r"^(p\d|g\d|trn\d|inf\d|dl\d)", re.IGNORECASE)
MIN_BACKUP_RETENTION_DAYS = 7
AUDIT_COMPONENT_TAG = "audit"
BUDGET_CONFIG_KEY = "monthlyBudgetUsd"


def _truthy(value: Any) -> bool:
    """Provider inputs carry booleans, or strings ("true") where the schema says string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return False


def _tags(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return props.get("tags") or {}


def _region(provider: Any) -> str | None:
    if provider is None:
        return None
    try:
        region = provider.props.get("region")
    except Exception:
        return None
    return str(region) if region else None


# ------------------------------------------------------------------ resource policies
def _node_group_without_launch_template(args: ResourceValidationArgs) -> bool:
    """An EKS node group with no launch template gets AWS's defaults: IMDSv1 allowed, default root volume."""
    return args.resource_type == EKS_NODE_GROUP and not args.props.get("launchTemplate")


def validate_ebs_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = args.props
    if _node_group_without_launch_template(args):
        report("EKS node group has no launch template: its root volumes cannot be required to be encrypted")
    if args.resource_type == LAUNCH_TEMPLATE:
        mappings = p.get("blockDeviceMappings") or []
        if not mappings:
            report(
                "launch template declares no block device: its root volume would take the AMI default, unencrypted"
            )
        for m in mappings:
            ebs = (m or {}).get("ebs") or {}
            if not _truthy(ebs.get("encrypted")):
                report(
                    f"launch template volume {m.get('deviceName', '?')} is not encrypted (ebs.encrypted must be true)"
                )
    elif args.resource_type == EBS_VOLUME and not _truthy(p.get("encrypted")):
        report("EBS volume is not encrypted")
    elif args.resource_type == EC2_INSTANCE:
        root = p.get("rootBlockDevice") or {}
        if not _truthy(root.get("encrypted")):
            report("EC2 instance root volume is not encrypted")


def validate_aurora_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = args.props
    if args.resource_type in (RDS_CLUSTER, RDS_GLOBAL, RDS_INSTANCE) and not _truthy(
        p.get("storageEncrypted")
    ):
        report("database storage is not encrypted (storageEncrypted must be true)")
    if args.resource_type == RDS_CLUSTER and _truthy(p.get("storageEncrypted")) and not p.get("kmsKeyId"):
        report(
            "Aurora cluster must encrypt with a customer-managed KMS key (kmsKeyId), not the AWS-managed default"
        )


def validate_kinesis_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == KINESIS_STREAM and args.props.get("encryptionType") != "KMS":
        report(f"Kinesis stream encryptionType is {args.props.get('encryptionType')!r}; it must be 'KMS'")


def validate_no_public_database(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in (RDS_CLUSTER_INSTANCE, RDS_INSTANCE) and _truthy(
        args.props.get("publiclyAccessible")
    ):
        report("database instance is publicly accessible")


def validate_imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if _node_group_without_launch_template(args):
        report("EKS node group has no launch template: IMDSv2 cannot be required on its nodes")
        return
    if args.resource_type not in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        return
    opts = args.props.get("metadataOptions") or {}
    if opts.get("httpTokens") != "required":
        report(
            f"IMDSv2 is not required (metadataOptions.httpTokens={opts.get('httpTokens')!r}, must be 'required')"
        )


def is_gpu_node_group(props: Mapping[str, Any]) -> bool:
    if "NVIDIA" in str(props.get("amiType") or "").upper():
        return True
    return any(GPU_INSTANCE.match(str(t)) for t in props.get("instanceTypes") or [])


def validate_gpu_tainted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_NODE_GROUP or not is_gpu_node_group(args.props):
        return
    taints = args.props.get("taints") or []
    if not any(t.get("key") == GPU_TAINT_KEY and t.get("effect") == "NO_SCHEDULE" for t in taints):
        report(f"GPU node group lacks the {GPU_TAINT_KEY} NO_SCHEDULE taint: any pod could land on GPU nodes")


def validate_deletion_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in (RDS_CLUSTER, RDS_GLOBAL) and not _truthy(args.props.get("deletionProtection")):
        report("Aurora deletionProtection must be true")


def validate_backup_retention(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == RDS_CLUSTER:
        days = args.props.get("backupRetentionPeriod")
        if not isinstance(days, (int, float)) or days < MIN_BACKUP_RETENTION_DAYS:
            report(
                f"Aurora backupRetentionPeriod is {days!r}; it must be at least {MIN_BACKUP_RETENTION_DAYS} days"
            )
    elif args.resource_type == BACKUP_PLAN:
        for rule in args.props.get("rules") or []:
            days = ((rule or {}).get("lifecycle") or {}).get("deleteAfter")
            if not isinstance(days, (int, float)) or days < MIN_BACKUP_RETENTION_DAYS:
                report(
                    f"backup rule {rule.get('ruleName', '?')} keeps recovery points {days!r} days (< {MIN_BACKUP_RETENTION_DAYS})"
                )


def validate_public_bucket_resource(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = args.props
    if args.resource_type == BUCKET_PAB:
        off = [f for f in PAB_FLAGS if not _truthy(p.get(f))]
        if off:
            report(f"public access block leaves {', '.join(off)} off")
    elif (args.resource_type == BUCKET_ACL and p.get("acl") in PUBLIC_ACLS) or (
        args.resource_type == BUCKET and p.get("acl") in PUBLIC_ACLS
    ):
        report(f"bucket ACL {p.get('acl')!r} makes objects public")


# ------------------------------------------------------------------ stack policies
def _refers_to(resource: PolicyResource, bucket: PolicyResource) -> bool:
    """Whether ``resource.bucket`` is ``bucket``: by dependency (preview) or by name (update)."""
    deps = (resource.property_dependencies or {}).get("bucket") or []
    if any(d.urn == bucket.urn for d in deps):
        return True
    ref = resource.props.get("bucket")
    return ref is not None and ref in {bucket.props.get("bucket"), bucket.props.get("id")}


def _attached(resources: list[PolicyResource], bucket: PolicyResource, typ: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == typ and _refers_to(r, bucket)]


def _buckets(resources: Iterable[PolicyResource]) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == BUCKET]


def validate_s3_encrypted(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _buckets(args.resources):
        if (bucket.props.get("serverSideEncryptionConfiguration") or {}).get("rule"):
            continue  # inline (deprecated) encryption block: checked below like the separate resource
        configs = _attached(args.resources, bucket, BUCKET_SSE)
        if not configs:
            report(f"bucket {bucket.name} has no server-side encryption configuration", bucket.urn)
            continue
        for cfg in configs:
            for rule in cfg.props.get("rules") or []:
                default = (rule or {}).get("applyServerSideEncryptionByDefault") or {}
                if default.get("sseAlgorithm") not in KMS_ALGORITHMS:
                    report(
                        f"bucket {bucket.name} encrypts with {default.get('sseAlgorithm')!r}, not SSE-KMS",
                        cfg.urn,
                    )


def validate_no_public_buckets(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _buckets(args.resources):
        blocks = _attached(args.resources, bucket, BUCKET_PAB)
        if not any(all(_truthy(b.props.get(f)) for f in PAB_FLAGS) for b in blocks):
            report(f"bucket {bucket.name} has no public access block with all four settings on", bucket.urn)


def validate_audit_object_lock(args: StackValidationArgs, report: ReportViolation) -> None:
    audit = [b for b in _buckets(args.resources) if _tags(b.props).get("component") == AUDIT_COMPONENT_TAG]
    if not audit:
        report(f"the stack declares no audit bucket (an S3 bucket tagged component={AUDIT_COMPONENT_TAG})")
    for bucket in audit:
        if not _truthy(bucket.props.get("objectLockEnabled")):
            report(
                f"audit bucket {bucket.name} is created without Object Lock (objectLockEnabled)", bucket.urn
            )
        locks = _attached(args.resources, bucket, BUCKET_LOCK)
        modes = [((lk.props.get("rule") or {}).get("defaultRetention") or {}).get("mode") for lk in locks]
        if "COMPLIANCE" not in modes:
            report(
                f"audit bucket {bucket.name} has no default retention in COMPLIANCE mode (found {modes})",
                bucket.urn,
            )


def stack_cost_items(resources: Iterable[PolicyResource]) -> list[Any]:
    """Line items of the cost model, read from declared resources (region through each provider)."""
    LineItem = cost_model.LineItem
    items = []
    for r in resources:
        region = _region(r.provider)
        p = r.props
        if r.resource_type == EKS_NODE_GROUP:
            scaling = p.get("scalingConfig") or {}
            types = p.get("instanceTypes") or []
            if not types:
                raise cost_model.UnknownPriceError(
                    f"node group {r.name} declares no instanceTypes: it cannot be priced"
                )
            items.append(
                LineItem(
                    region or "?",
                    "ec2",
                    str(types[0]),
                    r.name,
                    float(scaling.get("desiredSize", 0)),
                    float(scaling.get("maxSize", 0)),
                )
            )
        elif r.resource_type == RDS_CLUSTER_INSTANCE:
            items.append(LineItem(region or "?", "aurora", str(p.get("instanceClass")), r.name, 1, 1))
        elif r.resource_type == EKS_CLUSTER:
            items.append(LineItem(region or "?", "eks", "control-plane", r.name, 1, 1))
        elif r.resource_type == NAT_GATEWAY:
            items.append(LineItem(region or "?", "nat", "nat-gateway", r.name, 1, 1))
        elif r.resource_type == KINESIS_STREAM and p.get("shardCount"):
            n = float(p["shardCount"])
            items.append(LineItem(region or "?", "kinesis", "shard", r.name, n, n))
    return items


def _budget(config: Mapping[str, Any]) -> float | None:
    """The budget: the stack's ``aegis:monthlyBudgetUsd`` (Pulumi hands stack config to the pack), else pack config."""
    raw = None
    try:
        raw = pulumi.Config("aegis").get(BUDGET_CONFIG_KEY)
    except Exception:
        raw = None
    if raw is None:
        raw = config.get(BUDGET_CONFIG_KEY)
    if raw is None:
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{BUDGET_CONFIG_KEY}={raw!r} is not a number") from None


def validate_budget(args: StackValidationArgs, report: ReportViolation) -> None:
    try:
        budget = _budget(args.get_config())
    except ValueError as exc:
        report(str(exc))
        return
    if budget is None:
        report(
            f"no budget: set `pulumi config set aegis:{BUDGET_CONFIG_KEY} <usd>` (or the pack's {BUDGET_CONFIG_KEY})"
        )
        return
    try:
        estimate = cost_model.estimate(stack_cost_items(args.resources))
    except cost_model.UnknownPriceError as exc:
        report(f"cannot price the stack, so it cannot be shown to fit the budget: {exc}")
        return
    message = cost_model.over_budget_message(estimate, budget)
    if message:
        report(message)


def _resource_policy(
    name: str, description: str, fn: Callable[[ResourceValidationArgs, ReportViolation], None]
) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=name, description=description, validate=fn, enforcement_level=EnforcementLevel.MANDATORY
    )


def _stack_policy(
    name: str, description: str, fn: Callable[[StackValidationArgs, ReportViolation], None], **kw: Any
) -> StackValidationPolicy:
    return StackValidationPolicy(
        name=name, description=description, validate=fn, enforcement_level=EnforcementLevel.MANDATORY, **kw
    )


RESOURCE_POLICIES: list[ResourceValidationPolicy] = [
    _resource_policy(
        "ebs-encrypted",
        "EBS volumes (launch templates, instances, volumes) are encrypted.",
        validate_ebs_encrypted,
    ),
    _resource_policy(
        "aurora-encrypted",
        "Aurora storage is encrypted with a customer-managed KMS key.",
        validate_aurora_encrypted,
    ),
    _resource_policy(
        "kinesis-encrypted", "Kinesis streams are encrypted with KMS.", validate_kinesis_encrypted
    ),
    _resource_policy(
        "no-public-database", "No database instance is publicly accessible.", validate_no_public_database
    ),
    _resource_policy("imdsv2-required", "Instances and launch templates require IMDSv2.", validate_imdsv2),
    _resource_policy(
        "gpu-node-groups-tainted",
        "GPU node groups carry the nvidia.com/gpu NoSchedule taint.",
        validate_gpu_tainted,
    ),
    _resource_policy(
        "aurora-deletion-protection",
        "Aurora clusters and global clusters have deletion protection.",
        validate_deletion_protection,
    ),
    _resource_policy(
        "backup-retention",
        f"Backups are kept at least {MIN_BACKUP_RETENTION_DAYS} days.",
        validate_backup_retention,
    ),
    _resource_policy(
        "no-public-bucket-settings",
        "No public ACL and no weakened public access block.",
        validate_public_bucket_resource,
    ),
]

STACK_POLICIES: list[StackValidationPolicy] = [
    _stack_policy(
        "s3-encrypted-at-rest", "Every S3 bucket has SSE-KMS default encryption.", validate_s3_encrypted
    ),
    _stack_policy(
        "no-public-buckets", "Every S3 bucket has a full public access block.", validate_no_public_buckets
    ),
    _stack_policy(
        "audit-object-lock",
        "The audit bucket has Object Lock with COMPLIANCE default retention.",
        validate_audit_object_lock,
    ),
    _stack_policy(
        "budget-guard",
        "The stack's monthly cost at maximum scale stays within aegis:monthlyBudgetUsd.",
        validate_budget,
        config_schema=PolicyConfigSchema(properties={BUDGET_CONFIG_KEY: {"type": "number", "minimum": 0}}),
    ),
]

ALL_POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [*RESOURCE_POLICIES, *STACK_POLICIES]
