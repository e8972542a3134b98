"""A private GKE cluster (Standard with a system and an autoscaling workload pool, or Autopilot).

Nodes run as a dedicated service account with only the node role (no Compute Engine default
account), Workload Identity is on, and the Kubernetes provider is built from the cluster's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from modules.platform.cloud import NodePoolSpec, exec_kubeconfig
from modules.platform.contract import POOL_LABEL, WORKLOAD_TAINT
from modules.platform.gke.network import PODS_RANGE, SERVICES_RANGE

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"  # access is decided by IAM
GKE_AUTH_PLUGIN = {
    "command": "gke-gcloud-auth-plugin",
    "installHint": "Install gke-gcloud-auth-plugin: https://cloud.google.com/kubernetes-engine/docs/how-to/"
                   "cluster-access-for-kubectl#install_plugin",
    "provideClusterInfo": True,
}
# Admission webhooks the control plane calls on pod ports a private cluster's own firewall rule
# (443, 10250 from the control-plane range) does not open: istiod (Service 443 → 15017, Istio
# 1.30.3 istio-discovery templates/service.yaml) and Seldon's operator (webhook.port 4443,
# seldon-core-operator 1.17.1 values.yaml). cert-manager's webhook and the Prometheus operator's
# listen on 10250, already open.
WEBHOOK_PORTS = ("15017", "4443")
GKE_TAINT_EFFECT = {"NoSchedule": "NO_SCHEDULE"}


@dataclass(frozen=True)
class GkeClusterArgs:
    name: str
    project: str
    location: str  # a region (regional cluster) or a zone
    autopilot: bool
    release_channel: str
    kubernetes_version: str  # minimum control-plane version; the release channel upgrades from there
    private_endpoint: bool
    master_cidr: str  # the control plane's private range: source of its calls to webhooks on the nodes
    authorized_networks: Sequence[str]
    network: pulumi.Input[str]
    subnet: pulumi.Input[str]
    node_pools: Sequence[NodePoolSpec]  # ignored on Autopilot
    deletion_protection: bool


class GkeCluster(pulumi.ComponentResource):
    cluster: gcp.container.Cluster
    webhooks: gcp.compute.Firewall
    node_account: gcp.serviceaccount.Account
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.node_account = gcp.serviceaccount.Account(
            f"{name}-nodes", account_id=f"{args.name}-nodes", project=args.project,
            display_name=f"GKE nodes of {args.name}", opts=child)
        node_role = gcp.projects.IAMMember(
            f"{name}-nodes", project=args.project, role="roles/container.defaultNodeServiceAccount",
            member=self.node_account.member, opts=child)

        mode = self._autopilot(args) if args.autopilot else self._standard(args)
        self.cluster = gcp.container.Cluster(
            name,
            name=args.name,
            location=args.location,
            network=args.network,
            subnetwork=args.subnet,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=PODS_RANGE, services_secondary_range_name=SERVICES_RANGE),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True, enable_private_endpoint=args.private_endpoint,
                master_ipv4_cidr_block=args.master_cidr),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(cidr_block=c)
                             for c in args.authorized_networks],
            ) if args.authorized_networks else None,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.release_channel),
            min_master_version=args.kubernetes_version,
            deletion_protection=args.deletion_protection,
            **mode,
            # the default pool's node_config only matters for the moments before it is removed
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_role], ignore_changes=["nodeConfig"]),
        )
        pools = [] if args.autopilot else [self._pool(name, args, p, node_role) for p in args.node_pools]
        self.webhooks = gcp.compute.Firewall(
            f"{name}-webhooks",
            name=f"{args.name}-webhooks",
            network=args.network,
            description="GKE control plane to admission webhooks (istiod, Seldon operator) on the nodes",
            direction="INGRESS",
            source_ranges=[args.master_cidr],
            target_service_accounts=[self.node_account.email],  # Standard and Autopilot nodes alike
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=list(WEBHOOK_PORTS))],
            opts=child,
        )

        self.kubeconfig = exec_kubeconfig(
            self.cluster.name, pulumi.Output.concat("https://", self.cluster.endpoint),
            self.cluster.master_auth.cluster_ca_certificate, GKE_AUTH_PLUGIN)
        # objects wait for nodes: a Deployment cannot become ready in a cluster without any
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=pools))
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def _standard(self, args: GkeClusterArgs) -> dict:
        return {
            "remove_default_node_pool": True,
            "initial_node_count": 1,
            "node_config": gcp.container.ClusterNodeConfigArgs(
                service_account=self.node_account.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE]),
            "workload_identity_config": gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{args.project}.svc.id.goog"),
            "datapath_provider": "ADVANCED_DATAPATH",  # Dataplane V2: NetworkPolicies are enforced
            "enable_shielded_nodes": True,
        }

    def _autopilot(self, args: GkeClusterArgs) -> dict:
        # Autopilot always has Workload Identity and Dataplane V2; only the node account is ours to pick
        return {
            "enable_autopilot": True,
            "cluster_autoscaling": gcp.container.ClusterClusterAutoscalingArgs(
                auto_provisioning_defaults=gcp.container.ClusterClusterAutoscalingAutoProvisioningDefaultsArgs(
                    service_account=self.node_account.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE])),
        }

    def _pool(self, name: str, args: GkeClusterArgs, pool: NodePoolSpec,
              node_role: pulumi.Resource) -> gcp.container.NodePool:
        return gcp.container.NodePool(
            f"{name}-{pool.name}",
            name_prefix=f"{pool.name}-",  # a replacement pool is created before the old one goes
            cluster=self.cluster.name,
            location=args.location,
            initial_node_count=max(pool.min_nodes, 1),
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                min_node_count=pool.min_nodes, max_node_count=pool.max_nodes,
                location_policy="ANY" if pool.spot else "BALANCED"),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(max_surge=1, max_unavailable=0),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=pool.machine_type,
                disk_size_gb=pool.disk_gi,
                disk_type="pd-balanced",
                image_type="COS_CONTAINERD",
                spot=pool.spot,
                service_account=self.node_account.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"),  # pods see the Workload Identity metadata server, not the node's
                shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True),
                labels={POOL_LABEL: pool.name},
                # only pods that ask for the workload pool run there (contract.pool_placement)
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(
                    key=WORKLOAD_TAINT["key"], value=WORKLOAD_TAINT["value"],
                    effect=GKE_TAINT_EFFECT[WORKLOAD_TAINT["effect"]])] if pool.name == "workload" else None,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_role]),
        )
