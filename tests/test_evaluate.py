"""The professor's evaluation, run for real: `mlops evaluate` against live local model servers.

- alice: a good NEO model, registered in a real MLflow server as `alice.neo` and served by the
  project's alias runtime in MLServer (what a tenant's SeldonDeployment runs), so its served
  version comes from the registry;
- bob: a worse NEO model (a depth-2 tree that sees one feature of the 22), stock MLServer;
- carol, dan, erin, frank: a tiny local HTTP server answering 500, non-JSON, the wrong number of
  predictions, and sleeping past the timeout;
- gina: a URL where nothing listens.

The run must rank alice above bob, score every broken model as failed with its reason, never
crash, log one MLflow run per model, push the gauges to a (recording) Pushgateway, and write a
self-contained HTML page; `mlops models` describes the live ones from their own metadata.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

from mlops import evaluate
from modules.serving.contract import RegistryAccess, RegistryAlias
from modules.serving.seldon import NODE, alias_env
from tests.runtimes import mlserver, mlserver_from_env
from tests.services import free_port, mlflow_server, postgres, s3_api
from workloads.neo import data as neo_data
from workloads.neo.model import SEED, TEST_SIZE
from workloads.neo.train import flavor_options

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 4.0  # per request; the slow model sleeps past it
MAX_FAILURES = 2
ROWS, BATCH = 160, 40
BROKEN = {"carol": "error", "dan": "garbage", "erin": "short", "frank": "slow"}
EXPECTED_REASON = {"carol": "http_error", "dan": "malformed", "erin": "malformed", "frank": "timeout",
                   "gina": "unreachable"}


# ----------------------------------------------------------------------- local broken servers

class _Broken(BaseHTTPRequestHandler):
    """Model endpoints that fail in each way a student's model can; also a Pushgateway that keeps
    what is pushed to it (PUT /metrics/job/…)."""

    pushed: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(500, b'{"error": "metadata unavailable"}')

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.path.startswith("/metrics/job/"):
            self.pushed.append((self.path, body))
            self._answer(200, b"")
        else:
            self._answer(404, b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = self.path.split("/")[3] if self.path.startswith("/v2/models/") else ""
        if kind == "error":
            self._answer(500, b'{"error": "Traceback: model exploded"}')
        elif kind == "garbage":
            self._answer(200, b"<html>surprise</html>", "text/html")
        elif kind == "short":
            self._answer(200, json.dumps({"outputs": [{"name": "p", "shape": [1], "datatype": "INT64",
                                                       "data": [1]}]}).encode())
        elif kind == "slow":
            time.sleep(TIMEOUT + 1)
            self._answer(200, b"{}")
        else:
            self._answer(404, b'{"error": "no such model"}')


@contextmanager
def broken_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Broken)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- real models

def _models():
    """A good and a worse classifier, both fitted on the training split only: the held-out rows the
    evaluation sends are the split neither has seen."""
    prepared = neo_data.preprocess(neo_data.load(neo_data.default_source()))
    X_train, _, y_train, _ = train_test_split(prepared.X, prepared.y, test_size=TEST_SIZE, stratify=prepared.y,
                                              random_state=SEED)
    good = RandomForestClassifier(n_estimators=20, max_features=None, random_state=0).fit(X_train, y_train)
    # the same 22 inputs (the served signature), but one of the two informative features reaches a stump
    crippled = ColumnTransformer([("kept", "passthrough", ["absolute_magnitude"])])
    stump = DecisionTreeClassifier(max_depth=2, class_weight="balanced", random_state=0)
    worse = make_pipeline(crippled, stump).fit(X_train, y_train)
    return good, worse, X_train.head(3)


def _enter(stack: ExitStack, *managers):
    """Start the servers side by side (each waits for its model to load), stop them all at the end."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
        values = []
        for manager, future in zip(managers, futures):
            values.append(future.result())
            stack.push(manager.__exit__)
    return values


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory):
    """MLflow (PostgreSQL + S3 API), the served models and the outputs file naming them."""
    good, worse, example = _models()
    work = tmp_path_factory.mktemp("evaluate")
    with ExitStack() as stack:
        db = stack.enter_context(postgres(("mlruns", "mlflow_auth")))
        s3 = stack.enter_context(s3_api(("mlflow-artifacts",)))
        server = stack.enter_context(mlflow_server(db, s3, "mlflow-artifacts"))
        tracking = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
                    "MLFLOW_TRACKING_PASSWORD": server.password}
        patch = stack.enter_context(pytest.MonkeyPatch.context())  # this module's MLflow clients log in
        for key, value in tracking.items():
            patch.setenv(key, value)
        client = MlflowClient(server.url)
        with mlflow.start_run(experiment_id=client.create_experiment("alice/neo")):
            info = mlflow.sklearn.log_model(good, name="model", registered_model_name="alice.neo",
                                            **flavor_options(good, example))
        client.set_registered_model_alias("alice.neo", "champion", info.registered_model_version)
        mlflow.sklearn.save_model(worse, work / "worse", **flavor_options(worse, example))
        env = _alias_env(server.url, server.username, server.password)
        alice, bob = _enter(stack, mlserver_from_env(env, f"/v2/models/{NODE}/ready"), mlserver(work / "worse", "neo"))
        broken = stack.enter_context(broken_server())
        outputs = {
            "modelUrls": {"mnist": f"http://127.0.0.1:{free_port()}/api/v1.0/predictions"},  # not a tenant's
            "tenantModelUrls": {
                "alice": {"neo": f"{alice.url}/v2/models/{NODE}/infer"},
                "bob": {"neo": f"{bob}/v2/models/neo/infer"},
                **{tenant: {"neo": f"{broken}/v2/models/{kind}/infer"} for tenant, kind in BROKEN.items()},
                "gina": {"neo": f"http://127.0.0.1:{free_port()}/v2/models/neo/infer"},
            },
        }
        (work / "outputs.json").write_text(json.dumps(outputs))
        yield {"work": work, "tracking": tracking, "outputs": outputs, "pushgateway": broken,
               "version": str(info.registered_model_version), "client": client}


