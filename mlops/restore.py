"""`mlops restore` and `mlops backup-check`: the in-cluster database's Barman Cloud archive, read
and restored the way CloudNativePG does it.

Everything starts from the stack's own CloudNativePG `Cluster` (its `spec.backup.barmanObjectStore`)
in the offline plan, so the drill (tests/test_restore_drill.py), the check and a restore on a real
cluster use the destination, server name, endpoint and compression the stack archives with. The
barman-cloud argument lists follow CloudNativePG's (github.com/cloudnative-pg/barman-cloud v0.5.1,
the version the pinned operator 1.30.0 builds with): options, then `DESTINATION SERVER`.

A restore never touches the original Cluster: it creates a new one, `bootstrap.recovery` from the
archive (or its off-cluster copy) up to `--to`, archiving under its own server name, then points
MLflow's database URIs at it and restarts MLflow (docs/runbooks.md#restore).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

CNPG_GROUP = "postgresql.cnpg.io"
ORIGIN = "origin"  # the externalClusters entry a recovery Cluster restores from
WAL_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
SEGMENTS_PER_XLOGID = 0x100  # 16 MiB WAL segments (PostgreSQL's and CloudNativePG's default)


class RestoreError(Exception):
    """A stack or archive a restore cannot work from; the message names what and the fix."""


@dataclass(frozen=True)
class Archive:
    """One server's Barman Cloud archive and the barman-cloud command lines that reach it."""

    destination_path: str  # s3://<bucket>/<prefix>
    server_name: str
    endpoint_url: str | None = None
    wal_compression: str | None = None
    data_compression: str | None = None
    immediate_checkpoint: bool = False  # False: the backup starts after a spread checkpoint

    @classmethod
    def of_cluster(cls, cluster: Mapping[str, Any]) -> Archive:
        """The archive a CloudNativePG Cluster writes (`spec.backup.barmanObjectStore`)."""
        name = cluster["metadata"]["name"]
        store = cluster.get("spec", {}).get("backup", {}).get("barmanObjectStore")
        if not store:
            raise RestoreError(f"Cluster {name}: no spec.backup.barmanObjectStore; enable database.backup")
        return cls(store["destinationPath"], store.get("serverName") or name, store.get("endpointURL"),
                   store.get("wal", {}).get("compression"), store.get("data", {}).get("compression"),
                   bool(store.get("data", {}).get("immediateCheckpoint")))

    def at(self, destination_path: str, endpoint_url: str | None) -> Archive:
        """The same archive copied elsewhere (the off-cluster replica, a test's S3 API)."""
        return replace(self, destination_path=destination_path, endpoint_url=endpoint_url)

    def _store(self) -> list[str]:
        return [*(["--endpoint-url", self.endpoint_url] if self.endpoint_url else []), "--cloud-provider", "aws-s3"]

    def _target(self) -> list[str]:
        return [self.destination_path, self.server_name]

    def wal_archive(self, wal_path: str) -> list[str]:
        compression = [f"--{self.wal_compression}"] if self.wal_compression else []
        return ["barman-cloud-wal-archive", *compression, *self._store(), *self._target(), wal_path]

    def check_wal_archive(self) -> list[str]:
        return ["barman-cloud-check-wal-archive", *self._store(), *self._target()]

    def backup(self, name: str) -> list[str]:
        compression = [f"--{self.data_compression}"] if self.data_compression else []
        checkpoint = ["--immediate-checkpoint"] if self.immediate_checkpoint else []
        return ["barman-cloud-backup", "--user", "postgres", "--name", name, *compression, *checkpoint, *self._store(),
                *self._target()]

    def backup_list(self) -> list[str]:
        return ["barman-cloud-backup-list", *self._store(), "--format", "json", *self._target()]

    def restore(self, backup_id: str, pgdata: str) -> list[str]:
        return ["barman-cloud-restore", *self._store(), *self._target(), backup_id, pgdata]

    def wal_restore(self, wal_name: str, path: str) -> list[str]:
        return ["barman-cloud-wal-restore", *self._store(), *self._target(), wal_name, path]


@dataclass(frozen=True)
class BaseBackup:
    backup_id: str
    name: str | None
    begin_wal: str
    end_wal: str
    end_time: datetime


