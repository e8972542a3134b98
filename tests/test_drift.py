"""Drift monitoring on real processes: NEO trained by its own `train.run` on a real MLflow server
(PostgreSQL + S3 API) logs its reference; the real MLServer (the project's runtime, configured as
the stack's alias container) serves it and writes a sample of the requests to the S3 prefix; the
drift job compares a normal and a shifted batch with the reference, pushes to a real Pushgateway,
and promtool evaluates the drift rules on the values read back from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import io
import subprocess
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import pandas as pd
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlops import cli, drift
from modules.serving.contract import RegistryAccess, RegistryAlias
from modules.serving.seldon import NODE, alias_env
from tests.runtimes import EnvServer, mlserver_from_env
from tests.services import free_port, mlflow_server, postgres, s3_api, stop
from tests.tools import require_tool
from workloads.neo import data as neo_data
from workloads.neo import payload
from workloads.neo import train as neo_train

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "modules" / "monitoring" / "rules" / "drift.yaml"
LOG_BUCKET, LOG_PREFIX = "datasets", "inference-log"
RATE = 0.5  # half the requests are kept: which half is fixed by their ids
REQUESTS, ROWS = 40, 20  # per batch: ~400 kept rows
# shifted in the drifted batch (standard deviations: 2.9 mag, 7.3 km/s, 2.2e7 km); the other 19 are left as served
SHIFTED = {"absolute_magnitude": lambda c: c - 4.0, "relative_velocity_km_per_sec": lambda c: c * 2.0,
           "miss_dist_kilometers": lambda c: c * 0.3}
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

pytestmark = pytest.mark.integration


def kept(request_id: str, rate: float = RATE) -> bool:
    """The runtime's contract, restated: a request is kept iff the first 8 bytes of the SHA-256 of
    its id, as an integer, fall below rate * 2**64 (so a champion and its shadow keep the same ones)."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") < rate * 2 ** 64


@dataclass
class Stack:
    server: EnvServer
    s3: str
    pushgateway: str
    outcome: neo_train.Outcome
    table: pd.DataFrame
    tracking: dict[str, str]
    log_uri: str = f"s3://{LOG_BUCKET}/{LOG_PREFIX}"


def _pushgateway(stack: ExitStack) -> str:
    binary = require_tool("prometheus-pushgateway", "Prometheus Pushgateway (Debian prometheus-pushgateway)")
    port = free_port()
    log = open(tempfile.mktemp(prefix="pushgateway-", suffix=".log"), "w")  # noqa: SIM115 (closed by the stack)
    stack.callback(log.close)
    process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop, process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError("pushgateway not ready")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with ExitStack() as es:
        db = es.enter_context(postgres(("mlruns", "mlflow_auth")))
        s3 = es.enter_context(s3_api(("mlflow-artifacts", LOG_BUCKET)))
        server = es.enter_context(mlflow_server(db, s3, "mlflow-artifacts"))
        tracking = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
                    "MLFLOW_TRACKING_PASSWORD": server.password}
        patch = es.enter_context(pytest.MonkeyPatch.context())
        for key, value in {**tracking, **AWS, "MLFLOW_S3_ENDPOINT_URL": s3}.items():
            patch.setenv(key, value)
        mlflow.set_tracking_uri(server.url)
        source = neo_data.default_source()
        outcome = neo_train.run(source, server.url, register=True)  # the first version: champion
        env = {e["name"]: e.get("value") or {"username": server.username, "password": server.password}[
            e["valueFrom"]["secretKeyRef"]["key"]]
            for e in alias_env(RegistryAlias(neo_train.MODEL_NAME, "champion", poll_seconds=30),
                               RegistryAccess(server.url, "reader"))}
        env.update({"MLSERVER_MODEL_NAME": NODE, "MLSERVER_METRICS_ENDPOINT": "/prometheus",
                    "MLOPS_INFERENCE_LOG_URI": f"s3://{LOG_BUCKET}/{LOG_PREFIX}", "MLOPS_INFERENCE_LOG_RATE": str(RATE),
                    "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": "1", "MLFLOW_S3_ENDPOINT_URL": s3, **AWS})
        served = es.enter_context(mlserver_from_env(env, f"/v2/models/{NODE}/ready"))
        table = neo_data.preprocess(neo_data.load(source)).X
        yield Stack(served, s3, _pushgateway(es), outcome, table, tracking)


