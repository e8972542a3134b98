"""The recovery point objective each stack's settings imply (`mlops.restore.recovery_points`), read
from the offline plans: the README's RPO figures come from this function, not from prose."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest

from mlops.restore import RestoreError, pg_duration, recovery_points


def by_source(resources: list[dict]) -> dict[str, object]:
    return {p.source: p for p in recovery_points(resources)}


def test_postgresql_time_settings_are_read_with_their_units() -> None:
    assert pg_duration("5min") == timedelta(minutes=5)
    assert pg_duration("300") == pg_duration(300) == timedelta(minutes=5)
    assert pg_duration("1h") == timedelta(hours=1) and pg_duration("1500ms") == timedelta(seconds=1.5)
    with pytest.raises(RestoreError, match="not a PostgreSQL time setting"):
        pg_duration("5 minutes")


def test_onprem_loses_at_most_archive_timeout_but_nothing_survives_the_cluster(plan_of) -> None:
    points = by_source(plan_of("onprem").resources)
    assert points["archive"].rpo == timedelta(minutes=5) and points["archive"].survives == "the database"
    assert "'30 0 * * *'" in points["archive"].basis and "24 h of WAL" in points["archive"].basis
    assert points["off-cluster copy"].rpo is None  # onprem sets no database.backup.offsite


def test_the_off_cluster_copy_adds_its_schedule_to_the_archive_timeout() -> None:
    from mlops.plan import run_program, stack_config

    resources = run_program("full", stack_config("full", Path(__file__).parent / "stacks")).resources
    points = by_source(resources)
    assert points["off-cluster copy"].rpo == timedelta(minutes=5) + timedelta(hours=1)  # "30 * * * *"
    job = next(r for r in resources if (r.get("manifest") or {}).get("kind") == "CronJob"
               and r["manifest"]["metadata"]["name"] == "offsite-copy")
    job["manifest"]["spec"]["schedule"] = "30 */6 * * *"
    cluster = next(r for r in resources if (r.get("manifest") or {}).get("kind") == "Cluster")
    cluster["manifest"]["spec"]["postgresql"]["parameters"]["archive_timeout"] = "60"
    points = by_source(resources)
    assert points["archive"].rpo == timedelta(minutes=1)
    assert points["off-cluster copy"].rpo == timedelta(hours=6, minutes=1)


def test_dev_keeps_no_backup(plan_of) -> None:
    assert [(p.source, p.rpo) for p in recovery_points(plan_of("dev").resources)] == [("archive", None)]


def test_managed_databases_follow_the_providers_log_upload_when_the_plan_turns_pitr_on(plan_of) -> None:
    gke, eks = plan_of("gke").resources, plan_of("eks").resources
    assert by_source(gke)["Cloud SQL"].rpo == by_source(eks)["RDS"].rpo == timedelta(minutes=5)
    gke, eks = copy.deepcopy(gke), copy.deepcopy(eks)
    instance = next(r for r in gke if r["type"] == "gcp:sql/databaseInstance:DatabaseInstance")
    instance["inputs"]["settings"]["backupConfiguration"]["pointInTimeRecoveryEnabled"] = False
    assert by_source(gke)["Cloud SQL"].rpo == timedelta(days=1)
    instance["inputs"]["settings"]["backupConfiguration"]["enabled"] = False
    assert by_source(gke)["Cloud SQL"].rpo is None
    next(r for r in eks if r["type"] == "aws:rds/instance:Instance")["inputs"]["backupRetentionPeriod"] = 0
    assert by_source(eks)["RDS"].rpo is None
