"""Label feedback on real processes (docs/decisions/0018-label-feedback.md): NEO trained by its own
`train.run` on a real MLflow server (PostgreSQL + S3 API) is served by the real MLServer with the
project's runtime and the stack's sampling env; the label source sends true labels by request id
with `mlops feedback send`; `mlops feedback evaluate` (the CronJob's command) joins them with the
sample and pushes F1/accuracy to a real Pushgateway; the values read back equal sklearn's on the
pairs the test itself saw over HTTP, and promtool evaluates the quality rules on them. MNIST the
same way on Seldon's real Python wrapper (`MnistClassifier` from `models:/mnist@champion`): it keeps
the same requests in the same layout, as two features per image, which the drift job scores against
the reference the training run logs (test images stay, thickened strokes drift), and its accuracy from
labels equals sklearn's. Then the config, the CronJob in the plan, and the join's rules on small inputs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score, f1_score

from infra.config.feedback import FEEDBACK_DIRECTORY
from infra.settings import ConfigError, parse_stack_config
from mlops import cli, drift, feedback
from mlops.plan import run_program, stack_config
from modules.serving.seldon import NODE
from tests.runtimes import EnvServer, seldon_wrapper
from tests import test_drift
from tests.test_drift import AWS, LOG_BUCKET, LOG_PREFIX, RATE, _samples_written, kept
from tests.tools import require_tool
from workloads.neo import data as neo_data
from workloads.neo import payload
from workloads.neo import train as neo_train

ROOT = Path(__file__).resolve().parents[1]
QUALITY_RULES = ROOT / "modules" / "monitoring" / "rules" / "quality.yaml"
STACKS = Path(__file__).resolve().parent / "stacks"
REQUESTS, ROWS = 60, 10  # ~300 sampled rows
FLIPPED = 0.5  # share of the hazardous rows whose label the test sends as 0: F1 near 2/3, below 0.8
LOG_URI = f"s3://{LOG_BUCKET}/{LOG_PREFIX}"
MODEL = neo_train.MODEL_NAME
stack = test_drift.stack  # its module fixture, one instance here: MLflow, S3, NEO served with sampling, Pushgateway


@dataclass
class Served:
    server: EnvServer
    pushgateway: str
    answers: dict[str, list[int]]  # request id -> the classes the runtime answered, as the client saw them
    truth: dict[str, list[int]]  # request id -> the labels the label source sent (the latest per id)


def _send_requests(server: EnvServer, table: pd.DataFrame, y: pd.Series) -> tuple[dict, dict]:
    answers, truth = {}, {}
    before = _samples_written(server)
    for i in range(REQUESTS):
        rid = f"req-{i}"
        rows = table.iloc[i * ROWS:(i + 1) * ROWS]
        response = requests.post(f"{server.url}/v2/models/{NODE}/infer", json=payload.v2(rows),
                                 headers={"x-request-id": rid}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["parameters"]["request_id"] == rid  # the id the label source sends labels for
        answers[rid] = [int(v) for v in body["outputs"][0]["data"]]
        truth[rid] = [int(v) for v in y.iloc[i * ROWS:(i + 1) * ROWS]]
    expected = before + sum(map(kept, answers))
    deadline = time.monotonic() + 30
    while _samples_written(server) < expected and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _samples_written(server) == expected, server.log.read_text()[-3000:]
    return answers, truth


@pytest.fixture(scope="module")
def served(stack) -> Served:
    """tests/test_drift.py's stack: NEO trained and registered as champion, served by the real MLServer
    with the stack's alias and sampling env (rate 0.5, written every second), a real Pushgateway."""
    prepared = neo_data.preprocess(neo_data.load(neo_data.default_source()))
    # a balanced draw, so F1 of the hazardous class rests on enough positives
    picked = pd.concat([prepared.y[prepared.y == 1].sample(REQUESTS * ROWS // 2, random_state=3),
                        prepared.y[prepared.y == 0].sample(REQUESTS * ROWS // 2, random_state=3)]
                       ).sample(frac=1, random_state=4)
    answers, truth = _send_requests(stack.server, prepared.X.loc[picked.index], picked)
    # the label source disagrees with the data on a share of the hazardous rows
    positives = [(rid, j) for rid, labels in truth.items() for j, v in enumerate(labels) if v == 1]
    for rid, j in positives[::round(1 / FLIPPED)]:
        truth[rid][j] = 0
    return Served(stack.server, stack.pushgateway, answers, truth)


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def _pushed(url: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.labels.get("job") == feedback.PUSH_JOB:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _value(pushed: dict, name: str) -> float:
    [value] = pushed[name].values()
    return value


@dataclass(frozen=True)
class Evaluated:
    expected_pairs: tuple[list[int], list[int]]  # (served, true) over the sampled, labelled rows
    f1_output: str
    f1_pushed: dict
    accuracy: feedback.QualityReport
    sparse_pushed: dict  # after a run with too few labels


@pytest.fixture(scope="module")
def evaluated(served, tmp_path_factory) -> Evaluated:
    # the label source: most labels in one file through the CLI, a late correction of one request,
    # labels for a request never served, and a label list of the wrong length
    ids = sorted(served.truth)
    first, corrected = ids[:-1], ids[-1]
    labels = tmp_path_factory.mktemp("labels") / "labels.jsonl"
    lines = [{"request_id": rid, "labels": served.truth[rid]} for rid in first]
    lines += [{"request_id": corrected, "labels": [1 - v for v in served.truth[corrected]]},  # corrected below
              {"request_id": "never-served", "labels": [1, 0]}]
    labels.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _cli("feedback", "send", "--model", MODEL, "--log-uri", LOG_URI, "--file", str(labels))
    mismatched = next(rid for rid in first if kept(rid))
    time.sleep(1.1)  # label times have whole seconds: these come later than the file's
    feedback.send(LOG_URI, MODEL, {corrected: served.truth[corrected], mismatched: served.truth[mismatched][:3]})
    served.truth.pop(mismatched)
    sampled = [rid for rid in ids if kept(rid) and rid in served.truth]
    expected = ([v for rid in sampled for v in served.answers[rid]], [v for rid in sampled for v in served.truth[rid]])

    common = ["--model", MODEL, "--log-uri", LOG_URI, "--window-hours", "1", "--min-labels", "100"]
    f1_output = _cli("feedback", "evaluate", *common, "--metric", "f1", "--pushgateway", served.pushgateway)
    f1_pushed = _pushed(served.pushgateway)
    accuracy = feedback.evaluate(feedback.parser().parse_args(["evaluate", *common, "--metric", "accuracy"]))
    # a run that finds too few labels: counts replaced, the last quality and its time kept
    _cli("feedback", "evaluate", *common[:-1], "100000", "--metric", "f1", "--pushgateway", served.pushgateway)
    return Evaluated(expected, f1_output, f1_pushed, accuracy, _pushed(served.pushgateway))


# ---------------------------------------------------------------------------------- real processes

def test_without_a_mesh_header_the_reply_names_the_v2_id_it_was_sampled_under(served):
    rows = payload.v2(neo_data.preprocess(neo_data.load(neo_data.default_source())).X.head(2))
    for body, expected in (({**rows, "id": "caller-7"}, "caller-7"), (rows, None)):
        reply = requests.post(f"{served.server.url}/v2/models/{NODE}/infer", json=body, timeout=30).json()
        assert reply["parameters"]["request_id"] == (expected or reply["id"])


def test_labels_land_beside_the_sample_under_the_model_prefix(served, evaluated):
    repo = drift._repository(LOG_URI)
    days = [e.path for e in repo.list_artifacts(f"{MODEL}/{FEEDBACK_DIRECTORY}") if e.is_dir]
    assert days == [f"{MODEL}/{FEEDBACK_DIRECTORY}/{dt.datetime.now(dt.UTC):%Y-%m-%d}"]
    assert len([e for e in repo.list_artifacts(days[0]) if e.path.endswith(".jsonl")]) == 2
    assert feedback.LABELS == FEEDBACK_DIRECTORY


def test_f1_pushed_equals_sklearns_on_the_pairs_the_client_saw(evaluated):
    served, truth = evaluated.expected_pairs
    assert len(truth) >= 200  # the kept half of 600 rows, less one mismatched request
    expected = f1_score(truth, served, pos_label=1)
    assert 0.5 < expected < 0.8  # the flipped labels pull it below the default threshold
    pushed = evaluated.f1_pushed
    [(labels, f1)] = pushed["model_quality_f1"].items()
    assert {k: v for k, v in labels if v} == {"alias": "champion", "job": feedback.PUSH_JOB, "model": MODEL}
    assert f1 == pytest.approx(expected, abs=1e-12)
    assert _value(pushed, "model_feedback_labels") == len(truth)
    assert _value(pushed, "model_quality_evaluation_timestamp_seconds") > 0
    assert f"{len(truth)} labelled rows" in evaluated.f1_output and "1 with a label count unlike" in evaluated.f1_output
    print(f"feedback F1 {expected:.4f} on {len(truth)} rows (sklearn) = pushed {_value(pushed, 'model_quality_f1'):.4f}")


def test_accuracy_equals_sklearns_on_the_same_pairs(evaluated):
    served, truth = evaluated.expected_pairs
    assert evaluated.accuracy.value == pytest.approx(accuracy_score(truth, served), abs=1e-12)
    assert evaluated.accuracy.rows == len(truth) and evaluated.accuracy.mismatched == 1


def test_too_few_labels_keep_the_last_quality_and_its_time(evaluated):
    before, after = evaluated.f1_pushed, evaluated.sparse_pushed
    for name in ("model_quality_f1", "model_quality_evaluation_timestamp_seconds"):
        assert after[name] == before[name]
    assert _value(after, "model_feedback_last_run_timestamp_seconds") >= _value(
        before, "model_feedback_last_run_timestamp_seconds")


def test_quality_rules_fire_on_the_measured_f1(evaluated, tmp_path):
    """The pushed series, held for 40 minutes, through the unchanged rules of quality.yaml: the
    measured F1 (below 0.8) fires ModelQualityDegraded; Stale stays silent while it is fresh."""
    promtool = require_tool("promtool", "Prometheus rule tests (Debian prometheus)")
    pushed = evaluated.f1_pushed

    def series(name: str, values: str) -> dict:
        [labels] = pushed[name]
        return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels if v) + "}", "values": values}

    f1 = _value(pushed, "model_quality_f1")
    case = {"name": "measured feedback F1", "interval": "1m", "input_series": [
        series("model_quality_f1", f"{f1}x40"), series("model_quality_evaluation_timestamp_seconds", "0x40")],
        "alert_rule_test": [
            {"alertname": "ModelQualityDegraded", "eval_time": "15m", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "job": feedback.PUSH_JOB, "model": MODEL, "alias": "champion",
                               "metric": "f1"},
                "exp_annotations": {
                    "summary": f"Model {MODEL}: f1 past its threshold",
                    "description": f"f1 of model {MODEL} (alias champion) is {f1:.3g}, past the threshold of "
                                   "0.8 for 10 minutes: retrain or roll back the model.",
                    "runbook_url": "docs/runbooks.md#modelqualitydegraded"}}]},
            {"alertname": "ModelQualityStale", "eval_time": "15m", "exp_alerts": []}]}
    test = tmp_path / "measured_test.yaml"
    test.write_text(yaml.safe_dump({"rule_files": [str(QUALITY_RULES)], "evaluation_interval": "1m",
                                    "tests": [case]}))
    result = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------- MNIST on Seldon's wrapper