def _alias_env(tracking_uri: str, username: str, password: str) -> dict[str, str]:
    """The alias model container's env as the stack declares it (modules/serving/seldon.py), its
    Secret resolved (here: the admin login), plus what Seldon's operator adds."""
    env = {}
    for entry in alias_env(RegistryAlias("alice.neo", "champion", poll_seconds=30),
                           RegistryAccess(tracking_uri, "reader")):
        env[entry["name"]] = entry.get("value") or {"username": username, "password": password}[
            entry["valueFrom"]["secretKeyRef"]["key"]]
    return {**env, "MLSERVER_MODEL_NAME": NODE, "MLSERVER_METRICS_ENDPOINT": "/prometheus"}


def _mlops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def evaluation(stack_env):
    work = stack_env["work"]
    started = time.monotonic()
    result = _mlops("evaluate", "--dataset", "neo", "--outputs", str(work / "outputs.json"),
                    "--tenants", ",".join(["alice", "bob", *BROKEN, "gina"]), "--rows", str(ROWS),
                    "--batch-size", str(BATCH), "--timeout", str(TIMEOUT), "--max-failures", str(MAX_FAILURES),
                    "--html", str(work / "leaderboard.html"), "--json", str(work / "results.json"),
                    "--pushgateway", stack_env["pushgateway"], env=stack_env["tracking"])
    seconds = time.monotonic() - started
    print(result.stdout, result.stderr, f"evaluation took {seconds:.1f} s", sep="\n")
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else None
    return result, results, seconds


# ------------------------------------------------------------------------------------ tests

@pytest.mark.integration
def test_the_run_completes_and_ranks_the_good_model_above_the_worse(evaluation):
    run, results, _ = evaluation
    assert run.returncode == 0, run.stderr
    assert [(r["tenant"], r["ok"]) for r in results[:2]] == [("alice", True), ("bob", True)]
    alice, bob = results[0], results[1]
    assert alice["scores"]["f1"] > bob["scores"]["f1"] > 0, (alice["scores"], bob["scores"])
    assert alice["answered_rows"] == bob["answered_rows"] == ROWS
    assert alice["requests"] == bob["requests"] == ROWS // BATCH
    for r in (alice, bob):
        assert 0 < r["latency"]["p50"] <= r["latency"]["p99"] < TIMEOUT
    table = run.stdout.splitlines()
    assert table[0].split()[:6] == ["RANK", "TENANT", "MODEL", "VERSION", "F1", "ACCURACY"]
    assert table[1].split()[:2] == ["1", "alice"] and table[2].split()[:2] == ["2", "bob"]


