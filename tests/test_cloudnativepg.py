"""PostgreSQL on in-cluster stacks: one CloudNativePG code path (1 instance on dev, 3 with a
synchronous standby on prod), WAL archive and base backups to the backups bucket, an external
server instead, and the config combinations that cannot work."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.settings import ConfigError, config_warnings, parse_stack_config
from mlops.crds import validate_custom_resource
from mlops.integrity import CHART_CRD_GROUPS
from mlops.plan import Plan, run_program, stack_config
from modules.database.backup import ACCESS_KEY_ID, ACCESS_SECRET_KEY, BackupTarget
from tests.services import Postgres, mlflow_server, postgres, s3_api
from tests.tools import require_tool

NS = "mlops-platform"
FULL = Path(__file__).parent / "stacks"
RELEASE = "kubernetes:helm.sh/v3:Release"
EXTERNAL = {"host": "pg.db.example.org", "port": 5433, "sslmode": "verify-full", "username": "mlflow_app",
            "password": "external-pw"}


def cluster(plan: Plan) -> dict[str, Any]:
    return plan.manifest("Cluster", "postgres", NS)


def resource(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    [found] = [r for r in plan.resources if (m := r.get("manifest")) and m["kind"] == kind
               and m["metadata"]["name"] == name]
    return found


def waits_for(plan: Plan, urn: str, on: str) -> bool:
    edges = {r["urn"]: set(r.get("depends_on") or ()) for r in plan.resources}
    seen, todo = set(), [urn]
    while todo:
        current = todo.pop()
        if current == on:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, ()))
    return False


@pytest.fixture(scope="module")
def full() -> Plan:
    return run_program("full", stack_config("full", FULL), reveal_secrets=True)


def test_prod_has_three_instances_on_different_nodes_with_a_synchronous_standby(plan_of):
    spec = cluster(plan_of("onprem"))["spec"]
    assert spec["instances"] == 3
    assert spec["affinity"] == {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname",
                                "podAntiAffinityType": "required"}
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}
    # the operator makes the PDBs (primary: minAvailable 1; replicas: instances - 2) when enablePDB
    assert spec["enablePDB"] is True
    assert spec["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:") and "-system-" in spec["imageName"]


def test_prod_archives_wal_and_takes_base_backups_to_the_backups_bucket(full):
    spec = cluster(full)["spec"]
    backup = spec["backup"]
    store = backup["barmanObjectStore"]
    assert store["destinationPath"] == "s3://backups/postgres" and store["serverName"] == "postgres"
    assert store["endpointURL"] == f"http://seaweedfs.{NS}.svc.cluster.local:8333"
    assert store["wal"]["compression"] == "gzip"
    assert backup["retentionPolicy"] == "30d"
    assert spec["postgresql"]["parameters"]["archive_timeout"] == "5min"
    # the keys the operator reads exist, and the object store grants the backup identity the bucket
    # (the mocks give every generated key the same value, so the pairing is the module's, not checked here)
    creds = store["s3Credentials"]
    secret = full.manifest("Secret", creds["accessKeyId"]["name"], NS)["stringData"]
    assert creds["accessKeyId"]["key"] == ACCESS_KEY_ID and creds["secretAccessKey"]["key"] == ACCESS_SECRET_KEY
    assert set(secret) == {ACCESS_KEY_ID, ACCESS_SECRET_KEY}
    s3 = json.loads(full.manifest("Secret", "seaweedfs-s3-config", NS)["stringData"]["config.json"])
    [identity] = [i for i in s3["identities"] if i["name"] == "postgres-backup"]
    assert {"Write:backups", "Read:backups", "List:backups"} <= set(identity["actions"])
    scheduled = full.manifest("ScheduledBackup", "postgres-base", NS)["spec"]
    assert scheduled["schedule"] == "0 0 2 * * *" and scheduled["cluster"] == {"name": "postgres"}
    assert scheduled["method"] == "barmanObjectStore"


def test_backup_target_is_what_the_cluster_archives_to(full):
    """The one description the restore tools read yields the plan's values."""
    target = BackupTarget(bucket="backups", server_name="postgres", endpoint_url=None, schedule="0 2 * * *",
                          retention_days=30)
    store = cluster(full)["spec"]["backup"]["barmanObjectStore"]
    assert store["s3Credentials"]["accessKeyId"]["name"] == target.credentials_secret
    assert target.retention_policy == cluster(full)["spec"]["backup"]["retentionPolicy"]
    assert target.cnpg_schedule == full.manifest("ScheduledBackup", "postgres-base", NS)["spec"]["schedule"]
    assert store["wal"]["compression"] == target.wal_compression


def test_dev_runs_one_instance_without_pdb_or_backups(plan_of):
    plan = plan_of("dev")
    spec = cluster(plan)["spec"]
    assert spec["instances"] == 1 and spec["enablePDB"] is False
    assert "backup" not in spec and "synchronous" not in spec["postgresql"]
    assert not [o for o in plan.kubernetes_objects if o["kind"] in ("ScheduledBackup", "StatefulSet")
                and o["metadata"]["name"].startswith("postgres")]