MNIST_REQUESTS, MNIST_IMAGES = 40, 10  # per batch: ~200 kept images


@dataclass(frozen=True)
class MnistBatch:
    ids: list[str]
    digits: dict[str, list[int]]  # request id -> the digits the reply gave


@dataclass(frozen=True)
class MnistServed:
    normal: MnistBatch
    thick: MnistBatch  # strokes thickened: more ink, brighter images
    labels: dict[str, list[int]]


def _mnist_lines() -> list[dict]:
    return drift.read_lines(LOG_URI, "mnist", "champion", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                            dt.datetime.now(dt.UTC))


def _mnist_batch(url: str, name: str, images, seen: int) -> MnistBatch:
    """MNIST_REQUESTS requests, V2 and Seldon bodies in turn, each with its x-request-id; waits until
    the wrapper has written the kept ones (`seen` lines were there before)."""
    ids, digits = [], {}
    for i in range(MNIST_REQUESTS):
        rid, chunk = f"{name}-{i}", images[i * MNIST_IMAGES:(i + 1) * MNIST_IMAGES]
        body = ({"inputs": [{"name": "image", "shape": list(chunk.shape), "datatype": "FP32",
                             "data": chunk.ravel().tolist()}]} if i % 2 else {"data": {"ndarray": chunk.tolist()}})
        reply = requests.post(f"{url}/api/v1.0/predictions", json=body, headers={"x-request-id": rid}, timeout=30)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        if i % 2:
            assert answer["parameters"]["request_id"] == rid
            digits[rid] = answer["outputs"][0]["data"]
        else:
            assert answer["meta"]["tags"]["request_id"] == rid
            digits[rid] = answer["jsonData"]["digits"]
        ids.append(rid)
    expected = seen + sum(map(kept, ids))
    deadline = time.monotonic() + 30
    while len(_mnist_lines()) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(_mnist_lines()) == expected
    return MnistBatch(ids, digits)


