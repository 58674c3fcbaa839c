"""Small helpers every component uses: tags, IAM documents, IRSA roles, resource options."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

PROJECT = "aegis"
ACCOUNT_ROOT_PLACEHOLDER = "arn:aws:iam::${account}:root"


def tags(env: str, component: str, **extra: str) -> dict[str, str]:
    """Tags on every taggable resource: cost allocation and ownership."""
    return {"project": PROJECT, "environment": env, "component": component, "managed-by": "pulumi", **extra}


def child(
    parent: pulumi.Resource, provider: pulumi.ProviderResource | None = None, **kw: Any
) -> pulumi.ResourceOptions:
    """Options for a child resource: parented, and pinned to the region's provider."""
    return pulumi.ResourceOptions(parent=parent, provider=provider, **kw)


def assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def policy_document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def irsa_trust_policy(
    oidc_provider_arn: pulumi.Input[str], oidc_issuer: pulumi.Input[str], namespace: str, service_account: str
) -> pulumi.Output[str]:
    """Trust policy letting exactly one Kubernetes service account assume a role (IRSA)."""

    def build(args: list[str]) -> str:
        arn, issuer = args
        host = issuer.removeprefix("https://")
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": arn},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {
                            "StringEquals": {
                                f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                f"{host}:aud": "sts.amazonaws.com",
                            }
                        },
                    }
                ],
            }
        )

    return pulumi.Output.all(oidc_provider_arn, oidc_issuer).apply(build)


def irsa_role(
    name: str,
    *,
    env: str,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer: pulumi.Input[str],
    namespace: str,
    service_account: str,
    policy: pulumi.Input[str] | None,
    managed_policy_arns: list[str] | None = None,
    opts: pulumi.ResourceOptions,
) -> aws.iam.Role:
    """A role for one service account, with one inline least-privilege policy."""
    role = aws.iam.Role(
        name,
        assume_role_policy=irsa_trust_policy(oidc_provider_arn, oidc_issuer, namespace, service_account),
        tags=tags(env, "irsa", serviceAccount=f"{namespace}/{service_account}"),
        opts=opts,
    )
    ropts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role))
    if policy is not None:
        aws.iam.RolePolicy(f"{name}-policy", role=role.name, policy=policy, opts=ropts)
    for i, arn in enumerate(managed_policy_arns or []):
        aws.iam.RolePolicyAttachment(f"{name}-managed-{i}", role=role.name, policy_arn=arn, opts=ropts)
    return role