@pytest.mark.parametrize("stack", ["dev", "onprem"])
def test_cluster_waits_for_the_pinned_operator_and_is_protected_outside_dev(stack, plan_of):
    plan = plan_of(stack)
    [operator] = [r for r in plan.of_type(RELEASE) if r["inputs"]["chart"] == "cloudnative-pg"]
    assert operator["inputs"]["version"] == "0.29.0"
    assert "postgresql.cnpg.io" in CHART_CRD_GROUPS["cloudnative-pg"]
    found = resource(plan, "Cluster", "postgres")
    assert waits_for(plan, found["urn"], operator["urn"])
    assert found["protect"] is (stack != "dev")


def test_operator_metrics_reach_prometheus_as_job_postgres(plan_of):
    plan = plan_of("dev")
    service = plan.manifest("Service", "postgres", NS)
    assert service["spec"]["selector"] == {"cnpg.io/cluster": "postgres"}
    monitor = plan.manifest("ServiceMonitor", "postgres", NS)["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ingress = plan.manifest("NetworkPolicy", "postgres-ingress", NS)["spec"]["ingress"]
    assert {"port": 9187, "protocol": "TCP"} in ingress[-1]["ports"]


def with_database(stack: str, database: dict[str, Any], secret: bool = True) -> Plan:
    values, secret_keys = stack_config(stack)
    merged = {**json.loads(values.get("mlops-stack:database", "{}")), **database}
    keys = [*secret_keys, "mlops-stack:database"] if secret else secret_keys
    return run_program(stack, ({**values, "mlops-stack:database": json.dumps(merged)}, keys), reveal_secrets=True)


def test_external_database_makes_no_server_and_points_everything_at_it():
    plan = with_database("onprem", {"external": EXTERNAL})
    assert not [o for o in plan.kubernetes_objects if o["kind"] in ("Cluster", "ScheduledBackup", "StatefulSet")
                and o["metadata"]["name"].startswith("postgres")]
    assert not [r for r in plan.of_type(RELEASE) if r["inputs"]["chart"] == "cloudnative-pg"]
    job = plan.manifest("Job", "postgres-databases", NS)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in job["env"]}
    assert (env["PGHOST"], env["PGPORT"], env["PGSSLMODE"]) == ("pg.db.example.org", "5433", "verify-full")
    credentials = plan.manifest("Secret", "postgres-credentials", NS)["stringData"]
    assert credentials == {"username": "mlflow_app", "password": "external-pw"}
    uri = plan.manifest("Secret", "mlflow-server", "mlflow")["stringData"]["backend-store-uri"]
    assert uri == "postgresql+psycopg2://mlflow_app:external-pw@pg.db.example.org:5433/mlruns?sslmode=verify-full"
    assert not [m for m in plan.kubernetes_objects if m["kind"] == "ServiceMonitor"
                and m["metadata"]["name"] == "postgres"]


