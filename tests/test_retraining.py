"""Retraining triggers (issue 13, item 2; docs/decisions/0016-retraining-trigger.md).

The plan: with retraining on for energy and neo, the receiver, its RBAC (Jobs: create/get/list, in
the workloads namespace only), its CronJobs and its Alertmanager route are declared and validate,
and the Job template it starts is the workload's own training Job. The process: the real receiver
(modules/retraining/image/mlops_retrain.py) behind a real Alertmanager running the plan's routing,
creating Jobs in a local stand-in for the Kubernetes API (the only thing that cannot run here).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from infra.images import local_builds
from infra.settings import ConfigError, parse_stack_config
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import _core_problems, validate_plan
from modules.monitoring.alerting import CONFIG_NAME
from tests.footprint_measure import pss_mib
from tests.services import free_port, stop, wait_http
from tests.test_alerting import operator_config, post_alerts
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = ROOT / "modules" / "retraining" / "image" / "mlops_retrain.py"
NS = "ml-workloads"
DIGEST = "sha256:" + "ab" * 32
WORKLOADS = {
    "energy": {"enabled": True, "image": {"repository": "ghcr.io/my-org/energy", "tag": "3f2c1ab", "digest": DIGEST},
               "retrain": {"schedule": "0 3 * * 0", "newData": {"schedule": "30 10 * * *", "minRows": 720},
                           "qualityDrop": True, "drift": True, "cooldownMinutes": 120}},
    "neo": {"enabled": True, "image": {"repository": "ghcr.io/my-org/neo", "tag": "3f2c1ab", "digest": DIGEST},
            "dataUrl": "https://data.example.org/nasa.csv", "retrain": {"qualityDrop": True}},
}


@pytest.fixture(scope="module")
def plan() -> Plan:
    values, secret_keys = stack_config("dev")
    return run_program("dev", ({**values, "mlops-stack:workloads": json.dumps(WORKLOADS)}, secret_keys),
                       reveal_secrets=True)


def models_config(plan: Plan) -> dict[str, Any]:
    return json.loads(plan.manifest("ConfigMap", "retraining-models", NS)["data"]["models.json"])


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
            ("CronJob", "energy-retrain-schedule"), ("CronJob", "energy-retrain-newdata")} <= names
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
    ({"neo": {"retrain": {"schedule": "every day"}}}, "workloads.neo.retrain.schedule: got \"every day\""),
    ({"neo": {"retrain": {"cooldownMinutes": 20000}}}, "workloads.neo.retrain.cooldownMinutes: got 20000"),
])
def test_bad_retrain_config_names_the_key(workloads, error):
    with pytest.raises(ConfigError, match=error):
        parse_stack_config(dev_raw(workloads), set())


# --- the receiver behind a real Alertmanager ------------------------------------------------------


class KubernetesStandIn(ThreadingHTTPServer):
    """The Jobs API of one namespace: records POSTed Jobs, answers label-selector lists; the next
    `failures` POSTs answer 500 (an API server that is briefly down)."""

    def __init__(self, port: int) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.refused = 0
        self.failures = 0
        self.lock = threading.Lock()
        server = self
        path = f"/apis/batch/v1/namespaces/{NS}/jobs"

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                assert url.path == path, url.path
                key, _, value = parse_qs(url.query)["labelSelector"][0].partition("=")
                with server.lock:
                    items = [j for j in server.jobs if j["metadata"]["labels"].get(key) == value]
                self._json(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items})

            def do_POST(self) -> None:  # noqa: N802
                assert urlparse(self.path).path == path, self.path
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    if server.failures:
                        server.failures -= 1
                        server.refused += 1
                        return self._json(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "message": "etcdserver: request timed out", "code": 500})
                    body["metadata"]["creationTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    body["metadata"]["uid"] = f"uid-{len(server.jobs)}"
                    server.jobs.append(body)
                self._json(201, body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)

    def of(self, model: str) -> list[dict[str, Any]]:
        with self.lock:
            return [j for j in self.jobs if j["metadata"]["labels"].get("mlops-stack/retrain-model") == model]

    def complete(self, model: str) -> None:
        with self.lock:
            for j in self.jobs:
                if j["metadata"]["labels"].get("mlops-stack/retrain-model") == model:
                    j["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}


def wait_until(found, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.1)


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[KubernetesStandIn]:
    server = KubernetesStandIn(free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class Endpoint(str):
    """A local server's URL, and the pid of its process."""

    pid: int


