"""An existing S3 API (Ceph RGW, a NAS's S3 endpoint) instead of SeaweedFS (`objectStore.external`).

The stack runs no store and makes no keys: it reads the operator's Secret (keys `accessKeyId` and
`secretAccessKey`, in the platform namespace) at deploy time and hands the same key pair to every
client (MLflow, model servers, database backups) as their own Secrets, since a pod can read a
Secret of its own namespace only. The buckets must exist; their names are `objectStore.buckets`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from modules.platform.contract import S3Credentials

KEYS = ("accessKeyId", "secretAccessKey")


@dataclass(frozen=True)
class ExternalStoreSettings:
    """`objectStore.external` as the platform passes it on."""

    endpoint: str
    region: str
    credentials_secret: str


@dataclass(frozen=True)
class ExternalS3Args:
    namespace: pulumi.Input[str]
    endpoint: str
    region: str
    credentials_secret: str
    clients: Sequence[str]  # who gets the key pair, by client name


def secret_value(data: Mapping[str, str] | None, secret: str, key: str) -> str:
    """One key of the Secret, decoded; a missing key is an error that says how to add it."""
    if not data or not data.get(key):
        raise ValueError(f"Secret {secret} (objectStore.external.credentialsSecret) has no key {key}: "
                         f"kubectl -n <platform namespace> create secret generic {secret} "
                         f"--from-literal=accessKeyId=... --from-literal=secretAccessKey=...")
    return base64.b64decode(data[key]).decode()


class ExternalS3(pulumi.ComponentResource):
    """Same surface as `SeaweedFs` (endpoint_url, credentials by client, buckets_job) for an
    S3 service the stack does not run."""

    endpoint_url: pulumi.Output[str]
    credentials: dict[str, S3Credentials]
    buckets_job: pulumi.Resource | None = None

    def __init__(self, name: str, args: ExternalS3Args, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:objectstore:ExternalS3", name, None, opts)
        secret = k8s.core.v1.Secret.get(f"{name}-credentials",
                                        pulumi.Output.concat(args.namespace, "/", args.credentials_secret),
                                        opts=pulumi.ResourceOptions(parent=self))
        key_id, secret_key = (
            secret.data.apply(lambda data, k=key: secret_value(data, args.credentials_secret, k)) for key in KEYS)
        pair = S3Credentials(access_key_id=pulumi.Output.secret(key_id),
                             secret_access_key=pulumi.Output.secret(secret_key))
        self.credentials = {client: pair for client in args.clients}
        self.endpoint_url = pulumi.Output.from_input(args.endpoint.rstrip("/"))
        self.register_outputs({"endpoint_url": self.endpoint_url})
