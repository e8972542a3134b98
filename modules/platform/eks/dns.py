"""Public names for the gateway on EKS: one Elastic IP per zone that the gateway's Network Load
Balancer takes (the cloud controller's `aws-load-balancer-eip-allocations` annotation: one
allocation per subnet, and the NLB has one public subnet per zone), A records for the hosts in an
existing Route 53 hosted zone, and an IRSA role cert-manager answers DNS-01 with.

The addresses are the stack's, not the load balancer's: a re-created Service keeps its names. The
role may change only TXT records named `_acme-challenge.*` in that one zone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from modules.platform.contract import PublicDns
from modules.platform.eks.identity import ANNOTATION, Oidc, irsa_role

CERT_MANAGER = ("cert-manager", "cert-manager")  # namespace, service account (the chart's default fullname)
EIP_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-eip-allocations"


def dns01_policy(zone_id: str) -> str:
    """cert-manager's route53 solver with hostedZoneID given: read its change, write TXT challenges."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Changes", "Effect": "Allow", "Action": "route53:GetChange",
             "Resource": "arn:aws:route53:::change/*"},
            {"Sid": "Challenges", "Effect": "Allow",
             "Action": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
             "Resource": f"arn:aws:route53:::hostedzone/{zone_id}",
             "Condition": {"ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsRecordTypes": ["TXT"]},
                           "ForAllValues:StringLike": {
                               "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["_acme-challenge.*"]}}},
        ],
    })


@dataclass(frozen=True)
class GatewayDnsArgs:
    prefix: str
    region: str
    zone_id: str  # Route 53 hosted zone holding gateway.domain
    zones: Sequence[str]  # availability zones: one public subnet, hence one NLB address, each
    hosts: Sequence[str]
    ttl: int
    oidc: Oidc
    service_annotations: Mapping[str, str]  # the gateway Service's own (NLB type): kept beside the EIPs


class GatewayDns(pulumi.ComponentResource):
    dns: PublicDns

    def __init__(self, name: str, args: GatewayDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:GatewayDns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        addresses = [aws.ec2.Eip(f"{name}-gateway-{zone}", domain="vpc", tags={"Name": f"{args.prefix}-gateway-{zone}"},
                                 opts=child) for zone in args.zones]
        for host in args.hosts:
            aws.route53.Record(f"{name}-{host.split('.', 1)[0]}", zone_id=args.zone_id, name=host, type="A",
                               ttl=args.ttl, records=[a.public_ip for a in addresses], opts=child)
        namespace, account = CERT_MANAGER
        role = irsa_role(f"{name}-cert-manager", f"{args.prefix}-acme", args.oidc, namespace, account, child)
        policy = aws.iam.RolePolicy(f"{name}-cert-manager", role=role.name, name="dns01-challenges",
                                    policy=dns01_policy(args.zone_id), opts=child)
        allocations = pulumi.Output.all(*(a.allocation_id for a in addresses)).apply(",".join)
        self.dns = PublicDns(
            solver={"route53": {"region": args.region, "hostedZoneID": args.zone_id}},
            # the annotation resolves once the policy is attached: cert-manager never starts without it
            cert_manager_annotations={ANNOTATION: pulumi.Output.all(role.arn, policy.id).apply(lambda v: v[0])},
            service_values={"annotations": {**args.service_annotations, EIP_ANNOTATION: allocations}},
        )
        self.register_outputs({"addresses": [a.public_ip for a in addresses]})
