"""Off-cluster copies: a CronJob that mirrors the backups bucket (the database's Barman Cloud archive)
and the MLflow artifact bucket to a second S3-compatible store, so losing the cluster — or its
object store — loses neither the database nor the models.

rclone talks to both stores at once (no staging volume). Each source bucket `B` becomes
`<target bucket>/<prefix>/B/current/` — an exact mirror, so a barman archive there is complete and
consistent, and `barman-cloud-restore` / a CloudNativePG `externalClusters` entry read it as they
read the original (`replica_store`). What the source deletes or overwrites (barman's retention,
a wiped bucket, ransomware) is not lost at once: rclone moves it to `B/deleted/<UTC stamp>/`, and
those folders are purged after `retention_days`. Re-running the copy changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.platform.contract import S3Credentials

OFFSITE_CRONJOB = "offsite-copy"
CREDENTIALS_SECRET = "offsite-copy-s3"
RUN_AS = 65534  # nobody: rclone needs no account of its own
# Keys of CREDENTIALS_SECRET; a CloudNativePG externalClusters entry reads the TARGET_* pair
SOURCE_KEY, SOURCE_SECRET = "SOURCE_ACCESS_KEY_ID", "SOURCE_SECRET_ACCESS_KEY"
TARGET_KEY, TARGET_SECRET = "TARGET_ACCESS_KEY_ID", "TARGET_SECRET_ACCESS_KEY"
TARGET_REGION = "TARGET_REGION"

# POSIX sh (busybox in the rclone image). rclone exits 3 when a folder does not exist yet.
SYNC_SCRIPT = """set -eu
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
cutoff=$(date -u -d "@$(( $(date +%s) - RETENTION_DAYS * 86400 ))" +%Y-%m-%dT%H%M%SZ)
root="target:$TARGET_BUCKET${TARGET_PREFIX:+/$TARGET_PREFIX}"
for bucket in $BUCKETS; do
  rclone sync "source:$bucket" "$root/$bucket/current" --backup-dir "$root/$bucket/deleted/$stamp" --fast-list
  kept=$(rclone lsf --dirs-only "$root/$bucket/deleted/") || [ $? -eq 3 ]
  for old in $(printf '%s\\n' "${kept:-}" | tr -d / | awk -v cutoff="$cutoff" '$0 != "" && $0 < cutoff'); do
    rclone purge "$root/$bucket/deleted/$old"
  done
  echo "$bucket: mirrored to $root/$bucket/current; deleted/ older than $cutoff purged"
done
"""


@dataclass(frozen=True)
class OffsiteTarget:
    bucket: str
    prefix: str
    region: str
    endpoint: str | None  # None: AWS S3
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]


@dataclass(frozen=True)
class OffsiteCopyArgs:
    namespace: pulumi.Input[str]
    image: str
    schedule: str  # five-field cron, UTC
    retention_days: int
    source_endpoint: pulumi.Input[str]
    source_credentials: S3Credentials  # read access to every bucket in `buckets`
    buckets: Sequence[str]  # the backups and the MLflow artifact buckets
    target: OffsiteTarget


def remote_env(name: str, endpoint: pulumi.Input[str] | None, region: str, secret: pulumi.Input[str],
               key: str, secret_key: str) -> list[dict[str, Any]]:
    """rclone's S3 remote `name` from environment variables (no config file)."""
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    values: dict[str, pulumi.Input[str]] = {"TYPE": "s3", "PROVIDER": "Other" if endpoint else "AWS",
                                            "REGION": region, "ENV_AUTH": "false"}
    if endpoint:
        values["ENDPOINT"] = endpoint
    return [*kube.env({prefix + k: v for k, v in values.items()}),
            kube.secret_env(prefix + "ACCESS_KEY_ID", secret, key),
            kube.secret_env(prefix + "SECRET_ACCESS_KEY", secret, secret_key)]