def _samples_written(server: EnvServer) -> float:
    text = requests.get(server.metrics_url, timeout=10).text
    match = re.search(r'^mlops_inference_samples_total\{[^}]*model="NEOs"[^}]*\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _send(stack: Stack, batch: str, rows: pd.DataFrame) -> list[str]:
    """REQUESTS requests of ROWS rows, each with its own x-request-id (as Istio sets one); waits
    until the runtime has written the kept ones. Returns the ids."""
    before, ids = _samples_written(stack.server), []
    for i in range(REQUESTS):
        rid = f"{batch}-{i}"
        chunk = rows.iloc[i * ROWS:(i + 1) * ROWS]
        response = requests.post(f"{stack.server.url}/v2/models/{NODE}/infer", json=payload.v2(chunk),
                                 headers={"x-request-id": rid}, timeout=30)
        assert response.status_code == 200, response.text
        ids.append(rid)
    expected = before + sum(map(kept, ids))
    deadline = time.monotonic() + 30
    while _samples_written(stack.server) < expected and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _samples_written(stack.server) == expected, stack.server.log.read_text()[-3000:]
    return ids


def _read_back(pushgateway: str) -> dict[str, dict[tuple, float]]:
    text = requests.get(f"{pushgateway}/metrics", timeout=10).text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == drift.PUSH_JOB:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@dataclass(frozen=True)
class Batches:
    normal_ids: list[str]
    drifted_ids: list[str]
    normal_cli: tuple[int, str]  # exit code, output
    normal_pushed: dict
    drifted: drift.DriftReport
    drifted_pushed: dict


@pytest.fixture(scope="module")
def batches(stack) -> Batches:
    rows = stack.table.sample(2 * REQUESTS * ROWS, random_state=7)  # not the reference's seed
    normal_ids = _send(stack, "normal", rows.iloc[:REQUESTS * ROWS])
    # the CLI command, as the CronJob runs it (in-process: a new interpreter costs seconds of imports);
    # only the normal batch exists yet
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["drift", "--model", neo_train.MODEL_NAME, "--log-uri", stack.log_uri,
                         "--window-hours", "1", "--pushgateway", stack.pushgateway])
    normal_pushed = _read_back(stack.pushgateway)
    time.sleep(1.1)  # the sample's times have whole seconds: the drifted window starts after the normal one
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    shifted = rows.iloc[REQUESTS * ROWS:].copy()
    for column, shift in SHIFTED.items():
        shifted[column] = shift(shifted[column])
    drifted_ids = _send(stack, "drifted", shifted)
    now = dt.datetime.now(dt.UTC)
    args = Namespace(model=neo_train.MODEL_NAME, alias="champion", shadow=None, log_uri=stack.log_uri,
                     window_hours=(now - start).total_seconds() / 3600, min_samples=100, retention_days=0,
                     pushgateway=stack.pushgateway)
    report = drift.run(args, now=now)
    return Batches(normal_ids, drifted_ids, (code, out.getvalue()), normal_pushed, report, _read_back(stack.pushgateway))


# ------------------------------------------------------------------------------------ reference

def test_training_logs_a_small_reference_of_the_features_it_was_trained_on(stack):
    run = f"runs:/{stack.outcome.run_id}/{neo_train.REFERENCE_PATH}"
    reference = mlflow.artifacts.load_dict(run)
    assert neo_train.REFERENCE_PATH == drift.REFERENCE_PATH
    assert list(reference["features"]) == list(stack.table.columns)
    assert {len(v) for v in reference["features"].values()} == {neo_train.REFERENCE_ROWS} == {reference["rows"]}
    assert set(reference["prediction_shares"]) == {"0", "1"}
    assert abs(sum(reference["prediction_shares"].values()) - 1) < 1e-9
    size = len(json.dumps(reference))
    print(f"reference: {size / 1024:.0f} KiB")
    assert size < 300 * 1024


# ------------------------------------------------------------------------------------- sampling

