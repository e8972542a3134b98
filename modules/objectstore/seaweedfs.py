"""SeaweedFS as the in-cluster S3 API (MinIO's community edition is unmaintained; see ADR 0001).

`replicas: 1`: `weed server -s3` runs master, volume server, filer and S3 gateway in one pod, small
enough for a laptop. `replicas` ≥ 3: the same image as separate, replicated roles
(modules/objectstore/replicated.py). Either way the S3 endpoint is the `seaweedfs` Service, each
client gets its own generated key pair limited to its buckets, and a Job creates the buckets before
anyone uses them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.objectstore import replicated
from modules.platform.contract import S3Credentials

UID = 1000
S3_PORT = 8333
PORTS = {"s3": S3_PORT, "master": 9333, "master-grpc": 19333, "filer": 8888, "filer-grpc": 18888,
         "volume": 8080, "volume-grpc": 18080, "metrics": 9327}
WAIT_SECONDS = 300  # the bucket Job's bound on each `weed shell` call and on waiting for the filer


@dataclass(frozen=True)
class S3Identity:
    """One client's key pair and the buckets it may use (read-only unless `write`)."""

    name: str
    buckets: Sequence[str]
    write: bool = True
    prefix: str | None = None  # objects only under <bucket>/<prefix>/; listing the bucket stays allowed




@dataclass(frozen=True)
class SeaweedFsArgs:
    namespace: pulumi.Input[str]
    image: str
    storage_gi: int
    resources: dict[str, Any]
    buckets: Sequence[str]
    identities: Sequence[S3Identity]
    client_namespaces: Sequence[pulumi.Input[str]]
    storage_class: str | None = None
    protect: bool = False
    monitoring_namespace: pulumi.Input[str] | None = None  # may reach the metrics port
    replicas: int = 1  # 1: all-in-one; ≥ 3: replicated roles, `replicas` volume servers


def _actions(identity: S3Identity) -> list[str]:
    """SeaweedFS matches `Verb:bucket/key` against wildcard actions; a listing is checked against the
    bucket alone, so a prefix-scoped identity lists the whole bucket but reads and writes only its keys."""
    verbs = ["Read", "List", "Tagging"] + (["Write"] if identity.write else [])
    if identity.prefix is None:
        return [f"{verb}:{bucket}" for bucket in identity.buckets for verb in verbs]
    return [f"{verb}:{bucket}" if verb == "List" else f"{verb}:{bucket}/{identity.prefix}/*"
            for bucket in identity.buckets for verb in verbs]


def _layout_hash(identities: Sequence[S3Identity]) -> str:
    """Changes when an identity or its grants change; never derived from key material."""
    layout = json.dumps([[i.name, sorted(i.buckets), i.write, *([i.prefix] if i.prefix else [])] for i in identities],
                        sort_keys=True)
    return hashlib.sha256(layout.encode()).hexdigest()[:16]


def _bucket_script(buckets: Sequence[str]) -> str:
    """Idempotent: creates missing buckets, then checks that every one is listed, or fails.

    `weed shell` waits for an unreachable master forever, so every call is bounded by `timeout`;
    names are compared as whole first fields of `s3.bucket.list` (a `grep -w` takes
    `mlflow-artifacts` for `artifacts`). Small disks: one volume per growth step.
    """
    names = " ".join(buckets)
    return f"""set -eu
weed_shell() {{ timeout "$WAIT_SECONDS" weed shell -master="$MASTER"; }}
listed() {{ echo "$listing" | awk -v b="$1" '$1 == b {{ found = 1 }} END {{ exit !found }}'; }}
deadline=$(($(date +%s) + WAIT_SECONDS))
until listing=$(echo "s3.bucket.list" | weed_shell); do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "seaweedfs at $MASTER: no bucket listing within ${{WAIT_SECONDS}}s" >&2
    exit 1
  fi
  sleep 2
done
for bucket in {names}; do
  listed "$bucket" || echo "s3.bucket.create -name $bucket" | weed_shell
done
echo "fs.configure -locationPrefix=/buckets/ -volumeGrowthCount=1 -apply" | weed_shell >/dev/null
listing=$(echo "s3.bucket.list" | weed_shell)
for bucket in {names}; do
  if ! listed "$bucket"; then
    echo "bucket $bucket is not listed after s3.bucket.create" >&2
    exit 1
  fi
done
echo "buckets present: {names}"
"""