def parse_time(text: str) -> datetime:
    """An ISO-8601/RFC 3339 time (naive = UTC), or barman's `Mon Dec  1 19:40:02 2026` (UTC)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def list_backups(archive: Archive, env: Mapping[str, str]) -> list[BaseBackup]:
    """The archive's completed base backups, oldest first (barman-cloud-backup-list)."""
    result = subprocess.run(archive.backup_list(), env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RestoreError(f"barman-cloud-backup-list {archive.destination_path} {archive.server_name}: "
                           f"{result.stderr.strip()[-500:]}")
    backups = [BaseBackup(b["backup_id"], b.get("backup_name"), b["begin_wal"], b["end_wal"],
                          parse_time(b["end_time"]))
               for b in json.loads(result.stdout)["backups_list"] if b["status"] == "DONE"]
    return sorted(backups, key=lambda b: b.end_time)


def backup_for(backups: Sequence[BaseBackup], target: datetime | None) -> BaseBackup:
    """The newest backup that ended before `target` (CloudNativePG's choice for a recovery)."""
    usable = [b for b in backups if target is None or b.end_time <= target]
    if not usable:
        raise RestoreError(f"no completed base backup ends before {target}: choose a later --to "
                           f"(oldest backup ends {backups[0].end_time})" if backups else "the archive holds no base backup")
    return usable[-1]


def next_wal(name: str) -> str:
    timeline, xlogid, segment = (int(part, 16) for part in WAL_NAME.match(name).groups())
    xlogid, segment = (xlogid + 1, 0) if segment + 1 == SEGMENTS_PER_XLOGID else (xlogid, segment + 1)
    return f"{timeline:08X}{xlogid:08X}{segment:08X}"


def wal_gaps(first: str, archived: Iterable[str]) -> list[str]:
    """Segments missing between `first` and the newest archived segment of its timeline."""
    timeline = first[:8]
    present = {n for n in archived if WAL_NAME.match(n) and n[:8] == timeline and n >= first}
    if not present:
        return [first]
    missing, name, last = [], first, max(present)
    while name < last:
        if name not in present:
            missing.append(name)
        name = next_wal(name)
    return missing


def archived_wals(archive: Archive, env: Mapping[str, str]) -> list[str]:
    """WAL segment names under `<server>/wals/` (compression suffixes dropped)."""
    import boto3

    bucket, _, prefix = archive.destination_path.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=archive.endpoint_url, region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                      aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix.strip('/')}/{archive.server_name}/wals/".lstrip("/"))
        for obj in page.get("Contents", [])]
    return [key.rsplit("/", 1)[-1].split(".", 1)[0] for key in keys]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    lines: tuple[str, ...]

    def render(self) -> str:
        return "\n".join(self.lines)


def check_archive(archive: Archive, env: Mapping[str, str], max_age: timedelta,
                  now: datetime | None = None) -> CheckResult:
    """Is the newest base backup younger than `max_age`, and the WAL after it unbroken?"""
    now = now or datetime.now(timezone.utc)
    where = f"{archive.destination_path}/{archive.server_name}"
    backups = list_backups(archive, env)
    if not backups:
        return CheckResult(False, (f"FAIL {where}: no completed base backup; take one "
                                   "(kubectl cnpg backup, or a Backup object) and check the ScheduledBackup",))
    newest, lines = backups[-1], []
    age = now - newest.end_time
    fresh = age <= max_age
    lines.append(f"{'ok  ' if fresh else 'FAIL'} newest base backup {newest.backup_id} ended {newest.end_time:%Y-%m-%dT%H:%M:%SZ}"
                 f" ({age.total_seconds() / 3600:.1f} h ago; allowed {max_age.total_seconds() / 3600:.1f} h)")
    gaps = wal_gaps(newest.begin_wal, archived_wals(archive, env))
    lines.append(f"ok   WAL continuous from {newest.begin_wal}" if not gaps else
                 f"FAIL WAL segments missing after the newest backup: {', '.join(gaps[:5])}"
                 f"{' …' if len(gaps) > 5 else ''} (a point-in-time restore stops before the first one)")
    return CheckResult(fresh and not gaps, (f"archive {where}: {len(backups)} base backup(s)", *lines))


# ------------------------------------------------------------------------------ cron intervals