@pytest.fixture(scope="module")
def mnist(stack) -> Iterator[MnistServed]:
    import numpy as np

    from workloads.mnist import model as mnist_model
    from workloads.mnist import train as mnist_train

    train_split, test = mnist_train.splits("sample", "")
    mnist_train.run(train_split, test, mnist_model.TrainConfig(epochs=2), register=True)  # champion
    env = {**stack.tracking, **AWS, "MLFLOW_S3_ENDPOINT_URL": stack.s3, "MODEL_URI": "models:/mnist@champion", "MODEL_POLL_SECONDS": "0",
           "MLOPS_INFERENCE_LOG_URI": LOG_URI, "MLOPS_INFERENCE_LOG_RATE": str(RATE),
           "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": "1"}
    images = test.X[:2 * MNIST_REQUESTS * MNIST_IMAGES]
    half = MNIST_REQUESTS * MNIST_IMAGES
    # a 3x3 maximum filter: every stroke a pixel thicker on each side
    padded = np.pad(images[half:], ((0, 0), (1, 1), (1, 1)))
    thick = np.max([padded[:, dy:dy + 28, dx:dx + 28] for dy in range(3) for dx in range(3)], axis=0)
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier", env) as url:
        normal = _mnist_batch(url, "mnist-normal", images[:half], 0)
        thickened = _mnist_batch(url, "mnist-thick", thick, sum(map(kept, normal.ids)))
    labels = {rid: test.y[i * MNIST_IMAGES:(i + 1) * MNIST_IMAGES].tolist() for i, rid in enumerate(normal.ids)}
    yield MnistServed(normal, thickened, labels)


