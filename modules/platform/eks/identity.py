"""IAM roles for service accounts (IRSA): a role only one Kubernetes service account can assume,
through the cluster's OIDC provider, with a policy limited to what that client needs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from modules.platform.cloud import ready_value

ANNOTATION = "eks.amazonaws.com/role-arn"
STS_AUDIENCE = "sts.amazonaws.com"


@dataclass(frozen=True)
class Oidc:
    """The cluster's OIDC identity provider."""

    arn: pulumi.Input[str]
    issuer: pulumi.Input[str]  # https://oidc.eks.<region>.amazonaws.com/id/<id>


def irsa_role(name: str, role_name: str, oidc: Oidc, namespace: pulumi.Input[str], service_account: str,
              opts: pulumi.ResourceOptions) -> aws.iam.Role:
    """A role assumable only by `namespace/service_account` tokens issued for STS."""

    def trust(values: list[str]) -> str:
        provider_arn, issuer, ns = values
        host = issuer.removeprefix("https://")
        return json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{host}:sub": f"system:serviceaccount:{ns}:{service_account}",
                                               f"{host}:aud": STS_AUDIENCE}},
            }],
        })

    return aws.iam.Role(name, name=role_name,
                        assume_role_policy=pulumi.Output.all(oidc.arn, oidc.issuer, namespace).apply(trust),
                        opts=opts)


def bucket_policy(bucket_arns: Sequence[pulumi.Input[str]], key_arn: pulumi.Input[str], write: bool
                  ) -> pulumi.Output[str]:
    """Object access on these buckets only (and their KMS key for SSE-KMS), nothing account-wide."""

    def render(values: list[str]) -> str:
        key, *buckets = values
        objects = ["s3:GetObject"] + (["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"] if write else [])
        return json.dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ListBuckets", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                 "Resource": buckets},
                {"Sid": "Objects", "Effect": "Allow", "Action": objects, "Resource": [f"{b}/*" for b in buckets]},
                {"Sid": "BucketKey", "Effect": "Allow",
                 "Action": ["kms:Decrypt"] + (["kms:GenerateDataKey"] if write else []), "Resource": [key]},
            ],
        })

    return pulumi.Output.all(key_arn, *bucket_arns).apply(render)


@dataclass(frozen=True)
class ServiceAccountRoleArgs:
    role_name: str
    oidc: Oidc
    namespace: pulumi.Input[str]
    service_account: str
    bucket_arns: Sequence[pulumi.Input[str]]
    key_arn: pulumi.Input[str]
    write: bool


class ServiceAccountRole(pulumi.ComponentResource):
    """A client's IRSA role with access to its buckets; `annotations` go on its service account."""

    annotations: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ServiceAccountRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:ServiceAccountRole", name, None, opts)
        role = irsa_role(name, args.role_name, args.oidc, args.namespace, args.service_account,
                         pulumi.ResourceOptions(parent=self))
        policy = aws.iam.RolePolicy(f"{name}-buckets", role=role.name, name="buckets",
                                    policy=bucket_policy(args.bucket_arns, args.key_arn, args.write),
                                    opts=pulumi.ResourceOptions(parent=self))
        # the annotation resolves once the policy is attached, so pods never start without their access
        self.annotations = {ANNOTATION: ready_value(role.arn, policy)}
        self.register_outputs({"role": role.arn})