def problems(raw: dict[str, Any], secret_top: set[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, secret_top or set())
    return error.value.problems


ONPREM = {"platform": "existing", "environment": "prod", "kubernetes": {"context": "c"},
          "images": {"registry": "registry.example.org/mlops"}}


def test_more_synchronous_standbys_than_instances_is_an_error():
    [problem] = problems({**ONPREM, "database": {"instances": 2, "synchronous": 2}})
    assert "synchronous 2 needs at least 3 instances" in problem and "database" in problem


def test_external_without_credentials_is_an_error():
    external = {k: v for k, v in EXTERNAL.items() if k != "password"}
    [problem] = problems({**ONPREM, "database": {"external": external}}, {"database"})
    assert "database.external.password" in problem


def test_external_password_in_plain_text_is_an_error():
    [problem] = problems({**ONPREM, "database": {"external": EXTERNAL}})
    assert "database.external.password: stored in plain text" in problem


def test_external_database_on_a_cloud_is_an_error():
    raw = {"platform": "gke", "environment": "dev", "gcp": {"project": "my-project-1", "region": "europe-west1",
                                                             "zone": "b"}, "database": {"external": EXTERNAL}}
    found = problems(raw, {"database"})
    assert any("database.external" in p and "allowed on minikube and existing only" in p for p in found), found


def test_backup_time_zone_other_than_utc_is_an_error_in_cluster():
    [problem] = problems({**ONPREM, "database": {"backup": {"timeZone": "Europe/Madrid"}}})
    assert "database.backup.timeZone" in problem and "Etc/UTC" in problem


def test_three_instances_on_minikube_are_a_warning_or_an_error_with_required_anti_affinity():
    minikube = {"platform": "minikube", "environment": "dev"}
    config = parse_stack_config({**minikube, "database": {"instances": 3}})
    [warning] = [w for w in config_warnings(config) if "database." in w]
    assert "database.instances: 3 instances on minikube's one node" in warning
    assert not [w for w in config_warnings(parse_stack_config(minikube)) if "database." in w]
    [problem] = problems({**minikube, "database": {"instances": 3, "antiAffinity": "required"}})
    assert "database.antiAffinity" in problem and "2 of 3 instances would never schedule" in problem


@pytest.mark.parametrize("where, field", [
    (("spec", "backup", "barmanObjectStore"), "retentionPolicy"),  # belongs to spec.backup
    (("spec", "affinity"), "antiAffinity"),
])
def test_misplaced_cluster_fields_are_rejected_by_the_crd_schema(plan_of, where, field):
    """The bad fixtures of the CRD check the plan passes (`mlops validate`)."""
    obj = copy.deepcopy(cluster(plan_of("onprem")))
    assert validate_custom_resource(obj) == []
    node = obj
    for key in where:
        node = node[key]
    node[field] = "x"
    errors = validate_custom_resource(obj)
    assert errors and field in errors[0], errors


def test_backup_target_schedule_has_seconds_and_rejects_nothing_silently():
    target = BackupTarget(bucket=pulumi.Output.from_input("b"), server_name="postgres", endpoint_url=None,
                          schedule="30 0 * * *", retention_days=7)
    assert target.cnpg_schedule == "0 30 0 * * *" and target.retention_policy == "7d"


# ---- the migration from the StatefulSet: pg_dump of each database, pg_restore into the Cluster ----

def dump_and_restore(source: Postgres, target: Postgres, databases: tuple[str, ...]) -> None:
    """The runbook's procedure (docs/runbooks.md "Moving from the StatefulSet to CloudNativePG"):
    custom-format dumps without owners/ACLs, restored as the Cluster's owner in one transaction each,
    replacing what MLflow created on the empty Cluster (--clean)."""
    pg_dump, pg_restore = require_tool("pg_dump", "PostgreSQL client"), require_tool("pg_restore", "PostgreSQL client")
    work = Path(tempfile.mkdtemp(prefix="mlops-migrate-"))
    try:
        for db in databases:
            dump = work / f"{db}.dump"
            subprocess.run([pg_dump, "--format=custom", "--no-owner", "--no-acl", f"--file={dump}",
                            f"--dbname=postgresql://{source.user}:{source.password}@{source.host}:{source.port}/{db}"],
                           check=True, capture_output=True)
            subprocess.run([pg_restore, "--no-owner", "--no-acl", "--single-transaction", "--exit-on-error",
                            "--clean", "--if-exists",
                            f"--dbname=postgresql://{target.user}:{target.password}@{target.host}:{target.port}/{db}",
                            str(dump)], check=True, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_statefulset_data_moves_to_the_cluster_and_mlflow_sees_runs_models_and_aliases(plan_of, monkeypatch):
    from mlflow import MlflowClient

    spec = cluster(plan_of("onprem"))["spec"]
    owner, database = spec["bootstrap"]["initdb"]["owner"], spec["bootstrap"]["initdb"]["database"]
    job = plan_of("onprem").manifest("Job", "postgres-databases", NS)["spec"]["template"]["spec"]["containers"][0]
    databases = (database, *next(e["value"] for e in job["env"] if e["name"] == "DATABASES").split())
    with s3_api(("mlflow-artifacts",)) as s3:
        # the StatefulSet's server: superuser-owned databases, as its docker-entrypoint made them
        with postgres(databases, "mlflow", "old-password") as old, \
                postgres(databases, owner, "cluster-password") as new:
            with mlflow_server(old, s3, "mlflow-artifacts", database, databases[1]) as server:
                monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
                monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
                client = MlflowClient(server.url)
                experiment = client.create_experiment("migration")
                runs = []
                for i in range(3):
                    run = client.create_run(experiment)
                    client.log_metric(run.info.run_id, "rmse", 0.5 - i / 10)
                    client.set_terminated(run.info.run_id)
                    runs.append(run.info.run_id)
                client.create_registered_model("NEOs")
                version = client.create_model_version("NEOs", f"runs:/{runs[2]}/model", runs[2]).version
                client.set_registered_model_alias("NEOs", "champion", version)
            # step 3: `pulumi up` started MLflow on the new, empty Cluster, which migrated its schema
            subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", new.uri(database)], check=True,
                           capture_output=True)
            dump_and_restore(old, new, databases)  # MLflow is stopped: no write after the dump
            with mlflow_server(new, s3, "mlflow-artifacts", database, databases[1]) as server:
                monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
                monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
                client = MlflowClient(server.url)
                found = client.search_runs([experiment], order_by=["metrics.rmse ASC"])
                assert [r.info.run_id for r in found] == list(reversed(runs))
                assert [r.data.metrics["rmse"] for r in found] == pytest.approx([0.3, 0.4, 0.5])
                champion = client.get_model_version_by_alias("NEOs", "champion")
                assert (champion.version, champion.run_id) == (version, runs[2])