def _mnist_report(batch: MnistBatch) -> drift.DriftReport:
    lines = [line for line in _mnist_lines() if line["request_id"] in batch.ids]
    return drift.report("mnist", "champion", drift.load_reference("mnist", "champion"), drift.sample_of(lines), 100)


def test_the_mnist_wrapper_keeps_the_same_requests_as_image_features(mnist):
    lines = _mnist_lines()
    assert {line["request_id"] for line in lines} == {r for r in mnist.normal.ids + mnist.thick.ids if kept(r)}
    for line in lines:
        assert set(line["inputs"]) == {"mean_intensity", "ink_share"}  # two numbers per image, no pixels
        assert len(line["inputs"]["ink_share"]) == MNIST_IMAGES
        batch = mnist.normal if line["request_id"].startswith("mnist-normal") else mnist.thick
        assert line["outputs"]["digit"] == batch.digits[line["request_id"]]
        assert line["version"] == "1" and (line["model"], line["alias"]) == ("mnist", "champion")


def test_mnist_drift_scores_low_on_test_images_and_high_on_thickened_strokes(mnist):
    normal, thick = _mnist_report(mnist.normal), _mnist_report(mnist.thick)
    print("mnist PSI normal", {f: round(d.psi, 3) for f, d in normal.features.items()},
          "thick", {f: round(d.psi, 3) for f, d in thick.features.items()})
    assert normal.samples >= 100 and set(normal.features) == {"mean_intensity", "ink_share"}
    assert all(d.psi < 0.25 for d in normal.features.values())
    assert all(d.psi > 0.25 for d in thick.features.values())
    # the shares of the ten digits on test images stay near the training reference's
    assert max(abs(normal.prediction_shares.get(c, 0) - s) for c, s in normal.reference_shares.items()) < 0.2


