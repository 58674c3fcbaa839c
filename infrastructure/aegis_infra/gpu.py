"""GPU capacity: node groups for training (p5, EFA) and inference (g6e), and the GPU add-ons.

Every GPU node carries the ``nvidia.com/gpu=true:NoSchedule`` taint, so only
pods that tolerate it (training runs, inference servers, the GPU daemonsets) land
on the most expensive machines in the account. Nodes run the EKS AL2023 NVIDIA
AMI (driver and container toolkit baked in), which is why the NVIDIA device
plugin is installed on its own rather than the GPU operator with its driver. The
DCGM exporter publishes GPU health (XID errors, temperature, ECC) for the alert
path. EFA node groups sit in one zone in a cluster placement group, with an EFA
interface and a self-referencing security group, which NCCL over EFA needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from aegis_infra.cluster import POOL_LABEL, EksCluster, autoscaler_tags, node_launch_template
from aegis_infra.common import child, tags
from aegis_infra.config import GpuNodeGroup

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"}
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
GPU_ROLE_LABEL = "aegis.io/gpu-role"
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
DEVICE_PLUGIN_CHART = ("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.17.1")
DCGM_EXPORTER_CHART = ("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.1.1")
EFA_PLUGIN_CHART = ("aws-efa-k8s-device-plugin", "https://aws.github.io/eks-charts", "v0.5.6")
GPU_NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": GPU_ROLE_LABEL, "operator": "Exists"}]}]
        }
    }
}


@dataclass(frozen=True)
class GpuPoolArgs:
    env: str
    region: str
    spec: GpuNodeGroup
    kms_key_arn: pulumi.Input[str]
    vpc_id: pulumi.Input[str]


def gpu_labels(spec: GpuNodeGroup) -> dict[str, str]:
    return {POOL_LABEL: f"gpu-{spec.name}", GPU_ROLE_LABEL: spec.role, "nvidia.com/gpu.present": "true"}


class GpuNodePool(pulumi.ComponentResource):
    """One GPU managed node group on the NVIDIA AMI, tainted, with its own launch template."""

    node_group: aws.eks.NodeGroup

    def __init__(
        self,
        name: str,
        args: GpuPoolArgs,
        cluster: EksCluster,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:GpuNodePool", name, None, opts)
        spec, env = args.spec, args.env
        subnets = cluster.args.private_subnet_ids
        network_interfaces = None
        placement = None
        if spec.efa:
            network_interfaces, placement = self._efa(name, args, cluster, provider)
            subnets = subnets[:1]  # a cluster placement group lives in one zone

        lt = node_launch_template(
            f"{name}-lt",
            env=env,
            kms_key_arn=args.kms_key_arn,
            disk_gib=spec.disk_gib,
            opts=child(self, provider),
            network_interfaces=network_interfaces,
            placement_group=placement,
            component=f"gpu-{spec.role}",
        )
        labels = gpu_labels(spec)
        self.node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=cluster.cluster.name,
            node_role_arn=cluster.node_role.arn,
            subnet_ids=subnets,
            ami_type=GPU_AMI_TYPE,
            capacity_type="ON_DEMAND",
            instance_types=[spec.instance_type],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=spec.size.min, desired_size=spec.size.desired, max_size=spec.size.max
            ),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=lt.id, version=lt.latest_version.apply(str)
            ),
            labels=labels,
            taints=[aws.eks.NodeGroupTaintArgs(**GPU_TAINT)],
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            tags=tags(
                env,
                f"gpu-{spec.role}",
                **autoscaler_tags(cluster.args.cluster_name),
                **node_template_tags(spec, labels),
            ),
            opts=child(self, provider, ignore_changes=["scalingConfig.desiredSize"]),
        )
        self.asg_name = self.node_group.resources.apply(
            lambda rs: rs[0].autoscaling_groups[0].name if rs and rs[0].autoscaling_groups else ""
        )
        self.register_outputs({"nodeGroupName": self.node_group.node_group_name})

    def _efa(
        self, name: str, args: GpuPoolArgs, cluster: EksCluster, provider: aws.Provider
    ) -> tuple[list[aws.ec2.LaunchTemplateNetworkInterfaceArgs], pulumi.Output[str]]:
        """EFA: a self-referencing security group, an EFA interface and a cluster placement group."""
        env = args.env
        o = child(self, provider)
        efa_sg = aws.ec2.SecurityGroup(
            f"{name}-efa-sg",
            vpc_id=args.vpc_id,
            description="EFA: all traffic between members of this group (NCCL/libfabric)",
            tags=tags(env, "gpu-efa"),
            opts=o,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-efa-in",
            security_group_id=efa_sg.id,
            referenced_security_group_id=efa_sg.id,
            ip_protocol="-1",
            opts=o,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-efa-out",
            security_group_id=efa_sg.id,
            referenced_security_group_id=efa_sg.id,
            ip_protocol="-1",
            opts=o,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress", security_group_id=efa_sg.id, cidr_ipv4="0.0.0.0/0", ip_protocol="-1", opts=o
        )
        network_interfaces = [
            aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0,
                network_card_index=0,
                interface_type="efa",
                delete_on_termination="true",
                security_groups=[cluster.cluster_security_group_id, efa_sg.id],
            )
        ]
        placement = aws.ec2.PlacementGroup(
            f"{name}-pg", strategy="cluster", tags=tags(env, "gpu-efa"), opts=o
        ).name
        return network_interfaces, placement


def node_template_tags(spec: GpuNodeGroup, labels: dict[str, str]) -> dict[str, str]:
    """Node-template tags: the autoscaler scales a pool up from zero knowing its labels, taint and GPUs."""
    template_tags = {f"k8s.io/cluster-autoscaler/node-template/label/{k}": v for k, v in labels.items()}
    template_tags[f"k8s.io/cluster-autoscaler/node-template/taint/{GPU_TAINT_KEY}"] = "true:NoSchedule"
    template_tags[f"k8s.io/cluster-autoscaler/node-template/resources/{GPU_TAINT_KEY}"] = str(
        spec.gpus_per_node
    )
    return template_tags


class GpuAddons(pulumi.ComponentResource):
    """The NVIDIA device plugin, the DCGM exporter and (with EFA pools) the EFA device plugin."""

    def __init__(self, name: str, cluster: EksCluster, efa: bool, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aegis:infra:GpuAddons", name, None, opts)
        ko = pulumi.ResourceOptions(parent=self, provider=cluster.k8s_provider)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": "gpu-system"}, opts=ko)
        daemon_placement = {"tolerations": [GPU_TOLERATION], "affinity": GPU_NODE_AFFINITY}
        chart, repo, version = DEVICE_PLUGIN_CHART
        self.device_plugin = k8s.helm.v3.Release(
            f"{name}-device-plugin",
            chart=chart,
            version=version,
            namespace=ns.metadata["name"],
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
            values={**daemon_placement, "gfd": {"enabled": False}, "failOnInitError": True},
            opts=ko,
        )
        chart, repo, version = DCGM_EXPORTER_CHART
        self.dcgm_exporter = k8s.helm.v3.Release(
            f"{name}-dcgm-exporter",
            chart=chart,
            version=version,
            namespace=ns.metadata["name"],
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
            values={**daemon_placement, "serviceMonitor": {"enabled": False}, "service": {"enable": True}},
            opts=ko,
        )
        if efa:
            chart, repo, version = EFA_PLUGIN_CHART
            k8s.helm.v3.Release(
                f"{name}-efa-plugin",
                chart=chart,
                version=version,
                namespace="kube-system",
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
                values={"tolerations": [GPU_TOLERATION], "nodeSelector": {GPU_ROLE_LABEL: "training"}},
                opts=ko,
            )
        self.register_outputs({})