def _field(spec: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in spec.split(","):
        body, _, step = part.partition("/")
        start, end = (low, high) if body == "*" else (int(body.split("-")[0]), int(body.split("-")[-1]))
        values |= set(range(start, end + 1, int(step or 1)))
    return values


def longest_gap(schedule: str) -> timedelta:
    """The longest time between two runs of a five-field cron schedule (over four weeks)."""
    minute, hour, day, month, weekday = schedule.split()
    m, h, d = _field(minute, 0, 59), _field(hour, 0, 23), _field(day, 1, 31)
    mo, wd = _field(month, 1, 12), {w % 7 for w in _field(weekday, 0, 7)}
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday
    both = day != "*" and weekday != "*"  # cron: either day field matches when both are restricted

    def runs(t: datetime) -> bool:
        on_day = (t.day in d or t.isoweekday() % 7 in wd) if both else (t.day in d and t.isoweekday() % 7 in wd)
        return t.minute in m and t.hour in h and t.month in mo and on_day

    fires = [t for t in (start + timedelta(minutes=i) for i in range(28 * 24 * 60)) if runs(t)]
    if len(fires) < 2:
        raise RestoreError(f"schedule {schedule!r} runs less than twice in four weeks: give --max-age")
    return max(b - a for a, b in zip(fires, fires[1:]))


# ------------------------------------------------------------------------- recovery point objective

PG_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400}
# Managed PostgreSQL ships its transaction logs on the provider's own cadence:
# Cloud SQL "uploads logs every 5 minutes or less … the recovery point objective is typically no
# more than 5 minutes" (cloud.google.com/sql/docs/postgres/backup-recovery/pitr); RDS uploads them
# every 5 minutes, the latest restorable time is "typically within the last five minutes"
# (docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_PIT.html).
CLOUD_SQL_LOG_UPLOAD = timedelta(minutes=5)
RDS_LOG_UPLOAD = timedelta(minutes=5)
DAILY = timedelta(days=1)  # Cloud SQL's automated backups without PITR: one a day


def pg_duration(value: str | int) -> timedelta:
    """A PostgreSQL time setting (`5min`, `300`, `1h`; no unit: seconds) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*(us|ms|s|min|h|d)?\s*", str(value))
    if not match:
        raise RestoreError(f"{value!r} is not a PostgreSQL time setting (a number with us, ms, s, min, h or d)")
    return timedelta(seconds=int(match[1]) * PG_UNITS[match[2] or "s"])


@dataclass(frozen=True)
class RecoveryPoint:
    """What a restore from `source` can lose at worst, from the plan's settings alone (the upload
    time of the last WAL segment comes on top: benchmarks/restore.py measures it)."""

    source: str  # where a restore reads from
    survives: str  # what can be lost while this copy still restores
    rpo: timedelta | None  # None: nothing to restore from
    basis: str  # the settings it follows from

    def render(self) -> str:
        worst = "no restore possible" if self.rpo is None else f"≤ {_human(self.rpo)}"
        return f"{self.source} ({self.survives}): {worst} — {self.basis}"


def _human(span: timedelta) -> str:
    minutes = span.total_seconds() / 60
    return f"{minutes / 60:g} h" if minutes >= 120 else f"{minutes:g} min"


def recovery_points(resources: Iterable[Mapping[str, Any]]) -> list[RecoveryPoint]:
    """The recovery point objective each copy of the stack's database gives, from its plan
    (`mlops.plan.Plan.resources`): CloudNativePG's archive_timeout (a WAL segment is closed and
    archived at most that long after a write) and, for the off-cluster copy, the longest gap of the
    copy CronJob's schedule on top; Cloud SQL's / RDS's log upload cadence when the plan turns
    point-in-time recovery on. The base-backup schedule bounds the WAL a restore replays, not the RPO."""
    resources = list(resources)
    objects = [r["manifest"] for r in resources if r.get("manifest") is not None]
    points: list[RecoveryPoint] = []
    clusters = [o for o in objects if o.get("kind") == "Cluster" and str(o.get("apiVersion", "")).startswith(CNPG_GROUP)]
    for cluster in clusters:
        spec = cluster["spec"]
        if not spec.get("backup", {}).get("barmanObjectStore"):
            points.append(RecoveryPoint("archive", "the database", None,
                                        "database.backup.enabled is false: no WAL archive, no base backup"))
            continue
        from modules.database.offsite import OFFSITE_CRONJOB

        timeout = spec["postgresql"]["parameters"]["archive_timeout"]
        schedule = schedule_of(objects)
        in_cluster = ".svc" in str(spec["backup"]["barmanObjectStore"].get("endpointURL", ""))
        basis = f"archive_timeout {timeout}; base backups '{schedule}' (at most {_human(longest_gap(schedule))} of WAL to replay)"
        points.append(RecoveryPoint("archive", "the database" if in_cluster else "the cluster (objectStore.external)",
                                    pg_duration(timeout), basis))
        jobs = [o for o in objects if o.get("kind") == "CronJob" and o["metadata"]["name"] == OFFSITE_CRONJOB]
        for job in jobs:
            every = longest_gap(job["spec"]["schedule"])
            points.append(RecoveryPoint("off-cluster copy", "the cluster", pg_duration(timeout) + every,
                                        f"archive_timeout {timeout} + copy '{job['spec']['schedule']}' "
                                        f"(every {_human(every)})"))
        if in_cluster and not jobs:
            points.append(RecoveryPoint("off-cluster copy", "the cluster", None,
                                        "no database.backup.offsite: the archive is in the cluster's object store"))
    for r in resources:
        inputs = r.get("inputs", {})
        if r["type"] == "gcp:sql/databaseInstance:DatabaseInstance":
            backups = inputs.get("settings", {}).get("backupConfiguration", {})
            if backups.get("pointInTimeRecoveryEnabled"):
                points.append(RecoveryPoint("Cloud SQL", "the instance", CLOUD_SQL_LOG_UPLOAD,
                                            f"point-in-time recovery, {backups.get('transactionLogRetentionDays')} "
                                            "days of logs; Cloud SQL uploads them at least every 5 min"))
            else:
                points.append(RecoveryPoint("Cloud SQL", "the instance", DAILY if backups.get("enabled") else None,
                                            "automated daily backups, no point-in-time recovery"
                                            if backups.get("enabled") else "no automated backups"))
        elif r["type"] == "aws:rds/instance:Instance":
            days = int(inputs.get("backupRetentionPeriod", 0))
            points.append(RecoveryPoint("RDS", "the instance", RDS_LOG_UPLOAD if days else None,
                                        f"automated backups kept {days} days (point-in-time recovery); RDS "
                                        "uploads transaction logs every 5 min" if days else "backupRetentionPeriod 0"))
    return points


# ------------------------------------------------------------------------------ restore manifests

def find_cluster(objects: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
    clusters = [o for o in objects if o.get("kind") == "Cluster" and str(o.get("apiVersion", "")).startswith(CNPG_GROUP)]
    if len(clusters) != 1:
        raise RestoreError(f"the plan declares {len(clusters)} CloudNativePG Cluster(s); `mlops restore` needs "
                           "exactly one (an in-cluster database: platform minikube or existing)")
    return clusters[0]


def schedule_of(objects: Iterable[Mapping[str, Any]]) -> str:
    """The ScheduledBackup's cron schedule without its seconds field."""
    schedules = [o["spec"]["schedule"] for o in objects if o.get("kind") == "ScheduledBackup"]
    if not schedules:
        raise RestoreError("the plan declares no ScheduledBackup: enable database.backup, or give --max-age")
    return " ".join(schedules[0].split()[-5:])


