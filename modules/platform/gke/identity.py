"""Workload Identity: a Google service account per client, usable only by one Kubernetes service
account, with object access on its own buckets and nothing else. No key is ever created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.platform.cloud import ready_value

ANNOTATION = "iam.gke.io/gcp-service-account"
OBJECT_ROLE = {True: "roles/storage.objectUser", False: "roles/storage.objectViewer"}  # by `write`


@dataclass(frozen=True)
class WorkloadIdentityArgs:
    account_id: str
    project: str
    namespace: pulumi.Input[str]
    service_account: str  # the Kubernetes service account
    buckets: Mapping[str, pulumi.Input[str]]  # purpose -> bucket name
    write: bool
    cluster: pulumi.Resource  # creates the project's workload identity pool


class WorkloadIdentity(pulumi.ComponentResource):
    annotations: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: WorkloadIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:WorkloadIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            name, account_id=args.account_id, project=args.project,
            display_name=pulumi.Output.concat("Workload identity of ", args.namespace, "/", args.service_account),
            opts=child)
        binding = gcp.serviceaccount.IAMMember(
            f"{name}-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.project, ".svc.id.goog[", args.namespace, "/",
                                        args.service_account, "]"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.cluster]),
        )
        grants = [
            gcp.storage.BucketIAMMember(f"{name}-{purpose}", bucket=bucket, role=OBJECT_ROLE[args.write],
                                        member=account.member, opts=child)
            for purpose, bucket in args.buckets.items()
        ]
        # the annotation resolves once the grants exist, so pods never start without their access
        self.annotations = {ANNOTATION: ready_value(account.email, binding, *grants)}
        self.register_outputs({"email": account.email})
