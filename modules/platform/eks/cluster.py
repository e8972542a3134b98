"""An EKS cluster: pinned version, control-plane logs, Secrets encrypted with a KMS key, private
managed node groups (IMDSv2 only), the core add-ons, metrics-server, the Cluster Autoscaler, access
entries for the configured admins and viewers, and a default gp3 StorageClass.

Add-ons that need AWS permissions (VPC CNI, EBS CSI) get them through IRSA roles, not the node role,
and the VPC CNI (enforcing NetworkPolicies) is in place before any node joins. Both node groups carry
the pool label; the workload group is tainted so that only pods placed there (model servers, Jobs)
run on it. Every Kubernetes object the stack makes goes through `provider`, which is ready only once
the StorageClass exists: no volume is ever claimed before its class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from modules.platform.cloud import NodePoolSpec, exec_kubeconfig
from modules.platform.contract import POOL_LABEL, WORKLOAD_TAINT, pool_placement
from modules.platform.eks.autoscaler import AutoscalerArgs, ClusterAutoscaler
from modules.platform.eks.identity import STS_AUDIENCE, Oidc, irsa_role

AWS_POLICY = "arn:aws:iam::aws:policy/"
ACCESS_POLICY = "arn:aws:eks::aws:cluster-access-policy/"
LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
# The managed add-on's own key (its configuration schema), a string: the node agent then enforces
# NetworkPolicies (VPC CNI 1.14+); without it every NetworkPolicy of the platform is inert.
VPC_CNI_CONFIGURATION = {"enableNetworkPolicy": "true"}
EKS_TAINT_EFFECT = {"NoSchedule": "NO_SCHEDULE"}
# Human access beside the creator and CI: access policies per configured principal list
ACCESS_POLICIES = {"admins": "AmazonEKSClusterAdminPolicy", "viewers": "AmazonEKSAdminViewPolicy"}


@dataclass(frozen=True)
class EksClusterArgs:
    name: str
    region: str
    kubernetes_version: str
    private_endpoint: bool
    authorized_networks: Sequence[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # private subnets: control-plane ENIs and nodes
    node_pools: Sequence[NodePoolSpec]
    key_arn: pulumi.Input[str]  # envelope encryption of Secrets
    log_retention_days: int
    storage_class: str
    protect: bool  # deletion protection; retained volumes
    admins: Sequence[str] = ()  # IAM role/user ARNs with cluster admin access
    viewers: Sequence[str] = ()  # IAM role/user ARNs with read-only access (no Secrets)


def _service_role(name: str, role_name: str, service: str, policies: Sequence[str],
                  opts: pulumi.ResourceOptions) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """A role an AWS service assumes, with AWS-managed policies attached."""
    role = aws.iam.Role(name, name=role_name, assume_role_policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }), opts=opts)
    attachments = [aws.iam.RolePolicyAttachment(f"{name}-{policy.rsplit('/', 1)[-1]}", role=role.name,
                                                policy_arn=AWS_POLICY + policy, opts=opts) for policy in policies]
    return role, attachments


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    oidc: Oidc
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider
    storage_class: k8s.storage.v1.StorageClass
    autoscaler: ClusterAutoscaler

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_role, cluster_policies = _service_role(
            f"{name}-cluster", f"{args.name}-cluster", "eks.amazonaws.com", ["AmazonEKSClusterPolicy"], child)
        encryption = aws.iam.RolePolicy(
            f"{name}-cluster-kms", role=cluster_role.name, name="secrets-encryption",
            policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Resource": args.key_arn,
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey", "kms:CreateGrant"],
            }]}), opts=child)
        # created before the cluster, so EKS does not create it without a retention
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/eks/{args.name}/cluster",
                                       retention_in_days=args.log_retention_days, opts=child)
        self.cluster = aws.eks.Cluster(
            name,
            name=args.name,
            version=args.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_ids),
                endpoint_private_access=True,
                endpoint_public_access=not args.private_endpoint,
                public_access_cidrs=list(args.authorized_networks) or None,
            ),
            enabled_cluster_log_types=LOG_TYPES,
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"], provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=args.key_arn)),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),  # no extended-support fees
            deletion_protection=args.protect,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs, encryption, *cluster_policies]),
        )
        issuer = self.cluster.identities.apply(lambda identities: identities[0].oidcs[0].issuer)
        provider = aws.iam.OpenIdConnectProvider(f"{name}-oidc", url=issuer, client_id_lists=[STS_AUDIENCE],
                                                 opts=child)
        self.oidc = Oidc(arn=provider.arn, issuer=issuer)

        before_nodes = [
            self._addon(name, "vpc-cni", self._addon_role(name, args, "vpc-cni", "aws-node",
                                                           "AmazonEKS_CNI_Policy"),
                        configuration=VPC_CNI_CONFIGURATION),
            self._addon(name, "kube-proxy"),
        ]
        node_role, node_policies = _service_role(
            f"{name}-nodes", f"{args.name}-nodes", "ec2.amazonaws.com",
            ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"], child)
        groups = [self._node_group(name, args, pool, node_role, [*node_policies, *before_nodes])
                  for pool in args.node_pools]
        after_nodes = [  # these run Pods, which need nodes to become healthy
            self._addon(name, "coredns", depends_on=groups),
            self._addon(name, "aws-ebs-csi-driver",
                        self._addon_role(name, args, "ebs-csi", "ebs-csi-controller-sa",
                                         "service-role/AmazonEBSCSIDriverPolicy"), depends_on=groups),
            # the resource metrics API model HPAs scale on (EKS community add-on, version per cluster)
            self._addon(name, "metrics-server", depends_on=groups),
        ]
        self._access_entries(name, args)
        self.kubeconfig = exec_kubeconfig(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data,
            {"command": "aws", "args": ["--region", args.region, "eks", "get-token", "--cluster-name", args.name,
                                        "--output", "json"]})
        # the StorageClass goes first, through its own provider; every other object waits for it
        bootstrap = k8s.Provider(f"{name}-k8s-bootstrap", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
                                 opts=pulumi.ResourceOptions(parent=self, depends_on=[*groups, *after_nodes]))
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-{args.storage_class}",
            metadata={"name": args.storage_class,
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true"},
            volume_binding_mode="WaitForFirstConsumer",  # the volume is made in the zone of its Pod
            allow_volume_expansion=True,
            reclaim_policy="Retain" if args.protect else "Delete",
            opts=pulumi.ResourceOptions(parent=self, provider=bootstrap),
        )
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*groups, *after_nodes, self.storage_class]))
        self.autoscaler = ClusterAutoscaler(f"{name}-autoscaler", AutoscalerArgs(
            cluster=self.cluster, cluster_name=args.name, region=args.region,
            kubernetes_version=args.kubernetes_version, oidc=self.oidc, k8s_provider=self.provider,
            placement=pool_placement("system").pod_spec()), opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def _addon_role(self, name: str, args: EksClusterArgs, addon: str, service_account: str,
                    policy: str) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
        role = irsa_role(f"{name}-{addon}", f"{args.name}-{addon}", self.oidc, "kube-system", service_account,
                         pulumi.ResourceOptions(parent=self))
        attachment = aws.iam.RolePolicyAttachment(f"{name}-{addon}", role=role.name, policy_arn=AWS_POLICY + policy,
                                                  opts=pulumi.ResourceOptions(parent=self))
        return role, attachment

    def _access_entries(self, name: str, args: EksClusterArgs) -> None:
        """Cluster-wide access for the configured people (their roles or users), through EKS access entries."""
        for group, principals in (("admins", args.admins), ("viewers", args.viewers)):
            for arn in principals:
                account, tail = arn.split(":")[4], arn.split(":", 5)[5].replace("/", "-")
                key = f"{name}-{group}-{account}-{tail}"
                entry = aws.eks.AccessEntry(key, cluster_name=self.cluster.name, principal_arn=arn, type="STANDARD",
                                            opts=pulumi.ResourceOptions(parent=self))
                aws.eks.AccessPolicyAssociation(
                    key, cluster_name=self.cluster.name, principal_arn=arn,
                    policy_arn=ACCESS_POLICY + ACCESS_POLICIES[group],
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]))

    def _addon(self, name: str, addon: str, role: tuple[aws.iam.Role, pulumi.Resource] | None = None,
               depends_on: Sequence[pulumi.Resource] = (), configuration: dict[str, str] | None = None
               ) -> aws.eks.Addon:
        """An EKS-managed add-on at the default version for the cluster's Kubernetes version."""
        return aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=self.cluster.name,
            addon_name=addon,
            configuration_values=json.dumps(configuration) if configuration else None,
            service_account_role_arn=role[0].arn if role else None,
            resolve_conflicts_on_create="OVERWRITE",  # take over the self-managed copy EKS bootstraps
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, *([role[1]] if role else [])]),
        )

    def _node_group(self, name: str, args: EksClusterArgs, pool: NodePoolSpec, role: aws.iam.Role,
                    after: Sequence[pulumi.Resource]) -> aws.eks.NodeGroup:
        template = aws.ec2.LaunchTemplate(
            f"{name}-{pool.name}",
            description=f"{args.name} {pool.name} nodes",
            update_default_version=True,
            # IMDSv2 only, one hop: Pods cannot borrow the node role; they use IRSA
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=pool.disk_gi, volume_type="gp3", encrypted="true", delete_on_termination="true"),
            )],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind,
                                                           tags={"Name": f"{args.name}-{pool.name}"})
                for kind in ("instance", "volume")
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return aws.eks.NodeGroup(
            f"{name}-{pool.name}",
            cluster_name=self.cluster.name,
            node_group_name_prefix=f"{pool.name}-",  # a replacement group is created before the old one goes
            node_role_arn=role.arn,
            subnet_ids=list(args.subnet_ids),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                desired_size=pool.min_nodes, min_size=pool.min_nodes, max_size=pool.max_nodes),
            capacity_type="SPOT" if pool.spot else "ON_DEMAND",
            instance_types=[pool.machine_type],
            ami_type="AL2023_ARM_64_STANDARD" if pool.arm64 else "AL2023_x86_64_STANDARD",
            labels={POOL_LABEL: pool.name},
            # only pods that ask for the workload pool run there (contract.pool_placement)
            taints=[aws.eks.NodeGroupTaintArgs(key=WORKLOAD_TAINT["key"], value=WORKLOAD_TAINT["value"],
                                               effect=EKS_TAINT_EFFECT[WORKLOAD_TAINT["effect"]])]
            if pool.name == "workload" else None,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id,
                                                                version=template.latest_version.apply(str)),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            # an autoscaler owns the current size; Pulumi owns the bounds
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after),
                                        ignore_changes=["scalingConfig.desiredSize"]),
        )