def _log_objects(stack: Stack) -> dict[str, list[dict]]:
    s3 = boto3.client("s3", endpoint_url=stack.s3, **{"region_name": "us-east-1", "aws_access_key_id": "test",
                                                        "aws_secret_access_key": "test"})
    listed = s3.list_objects_v2(Bucket=LOG_BUCKET, Prefix=f"{LOG_PREFIX}/")["Contents"]
    return {o["Key"]: [json.loads(line) for line in
                       s3.get_object(Bucket=LOG_BUCKET, Key=o["Key"])["Body"].read().decode().splitlines()]
            for o in listed}


def test_the_runtime_writes_the_kept_requests_and_answers_under_the_model_prefix(stack, batches):
    objects = _log_objects(stack)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    pattern = rf"{LOG_PREFIX}/NEOs/champion/{today}/\d{{6}}-[0-9a-f]{{12}}\.jsonl"
    assert objects and all(re.fullmatch(pattern, key) for key in objects), list(objects)
    lines = [line for object_lines in objects.values() for line in object_lines]
    logged = sorted(line["request_id"] for line in lines)
    assert logged == sorted(r for r in batches.normal_ids + batches.drifted_ids if kept(r))
    assert 0.3 < len(logged) / (2 * REQUESTS) < 0.7  # about RATE
    line = lines[0]
    assert line["version"] == str(stack.outcome.version) and line["alias"] == "champion"
    assert list(line["inputs"]) == list(stack.table.columns)
    assert [len(v) for v in line["inputs"].values()] == [ROWS] * len(stack.table.columns)
    assert len(next(iter(line["outputs"].values()))) == ROWS


# ----------------------------------------------------------------------------------------- drift

def _scores(pushed: dict) -> dict[str, float]:
    return {dict(k)["feature"]: v for k, v in pushed.get("model_drift_score", {}).items()}


def test_normal_traffic_scores_low_on_every_feature(batches):
    code, output = batches.normal_cli
    print(output)
    assert code == 0 and output.startswith("NEOs@champion (version 1): "), output
    scores = _scores(batches.normal_pushed)
    assert len(scores) == 22
    assert max(scores.values()) < 0.25, scores
    [samples] = batches.normal_pushed["model_drift_samples"].values()
    assert samples == ROWS * sum(map(kept, batches.normal_ids))


def test_a_shifted_batch_scores_high_on_the_shifted_features_only(batches):
    report = batches.drifted
    drift.print_report(report)
    assert report.samples == ROWS * sum(map(kept, batches.drifted_ids))  # the normal batch is outside the window
    high = {f for f, d in report.features.items() if d.psi > 0.25}
    assert high == set(SHIFTED), {f: round(d.psi, 3) for f, d in report.features.items()}
    assert all(report.features[f].ks_p_value < 1e-6 for f in SHIFTED)


def test_the_pushed_gauges_read_back_from_the_pushgateway(batches, stack):
    pushed = batches.drifted_pushed
    assert _scores(pushed) == pytest.approx({f: d.psi for f, d in batches.drifted.features.items()})
    shares = {dict(k)["class"]: v for k, v in pushed["model_prediction_share"].items()}
    assert shares == pytest.approx(dict(batches.drifted.prediction_shares))
    reference = {dict(k)["class"]: v for k, v in pushed["model_reference_prediction_share"].items()}
    assert set(reference) == {"0", "1"} and sum(reference.values()) == pytest.approx(1)
    [info] = pushed["model_drift_reference_info"]
    assert dict(info)["version"] == str(stack.outcome.version) and dict(info)["model"] == "NEOs"
    assert "model_shadow_agreement" not in pushed  # no shadow given


def _promtool_case(name: str, pushed: dict, firing: list[str]) -> dict:
    """The pushed scores as series held for 15 minutes; which ModelDrift alerts fire at 10 minutes
    (the annotations are checked in rules/tests/drift_test.yaml)."""
    series = [{"series": "model_drift_score{" + ",".join(f'{k}="{v}"' for k, v in labels if v) + "}",
               "values": f"{value}x15"} for labels, value in pushed["model_drift_score"].items()]
    alerts = [{"labels": f'ALERTS{{alertname="ModelDrift", alertstate="firing", severity="warning", '
                         f'job="{drift.PUSH_JOB}", model="NEOs", feature="{f}"}}', "value": 1} for f in firing]
    return {"name": name, "interval": "1m", "input_series": series, "promql_expr_test": [
        {"expr": 'ALERTS{alertname="ModelDrift"}', "eval_time": "10m", "exp_samples": alerts}]}