@pytest.fixture(scope="module")
def receiver(plan, stand_in, tmp_path_factory) -> Iterator[Endpoint]:
    """mlops_retrain.py serve with the plan's config, on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("retraining")
    (folder / "models.json").write_text(json.dumps(models_config(plan)))
    port = free_port()
    log = (folder / "receiver.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), "serve", "--config", str(folder / "models.json"), "--namespace", NS,
         "--host", "127.0.0.1", "--port", str(port), "--api-server", f"http://127.0.0.1:{stand_in.server_address[1]}"],
        stdout=log, stderr=subprocess.STDOUT)
    url = Endpoint(f"http://127.0.0.1:{port}")
    url.pid = process.pid
    try:
        try:
            wait_http(f"{url}/healthz", timeout=60, process=process)
        except (RuntimeError, TimeoutError):
            print((folder / "receiver.log").read_text())
            raise
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def alertmanager(plan, receiver, tmp_path_factory) -> Iterator[str]:
    """A real Alertmanager running the plan's routing (as the operator writes it), the receiver's
    in-cluster URL pointed at the local receiver and the group timers shortened."""
    binary = require_tool("prometheus-alertmanager", "a real Alertmanager (Debian prometheus-alertmanager)")
    folder = tmp_path_factory.mktemp("alertmanager")
    spec = copy.deepcopy(plan.manifest("AlertmanagerConfig", CONFIG_NAME, "monitoring")["spec"])
    spec["route"] |= {"groupWait": "1s", "groupInterval": "2s"}
    config = yaml.safe_dump(operator_config(spec, {}), sort_keys=False)
    config = config.replace("http://retraining.ml-workloads.svc.cluster.local:8080", receiver)
    (folder / "alertmanager.yml").write_text(config)
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(folder / "alertmanager.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/-/ready", timeout=60, process=process)
        except (RuntimeError, TimeoutError):
            print((folder / "alertmanager.log").read_text())
            raise
        yield url
    finally:
        stop(process)


def quality_alert(model: str, **labels: str) -> dict[str, str]:
    """ModelQualityDegraded as modules/monitoring/rules/quality.yaml produces it."""
    return {"alertname": "ModelQualityDegraded", "severity": "warning", "model": model, "metric": "mape", **labels}


def counter(receiver: str, model: str, trigger: str, outcome: str) -> float:
    text = http(f"{receiver}/metrics")[1]
    line = f'retraining_triggers_total{{model="{model}",outcome="{outcome}",trigger="{trigger}"}} '
    [value] = [row[len(line):] for row in text.splitlines() if row.startswith(line)]
    return float(value)


def test_a_quality_alert_starts_one_job_and_a_second_is_deduplicated(alertmanager, receiver, stand_in, plan):
    post_alerts(alertmanager, quality_alert("energy-forecast", alias="champion"))
    wait_until(lambda: stand_in.of("energy-forecast"), "a retraining Job for energy-forecast")
    [job] = stand_in.of("energy-forecast")
    assert _core_problems({k: v for k, v in job.items() if k != "status"} | {
        "metadata": {k: v for k, v in job["metadata"].items() if k not in ("creationTimestamp", "uid")}}, "1.34") == []
    assert job["metadata"]["name"].startswith("energy-train-qualitydrop-")
    assert job["metadata"]["labels"]["mlops-stack/retrain-trigger"] == "qualityDrop"
    [train] = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "RETRAIN_TRIGGER", "value": "qualityDrop"} in train["env"]
    declared = plan.manifest("Job", "energy-train", NS)["spec"]["template"]["spec"]
    assert [e for e in train["env"] if e["name"] != "RETRAIN_TRIGGER"] == declared["containers"][0]["env"]
    assert job["spec"]["template"]["spec"]["initContainers"] == declared["initContainers"]

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
