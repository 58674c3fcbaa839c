"""One region's EKS cluster, built from ``pulumi_aws`` primitives (not the ``pulumi_eks`` component).

Why primitives: every security-relevant knob (secrets encryption, endpoint
access, IMDSv2 on nodes, encrypted volumes, access entries) is visible in this
file and checked by the CrossGuard pack, instead of being a default inside a
component we do not control.

The cluster: KMS envelope encryption of Kubernetes secrets, control-plane logs,
access entries (API authentication mode), an OIDC provider for IRSA, a system
node group on AL2023 with IMDSv2 required (hop limit 1: pods cannot borrow the
node's credentials, they use IRSA), the core add-ons, the cluster autoscaler
(docs/decisions/0002-autoscaling-cluster-autoscaler.md) and a Kubernetes provider
built from the cluster's own kubeconfig.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from aegis_infra.common import assume_role_policy, child, irsa_role, policy_document, tags
from aegis_infra.config import PoolSize

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
NODE_MANAGED_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
)
CORE_ADDONS = ("vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent")
CLUSTER_AUTOSCALER_CHART = ("cluster-autoscaler", "https://kubernetes.github.io/autoscaler", "9.46.6")
POOL_LABEL = "aegis.io/pool"


@dataclass(frozen=True)
class ClusterArgs:
    env: str
    region: str
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: list[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    api_public_cidrs: list[str]
    system_instance_type: str
    system_size: PoolSize
    system_disk_gib: int


def node_launch_template(
    name: str,
    *,
    env: str,
    kms_key_arn: pulumi.Input[str],
    disk_gib: int,
    opts: pulumi.ResourceOptions,
    network_interfaces: list[aws.ec2.LaunchTemplateNetworkInterfaceArgs] | None = None,
    placement_group: pulumi.Input[str] | None = None,
    component: str = "nodes",
) -> aws.ec2.LaunchTemplate:
    """Launch template every node group uses: IMDSv2 required, encrypted gp3 root volume.

    No AMI and no instance type here: the managed node group picks the EKS AMI
    for its ``ami_type`` and carries its instance types (the cost model reads them there).
    """
    return aws.ec2.LaunchTemplate(
        name,
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=1,
            instance_metadata_tags="disabled",
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=disk_gib,
                    volume_type="gp3",
                    encrypted="true",
                    kms_key_id=kms_key_arn,
                    delete_on_termination="true",
                ),
            )
        ],
        network_interfaces=network_interfaces,
        placement=aws.ec2.LaunchTemplatePlacementArgs(group_name=placement_group)
        if placement_group
        else None,
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=tags(env, component)),
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="volume", tags=tags(env, component)),
        ],
        update_default_version=True,
        tags=tags(env, component),
        opts=opts,
    )


def kubeconfig(cluster_name: str, region: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with ``aws eks get-token`` (no static credentials)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster_name,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                        }
                    },
                }
            ],
        }
    )


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    node_role: aws.iam.Role
    oidc_provider: aws.iam.OpenIdConnectProvider
    k8s_provider: k8s.Provider

    def __init__(
        self, name: str, args: ClusterArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("aegis:infra:EksCluster", name, None, opts)
        self.args = args
        self.provider = provider
        self._control_plane(name)
        self._system_nodes(name)
        self._addons(name)
        self.kubeconfig = pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
        ).apply(lambda a: kubeconfig(a[0], args.region, a[1], a[2]))
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_nodes]),
        )
        self._install_cluster_autoscaler(name)
        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "oidcProviderArn": self.oidc_provider.arn,
            }
        )

    def _control_plane(self, name: str) -> None:
        """The cluster's role, the cluster (private endpoint, KMS-encrypted secrets, logs) and its OIDC provider."""
        args, provider, env = self.args, self.provider, self.args.env
        cluster_role = aws.iam.Role(
            f"{name}-cluster-role",
            assume_role_policy=assume_role_policy("eks.amazonaws.com"),
            tags=tags(env, "eks"),
            opts=child(self, provider),
        )
        cp_attach = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child(cluster_role, provider),
        )
        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=bool(args.api_public_cidrs),
                public_access_cidrs=args.api_public_cidrs or None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=args.kms_key_arn),
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            tags=tags(env, "eks"),
            opts=child(self, provider, depends_on=[cp_attach]),
        )
        self.cluster_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        self.oidc_issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=self.oidc_issuer,
            client_id_lists=["sts.amazonaws.com"],
            tags=tags(env, "eks"),
            opts=child(self, provider),
        )

    def _system_nodes(self, name: str) -> None:
        """The node role every node group shares, and the system node group (IMDSv2, encrypted disks)."""
        args, provider, env = self.args, self.provider, self.args.env
        self.node_role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=tags(env, "eks-nodes"),
            opts=child(self, provider),
        )
        self._node_policy_attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-policy-{i}",
                role=self.node_role.name,
                policy_arn=arn,
                opts=child(self.node_role, provider),
            )
            for i, arn in enumerate(NODE_MANAGED_POLICIES)
        ]
        system_lt = node_launch_template(
            f"{name}-system-lt",
            env=env,
            kms_key_arn=args.kms_key_arn,
            disk_gib=args.system_disk_gib,
            opts=child(self, provider),
            component="system-nodes",
        )
        self.system_nodes = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=args.private_subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=[args.system_instance_type],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.system_size.min,
                desired_size=args.system_size.desired,
                max_size=args.system_size.max,
            ),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=system_lt.id, version=system_lt.latest_version.apply(str)
            ),
            labels={POOL_LABEL: "system"},
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            tags=tags(env, "system-nodes", **autoscaler_tags(args.cluster_name)),
            opts=child(
                self,
                provider,
                depends_on=self._node_policy_attachments,
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _addons(self, name: str) -> None:
        """The core add-ons and the EBS CSI driver (with its IRSA role), once system nodes can run them."""
        provider, env = self.provider, self.args.env
        addon_deps: list[pulumi.Resource] = [self.system_nodes]
        for addon in CORE_ADDONS:
            aws.eks.Addon(
                f"{name}-addon-{addon}",
                cluster_name=self.cluster.name,
                addon_name=addon,
                resolve_conflicts_on_update="OVERWRITE",
                tags=tags(env, "eks"),
                opts=child(self, provider, depends_on=addon_deps),
            )
        ebs_role = irsa_role(
            f"{name}-ebs-csi-role",
            env=env,
            oidc_provider_arn=self.oidc_provider.arn,
            oidc_issuer=self.oidc_issuer,
            namespace="kube-system",
            service_account="ebs-csi-controller-sa",
            policy=None,
            managed_policy_arns=["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"],
            opts=child(self, provider),
        )
        aws.eks.Addon(
            f"{name}-addon-ebs-csi",
            cluster_name=self.cluster.name,
            addon_name="aws-ebs-csi-driver",
            service_account_role_arn=ebs_role.arn,
            resolve_conflicts_on_update="OVERWRITE",
            tags=tags(env, "eks"),
            opts=child(self, provider, depends_on=addon_deps),
        )

    def _install_cluster_autoscaler(self, name: str) -> None:
        args = self.args
        account_scoped = f"arn:aws:autoscaling:{args.region}:*:autoScalingGroup:*"
        policy = policy_document(
            [
                {
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                        "eks:DescribeNodegroup",
                    ],
                    "Resource": "*",
                },
                {
                    # Only the groups tagged as this cluster's: the autoscaler cannot touch anything else.
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:SetDesiredCapacity",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                    ],
                    "Resource": account_scoped,
                    "Condition": {
                        "StringEquals": {
                            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{args.cluster_name}": "owned"
                        }
                    },
                },
            ]
        )
        role = irsa_role(
            f"{name}-autoscaler-role",
            env=args.env,
            oidc_provider_arn=self.oidc_provider.arn,
            oidc_issuer=self.oidc_issuer,
            namespace="kube-system",
            service_account="cluster-autoscaler",
            policy=policy,
            opts=child(self, self.provider),
        )
        chart, repo, version = CLUSTER_AUTOSCALER_CHART
        k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler",
            chart=chart,
            version=version,
            namespace="kube-system",
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
            values={
                "cloudProvider": "aws",
                "awsRegion": args.region,
                "autoDiscovery": {"clusterName": args.cluster_name},
                "rbac": {
                    "serviceAccount": {
                        "create": True,
                        "name": "cluster-autoscaler",
                        "annotations": {"eks.amazonaws.com/role-arn": role.arn},
                    }
                },
                "extraArgs": {
                    "balance-similar-node-groups": True,
                    "skip-nodes-with-system-pods": False,
                    "expander": "least-waste",
                    "scale-down-unneeded-time": "10m",
                },
                "nodeSelector": {POOL_LABEL: "system"},
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider),
        )


def autoscaler_tags(cluster_name: str) -> dict[str, str]:
    """Auto-discovery tags: the autoscaler manages exactly the groups that carry them."""
    return {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