def test_mnist_accuracy_from_labels_equals_sklearns(mnist, stack):
    feedback.send(LOG_URI, "mnist", mnist.labels)
    sampled = [rid for rid in mnist.normal.ids if kept(rid)]
    served = [d for rid in sampled for d in mnist.normal.digits[rid]]
    truth = [d for rid in sampled for d in mnist.labels[rid]]
    args = feedback.parser().parse_args(["evaluate", "--model", "mnist", "--log-uri", LOG_URI, "--metric",
                                         "accuracy", "--window-hours", "1", "--min-labels", "100",
                                         "--pushgateway", stack.pushgateway])
    result = feedback.evaluate(args)
    assert result.rows == len(truth) and result.value == pytest.approx(accuracy_score(truth, served), abs=1e-12)
    pushed = _pushed(stack.pushgateway)
    assert {dict(k)["model"]: v for k, v in pushed["model_quality_accuracy"].items()} == {
        "mnist": pytest.approx(result.value)}
    print(f"mnist feedback accuracy {result.value:.4f} on {result.rows} labelled images")


# ---------------------------------------------------------------------------------- the join

def _line(rid: str, outputs: list, time: str = "2026-12-01T10:00:00+00:00") -> dict:
    return {"time": time, "request_id": rid, "outputs": {"predict": outputs, "proba": [0.1] * len(outputs)}}


def test_join_pairs_sampled_rows_with_the_latest_labels_and_skips_the_rest():
    sampled = [_line("a", [1, 0]), _line("b", [1.0]), _line("c", [0, 0]), _line("unlabelled", [1])]
    labelled = [{"time": "2026-12-01T10:01:00+00:00", "request_id": "a", "labels": [0, 0]},
                {"time": "2026-12-01T10:05:00+00:00", "request_id": "a", "labels": [1, 1]},  # the latest wins
                {"time": "2026-12-01T10:02:00+00:00", "request_id": "b", "labels": [True]},
                {"time": "2026-12-01T10:02:00+00:00", "request_id": "c", "labels": [0]},  # one label for two rows
                {"time": "2026-12-01T10:02:00+00:00", "request_id": "not-sampled", "labels": [1]}]
    joined = feedback.join(sampled, labelled)
    assert (joined.predictions, joined.labels) == (["1", "0", "1"], ["1", "1", "1"])
    assert (joined.requests, joined.mismatched) == (2, 1)