def sync_env(args: OffsiteCopyArgs, secret: pulumi.Input[str]) -> list[dict[str, Any]]:
    t = args.target
    return [
        *remote_env("source", args.source_endpoint, "us-east-1", secret, SOURCE_KEY, SOURCE_SECRET),
        *remote_env("target", t.endpoint, t.region, secret, TARGET_KEY, TARGET_SECRET),
        *kube.env({"BUCKETS": " ".join(args.buckets), "TARGET_BUCKET": t.bucket,
                   "TARGET_PREFIX": t.prefix, "RETENTION_DAYS": str(args.retention_days),
                   "RCLONE_S3_NO_CHECK_BUCKET": "true", "HOME": "/tmp", "XDG_CONFIG_HOME": "/tmp",
                   "XDG_CACHE_HOME": "/tmp"}),
    ]


def secret_data(args: OffsiteCopyArgs) -> dict[str, pulumi.Input[str]]:
    """CREDENTIALS_SECRET's keys: rclone reads all, a recovery Cluster the TARGET_* ones."""
    return {SOURCE_KEY: args.source_credentials.access_key_id, SOURCE_SECRET: args.source_credentials.secret_access_key,
            TARGET_KEY: args.target.access_key_id, TARGET_SECRET: args.target.secret_access_key,
            TARGET_REGION: args.target.region}


class OffsiteCopy(pulumi.ComponentResource):
    """The Secret with both stores' keys and the CronJob running SYNC_SCRIPT."""

    def __init__(self, name: str, args: OffsiteCopyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:database:OffsiteCopy", name, None, opts)
        secret = k8s.core.v1.Secret(
            f"{name}-s3",
            metadata=kube.metadata(CREDENTIALS_SECRET, args.namespace, "backup"),
            type="Opaque",
            string_data=secret_data(args),
            opts=kube.child(self),
        )
        container = {
            "name": "rclone",
            "image": args.image,
            "command": ["sh", "-c", SYNC_SCRIPT],
            "env": sync_env(args, secret.metadata.name),
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        }
        self.cronjob = k8s.batch.v1.CronJob(
            name,
            metadata=kube.metadata(OFFSITE_CRONJOB, args.namespace, "backup"),
            spec={
                "schedule": args.schedule,
                "time_zone": "Etc/UTC",
                "concurrency_policy": "Forbid",
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {"spec": {"backoff_limit": 2, "template": {
                    "metadata": {"labels": kube.labels(OFFSITE_CRONJOB, "backup")},
                    "spec": {
                        "restart_policy": "OnFailure",
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(RUN_AS),
                        "containers": [container],
                        "volumes": [{"name": "tmp", "empty_dir": {}}],
                    },
                }}},
            },
            opts=kube.child(self),
        )
        kube.ingress_policy(f"{name}-pods", args.namespace, "backup", OFFSITE_CRONJOB, [], kube.child(self))
        self.register_outputs({})


def _env(cronjob: Mapping[str, Any]) -> dict[str, Any]:
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def replica_url(cronjob: Mapping[str, Any], source_url: str) -> str:
    """Where the copy keeps `s3://<bucket>/<path>`: `s3://<target>/<prefix>/<bucket>/current/<path>`."""
    env = _env(cronjob)
    bucket, _, path = source_url.removeprefix("s3://").partition("/")
    root = "/".join(p for p in (env["TARGET_BUCKET"], env["TARGET_PREFIX"]) if p)
    return f"s3://{root}/{bucket}/current" + (f"/{path.strip('/')}" if path.strip("/") else "")


def replica_store(cronjob: Mapping[str, Any], store: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudNativePG barmanObjectStore reading `store`'s archive from the off-cluster copy."""
    env = _env(cronjob)
    secret = env["RCLONE_CONFIG_TARGET_ACCESS_KEY_ID"]["secretKeyRef"]["name"]
    replica = {k: v for k, v in store.items() if k not in ("endpointURL", "s3Credentials", "endpointCA")}
    replica["destinationPath"] = replica_url(cronjob, store["destinationPath"])
    if env.get("RCLONE_CONFIG_TARGET_ENDPOINT"):
        replica["endpointURL"] = env["RCLONE_CONFIG_TARGET_ENDPOINT"]
    replica["s3Credentials"] = {"accessKeyId": {"name": secret, "key": TARGET_KEY},
                                "secretAccessKey": {"name": secret, "key": TARGET_SECRET},
                                "region": {"name": secret, "key": TARGET_REGION}}
    return replica