@pytest.mark.integration
def test_the_served_version_comes_from_the_registry(evaluation, stack_env):
    _, results, _ = evaluation
    assert results[0]["version"] == stack_env["version"]


@pytest.mark.integration
def test_every_broken_model_is_scored_as_failed_with_its_reason(evaluation):
    run, results, _ = evaluation
    by_tenant = {r["tenant"]: r for r in results}
    assert set(by_tenant) == {"alice", "bob", *BROKEN, "gina"}  # --tenants left the platform's model out
    for tenant, reason in EXPECTED_REASON.items():
        r = by_tenant[tenant]
        assert not r["ok"] and r["reason"].startswith(reason), (tenant, r["reason"])
        assert r["failures"] == {reason: MAX_FAILURES}, (tenant, r["failures"])  # then it stopped sending
        assert r["answered_rows"] == 0 and r["scores"]["f1"] == 0.0
        assert f"FAILED ({MAX_FAILURES} {reason}" in run.stdout
    assert "HTTP 500" in by_tenant["carol"]["reason"]
    assert [r["tenant"] for r in results[2:]] == sorted(EXPECTED_REASON)


@pytest.mark.integration
def test_a_dead_endpoint_costs_a_few_timeouts_not_the_whole_run(evaluation):
    _, _, seconds = evaluation
    # frank: one warm-up and MAX_FAILURES requests, each cut at TIMEOUT; everything else is fast
    assert seconds < (MAX_FAILURES + 1) * TIMEOUT + 45, seconds


def external_assets(page: str) -> list[str]:
    """What a page would fetch from elsewhere: src/href/url()/@import pointing at a scheme."""
    return re.findall(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//[^\"' >]+|url\(\s*[\"']?(?:https?:)?//[^)]+\)"
                      r"|@import[^;]+", page, flags=re.IGNORECASE)


def test_the_asset_check_rejects_a_page_with_external_assets():
    bad = ('<html><head><link rel="stylesheet" href="https://cdn.example.org/x.css"><style>@import url(//f.io/a);'
           '</style></head><body><img src=//x.io/p.png></body></html>')
    assert len(external_assets(bad)) == 3


@pytest.mark.integration
def test_the_html_page_is_self_contained_and_lists_every_model(evaluation, stack_env):
    page = (stack_env["work"] / "leaderboard.html").read_text()
    assert external_assets(page) == [] and "<script" not in page.lower() and "<link" not in page.lower()
    assert "<style>" in page
    for tenant in ["alice", "bob", *BROKEN, "gina"]:
        assert f"<td>{tenant}</td>" in page
    assert page.index("<td>alice</td>") < page.index("<td>bob</td>") < page.index("<td>carol</td>")
    assert page.count('class="failed"') == len(EXPECTED_REASON)