@pytest.mark.parametrize("seed", range(5))
def test_f1_and_accuracy_match_sklearn(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    truth, served = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    t, s = [str(v) for v in truth], [str(v) for v in served]
    assert feedback.f1(s, t, "1") == pytest.approx(f1_score(truth, served, pos_label=1))
    assert feedback.accuracy(s, t) == pytest.approx(accuracy_score(truth, served))
    digits_t, digits_s = rng.integers(0, 10, 50), rng.integers(0, 10, 50)
    assert feedback.accuracy([str(v) for v in digits_s], [str(v) for v in digits_t]) == pytest.approx(
        accuracy_score(digits_t, digits_s))


def test_f1_without_any_positive_is_zero_as_sklearn_with_zero_division_0():
    assert feedback.f1(["0", "0"], ["0", "0"], "1") == f1_score([0, 0], [0, 0], zero_division=0) == 0.0


def test_a_bad_label_file_names_the_line():
    with pytest.raises(ValueError, match=r"line 2: expected"):
        feedback.labels_from(['{"request_id": "a", "labels": [1]}', '{"labels": [1]}'])


# ---------------------------------------------------------------------------------- config and plan

MINIKUBE = {"platform": "minikube", "environment": "dev"}
NEO = {"source": {"model": "NEOs", "alias": "champion"}}


@pytest.mark.parametrize(("model", "fragments"), [
    ({**NEO, "monitoring": {"feedback": {}}},
     ["serving.models.neo", "monitoring.feedback needs monitoring.sampleRate > 0"]),
    ({**NEO, "monitoring": {"sampleRate": 0.1, "feedback": {"minLabels": 0}}},
     ["serving.models.neo.monitoring.feedback.minLabels: got 0", "greater than or equal to 1"]),
    ({**NEO, "monitoring": {"sampleRate": 0.1, "feedback": {"metric": "auc"}}},
     ["serving.models.neo.monitoring.feedback.metric", "'accuracy' or 'f1'"]),
    ({"source": {"model": "Other", "alias": "champion"}, "monitoring": {"sampleRate": 0.1, "experiment": "e",
                                                                          "feedback": {}}},
     ["serving.models.neo", "monitoring.feedback.metric: registered model 'Other' is no demo workload's"]),
    ({"source": {"model": "NEOs", "alias": "feedback"}, "monitoring": {"sampleRate": 0.1, "feedback": {}}},
     ["serving.models.neo", "alias 'feedback' is where monitoring.feedback keeps the labels"]),
])
def test_bad_feedback_config_is_rejected_naming_the_key(model, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({**MINIKUBE, "serving": {"models": {"neo": model}}})
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_the_feedback_cron_job_runs_the_command_the_process_test_runs():
    plan = run_program("full", stack_config("full", STACKS), reveal_secrets=True)
    cron = plan.manifest("CronJob", "feedback-neo", "mlops-platform")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:3] == ["python", "-m", "mlops.feedback"]
    args = feedback.parser().parse_args(container["command"][3:])  # `mlops feedback`'s, which the test above runs
    assert (args.action, args.model, args.alias, args.metric, args.positive_class, args.log_uri) == (
        "evaluate", "NEOs", "champion", "f1", "1", "s3://mlflow-artifacts/inference-log")
    assert (args.window_hours, args.min_labels, args.retention_days) == (48.0, 200, 7)
    assert args.pushgateway.startswith("http://pushgateway.")
    assert cron["spec"]["schedule"] == "47 * * * *"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "feedback-neo-store", "key": "AWS_ACCESS_KEY_ID"}}
    assert not [k for k in env if k.startswith("MLFLOW_TRACKING")]  # it reads the bucket only
    store = plan.manifest("Secret", "feedback-neo-store", "mlops-platform")
    drift_store = plan.manifest("Secret", "drift-neo-store", "mlops-platform")
    assert store["stringData"] == drift_store["stringData"]  # the drift identity: read + delete under the prefix
    assert pod["automountServiceAccountToken"] is False
    assert plan.manifest("NetworkPolicy", "feedback-neo-ingress", "mlops-platform")["spec"]["ingress"] == []


def test_the_evaluation_image_file_set_runs_the_feedback_job(tmp_path):
    """The files modules/evaluation/Dockerfile copies run `python -m mlops.feedback evaluate` (the
    CronJob's command) with the checkout off the path, here on a local sample and labels."""
    import os
    import sys
    import sysconfig

    dockerfile = (ROOT / "modules" / "evaluation" / "Dockerfile").read_text()
    copied = [src for line in dockerfile.splitlines() if line.startswith("COPY ") and "requirements" not in line
              for src in line.split()[1:-1]]
    image = tmp_path / "image"
    for src in copied:
        (image / src).parent.mkdir(parents=True, exist_ok=True)
        (image / src).write_text((ROOT / src).read_text())
    log, now = tmp_path / "inference-log", dt.datetime.now(dt.UTC)
    day = log / "NEOs" / "champion" / f"{now:%Y-%m-%d}"
    day.mkdir(parents=True)
    (day / "s.jsonl").write_text(json.dumps(_line("r1", [1, 0, 1], now.isoformat(timespec="seconds"))) + "\n")
    feedback.send(str(log), "NEOs", {"r1": [1, 1, 1]})
    site_packages = sysconfig.get_paths()["purelib"]
    script = (f"import sys; sys.path[:0] = [{str(image)!r}]; sys.path.append({site_packages!r}); "
              "import mlops.feedback as f; assert f.__file__.startswith(sys.path[0]), f.__file__; "
              "sys.exit(f.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-S", "-c", script, "evaluate", "--model", "NEOs", "--log-uri", str(log),
                             "--metric", "accuracy", "--min-labels", "3"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert "3 labelled rows from 1 requests" in result.stdout and "accuracy=0.6667" in result.stdout
    dockerignore = (ROOT / "modules" / "evaluation" / "Dockerfile.dockerignore").read_text().split()
    assert "!mlops/feedback.py" in dockerignore
