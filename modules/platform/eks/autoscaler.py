"""The Cluster Autoscaler (kubernetes/autoscaler chart, pinned) acting on the managed node groups:
it finds their Auto Scaling groups by the tags EKS puts on them and resizes them within each
group's min/max (docs/decisions/0009-eks-node-autoscaling.md).

Its IAM role is assumable only by its service account (IRSA) and may resize only the Auto Scaling
groups tagged for this cluster; describing is read-only and account-wide, as the AWS API requires.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from modules.platform.eks.identity import ANNOTATION, Oidc, irsa_role

CHART_REPO = "https://kubernetes.github.io/autoscaler"
CHART_VERSION = "9.59.0"  # appVersion 1.35.0; the image is pinned to the cluster's minor below
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
# The autoscaler's minor must match the cluster's (its scheduler simulation is Kubernetes' own):
# the newest patch per minor, from the cluster-autoscaler-1.<minor>.<patch> tags of kubernetes/autoscaler.
IMAGE_TAGS = {"1.31": "v1.31.5", "1.32": "v1.32.7", "1.33": "v1.33.6", "1.34": "v1.34.5", "1.35": "v1.35.2"}
RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
DESCRIBE = ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "ec2:DescribeImages", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplateVersions",
            "ec2:GetInstanceTypesFromInstanceRequirements"]
RESIZE = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]


def discovery_tag(cluster_name: str) -> str:
    """EKS tags every managed node group's Auto Scaling group with this key (and `…/enabled`)."""
    return f"k8s.io/cluster-autoscaler/{cluster_name}"


def autoscaler_policy(cluster_name: str, cluster_arn: str) -> str:
    """Resize only this cluster's groups; read node-group labels/taints (scale from zero) of this cluster."""
    nodegroups = cluster_arn.replace(":cluster/", ":nodegroup/", 1) + "/*"
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Describe", "Effect": "Allow", "Action": DESCRIBE, "Resource": "*"},
            {"Sid": "ResizeThisCluster", "Effect": "Allow", "Action": RESIZE, "Resource": "*",
             "Condition": {"Null": {f"aws:ResourceTag/{discovery_tag(cluster_name)}": "false"}}},
            {"Sid": "NodeGroups", "Effect": "Allow", "Action": "eks:DescribeNodegroup", "Resource": nodegroups},
        ],
    })


def image_tag(kubernetes_version: str) -> str:
    if kubernetes_version not in IMAGE_TAGS:
        raise ValueError(f"no Cluster Autoscaler release is pinned for Kubernetes {kubernetes_version}: "
                         f"allowed {', '.join(IMAGE_TAGS)} (modules/platform/eks/autoscaler.py IMAGE_TAGS)")
    return IMAGE_TAGS[kubernetes_version]


@dataclass(frozen=True)
class AutoscalerArgs:
    cluster: aws.eks.Cluster
    cluster_name: str
    region: str
    kubernetes_version: str
    oidc: Oidc
    k8s_provider: k8s.Provider
    placement: Mapping[str, Any]  # nodeSelector/tolerations of platform pods (the system pool)


class ClusterAutoscaler(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: AutoscalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:ClusterAutoscaler", name, None, opts)
        role = irsa_role(name, f"{args.cluster_name}-autoscaler", args.oidc, NAMESPACE, SERVICE_ACCOUNT,
                         pulumi.ResourceOptions(parent=self))
        policy = aws.iam.RolePolicy(
            name, role=role.name, name="resize-node-groups",
            policy=args.cluster.arn.apply(lambda arn: autoscaler_policy(args.cluster_name, arn)),
            opts=pulumi.ResourceOptions(parent=self))
        self.release = k8s.helm.v3.Release(
            name,
            name="cluster-autoscaler",
            chart="cluster-autoscaler",
            version=CHART_VERSION,
            namespace=NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            atomic=True,
            timeout=600,
            values=self._values(args, role.arn),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[policy]),
        )
        self.register_outputs({"role": role.arn})

    @staticmethod
    def _values(args: AutoscalerArgs, role_arn: pulumi.Output[str]) -> dict[str, Any]:
        return {
            "cloudProvider": "aws",
            "awsRegion": args.region,
            "autoDiscovery": {"clusterName": args.cluster_name},
            "image": {"tag": image_tag(args.kubernetes_version)},
            "rbac": {"serviceAccount": {"name": SERVICE_ACCOUNT, "annotations": {ANNOTATION: role_arn}}},
            "extraArgs": {
                "balance-similar-node-groups": True,  # node groups are per pool, each across the zones
                "expander": "least-waste",
                "skip-nodes-with-local-storage": False,  # emptyDir scratch must not pin a node forever
            },
            "resources": RESOURCES,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containerSecurityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
            **args.placement,
        }
