"""The CrossGuard pack: each policy rejects a crafted violation, and the program's own stacks pass it all."""

from __future__ import annotations

import copy
from typing import Any

import google.protobuf
import pytest
from aegis_guard import policies as P
from aegis_guard.offline import run_pack
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
US_EAST = PolicyProviderResource("pulumi:providers:aws", {"region": "us-east-1"}, "urn:prov", "aws-us-east-1")


def violations_of(fn: Any, typ: str, props: dict[str, Any]) -> list[str]:
    found: list[str] = []
    fn(
        ResourceValidationArgs(typ, props, f"urn:{typ}", "crafted", OPTS, US_EAST),
        lambda m, urn=None: found.append(m),
    )
    return found


def res(
    typ: str, name: str, props: dict[str, Any], deps: dict[str, list[PolicyResource]] | None = None
) -> PolicyResource:
    return PolicyResource(typ, props, f"urn:{name}", name, OPTS, US_EAST, None, [], deps or {})


def stack_violations(
    fn: Any, resources: list[PolicyResource], config: dict[str, Any] | None = None
) -> list[str]:
    found: list[str] = []
    fn(StackValidationArgs(resources, config), lambda m, urn=None: found.append(m))
    return found


GOOD_LT = {
    "metadataOptions": {"httpTokens": "required"},
    "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}],
}


@pytest.mark.parametrize(
    ("fn", "typ", "bad", "good"),
    [
        (
            P.validate_ebs_encrypted,
            P.LAUNCH_TEMPLATE,
            {"blockDeviceMappings": [{"ebs": {"encrypted": "false"}}]},
            GOOD_LT,
        ),
        (P.validate_ebs_encrypted, P.LAUNCH_TEMPLATE, {}, GOOD_LT),
        (P.validate_ebs_encrypted, P.EBS_VOLUME, {"encrypted": False}, {"encrypted": True}),
        (
            P.validate_aurora_encrypted,
            P.RDS_CLUSTER,
            {"storageEncrypted": False},
            {"storageEncrypted": True, "kmsKeyId": "arn:k"},
        ),
        (
            P.validate_aurora_encrypted,
            P.RDS_CLUSTER,
            {"storageEncrypted": True},
            {"storageEncrypted": True, "kmsKeyId": "arn:k"},
        ),
        (P.validate_aurora_encrypted, P.RDS_GLOBAL, {}, {"storageEncrypted": True}),
        (
            P.validate_kinesis_encrypted,
            P.KINESIS_STREAM,
            {"encryptionType": "NONE"},
            {"encryptionType": "KMS"},
        ),
        (
            P.validate_no_public_database,
            P.RDS_CLUSTER_INSTANCE,
            {"publiclyAccessible": True},
            {"publiclyAccessible": False},
        ),
        (P.validate_imdsv2, P.LAUNCH_TEMPLATE, {"metadataOptions": {"httpTokens": "optional"}}, GOOD_LT),
        (P.validate_imdsv2, P.EC2_INSTANCE, {}, {"metadataOptions": {"httpTokens": "required"}}),
        (P.validate_imdsv2, P.EKS_NODE_GROUP, {}, {"launchTemplate": {"id": "lt-1", "version": "1"}}),
        (P.validate_ebs_encrypted, P.EKS_NODE_GROUP, {}, {"launchTemplate": {"id": "lt-1", "version": "1"}}),
        (
            P.validate_gpu_tainted,
            P.EKS_NODE_GROUP,
            {"amiType": "AL2023_x86_64_NVIDIA", "instanceTypes": ["g6e.xlarge"], "taints": []},
            {
                "amiType": "AL2023_x86_64_NVIDIA",
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
            },
        ),
        (
            P.validate_gpu_tainted,
            P.EKS_NODE_GROUP,
            {"amiType": "AL2023_x86_64_STANDARD", "instanceTypes": ["p5.48xlarge"]},
            {"amiType": "AL2023_x86_64_STANDARD", "instanceTypes": ["m7i.large"]},
        ),
        (
            P.validate_deletion_protection,
            P.RDS_CLUSTER,
            {"deletionProtection": False},
            {"deletionProtection": True},
        ),
        (P.validate_deletion_protection, P.RDS_GLOBAL, {}, {"deletionProtection": True}),
        (
            P.validate_backup_retention,
            P.RDS_CLUSTER,
            {"backupRetentionPeriod": 1},
            {"backupRetentionPeriod": 7},
        ),
        (
            P.validate_backup_retention,
            P.BACKUP_PLAN,
            {"rules": [{"ruleName": "h", "lifecycle": {"deleteAfter": 3}}]},
            {"rules": [{"ruleName": "h", "lifecycle": {"deleteAfter": 7}}]},
        ),
        (
            P.validate_public_bucket_resource,
            P.BUCKET_PAB,
            dict.fromkeys(P.PAB_FLAGS, True) | {"restrictPublicBuckets": False},
            dict.fromkeys(P.PAB_FLAGS, True),
        ),
        (P.validate_public_bucket_resource, P.BUCKET_ACL, {"acl": "public-read"}, {"acl": "private"}),
    ],
)
def test_resource_policy_rejects_violation_and_accepts_compliance(
    fn: Any, typ: str, bad: dict, good: dict
) -> None:
    assert violations_of(fn, typ, bad), f"{fn.__name__} accepted {bad}"
    assert violations_of(fn, typ, good) == [], f"{fn.__name__} rejected {good}"


