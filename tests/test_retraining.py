"""Retraining triggers (issue 13, item 2; docs/decisions/0016-retraining-trigger.md).

The plan: with retraining on for energy and neo, the receiver, its RBAC (Jobs: create/get/list, in
the workloads namespace only), its CronJobs and its Alertmanager route are declared and validate,
and the Job template it starts is the workload's own training Job. The process: the real receiver
(modules/retraining/image/mlops_retrain.py) behind a real Alertmanager running the plan's routing,
creating Jobs in a local stand-in for the Kubernetes API (the only thing that cannot run here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from infra.images import local_builds
from infra.settings import ConfigError, parse_stack_config
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import _core_problems, validate_plan
from modules.monitoring.alerting import CONFIG_NAME
from modules.monitoring.pushgateway import PORT as PUSHGATEWAY_PORT
from tests.footprint_measure import pss_mib
from tests.retraining_stack import (NS, Endpoint, KubernetesStandIn, alertmanager_process, counter, http,
                                    kubernetes_stand_in, models_config, receiver_process, wait_until)
from tests.test_alerting import post_alerts

DIGEST = "sha256:" + "ab" * 32
# where every retraining's gate pushes its outcome (retraining_gate_timestamp_seconds)
PROMOTE_DAYS = {"name": "PROMOTE_DAYS", "value": "7"}  # energy's default
GATE_PUSH = {"name": "PUSHGATEWAY_URL", "value": f"http://pushgateway.monitoring.svc.cluster.local:{PUSHGATEWAY_PORT}"}
WORKLOADS = {
    "energy": {"enabled": True, "image": {"repository": "ghcr.io/my-org/energy", "tag": "3f2c1ab", "digest": DIGEST},
               "retrain": {"schedule": "0 3 * * 0", "newData": {"schedule": "30 10 * * *", "minRows": 720},
                           "qualityDrop": True, "drift": True, "cooldownMinutes": 120}},
    "neo": {"enabled": True, "image": {"repository": "ghcr.io/my-org/neo", "tag": "3f2c1ab", "digest": DIGEST},
            "dataUrl": "https://data.example.org/nasa.csv",
            "retrain": {"qualityDrop": True, "newData": {"schedule": "0 7 * * *"}, "promoteMargin": 0.01}},
}


@pytest.fixture(scope="module")
def plan() -> Plan:
    values, secret_keys = stack_config("dev")
    return run_program("dev", ({**values, "mlops-stack:workloads": json.dumps(WORKLOADS)}, secret_keys),
                       reveal_secrets=True)


# --- the plan -------------------------------------------------------------------------------------


def test_off_by_default(plan_of):
    assert not [o for o in plan_of("dev").kubernetes_objects if "retrain" in o["metadata"]["name"]
                and o["metadata"]["name"] != "dashboard-retraining"]  # the dashboard is on every stack
    spec = plan_of("dev").manifest("AlertmanagerConfig", CONFIG_NAME, "monitoring")["spec"]
    assert "mlops-retraining" not in json.dumps(spec)


def test_the_receiver_its_rbac_and_cronjobs_are_declared_and_validate(plan):
    names = {(o["kind"], o["metadata"]["name"]) for o in plan.kubernetes_objects
             if o["metadata"].get("namespace") == NS}
    assert {("Deployment", "retraining"), ("Service", "retraining"), ("ServiceAccount", "retraining"),
            ("Role", "retraining"), ("RoleBinding", "retraining"), ("ServiceMonitor", "retraining"),
            ("NetworkPolicy", "retraining-ingress"), ("ConfigMap", "retraining-models"),
            ("CronJob", "energy-retrain-schedule"), ("CronJob", "energy-retrain-newdata"),
            ("CronJob", "neo-retrain-newdata")} <= names
    assert ("CronJob", "neo-retrain-schedule") not in names  # neo retrains on its quality alert only
    report = validate_plan(plan, "1.34")
    assert report.ok, report.render()
    for name, schedule in (("energy-retrain-schedule", "0 3 * * 0"), ("energy-retrain-newdata", "30 10 * * *")):
        spec = plan.manifest("CronJob", name, NS)["spec"]
        assert (spec["schedule"], spec["concurrencyPolicy"], spec["timeZone"]) == (schedule, "Forbid", "Europe/Madrid")
    [check] = plan.manifest("CronJob", "energy-retrain-newdata", NS)["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"]
    assert check["command"][2:] == ["check-energy", "--url", "http://retraining.ml-workloads.svc.cluster.local:8080"
                                    "/trigger", "--model", "energy-forecast", "--min-rows", "720"]
    assert {e["name"] for e in check["env"]} >= {"DATABASE_URL", "MLFLOW_TRACKING_PASSWORD"}
    assert all("value" not in e for e in check["env"] if e["name"] in ("DATABASE_URL", "MLFLOW_TRACKING_PASSWORD"))


def test_neos_new_data_check_runs_in_its_training_container(plan):
    """The digest must be computed by the code that logged the champion's: the neo image, its env."""
    cron = plan.manifest("CronJob", "neo-retrain-newdata", NS)["spec"]
    assert cron["schedule"] == "0 7 * * *"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    [check] = pod["containers"]
    [train] = plan.manifest("Job", "neo-train", NS)["spec"]["template"]["spec"]["containers"]
    assert check["image"] == train["image"] and check["env"] == train["env"]  # NEO_DATA, MLflow's Secret
    assert check["command"] == ["python", "-m", "workloads.neo.data", "check", "--url",
                                "http://retraining.ml-workloads.svc.cluster.local:8080/trigger", "--model", "NEOs"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False

def test_energy_asks_its_shadow_gate_again_daily_for_a_retrained_challenger(plan):
    """Right after a retraining the challenger has no shadow days: the gate is asked with the monitor."""
    cron = plan.manifest("CronJob", "energy-retrain-promote", NS)["spec"]
    assert cron["schedule"] == plan.manifest("CronJob", "energy-monitor", NS)["spec"]["schedule"]
    [gate] = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    [train] = plan.manifest("Job", "energy-train", NS)["spec"]["template"]["spec"]["containers"]
    assert gate["command"] == ["python", "-m", "workloads.common.retrained", "energy", "--pending"]
    assert gate["image"] == train["image"]
    assert gate["env"] == [*train["env"], {"name": "PROMOTE_MARGIN", "value": "0"}, PROMOTE_DAYS, GATE_PUSH]
    assert ("CronJob", "neo-retrain-promote") not in {(o["kind"], o["metadata"]["name"]) for o in plan.kubernetes_objects}


def test_without_energy_the_gate_still_has_a_pushgateway_to_report_to():
    values, secret_keys = stack_config("dev")
    workloads = {"neo": {**WORKLOADS["neo"], "retrain": {"schedule": "0 3 * * 0"}}}
    plan = run_program("dev", ({**values, "mlops-stack:workloads": json.dumps(workloads)}, secret_keys))
    assert plan.manifest("Deployment", "pushgateway", "monitoring")
    [neo] = models_config(plan).values()
    assert GATE_PUSH in neo["promote"]["env"]


def test_the_role_grants_only_jobs_create_get_list_in_the_workloads_namespace(plan):
    role = plan.manifest("Role", "retraining", NS)
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list"]}]
    binding = plan.manifest("RoleBinding", "retraining", NS)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "retraining"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "retraining", "namespace": NS}]
    assert not [o for o in plan.kubernetes_objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
                and "retrain" in o["metadata"]["name"]]
    pod = plan.manifest("Deployment", "retraining", NS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "retraining"


@pytest.mark.parametrize(("model", "job"), [("energy-forecast", "energy-train"), ("NEOs", "neo-train")])
def test_the_job_template_is_the_workloads_training_job(plan, model, job):
    declared = plan.manifest("Job", job, NS)
    template = models_config(plan)[model]["job"]
    assert _core_problems(template, "1.34") == []
    assert template["spec"] == declared["spec"]
    assert template["metadata"] == {k: declared["metadata"][k] for k in ("name", "namespace", "labels")}


def test_quality_and_drift_alerts_also_go_to_the_receiver_first(plan):
    spec = plan.manifest("AlertmanagerConfig", CONFIG_NAME, "monitoring")["spec"]
    [receiver] = [r for r in spec["receivers"] if r["name"] == "mlops-retraining"]
    assert receiver["webhookConfigs"][0]["url"] == "http://retraining.ml-workloads.svc.cluster.local:8080/alerts"
    ours = [r for r in spec["route"]["routes"] if r["receiver"] == "mlops-retraining"]
    assert [({m["name"]: m["value"] for m in r["matchers"]}, r["continue"]) for r in ours] == [
        ({"alertname": "ModelQualityDegraded", "model": "NEOs|energy-forecast"}, True),
        ({"alertname": "ModelDrift", "model": "energy-forecast"}, True)]


def dev_raw(workloads: dict[str, Any]) -> dict[str, Any]:
    return {"platform": "minikube", "environment": "dev", "workloads": workloads}


@pytest.mark.parametrize(("workloads", "error"), [
    ({"energy": {"retrain": {"newData": {"schedule": "0 6 * * *"}}}},
     "workloads.energy.retrain: .*newData.minRows is required"),
    ({"mnist": {"retrain": {"newData": {"schedule": "0 6 * * *"}}}}, "workloads.mnist.retrain: .*allowed null"),
    ({"neo": {"retrain": {"newData": {"schedule": "0 6 * * *", "minRows": 10}}}},
     "workloads.neo.retrain: .*minRows is 10.*allowed null"),
    ({"neo": {"retrain": {"promoteMargin": -0.1}}}, "workloads.neo.retrain.promoteMargin: got -0.1"),
    ({"neo": {"retrain": {"schedule": "every day"}}}, "workloads.neo.retrain.schedule: got \"every day\""),
    ({"neo": {"retrain": {"cooldownMinutes": 20000}}}, "workloads.neo.retrain.cooldownMinutes: got 20000"),
])
def test_bad_retrain_config_names_the_key(workloads, error):
    with pytest.raises(ConfigError, match=error):
        parse_stack_config(dev_raw(workloads), set())


# --- the receiver behind a real Alertmanager ------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in() -> Iterator[KubernetesStandIn]:
    with kubernetes_stand_in() as server:
        yield server


@pytest.fixture(scope="module")
def receiver(plan, stand_in, tmp_path_factory) -> Iterator[Endpoint]:
    with receiver_process(models_config(plan), stand_in.url, tmp_path_factory.mktemp("retraining")) as url:
        yield url


@pytest.fixture(scope="module")
def alertmanager(plan, receiver, tmp_path_factory) -> Iterator[str]:
    with alertmanager_process(plan, receiver, tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


def quality_alert(model: str, **labels: str) -> dict[str, str]:
    """ModelQualityDegraded as modules/monitoring/rules/quality.yaml produces it."""
    return {"alertname": "ModelQualityDegraded", "severity": "warning", "model": model, "metric": "mape", **labels}


def test_a_quality_alert_starts_one_job_and_a_second_is_deduplicated(alertmanager, receiver, stand_in, plan):
    post_alerts(alertmanager, quality_alert("energy-forecast", alias="champion"))
    wait_until(lambda: stand_in.of("energy-forecast"), "a retraining Job for energy-forecast")
    [job] = stand_in.of("energy-forecast")
    assert _core_problems({k: v for k, v in job.items() if k != "status"} | {
        "metadata": {k: v for k, v in job["metadata"].items() if k not in ("creationTimestamp", "uid")}}, "1.34") == []
    assert job["metadata"]["name"].startswith("energy-train-qualitydrop-")
    assert job["metadata"]["labels"]["mlops-stack/retrain-trigger"] == "qualityDrop"
    # promote is on by default: the training runs first (an init container), then the gate
    pod = job["spec"]["template"]["spec"]
    declared = plan.manifest("Job", "energy-train", NS)["spec"]["template"]["spec"]
    *init, train = pod["initContainers"]
    assert init == declared["initContainers"] and train["command"] == declared["containers"][0]["command"]
    name = job["metadata"]["name"]
    ours = [{"name": "RETRAIN_TRIGGER", "value": "qualityDrop"}, {"name": "RETRAIN_JOB", "value": name},
            {"name": "MLFLOW_RUN_CONTEXT", "value": json.dumps({"retrain.job": name})}]
    assert train["env"] == [*declared["containers"][0]["env"], *ours]
    [gate] = pod["containers"]
    assert (gate["name"], gate["image"], gate["command"]) == (
        "promote", train["image"], ["python", "-m", "workloads.common.retrained", "energy"])
    assert gate["env"] == [*train["env"], {"name": "PROMOTE_MARGIN", "value": "0"}, PROMOTE_DAYS, GATE_PUSH]

    # a second alert of the same model (the challenger's) while that Job runs: no second Job
    post_alerts(alertmanager, quality_alert("energy-forecast", alias="challenger"))
    wait_until(lambda: counter(receiver, "energy-forecast", "qualityDrop", "deduplicated") >= 1,
               "the second alert deduplicated")
    assert len(stand_in.of("energy-forecast")) == 1
    assert counter(receiver, "energy-forecast", "qualityDrop", "started") == 1


def outcome(receiver: str, model: str, trigger: str) -> tuple[int, str]:
    status, body = http(f"{receiver}/trigger", {"model": model, "trigger": trigger, "reason": "test"})
    return status, json.loads(body)["outcomes"][0]["outcome"]


def test_a_finished_job_still_cools_down_and_unknown_models_start_nothing(receiver, stand_in):
    assert outcome(receiver, "energy-forecast", "schedule")[1] in ("started", "deduplicated")  # this file's first Job
    stand_in.complete("energy-forecast")
    assert outcome(receiver, "energy-forecast", "schedule") == (200, "cooling_down")  # cool-down 120 min
    assert outcome(receiver, "mnist", "schedule") == (200, "unknown_model")
    assert outcome(receiver, "NEOs", "drift") == (200, "unknown_model")  # neo retrains on qualityDrop only
    assert http(f"{receiver}/trigger", {"model": "NEOs", "trigger": "whenever"})[0] == 400
    assert len(stand_in.of("energy-forecast")) == 1 and stand_in.of("mnist") == []


def test_a_failing_api_answers_500_and_alertmanager_retries_until_the_job_exists(alertmanager, receiver, stand_in):
    stand_in.failures = 1
    post_alerts(alertmanager, quality_alert("NEOs", metric="f1", version="3"))
    wait_until(lambda: stand_in.of("NEOs"), "the NEOs Job after Alertmanager's retry")
    assert stand_in.refused == 1 and len(stand_in.of("NEOs")) == 1
    [gate] = stand_in.of("NEOs")[0]["spec"]["template"]["spec"]["containers"]
    assert gate["command"][-1] == "neo" and {"name": "PROMOTE_MARGIN", "value": "0.01"} in gate["env"]
    assert counter(receiver, "NEOs", "qualityDrop", "failed") == 1
    assert counter(receiver, "NEOs", "qualityDrop", "started") == 1


def test_make_up_builds_the_receiver_image_only_where_a_workload_retrains():
    on = parse_stack_config(dev_raw({"energy": {"enabled": True, "retrain": {"qualityDrop": True}}}), set())
    assert "mlops-stack/retraining:0.1.0" in {b.ref for b in local_builds(on)}
    off = parse_stack_config(dev_raw({"energy": {"enabled": True}}), set())
    assert not [b for b in local_builds(off) if "retraining" in b.ref]


def test_the_receiver_fits_its_memory_limit(receiver, plan):
    """PSS of the receiver process after the requests above, against the limit the plan declares."""
    [container] = plan.manifest("Deployment", "retraining", NS)["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert pss_mib(receiver.pid) < 256