def recovery_cluster(source: Mapping[str, Any], name: str, target_time: datetime | None,
                     origin: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new Cluster `name` bootstrapped from `source`'s archive (or `origin`, another
    barmanObjectStore such as the off-cluster copy) up to `target_time`, archiving under `name`."""
    spec = copy.deepcopy(dict(source["spec"]))
    store = spec["backup"]["barmanObjectStore"]
    origin_store = copy.deepcopy(dict(origin or store))
    origin_store.setdefault("serverName", source["metadata"]["name"])
    initdb = spec.pop("bootstrap", {}).get("initdb", {})
    recovery: dict[str, Any] = {"source": ORIGIN, **{k: initdb[k] for k in ("database", "owner", "secret") if k in initdb}}
    if target_time is not None:
        recovery["recoveryTarget"] = {"targetTime": target_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    spec["bootstrap"] = {"recovery": recovery}
    spec["externalClusters"] = [e for e in spec.get("externalClusters", []) if e.get("name") != ORIGIN] + [
        {"name": ORIGIN, "barmanObjectStore": origin_store}]
    store["serverName"] = name  # never archive into the archive being restored from
    metadata = {"name": name, "namespace": source["metadata"]["namespace"],
                "labels": dict(source["metadata"].get("labels", {}))}
    return {"apiVersion": source["apiVersion"], "kind": "Cluster", "metadata": metadata, "spec": spec}


def offsite_store(objects: Iterable[Mapping[str, Any]], store: Mapping[str, Any]) -> dict[str, Any]:
    """`store` (the Cluster's barmanObjectStore) as copied by the off-cluster CronJob."""
    from modules.database.offsite import OFFSITE_CRONJOB, replica_store

    jobs = [o for o in objects if o.get("kind") == "CronJob" and o["metadata"]["name"] == OFFSITE_CRONJOB]
    if not jobs:
        raise RestoreError(f"the plan declares no CronJob {OFFSITE_CRONJOB}: set database.backup.offsite "
                           "to restore from an off-cluster copy")
    return replica_store(jobs[0], store)


@dataclass(frozen=True)
class RestorePlan:
    cluster: dict[str, Any]
    commands: tuple[tuple[str, ...], ...]

    def render(self) -> str:
        steps = "\n".join(f"  {i}. {' '.join(c)}" for i, c in enumerate(self.commands, 1))
        return f"would apply Cluster {self.cluster['metadata']['name']}, then run:\n{steps}"


def restore_plan(objects: Sequence[Mapping[str, Any]], target_time: datetime | None, stamp: str,
                 from_offsite: bool = False) -> RestorePlan:
    """The recovery Cluster and the kubectl steps that bring it up and move MLflow onto it."""
    source = find_cluster(objects)
    store = source["spec"].get("backup", {}).get("barmanObjectStore")
    if not store:
        raise RestoreError(f"Cluster {source['metadata']['name']}: no spec.backup.barmanObjectStore; "
                           "enable database.backup")
    origin = offsite_store(objects, store) if from_offsite else None
    name = f"{source['metadata']['name']}-{stamp}"
    cluster = recovery_cluster(source, name, target_time, origin)
    ns = source["metadata"]["namespace"]
    mlflow = [o for o in objects if o.get("kind") == "Deployment" and o["metadata"]["name"] == "mlflow"]
    commands: list[tuple[str, ...]] = [
        ("kubectl", "apply", "-f", "<recovery Cluster>"),
        ("kubectl", "-n", ns, "wait", "--for=condition=Ready", f"cluster/{name}", "--timeout=60m"),
    ]
    if mlflow:
        mns = mlflow[0]["metadata"]["namespace"]
        replicas = str(mlflow[0]["spec"].get("replicas", 1))
        commands += [
            ("kubectl", "-n", mns, "scale", "deployment/mlflow", "--replicas=0"),
            ("repoint", mns, f"{source['metadata']['name']}-rw", f"{name}-rw"),
            ("kubectl", "-n", mns, "scale", "deployment/mlflow", f"--replicas={replicas}"),
            ("kubectl", "-n", mns, "rollout", "status", "deployment/mlflow", "--timeout=10m"),
        ]
    return RestorePlan(cluster, tuple(commands))


def repoint_secret(secret: Mapping[str, Any], old_host: str, new_host: str) -> dict[str, Any]:
    """MLflow's database Secret with every URI's host `old_host[.…]` replaced by `new_host[.…]`
    (the CloudNativePG read-write Services of the old and the recovery Cluster)."""
    import base64

    data = {}
    for key, value in secret.get("data", {}).items():
        text = base64.b64decode(value).decode()
        data[key] = base64.b64encode(re.sub(rf"@{re.escape(old_host)}([.:])", rf"@{new_host}\1", text).encode()).decode()
    if data == dict(secret.get("data", {})):
        raise RestoreError(f"Secret {secret['metadata']['name']}: no URI names host {old_host}; "
                           "repoint MLflow's database by hand (docs/runbooks.md#restore)")
    return {"apiVersion": "v1", "kind": "Secret", "type": secret.get("type", "Opaque"),
            "metadata": {"name": secret["metadata"]["name"], "namespace": secret["metadata"]["namespace"]},
            "data": data}


MLFLOW_DATABASE_SECRET_KEY = "backend-store-uri"


def run(plan: RestorePlan, kubectl: str = "kubectl") -> None:
    """Carry out a restore plan on the current kubectl context."""
    for command in plan.commands:
        if command[:3] == ("kubectl", "apply", "-f"):
            subprocess.run([kubectl, "apply", "-f", "-"], input=json.dumps(plan.cluster), text=True, check=True)
        elif command[0] == "repoint":
            _, namespace, old, new = command
            for secret in _secrets_with(kubectl, namespace, MLFLOW_DATABASE_SECRET_KEY):
                subprocess.run([kubectl, "apply", "-f", "-"], input=json.dumps(repoint_secret(secret, old, new)),
                               text=True, check=True)
        else:
            subprocess.run([kubectl, *command[1:]], check=True)


def _secrets_with(kubectl: str, namespace: str, key: str) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "-n", namespace, "get", "secrets", "-o", "json"], capture_output=True,
                         text=True, check=True).stdout
    return [s for s in json.loads(out)["items"] if key in s.get("data", {})]
