"""One region's network: VPC, public and private subnets over three zones, NAT, endpoints, flow logs.

Private subnets hold every workload (EKS nodes, Aurora); public subnets hold
only NAT gateways and load balancers. One NAT gateway per zone, so losing a zone
does not cut the other two from the internet. S3 (gateway) and ECR/STS
(interface) endpoints keep image pulls, IRSA token exchange and lake traffic off
the NAT path: cheaper, and it keeps working when NAT does not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from aegis_infra.common import assume_role_policy, child, policy_document, tags

FLOW_LOG_RETENTION_DAYS = 90
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "logs", "secretsmanager")


@dataclass(frozen=True)
class NetworkArgs:
    env: str
    region: str
    cidr: str
    zone_suffixes: list[str]
    cluster_name: str  # subnets are tagged for the cluster's load balancers
    kms_key_arn: pulumi.Input[str]


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: NetworkArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("aegis:infra:Network", name, None, opts)
        env, region = args.env, args.region
        o = child(self, provider)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags(env, "network"), "Name": f"aegis-{env}-{region}"},
            opts=o,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags(env, "network"), opts=o)
        private_route_tables = self._subnets(name, args, provider, igw)
        self._endpoints(name, args, provider, private_route_tables)
        self._flow_logs(name, args, provider)
        self.register_outputs(
            {
                "vpcId": self.vpc.id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )

    def _subnets(
        self, name: str, args: NetworkArgs, provider: aws.Provider, igw: aws.ec2.InternetGateway
    ) -> list[aws.ec2.RouteTable]:
        """A public and a private subnet per zone: the CIDR in eighths, public first, private from the fourth."""
        env = args.env
        o = child(self, provider)
        subnets = list(
            ipaddress.ip_network(args.cidr).subnets(new_prefix=ipaddress.ip_network(args.cidr).prefixlen + 3)
        )
        zones = [f"{args.region}{s}" for s in args.zone_suffixes]
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=tags(env, "network", tier="public"),
            opts=o,
        )
        self.public_subnet_ids, self.private_subnet_ids = [], []
        private_route_tables: list[aws.ec2.RouteTable] = []
        for i, zone in enumerate(zones):
            public, nat = self._public_zone(name, i, zone, str(subnets[i]), args, provider, igw, public_rt)
            private, rt = self._private_zone(name, i, zone, str(subnets[3 + i]), args, provider, nat)
            private_route_tables.append(rt)
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
        self.nat_gateway_count = len(zones)
        return private_route_tables

    def _public_zone(
        self,
        name: str,
        i: int,
        zone: str,
        cidr: str,
        args: NetworkArgs,
        provider: aws.Provider,
        igw: aws.ec2.InternetGateway,
        public_rt: aws.ec2.RouteTable,
    ) -> tuple[aws.ec2.Subnet, aws.ec2.NatGateway]:
        """Zone ``i``'s public subnet and its NAT gateway (one per zone: a lost zone cuts off only itself)."""
        env = args.env
        o = child(self, provider)
        public = aws.ec2.Subnet(
            f"{name}-public-{i}",
            vpc_id=self.vpc.id,
            cidr_block=cidr,
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags={**tags(env, "network", tier="public"), "kubernetes.io/role/elb": "1"},
            opts=o,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-rta-{i}", subnet_id=public.id, route_table_id=public_rt.id, opts=o
        )
        eip = aws.ec2.Eip(f"{name}-nat-eip-{i}", domain="vpc", tags=tags(env, "network"), opts=o)
        nat = aws.ec2.NatGateway(
            f"{name}-nat-{i}",
            subnet_id=public.id,
            allocation_id=eip.id,
            tags=tags(env, "network"),
            opts=child(self, provider, depends_on=[igw]),
        )
        return public, nat

    def _private_zone(
        self,
        name: str,
        i: int,
        zone: str,
        cidr: str,
        args: NetworkArgs,
        provider: aws.Provider,
        nat: aws.ec2.NatGateway,
    ) -> tuple[aws.ec2.Subnet, aws.ec2.RouteTable]:
        """Zone ``i``'s private subnet, routed to the internet through that zone's NAT gateway."""
        env = args.env
        o = child(self, provider)
        private = aws.ec2.Subnet(
            f"{name}-private-{i}",
            vpc_id=self.vpc.id,
            cidr_block=cidr,
            availability_zone=zone,
            tags={
                **tags(env, "network", tier="private"),
                "kubernetes.io/role/internal-elb": "1",
                f"kubernetes.io/cluster/{args.cluster_name}": "shared",
            },
            opts=o,
        )
        rt = aws.ec2.RouteTable(
            f"{name}-private-rt-{i}",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags=tags(env, "network", tier="private"),
            opts=o,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-private-rta-{i}", subnet_id=private.id, route_table_id=rt.id, opts=o
        )
        return private, rt

    def _endpoints(
        self,
        name: str,
        args: NetworkArgs,
        provider: aws.Provider,
        private_route_tables: list[aws.ec2.RouteTable],
    ) -> None:
        """S3 (gateway) and ECR/STS/logs/secrets (interface) endpoints: that traffic stays off NAT."""
        env, region = args.env, args.region
        o = child(self, provider)
        aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_route_tables],
            tags=tags(env, "network"),
            opts=o,
        )
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints-sg",
            vpc_id=self.vpc.id,
            description="HTTPS from inside the VPC to interface endpoints",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.cidr]
                )
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0, cidr_blocks=[args.cidr]
                )
            ],
            tags=tags(env, "network"),
            opts=o,
        )
        for svc in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-{svc.replace('.', '-')}-endpoint",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{region}.{svc}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.private_subnet_ids,
                security_group_ids=[endpoint_sg.id],
                tags=tags(env, "network"),
                opts=o,
            )

    def _flow_logs(self, name: str, args: NetworkArgs, provider: aws.Provider) -> None:
        """VPC flow logs (all traffic) into a KMS-encrypted log group, written by their own role."""
        env = args.env
        o = child(self, provider)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=FLOW_LOG_RETENTION_DAYS,
            kms_key_id=args.kms_key_arn,
            tags=tags(env, "network"),
            opts=o,
        )
        flow_role = aws.iam.Role(
            f"{name}-flow-logs-role",
            assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com"),
            tags=tags(env, "network"),
            opts=o,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=flow_role.name,
            policy=log_group.arn.apply(
                lambda arn: policy_document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogStreams",
                            ],
                            "Resource": [arn, f"{arn}:*"],
                        }
                    ]
                )
            ),
            opts=child(flow_role, provider),
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=flow_role.arn,
            tags=tags(env, "network"),
            opts=o,
        )
