"""Public names for the gateway on GKE (docs/decisions/0008-cloud-dns.md): a reserved regional IP
the gateway's LoadBalancer Service takes, A records for the hosts in an existing Cloud DNS zone,
and a Google service account cert-manager uses through Workload Identity to answer DNS-01."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.platform.contract import PublicDns
from modules.platform.gke.identity import ANNOTATION

CERT_MANAGER = ("cert-manager", "cert-manager")  # namespace, service account (chart default fullname)


@dataclass(frozen=True)
class GatewayDnsArgs:
    project: str  # of the cluster (address, service account)
    region: str
    prefix: str
    zone: str  # Cloud DNS managed-zone name
    zone_project: str
    hosts: Sequence[str]
    ttl: int
    cluster: pulumi.Resource  # creates the project's workload identity pool


class GatewayDns(pulumi.ComponentResource):
    dns: PublicDns

    def __init__(self, name: str, args: GatewayDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:GatewayDns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # the records outlive a re-created Service: the address is ours, not the load balancer's
        address = gcp.compute.Address(f"{name}-gateway", name=f"{args.prefix}-gateway", region=args.region,
                                      address_type="EXTERNAL", network_tier="PREMIUM", opts=child)
        for host in args.hosts:
            gcp.dns.RecordSet(f"{name}-{host.split('.', 1)[0]}", project=args.zone_project,
                              managed_zone=args.zone, name=f"{host}.", type="A", ttl=args.ttl,
                              rrdatas=[address.address], opts=child)
        account = gcp.serviceaccount.Account(f"{name}-cert-manager", project=args.project,
                                             account_id=f"{args.prefix}-acme",
                                             display_name="cert-manager DNS-01 (Let's Encrypt)", opts=child)
        namespace, ksa = CERT_MANAGER
        gcp.serviceaccount.IAMMember(
            f"{name}-cert-manager-workload-identity", service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{args.project}.svc.id.goog[{namespace}/{ksa}]",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.cluster]))
        # only this zone: the solver names it (hostedZoneName), so no project-wide zone listing
        gcp.dns.DnsManagedZoneIamMember(f"{name}-cert-manager-zone", project=args.zone_project,
                                        managed_zone=args.zone, role="roles/dns.admin", member=account.member,
                                        opts=child)
        self.dns = PublicDns(
            solver={"cloudDNS": {"project": args.zone_project, "hostedZoneName": args.zone}},
            cert_manager_annotations={ANNOTATION: account.email},
            service_values={"loadBalancerIP": address.address},
        )
        self.register_outputs({"address": address.address})
