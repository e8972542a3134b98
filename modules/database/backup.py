"""Where and how the in-cluster PostgreSQL is backed up: one description that the CloudNativePG
Cluster (`barmanObjectStore`, `ScheduledBackup`), the restore drill and `mlops restore` /
`mlops backup-check` all read, so what the stack archives is what a restore looks for.

CloudNativePG's Barman Cloud path writes, under `destination_path`, one folder per `server_name`:
`<server_name>/base/<backup id>/` (base backups, `barman-cloud-backup`) and `<server_name>/wals/`
(continuous WAL archive, `barman-cloud-wal-archive`). The barman-cloud tools take the same three
values: `barman-cloud-backup --endpoint-url E --cloud-provider aws-s3 DESTINATION SERVER`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

BACKUP_PREFIX = "postgres"  # folder of the backups bucket that holds the database's archive
# Keys of the Secret holding the object store's static keys (CloudNativePG reads them by name and key)
ACCESS_KEY_ID = "ACCESS_KEY_ID"
ACCESS_SECRET_KEY = "ACCESS_SECRET_KEY"
CREDENTIALS_SECRET = "postgres-backup-s3"
# PostgreSQL switches to a new WAL segment at least this often, so the archive (and a point-in-time
# restore) is at most this far behind the primary: the recovery point objective of a lost cluster.
ARCHIVE_TIMEOUT = "5min"
WAL_COMPRESSION = "gzip"  # barman-cloud-wal-archive --gzip
DATA_COMPRESSION = "gzip"  # barman-cloud-backup --gzip


@dataclass(frozen=True)
class BackupTarget:
    """One cluster's Barman Cloud archive in the object store."""

    bucket: pulumi.Input[str]
    server_name: str  # the folder under destination_path (CloudNativePG: the Cluster's name)
    endpoint_url: pulumi.Input[str] | None  # None: the cloud's own S3 endpoint
    schedule: str  # base backups: a five-field cron expression in UTC (as the stack file writes it)
    retention_days: int  # base backups and WALs older than the newest backup needed for this window go
    region: str = "us-east-1"
    credentials_secret: str = CREDENTIALS_SECRET  # keys ACCESS_KEY_ID / ACCESS_SECRET_KEY
    archive_timeout: str = ARCHIVE_TIMEOUT
    wal_compression: str = WAL_COMPRESSION
    data_compression: str = DATA_COMPRESSION

    @property
    def destination_path(self) -> pulumi.Output[str]:
        """`s3://<bucket>/postgres`: barman's destination (the server folder goes below it)."""
        return pulumi.Output.concat("s3://", self.bucket, f"/{BACKUP_PREFIX}")

    @property
    def retention_policy(self) -> str:
        """CloudNativePG's `retentionPolicy` (a recovery window: `30d`)."""
        return f"{self.retention_days}d"

    @property
    def cnpg_schedule(self) -> str:
        """The schedule with a leading seconds field: CloudNativePG's ScheduledBackup takes six
        fields (robfig/cron v1.2.0, in the operator's time zone, UTC)."""
        return f"0 {self.schedule}"
