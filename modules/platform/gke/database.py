"""Cloud SQL for PostgreSQL on a private IP only, with TLS required, backups and PITR as configured.

MLflow's databases (tracking and auth) and its user are created through the Cloud SQL API, so no
SQL runs at deploy time; the host the platform hands out resolves only once all of them exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from modules.platform.cloud import PORT, ManagedPostgresSpec, ready_value
from modules.platform.contract import Database
from modules.platform.gke.names import unique_name

Retention = gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs
# Transaction logs kept for point-in-time recovery, at most (Cloud SQL limits per edition)
MAX_LOG_DAYS = {"ENTERPRISE": 7, "ENTERPRISE_PLUS": 35}


@dataclass(frozen=True)
class CloudSqlArgs:
    name: str
    region: str
    spec: ManagedPostgresSpec
    edition: str
    network: pulumi.Input[str]  # VPC with private services access
    private_services: pulumi.Resource  # the peering the private IP comes through
    labels: Mapping[str, str]
    protect: bool


class CloudSqlPostgres(pulumi.ComponentResource):
    database: Database

    def __init__(self, name: str, args: CloudSqlArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:CloudSqlPostgres", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=stateful)
        pitr = spec.point_in_time_recovery or spec.high_availability  # HA on PostgreSQL requires PITR
        backups = max(spec.backup_days, 2) if pitr else spec.backup_days  # must exceed the log days
        instance = gcp.sql.DatabaseInstance(
            name,
            name=unique_name(name, args.name, stateful),  # a deleted instance's name is taken for a week
            region=args.region,
            database_version=spec.version,
            deletion_protection=args.protect,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=spec.size,
                edition=args.edition,  # PostgreSQL 16+ defaults to Enterprise Plus, which refuses custom tiers
                availability_type="REGIONAL" if spec.high_availability else "ZONAL",
                disk_type="PD_SSD",
                disk_size=spec.storage_gi,
                disk_autoresize=True,
                deletion_protection_enabled=args.protect,
                ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                    ipv4_enabled=False, private_network=args.network, ssl_mode="ENCRYPTED_ONLY"),
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    point_in_time_recovery_enabled=pitr,
                    transaction_log_retention_days=min(MAX_LOG_DAYS[args.edition], backups - 1) if pitr else None,
                    backup_retention_settings=Retention(retained_backups=backups, retention_unit="COUNT"),
                ),
                maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                    day=7, hour=3, update_track="stable"),
                user_labels=dict(args.labels),
            ),
            # the disk grows by itself; a smaller configured size must not shrink (replace) it
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=[args.private_services],
                                        ignore_changes=["settings.diskSize"]),
        )
        user = gcp.sql.User(
            f"{name}-user", instance=instance.name, name=spec.username, password=password.result,
            deletion_policy="ABANDON",  # PostgreSQL users owning objects cannot be dropped through the API
            opts=child)
        databases = [
            gcp.sql.Database(f"{name}-{db.replace('_', '-')}", instance=instance.name, name=db, opts=stateful)
            for db in (spec.database, *spec.extra_databases)
        ]
        self.database = Database(
            host=ready_value(instance.private_ip_address, user, *databases),
            port=PORT,
            name=spec.database,
            username=spec.username,
            password=pulumi.Output.secret(password.result),
            sslmode="require",
            extra_databases=tuple(spec.extra_databases),
        )
        self.register_outputs({"host": self.database.host})
