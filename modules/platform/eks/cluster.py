"""An EKS cluster: pinned version, control-plane logs, Secrets encrypted with a KMS key, private
managed node groups (IMDSv2 only), the core add-ons and a default gp3 StorageClass.

Add-ons that need AWS permissions (VPC CNI, EBS CSI) get them through IRSA roles, not the node role,
and the VPC CNI is in place before any node joins. The node groups carry autoscaling bounds; a
cluster autoscaler (or Karpenter) acting on them is not part of this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from modules.platform.cloud import NODE_POOL_LABEL, NodePoolSpec, exec_kubeconfig
from modules.platform.eks.identity import STS_AUDIENCE, Oidc, irsa_role

AWS_POLICY = "arn:aws:iam::aws:policy/"
LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


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
                                                           "AmazonEKS_CNI_Policy")),
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
        ]
        self.kubeconfig = exec_kubeconfig(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data,
            {"command": "aws", "args": ["--region", args.region, "eks", "get-token", "--cluster-name", args.name,
                                        "--output", "json"]})
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[*groups, *after_nodes]))
        k8s.storage.v1.StorageClass(
            f"{name}-{args.storage_class}",
            metadata={"name": args.storage_class,
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true"},
            volume_binding_mode="WaitForFirstConsumer",  # the volume is made in the zone of its Pod
            allow_volume_expansion=True,
            reclaim_policy="Retain" if args.protect else "Delete",
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def _addon_role(self, name: str, args: EksClusterArgs, addon: str, service_account: str,
                    policy: str) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
        role = irsa_role(f"{name}-{addon}", f"{args.name}-{addon}", self.oidc, "kube-system", service_account,
                         pulumi.ResourceOptions(parent=self))
        attachment = aws.iam.RolePolicyAttachment(f"{name}-{addon}", role=role.name, policy_arn=AWS_POLICY + policy,
                                                  opts=pulumi.ResourceOptions(parent=self))
        return role, attachment

    def _addon(self, name: str, addon: str, role: tuple[aws.iam.Role, pulumi.Resource] | None = None,
               depends_on: Sequence[pulumi.Resource] = ()) -> aws.eks.Addon:
        """An EKS-managed add-on at the default version for the cluster's Kubernetes version."""
        return aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=self.cluster.name,
            addon_name=addon,
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
            labels={NODE_POOL_LABEL: pool.name},
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id,
                                                                version=template.latest_version.apply(str)),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            # an autoscaler owns the current size; Pulumi owns the bounds
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after),
                                        ignore_changes=["scalingConfig.desiredSize"]),
        )