def test_model_drift_fires_on_the_measured_drifted_series_and_not_on_the_normal(batches, tmp_path):
    promtool = require_tool("promtool", "Prometheus rule tests (Debian prometheus)")
    cases = [_promtool_case("normal batch", batches.normal_pushed, []),
             _promtool_case("drifted batch", batches.drifted_pushed, sorted(SHIFTED))]
    test = tmp_path / "measured_test.yaml"
    test.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": cases}))
    result = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------- shadow agreement, retention

def test_shadow_agreement_pairs_requests_by_id(stack, batches):
    lines = [line for object_lines in _log_objects(stack).values() for line in object_lines]
    champion = drift.sample_of(lines)
    assert drift.agreement(champion.answers, champion.answers) == (1.0, len(lines))
    # a shadow that sampled half of those requests and answered the opposite class on one of them
    half = dict(list(champion.answers.items())[: len(lines) // 2])
    rid = next(iter(half))
    half[rid] = {name: [1 - v for v in values] for name, values in half[rid].items()}
    share, pairs = drift.agreement(champion.answers, half)
    assert pairs == len(lines) // 2 and share == pytest.approx(1 - 1 / pairs)


def test_retention_deletes_the_days_past_it_and_keeps_the_rest(stack, batches):
    s3 = boto3.client("s3", endpoint_url=stack.s3, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    key = next(iter(_log_objects(stack)))
    old = re.sub(r"/\d{4}-\d{2}-\d{2}/", "/2020-01-01/", key)
    s3.copy_object(Bucket=LOG_BUCKET, Key=old, CopySource={"Bucket": LOG_BUCKET, "Key": key})
    today = dt.datetime.now(dt.UTC).date()
    deleted = drift.prune(stack.log_uri, "NEOs", "champion", keep_days=7, today=today)
    assert deleted == ["NEOs/champion/2020-01-01"]
    keys = set(_log_objects(stack))
    assert old not in keys and key in keys


SAMPLER_SCRIPT = """
import json, sys
from mlserver.types import InferenceRequest, InferenceResponse
from mlops_mlserver import InferenceSampler, SampleSettings

dead, local = sys.argv[1:]
request = InferenceRequest.model_validate({"id": "r1", "inputs": [
    {"name": "absolute_magnitude", "shape": [2], "datatype": "FP64", "data": [21.5, 19.0]}]})
response = InferenceResponse.model_validate({"model_name": "model", "outputs": [
    {"name": "output-1", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]}]})
sampler = InferenceSampler(SampleSettings(dead, 1.0, 60), "NEOs", "champion")
sampler.record("r1", request, response, "3")
lines = sampler.take()
try:
    sampler.write(lines)
    failed = False
except Exception:
    failed = True
    sampler.keep(lines)
sampler.record("r2", request, response, "3")
kept = sampler.take()
written = InferenceSampler(SampleSettings(local, 1.0, 60), "NEOs", "champion").write(kept)
print(json.dumps({"failed": failed, "ids": [json.loads(l)["request_id"] for l in kept], "written": written}))
"""


def test_a_failed_write_keeps_the_lines_for_the_next(tmp_path):
    """The sampler in the runtime's own environment (MLServer's tool venv): a store that does not
    answer raises, the lines go back before the newer ones, and the next write has them all."""
    from tests.runtimes import MLSERVER_IMAGE, tool_script

    python = tool_script("mlserver", "python", "the MLServer runtime's environment")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": dead, "AWS_MAX_ATTEMPTS": "1", "PYTHONPATH": str(MLSERVER_IMAGE),
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([python, "-c", SAMPLER_SCRIPT, "s3://inference-log/x", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["failed"] and outcome["ids"] == ["r1", "r2"]
    [line_one, line_two] = (tmp_path / outcome["written"]).read_text().splitlines()
    assert json.loads(line_one)["inputs"] == {"absolute_magnitude": [21.5, 19.0]}
    assert json.loads(line_two)["outputs"] == {"output-1": [0, 1]}
