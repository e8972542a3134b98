"""The VPC a private GKE cluster and a private-IP Cloud SQL instance need.

Nodes have no public address: Cloud NAT gives them egress, Private Google Access reaches Google
APIs, and a private services range peers the VPC with Cloud SQL (no public IP on the database).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

PODS_RANGE = "pods"
SERVICES_RANGE = "services"
DELETION_POLICY = "REMOVE_PEERING"
PRIVATE_SERVICES_PREFIX = 20  # /20 reserved for Cloud SQL (and other managed services) in the VPC


@dataclass(frozen=True)
class NetworkArgs:
    prefix: str
    region: str
    subnet_cidr: str
    pods_cidr: str
    services_cidr: str


class Network(pulumi.ComponentResource):
    """VPC, node subnet with Pod/Service secondary ranges, Cloud NAT, private services access."""

    network: gcp.compute.Network
    subnet: gcp.compute.Subnetwork
    private_services: gcp.servicenetworking.Connection

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(
            name, name=f"{args.prefix}-vpc", auto_create_subnetworks=False, routing_mode="REGIONAL", opts=child)
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-nodes",
            name=f"{args.prefix}-nodes",
            region=args.region,
            network=self.network.id,
            ip_cidr_range=args.subnet_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=PODS_RANGE, ip_cidr_range=args.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=SERVICES_RANGE,
                                                           ip_cidr_range=args.services_cidr),
            ],
            log_config=gcp.compute.SubnetworkLogConfigArgs(aggregation_interval="INTERVAL_10_MIN",
                                                           flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA"),
            opts=child,
        )
        router = gcp.compute.Router(f"{name}-router", name=f"{args.prefix}-router", region=args.region,
                                    network=self.network.id, opts=child)
        gcp.compute.RouterNat(
            f"{name}-nat",
            name=f"{args.prefix}-nat",
            router=router.name,
            region=args.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )
        services_range = gcp.compute.GlobalAddress(
            f"{name}-private-services",
            name=f"{args.prefix}-private-services",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=PRIVATE_SERVICES_PREFIX,
            network=self.network.id,
            opts=child,
        )
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-private-services",
            network=self.network.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[services_range.name],
            # Cloud SQL holds the connection for days after its instance is deleted, so a plain delete
            # fails the destroy; REMOVE_PEERING drops the VPC peering instead and the network can go
            # ("ABANDON" would leave the peering, which blocks deleting the network)
            deletion_policy=DELETION_POLICY,
            opts=child,
        )
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id})