class SeaweedFs(pulumi.ComponentResource):
    """An S3 endpoint at `endpoint_url` with buckets and one credential per identity."""

    endpoint_url: pulumi.Output[str]
    credentials: dict[str, S3Credentials]

    def __init__(self, name: str, args: SeaweedFsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:objectstore:SeaweedFs", name, None, opts)
        stateful = kube.child(self, protect=args.protect)
        self.credentials = {}
        identities = []
        for identity in args.identities:
            key_id = random.RandomString(f"{name}-{identity.name}-key-id", length=20, special=False, upper=True, lower=False, opts=stateful)
            secret = random.RandomPassword(f"{name}-{identity.name}-secret-key", length=40, special=False, opts=stateful)
            self.credentials[identity.name] = S3Credentials(
                access_key_id=key_id.result, secret_access_key=pulumi.Output.secret(secret.result)
            )
            identities.append(
                pulumi.Output.all(key_id.result, secret.result).apply(
                    lambda keys, i=identity: {
                        "name": i.name,
                        "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}],
                        "actions": _actions(i),
                    }
                )
            )
        s3_config = k8s.core.v1.Secret(
            f"{name}-s3-config",
            metadata=kube.metadata("seaweedfs-s3-config", args.namespace, "objectstore"),
            type="Opaque",
            string_data={
                "config.json": pulumi.Output.secret(
                    pulumi.Output.all(*identities).apply(lambda ids: json.dumps({"identities": ids}))
                )
            },
            opts=kube.child(self),
        )
        volume_limit_mb = max(64, args.storage_gi * 1024 // 16)
        annotations = {"mlops-stack/s3-identities": _layout_hash(args.identities)}
        if args.replicas == 1:
            workloads, service = self._all_in_one(name, args, s3_config.metadata.name, volume_limit_mb,
                                                  annotations, stateful)
            master = pulumi.Output.concat(service.metadata.name, f":{PORTS['master']}")
        else:
            workloads, service = replicated.declare(
                self, name, args.namespace, args.image, UID, args.resources, args.replicas, args.storage_gi,
                volume_limit_mb, args.storage_class, s3_config.metadata.name, annotations, stateful)
            master = replicated.master_addresses(args.namespace)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kube.metadata("seaweedfs-ingress", args.namespace, "objectstore"),
            spec={
                "pod_selector": {"match_labels": replicated.STORE_LABEL},
                "policy_types": ["Ingress"],
                "ingress": [
                    {"from_": [{"pod_selector": {}}]},  # same namespace: all ports (bucket Job, backups)
                    {
                        "from_": [
                            {"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}}
                            for ns in args.client_namespaces
                        ],
                        "ports": [{"port": S3_PORT, "protocol": "TCP"}],
                    },
                    *([{"from_": [{"namespace_selector": {"match_labels": {
                        "kubernetes.io/metadata.name": args.monitoring_namespace}}}],
                        "ports": [{"port": PORTS["metrics"], "protocol": "TCP"}]}]
                      if args.monitoring_namespace else []),
                ],
            },
            opts=kube.child(self),
        )
        self.buckets_job = k8s.batch.v1.Job(
            f"{name}-buckets",
            metadata=kube.metadata("seaweedfs-buckets", args.namespace, "objectstore"),
            spec={
                "backoff_limit": 6,
                "template": {
                    "metadata": {"labels": kube.labels("seaweedfs-buckets", "objectstore")},
                    "spec": {
                        "restart_policy": "OnFailure",
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(UID),
                        "containers": [
                            {
                                "name": "buckets",
                                "image": args.image,
                                "command": ["sh", "-c", _bucket_script(args.buckets)],
                                "env": kube.env(
                                    {
                                        "MASTER": master,
                                        "HOME": "/tmp",
                                        "WAIT_SECONDS": str(WAIT_SECONDS),
                                    }
                                ),
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                                "security_context": kube.CONTAINER_SECURITY,
                                "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "empty_dir": {}}],
                    },
                },
            },
            # a Job's template is immutable: a changed bucket list replaces the Job, which runs again
            opts=kube.child(self, depends_on=[*workloads, service], replace_on_changes=["spec"],
                            delete_before_replace=True),
        )
        kube.ingress_policy(f"{name}-buckets", args.namespace, "objectstore", "seaweedfs-buckets", [],
                            kube.child(self))
        self.endpoint_url = pulumi.Output.concat(
            "http://", service.metadata.name, ".", args.namespace, f".svc.cluster.local:{S3_PORT}"
        )
        self.register_outputs({"endpoint_url": self.endpoint_url})

    def _all_in_one(self, name: str, args: SeaweedFsArgs, s3_config: pulumi.Input[str], volume_limit_mb: int,
                    annotations: dict[str, str], stateful: pulumi.ResourceOptions
                    ) -> tuple[list[pulumi.Resource], k8s.core.v1.Service]:
        """`weed server -s3`: one pod, one Service with every port."""
        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-seaweedfs",
            metadata=kube.metadata("seaweedfs", args.namespace, "objectstore"),
            spec={
                "service_name": "seaweedfs",
                "replicas": 1,
                "selector": {"match_labels": kube.selector("seaweedfs")},
                "template": {
                    "metadata": {
                        "labels": {**kube.labels("seaweedfs", "objectstore"), **replicated.STORE_LABEL},
                        # restart when identities change: the S3 gateway reads its config at start
                        "annotations": annotations,
                    },
                    "spec": {
                        "security_context": kube.pod_security(UID),
                        "automount_service_account_token": False,
                        "containers": [
                            {
                                "name": "seaweedfs",
                                "image": args.image,
                                "args": [
                                    "server",
                                    "-dir=/data",
                                    "-ip.bind=0.0.0.0",
                                    "-s3",
                                    f"-s3.port={S3_PORT}",
                                    "-s3.config=/etc/seaweedfs/config.json",
                                    "-master.telemetry=false",  # on by default: usage reports to seaweedfs.com
                                    f"-master.volumeSizeLimitMB={volume_limit_mb}",
                                    "-master.volumePreallocate=false",
                                    "-volume.max=0",
                                    f"-metricsPort={PORTS['metrics']}",
                                ],
                                "ports": [{"name": n, "container_port": p} for n, p in PORTS.items()],
                                "resources": args.resources,
                                "security_context": kube.CONTAINER_SECURITY,
                                "readiness_probe": {"tcp_socket": {"port": "s3"}, "period_seconds": 10},
                                "liveness_probe": {
                                    "tcp_socket": {"port": "master"},
                                    "period_seconds": 20,
                                    "failure_threshold": 6,
                                    "initial_delay_seconds": 20,
                                },
                                "volume_mounts": [
                                    {"name": "data", "mount_path": "/data"},
                                    {"name": "s3-config", "mount_path": "/etc/seaweedfs", "read_only": True},
                                    {"name": "tmp", "mount_path": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "s3-config", "secret": {"secret_name": s3_config}},
                            {"name": "tmp", "empty_dir": {}},
                        ],
                    },
                },
                "volume_claim_templates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "access_modes": ["ReadWriteOnce"],
                            "storage_class_name": args.storage_class,
                            "resources": {"requests": {"storage": f"{args.storage_gi}Gi"}},
                        },
                    }
                ],
            },
            opts=stateful,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=kube.metadata("seaweedfs", args.namespace, "objectstore"),
            spec={
                "selector": kube.selector("seaweedfs"),
                "ports": [{"name": n, "port": p, "target_port": n} for n, p in PORTS.items()],
            },
            opts=kube.child(self),
        )
        return [statefulset], service