@pytest.mark.integration
def test_mlflow_has_one_run_per_model_with_metrics_and_params(evaluation, stack_env):
    client: MlflowClient = stack_env["client"]
    experiment = client.get_experiment_by_name("evaluation/neo")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlops.evaluation.kind` = 'model'")
    _, results, _ = evaluation
    assert len(runs) == len(results)
    by_tenant = {run.data.params["tenant"]: run for run in runs}
    for r in results:
        run = by_tenant[r["tenant"]]
        assert run.data.params["model"] == "neo" and run.data.params["endpoint"] == r["url"]
        assert run.data.params["version"] == (r["version"] or "unknown")
        assert run.data.metrics["f1"] == pytest.approx(r["scores"]["f1"])
        assert run.data.metrics["accuracy"] == pytest.approx(r["scores"]["accuracy"])
        assert run.data.params["status"] == ("ok" if r["ok"] else "failed")
    assert by_tenant["alice"].data.metrics["latency_p99_seconds"] == pytest.approx(results[0]["latency"]["p99"])
    assert by_tenant["frank"].data.metrics["failures_timeout"] == MAX_FAILURES
    (board,) = client.search_runs([experiment.experiment_id], "tags.`mlops.evaluation.kind` = 'leaderboard'")
    page = client.download_artifacts(board.info.run_id, "leaderboard.html", str(stack_env["work"] / "dl"))
    assert "<td>alice</td>" in Path(page).read_text()


@pytest.mark.integration
def test_the_gauges_are_pushed_to_the_pushgateway(evaluation):
    _, results, _ = evaluation
    ((path, body),) = _Broken.pushed
    assert path == "/metrics/job/mlops-evaluation/dataset/neo"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    alice, frank = results[0], next(r for r in results if r["tenant"] == "frank")
    assert samples[("mlops_evaluation_score", (("metric", "f1"), ("model", "neo"), ("tenant", "alice")))] == \
        pytest.approx(alice["scores"]["f1"])
    p99 = samples[("mlops_evaluation_latency_seconds", (("model", "neo"), ("quantile", "0.99"), ("tenant", "alice")))]
    assert p99 == pytest.approx(alice["latency"]["p99"])
    assert samples[("mlops_evaluation_failures_total", (("model", "neo"), ("reason", "timeout"),
                                                        ("tenant", "frank")))] == frank["failures"]["timeout"]
    assert samples[("mlops_evaluation_failures_total", (("model", "neo"), ("reason", "timeout"),
                                                        ("tenant", "alice")))] == 0


@pytest.mark.integration
def test_mlops_models_describes_the_live_endpoints_from_their_metadata(evaluation, stack_env):
    result = _mlops("models", "--outputs", str(stack_env["work"] / "outputs.json"), "--format", "json",
                    "--timeout", "5")
    assert result.returncode == 0, result.stderr
    entries = {(e["tenant"], e["model"]): e for e in json.loads(result.stdout)}
    columns = list(neo_data.preprocess(neo_data.load(neo_data.default_source())).X.columns)
    alice, bob = entries[("alice", "neo")], entries[("bob", "neo")]
    assert alice["status"] == bob["status"] == "ok"
    assert alice["version"] == stack_env["version"] and alice["metadata"]["parameters"]["registry_model"] == "alice.neo"
    assert [i["name"] for i in alice["inputs"]] == [i["name"] for i in bob["inputs"]] == columns
    assert {i["datatype"] for i in alice["inputs"]} == {"FP64"}
    assert alice["openapi_url"] == f"{alice['metadata_url']}/docs/dataplane.json"  # MLServer itself, no gateway
    assert entries[("carol", "neo")]["status"].startswith("HTTP 500")
    assert entries[("gina", "neo")]["status"].startswith("unreachable")
    assert entries[("platform", "mnist")]["protocol"] == "seldon"
    table = _mlops("models", "--outputs", str(stack_env["work"] / "outputs.json"), "--tenant", "alice")
    assert table.returncode == 0 and "alice" in table.stdout and "bob" not in table.stdout


# ------------------------------------------------------------------- scoring and parsing

def test_f1_matches_scikit_learn_and_unanswered_rows_never_count_as_right():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert evaluate.f1_binary(y, pred) == pytest.approx(f1_score(y, pred))
    y10, p10 = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    assert evaluate.f1_macro(y10, p10) == pytest.approx(f1_score(y10, p10, average="macro"))
    unanswered = np.full(300, evaluate.NO_ANSWER)
    assert evaluate.f1_binary(y, unanswered) == 0.0 and evaluate.f1_macro(y10, unanswered) == 0.0


@pytest.mark.parametrize("answer, words", [
    ({"outputs": [{"name": "p", "data": [0, 1]}]}, "2 predictions for 3 rows"),
    ({"outputs": [{"name": "p", "data": [0, 1, 2]}]}, "labels [2]"),
    ({"outputs": [{"name": "p", "data": [0.2, 0.9, 0.1]}]}, "not class labels"),
    ({"outputs": [{"name": "p", "data": ["a", "b", "c"]}]}, "not numbers"),
    ({"outputs": [{"name": "p"}]}, "without `data`"),
    ({"model_name": "neo"}, "without `outputs`"),
    ([1, 0, 1], "without `outputs`"),
])
def test_malformed_answers_are_named(answer, words):
    with pytest.raises(evaluate.Malformed, match=re.escape(words)):
        evaluate.TASKS["neo"].parse("v2", answer, 3)


def test_answers_of_each_protocol_and_task_parse_to_labels():
    neo, mnist = evaluate.TASKS["neo"], evaluate.TASKS["mnist"]
    assert neo.parse("v2", {"outputs": [{"name": "predict", "data": [1, 0, 1.0]}]}, 3).tolist() == [1, 0, 1]
    assert neo.parse("seldon", {"data": {"names": [], "ndarray": [[1], [0], [0]]}}, 3).tolist() == [1, 0, 0]
    # the project's mnist server: Seldon jsonData, V2 digit + probabilities (workloads/mnist/serving.py)
    assert mnist.parse("seldon", {"jsonData": {"digits": [3, 7], "probabilities": []}}, 2).tolist() == [3, 7]
    probabilities = np.eye(10)[[4, 2]].tolist()
    assert mnist.parse("seldon", {"data": {"ndarray": probabilities}}, 2).tolist() == [4, 2]
    v2 = {"outputs": [{"name": "probabilities", "shape": [2, 10], "data": np.ravel(probabilities).tolist()},
                      {"name": "digit", "shape": [2], "data": [4, 2]}]}
    assert mnist.parse("v2", v2, 2).tolist() == [4, 2]
    with pytest.raises(evaluate.Malformed):
        mnist.parse("v2", {"outputs": [{"name": "digit", "shape": [2], "data": [4, 12]}]}, 2)


def test_energy_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="batch model with no endpoint"):
        evaluate.task("energy")
    with pytest.raises(ValueError, match="one of neo, mnist"):
        evaluate.task("iris")


# ------------------------------------------------------------------ the CronJob on the plan

CLASS = {"tenants": {
    "ada": {"members": ["gh-ada"], "repositories": ["class/ada"],
            "models": {"neo": {"source": {"alias": "champion"}},
                       "digits": {"source": {"image": {"repository": "registry.example.org/ada/digits", "tag": "1"},
                                             "protocol": "seldon"}}}},
    "bo": {"members": ["gh-bo"], "repositories": ["class/bo"], "models": {"neo": {"source": {"alias": "champion"}}}},
}}
EVALUATION = {"enabled": True, "schedule": "0 6 * * 1", "dataset": "neo", "dataUrl": "https://example.org/nasa.csv"}


def _stack(tmp_path: Path, name: str, evaluation: dict, extra: dict | None = None) -> tuple:
    import yaml

    config = {"mlops-stack:platform": "minikube", "mlops-stack:environment": "dev",
              "mlops-stack:tenants": CLASS["tenants"], "mlops-stack:evaluation": evaluation,
              **{f"mlops-stack:{k}": v for k, v in (extra or {}).items()}}
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))
    from mlops.plan import stack_config

    return stack_config(name, tmp_path)


@pytest.fixture(scope="module")
def evaluation_plan(tmp_path_factory):
    from mlops.plan import run_program

    # secrets revealed: the MLflow users' desired state is a Secret
    return run_program("evalplan", _stack(tmp_path_factory.mktemp("stacks"), "evalplan", EVALUATION),
                       reveal_secrets=True)


def _objects(plan, kind: str, name: str) -> list[dict]:
    return [o for o in plan.kubernetes_objects if o["kind"] == kind and o["metadata"]["name"] == name]


def test_the_cron_job_evaluates_every_tenant_model_on_its_executor_service(evaluation_plan):
    (cron,) = _objects(evaluation_plan, "CronJob", "evaluation")
    assert cron["metadata"]["namespace"] == "mlops-platform"
    assert cron["spec"]["schedule"] == "0 6 * * 1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:5] == ["python", "-m", "mlops.evaluate", "--dataset", "neo"]
    assert container["command"][container["command"].index("--data") + 1] == EVALUATION["dataUrl"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-evaluation",
                                                                             "key": "username"}
    assert env["PUSHGATEWAY_URL"]["value"] == "http://pushgateway.monitoring.svc.cluster.local:9091"
    (config_map,) = _objects(evaluation_plan, "ConfigMap", "evaluation-endpoints")
    assert json.loads(config_map["data"]["endpoints.json"]) == {
        "ada": {"digits": "http://digits-main.ada.svc.cluster.local:8000/api/v1.0/predictions",
                "neo": "http://neo-main.ada.svc.cluster.local:8000/v2/models/model/infer"},
        "bo": {"neo": "http://neo-main.bo.svc.cluster.local:8000/v2/models/model/infer"}}
    # the file the Job reads is the format `mlops evaluate --outputs` reads
    endpoints = evaluate.endpoints(json.loads(config_map["data"]["endpoints.json"]))
    assert [(e.tenant, e.model, e.protocol) for e in endpoints] == [
        ("ada", "digits", "seldon"), ("ada", "neo", "v2"), ("bo", "neo", "v2")]


def test_the_urls_name_services_the_tenant_policies_admit_the_platform_to(evaluation_plan):
    """Seldon 1.17.1 names the predictor Service `<sdep>-<predictor>`, engine port 8000; each tenant's
    NetworkPolicy admits the platform namespace on it."""
    for tenant in ("ada", "bo"):
        deployments = [o for o in evaluation_plan.kubernetes_objects if o["kind"] == "SeldonDeployment"
                       and o["metadata"]["namespace"] == tenant]
        assert {(d["metadata"]["name"], d["spec"]["predictors"][0]["name"]) for d in deployments} >= {("neo", "main")}
        (policy,) = [o for o in evaluation_plan.kubernetes_objects if o["kind"] == "NetworkPolicy"
                     and o["metadata"]["namespace"] == tenant and o["metadata"]["name"] == "tenant-ingress"]
        admitted = [rule for rule in policy["spec"]["ingress"] for source in rule.get("from", [])
                    if source.get("namespaceSelector", {}).get("matchLabels", {}).get(
                        "kubernetes.io/metadata.name") == "mlops-platform"]
        assert any({"port": 8000, "protocol": "TCP"} in rule.get("ports", []) for rule in admitted), policy


def test_the_evaluation_may_only_write_its_experiment(evaluation_plan):
    state = json.loads(evaluation_plan.manifest("Secret", "mlflow-users-state", "mlflow")["stringData"]["state.json"])
    users = {u["username"]: u for u in state["users"]}
    assert users["evaluation"]["permissions"] == [{"kind": "experiment", "name": "evaluation/neo",
                                                   "permission": "EDIT"}]
    (push,) = [o for o in evaluation_plan.kubernetes_objects if o["kind"] == "NetworkPolicy"
               and o["metadata"]["name"] == "pushgateway-ingress"]
    sources = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in push["spec"]["ingress"] for s in rule["from"]}
    assert "mlops-platform" in sources


@pytest.mark.parametrize("evaluation, extra, words", [
    ({**EVALUATION, "tenants": ["ada", "zoe"]}, None, "evaluation.tenants: ['zoe'] are not tenants"),
    ({"enabled": True, "dataset": "neo"}, None, "dataUrl is required for dataset neo"),
    ({**EVALUATION, "dataset": "energy"}, None, "evaluation.dataset"),
    ({**EVALUATION, "schedule": "daily"}, None, "cron expression"),
    (EVALUATION, {"tenants": {}}, "the evaluated tenants serve no model"),
])
def test_bad_evaluation_config_is_refused_naming_the_key(tmp_path, evaluation, extra, words):
    from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config

    with pytest.raises(ConfigError) as error:
        parse_stack_config(*raw_from_pulumi_config(*_stack(tmp_path, "bad", evaluation, extra)))
    assert words in str(error.value), str(error.value)


def test_the_image_file_set_runs_the_evaluation(tmp_path):
    """The files modules/evaluation/Dockerfile copies are all `python -m mlops.evaluate` imports:
    run it from a copy of exactly those files, with the checkout off the path."""
    dockerfile = (ROOT / "modules" / "evaluation" / "Dockerfile").read_text()
    copied = [src for line in dockerfile.splitlines() if line.startswith("COPY ") and "requirements" not in line
              for src in line.split()[1:-1]]
    for src in copied:
        (tmp_path / src).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / src).write_text((ROOT / src).read_text())
    nowhere = f"http://127.0.0.1:{free_port()}/v2/models/m/infer"
    (tmp_path / "outputs.json").write_text(json.dumps({"t": {"m": nowhere}}))
    # -S: no site, so no editable-install finder; the packages (not their .pth hooks) stay reachable
    site_packages = sysconfig.get_paths()["purelib"]
    script = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}]; sys.path.append({site_packages!r}); "
              "import mlops.evaluate as e; assert e.__file__.startswith(sys.path[0]), e.__file__; "
              "sys.exit(e.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-S", "-c", script, "--dataset", "neo", "--outputs", "outputs.json",
                             "--data", neo_data.default_source(), "--rows", "20", "--no-mlflow", "--timeout", "2"],
                            cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert "FAILED (" in result.stdout and "unreachable" in result.stdout
    dockerignore = (ROOT / "modules" / "evaluation" / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{src}" for src in copied} <= set(dockerignore)
