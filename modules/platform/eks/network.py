"""A VPC over two or more zones: public subnets for NAT and internet-facing load balancers, private
subnets for nodes, Pods (VPC CNI) and RDS, tagged so EKS load balancers find the right ones.

S3 traffic of the private subnets (artifacts, and ECR's image layers, which ECR serves
from S3) takes a gateway endpoint instead of the NAT gateway: gateway endpoints cost nothing, NAT
data processing does. ECR's API/registry calls (small) still go through NAT: interface endpoints
for them would cost more per month than the traffic they save at this platform's image sizes."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

ELB_TAG = {"kubernetes.io/role/elb": "1"}  # internet-facing load balancers go here
INTERNAL_ELB_TAG = {"kubernetes.io/role/internal-elb": "1"}


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """(private, public) ranges: one eighth of the VPC per private subnet (Pods take their IPs from
    it), the last eighth split into eight small public subnets."""
    eighths = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=3))
    if zones > len(eighths) - 1:
        raise ValueError(f"{zones} zones do not fit {vpc_cidr}: at most {len(eighths) - 1}")
    public = list(eighths[-1].subnets(prefixlen_diff=3))
    return [str(n) for n in eighths[:zones]], [str(n) for n in public[:zones]]


@dataclass(frozen=True)
class VpcArgs:
    prefix: str
    cidr: str
    zones: Sequence[str]  # availability zone names
    nat_per_zone: bool  # else one NAT gateway for all zones (cheaper, one zone's egress dependency)
    region: str  # of the S3 gateway endpoint's service


class Vpc(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    private_subnets: list[aws.ec2.Subnet]
    public_subnets: list[aws.ec2.Subnet]
    s3_endpoint: aws.ec2.VpcEndpoint

    def __init__(self, name: str, args: VpcArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:Vpc", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(name, cidr_block=args.cidr, enable_dns_support=True, enable_dns_hostnames=True,
                               tags={"Name": args.prefix}, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": args.prefix}, opts=child)
        private_cidrs, public_cidrs = subnet_cidrs(args.cidr, len(args.zones))
        self.public_subnets, self.private_subnets = [], []
        for zone, private_cidr, public_cidr in zip(args.zones, private_cidrs, public_cidrs):
            self.public_subnets.append(aws.ec2.Subnet(
                f"{name}-public-{zone}", vpc_id=self.vpc.id, availability_zone=zone, cidr_block=public_cidr,
                map_public_ip_on_launch=False, tags={"Name": f"{args.prefix}-public-{zone}", **ELB_TAG}, opts=child))
            self.private_subnets.append(aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=self.vpc.id, availability_zone=zone, cidr_block=private_cidr,
                tags={"Name": f"{args.prefix}-private-{zone}", **INTERNAL_ELB_TAG}, opts=child))

        public_routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=self.vpc.id, tags={"Name": f"{args.prefix}-public"},
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)], opts=child)
        nats = []
        for zone, subnet in zip(args.zones, self.public_subnets):
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", route_table_id=public_routes.id,
                                          subnet_id=subnet.id, opts=child)
            if args.nat_per_zone or not nats:
                address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags={"Name": f"{args.prefix}-nat-{zone}"},
                                      opts=child)
                nats.append(aws.ec2.NatGateway(
                    f"{name}-nat-{zone}", allocation_id=address.id, subnet_id=subnet.id,
                    tags={"Name": f"{args.prefix}-nat-{zone}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway])))
        private_routes = []
        for i, (zone, subnet) in enumerate(zip(args.zones, self.private_subnets)):
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=self.vpc.id, tags={"Name": f"{args.prefix}-private-{zone}"},
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0",
                                                    nat_gateway_id=nats[i if args.nat_per_zone else 0].id)],
                opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", route_table_id=routes.id, subnet_id=subnet.id,
                                          opts=child)
            private_routes.append(routes)
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=self.vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway", route_table_ids=[r.id for r in private_routes],
            tags={"Name": f"{args.prefix}-s3"}, opts=child)
        self.register_outputs({"vpc": self.vpc.id, "private": [s.id for s in self.private_subnets]})