def bucket_stack(
    *,
    sse: str | None = "aws:kms",
    pab: bool = True,
    lock_mode: str | None = "COMPLIANCE",
    object_lock: bool = True,
) -> list[PolicyResource]:
    bucket = res(
        P.BUCKET,
        "audit",
        {"bucket": "audit-b", "objectLockEnabled": object_lock, "tags": {"component": "audit"}},
    )
    out = [bucket]
    if sse:
        out.append(
            res(
                P.BUCKET_SSE,
                "sse",
                {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": sse}}]},
                {"bucket": [bucket]},
            )
        )
    if pab:
        out.append(res(P.BUCKET_PAB, "pab", dict.fromkeys(P.PAB_FLAGS, True), {"bucket": [bucket]}))
    if lock_mode:
        # linked by name only (as after an update, when the bucket name is known)
        out.append(
            res(
                P.BUCKET_LOCK,
                "lock",
                {"bucket": "audit-b", "rule": {"defaultRetention": {"mode": lock_mode, "days": 1}}},
            )
        )
    return out


def test_stack_policies_accept_a_compliant_bucket() -> None:
    for fn in (P.validate_s3_encrypted, P.validate_no_public_buckets, P.validate_audit_object_lock):
        assert stack_violations(fn, bucket_stack()) == [], fn.__name__


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (P.validate_s3_encrypted, {"sse": None}),
        (P.validate_s3_encrypted, {"sse": "AES256"}),
        (P.validate_no_public_buckets, {"pab": False}),
        (P.validate_audit_object_lock, {"lock_mode": "GOVERNANCE"}),
        (P.validate_audit_object_lock, {"lock_mode": None}),
        (P.validate_audit_object_lock, {"object_lock": False}),
    ],
)
def test_stack_policy_rejects_crafted_bucket(fn: Any, kwargs: dict[str, Any]) -> None:
    assert stack_violations(fn, bucket_stack(**kwargs)), f"{fn.__name__} accepted {kwargs}"


def test_audit_policy_rejects_a_stack_without_an_audit_bucket() -> None:
    assert stack_violations(
        P.validate_audit_object_lock, [res(P.BUCKET, "lake", {"tags": {"component": "lake"}})]
    )


def gpu_pool(max_size: int) -> list[PolicyResource]:
    return [
        res(
            P.EKS_NODE_GROUP,
            "train",
            {"instanceTypes": ["p5.48xlarge"], "scalingConfig": {"desiredSize": 0, "maxSize": max_size}},
        ),
        res(P.EKS_CLUSTER, "eks", {}),
    ]


def test_budget_guard_denies_a_stack_whose_ceiling_exceeds_the_budget() -> None:
    # One p5.48xlarge for a month is about $40k: two are over a $50k budget, one is not.
    assert stack_violations(P.validate_budget, gpu_pool(1), {"monthlyBudgetUsd": 50_000}) == []
    (msg,) = stack_violations(P.validate_budget, gpu_pool(2), {"monthlyBudgetUsd": 50_000})
    assert "exceeds aegis:monthlyBudgetUsd" in msg and "p5.48xlarge" in msg


def test_budget_guard_denies_when_it_cannot_price_or_has_no_budget() -> None:
    assert stack_violations(P.validate_budget, gpu_pool(1), None)  # no budget configured
    unknown = [
        res(
            P.EKS_NODE_GROUP,
            "x",
            {"instanceTypes": ["x99.mega"], "scalingConfig": {"desiredSize": 1, "maxSize": 1}},
        )
    ]
    (msg,) = stack_violations(P.validate_budget, unknown, {"monthlyBudgetUsd": 1e9})
    assert "x99.mega" in msg


def test_the_programs_stacks_pass_the_whole_pack(graph: dict[str, Any]) -> None:
    budget = graph["outputs"]["monthlyBudgetUsd"]
    assert run_pack(graph, {"budget-guard": {"monthlyBudgetUsd": budget}}) == []


def test_pack_catches_a_regression_in_the_programs_own_graph(prod_graph: dict[str, Any]) -> None:
    broken = copy.deepcopy(prod_graph)
    for r in broken["resources"]:
        if r["type"] == P.EKS_NODE_GROUP and r["inputs"]["amiType"].endswith("NVIDIA"):
            r["inputs"]["taints"] = []
        if r["type"] == P.RDS_CLUSTER:
            r["inputs"]["deletionProtection"] = False
    names = {v.policy for v in run_pack(broken, {"budget-guard": {"monthlyBudgetUsd": 1000}})}
    assert names == {"gpu-node-groups-tainted", "aurora-deletion-protection", "budget-guard"}


def test_policy_names_are_unique_and_all_mandatory() -> None:
    from pulumi_policy import EnforcementLevel

    names = [p.name for p in P.ALL_POLICIES]
    assert len(names) == len(set(names)) == 13
    assert all(p.enforcement_level is EnforcementLevel.MANDATORY for p in P.ALL_POLICIES)


def test_pulumi_policy_runs_on_protobuf_6() -> None:
    """pulumi-policy pins protobuf 5.29; installed --no-deps, its analyzer must still speak protobuf 6."""
    from pulumi_policy import EnforcementLevel
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    assert google.protobuf.__version__.split(".")[0] == "6"
    servicer = _PolicyAnalyzerServicer("aegis-guard", "0.1.0", P.ALL_POLICIES, EnforcementLevel.MANDATORY)
    info = servicer.GetAnalyzerInfo(None, None)
    assert {p.name for p in info.policies} == {p.name for p in P.ALL_POLICIES}
    blob = info.SerializeToString()
    assert type(info).FromString(blob) == info
