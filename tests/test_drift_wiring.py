"""The drift monitoring as the stack deploys it (docs/decisions/0017-drift-monitoring.md): the
sampling env on alias model containers (both engines alike), one drift CronJob per sampled model
whose command is the one tests/test_drift.py runs for real, its identities, and nothing on dev."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.platforms import cluster_facts
from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops import drift
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan

STACKS = Path(__file__).resolve().parent / "stacks"
SAMPLE_ENV = ("MLOPS_INFERENCE_LOG_URI", "MLOPS_INFERENCE_LOG_RATE", "MLOPS_INFERENCE_LOG_FLUSH_SECONDS",
              "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {stack: run_program(stack, stack_config(stack, STACKS), reveal_secrets=True)
            for stack in ("full", "full-kserve")}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _seldon_envs(plan: Plan, name: str) -> dict[str, dict[str, Any]]:
    sd = plan.manifest("SeldonDeployment", name, "serving")
    return {p["name"]: _env(p["componentSpecs"][0]["spec"]["containers"][0]) for p in sd["spec"]["predictors"]}


def _kserve_env(plan: Plan, name: str) -> dict[str, Any]:
    return _env(plan.manifest("InferenceService", name, "serving")["spec"]["predictor"]["model"])


def _sampling(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k in SAMPLE_ENV}


def test_alias_model_containers_sample_and_the_engines_agree(plans):
    seldon = _seldon_envs(plans["full"], "neo")
    assert set(seldon) == {"main", "candidate"}  # champion and its shadow: the same requests pair up
    for env in seldon.values():
        assert env["MLOPS_INFERENCE_LOG_URI"] == "s3://mlflow-artifacts/inference-log"
        assert env["MLOPS_INFERENCE_LOG_RATE"] == "0.1"
        assert env["MLOPS_INFERENCE_LOG_FLUSH_SECONDS"] == "60"
        assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "inference-log-writer",
                                                                 "key": "AWS_SECRET_ACCESS_KEY"}}
    kserve = {"main": _kserve_env(plans["full-kserve"], "neo"), "candidate": _kserve_env(plans["full-kserve"],
                                                                                        "neo-candidate")}
    assert {k: _sampling(v) for k, v in kserve.items()} == {k: _sampling(v) for k, v in seldon.items()}
    # models without sampling (pinned) and a canary (its share is no pair for the agreement) get none of it
    for env in [*_seldon_envs(plans["full"], "neo-pinned").values(), _seldon_envs(plans["full"], "mnist")["candidate"]]:
        assert not _sampling(env)
    writer = plans["full"].manifest("Secret", "inference-log-writer", "serving")
    assert set(writer["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # each model with feedback: its label source's own keys (tests/test_seaweedfs.py: its prefix only)
    for name in ("neo", "mnist"):
        labels = plans["full"].manifest("Secret", f"labels-{name}", "serving")["stringData"]
        assert set(labels) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL",
                               "MLOPS_INFERENCE_LOG_URI"}
        assert labels["MLOPS_INFERENCE_LOG_URI"] == "s3://mlflow-artifacts/inference-log"


def test_the_mnist_server_follows_its_alias_and_samples_as_its_class_reads_it(plans):
    """A custom image with model + alias (contract.CustomImage.follows): the env the stack gives the
    mnist server is the env `MnistClassifier` follows the alias and samples from, on both engines."""
    from workloads.mnist.serving import ALIAS_URI, POLL_ENV, Sampler

    plan = plans["full"]
    sd = plan.manifest("SeldonDeployment", "mnist", "serving")
    assert {k: v for k, v in sd["metadata"]["annotations"].items() if k.endswith("-model")} == {
        "mlops-stack.io/main-model": "models:/mnist@champion",
        "mlops-stack.io/candidate-model": "models:/mnist@challenger"}
    envs = _seldon_envs(plan, "mnist")
    reader = {"secretKeyRef": {"name": "mlflow-model-reader", "key": "password"}}
    for role, alias in (("main", "champion"), ("candidate", "challenger")):
        env = envs[role]
        assert env["MODEL_URI"] == f"models:/mnist@{alias}" and ALIAS_URI.fullmatch(env["MODEL_URI"])
        assert env[POLL_ENV] == "20"  # serving.registry.pollSeconds
        assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.") and env["MLFLOW_TRACKING_PASSWORD"] == reader
    sampler = Sampler.from_env({k: v for k, v in envs["main"].items() if isinstance(v, str)}, ("mnist", "champion"))
    assert (sampler.uri, sampler.rate, sampler.model, sampler.alias) == (
        "s3://mlflow-artifacts/inference-log", 0.05, "mnist", "champion")
    [container] = plans["full-kserve"].manifest("InferenceService", "mnist", "serving")["spec"]["predictor"]["containers"]
    assert _env(container) == envs["main"]  # the engines agree
    state = json.loads(plan.manifest("Secret", "mlflow-users-state", "mlflow")["stringData"]["state.json"])
    [login] = [u for u in state["users"] if u["username"] == "model-reader"]
    assert {"kind": "registered_model", "name": "mnist", "permission": "READ"} in login["permissions"]
    for job in ("drift-mnist", "feedback-mnist"):
        command = plan.manifest("CronJob", job, "mlops-platform")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"][0]["command"]
        assert command[command.index("--model") + 1] == "mnist", job


def test_drift_cron_job_runs_the_command_the_process_test_runs(plans):
    plan = plans["full"]
    cron = plan.manifest("CronJob", "drift-neo", "mlops-platform")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "mlops.drift"]
    # the arguments parse with mlops/drift.py's parser (the one `mlops drift` in tests/test_drift.py uses)
    args = drift.parser().parse_args(command[3:])
    assert (args.model, args.alias, args.shadow, args.log_uri) == (
        "NEOs", "champion", "challenger", "s3://mlflow-artifacts/inference-log")
    assert (args.window_hours, args.min_samples, args.retention_days) == (24.0, 100, 7)
    assert args.pushgateway.startswith("http://pushgateway.")
    assert cron["spec"]["schedule"] == "41 * * * *" and cron["spec"]["timeZone"]
    env = _env(container)
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "mlflow-drift", "key": "password"}}
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "drift-neo-store"
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "320Mi"}, "limits": {"memory": "512Mi"}}
    assert pod["automountServiceAccountToken"] is False
    policy = plan.manifest("NetworkPolicy", "drift-neo-ingress", "mlops-platform")
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["ingress"] == []  # nothing calls the job's pods


def test_drift_identities_read_only_in_mlflow_and_the_pushgateway_admits_them(plans):
    plan = plans["full"]
    state = json.loads(plan.manifest("Secret", "mlflow-users-state", "mlflow")["stringData"]["state.json"])
    [login] = [u for u in state["users"] if u["username"] == "drift"]
    assert login["permissions"] == [{"kind": "registered_model", "name": "NEOs", "permission": "READ"},
                                    {"kind": "experiment", "name": "Hazardous_NEOs", "permission": "READ"},
                                    {"kind": "registered_model", "name": "mnist", "permission": "READ"},
                                    {"kind": "experiment", "name": "mnist", "permission": "READ"}]
    gateway = plan.manifest("NetworkPolicy", "pushgateway-ingress", "monitoring")
    assert "mlops-platform" in json.dumps(gateway["spec"])


@pytest.mark.parametrize("stack", ["full", "full-kserve"])
def test_sampled_full_stacks_validate(plans, stack):
    facts = cluster_facts(parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, STACKS))))
    report = validate_plan(plans[stack], "1.34", facts)
    assert report.ok, report.render()


def test_dev_has_no_drift_objects(plan_of):
    plan = plan_of("dev")
    names = [o["metadata"]["name"] for o in plan.kubernetes_objects]
    assert not [n for n in names if n.startswith("drift-") or n in ("inference-log-writer", "mlflow-drift")]
    assert not [r for r in plan.resources if r["type"] == "mlops:monitoring:Drift"]


MINIKUBE = {"platform": "minikube", "environment": "dev"}
NEO = {"source": {"model": "NEOs", "alias": "champion"}}


@pytest.mark.parametrize(("model", "fragments"), [
    ({**NEO, "monitoring": {"sampleRate": 1.5}},
     ["serving.models.neo.monitoring.sampleRate: got 1.5", "less than or equal to 1"]),
    ({"source": {"image": {"repository": "registry.example.org/m", "tag": "1.0.0"}}, "monitoring": {"sampleRate": 0.1}},
     ["serving.models.neo", "sampleRate 0.1", "only a model served by alias"]),
    ({**NEO, "monitoring": {"sampleRate": 0.1, "driftSchedule": "hourly"}},
     ["serving.models.neo.monitoring.driftSchedule: got \"hourly\"", "cron expression with 5 fields"]),
])
def test_bad_monitoring_config_is_rejected_naming_the_key(model, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({**MINIKUBE, "serving": {"models": {"neo": model}}})
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_sampling_on_a_cloud_is_refused_naming_why():
    values, secret_keys = stack_config("full-gke", STACKS)
    serving = json.loads(values["mlops-stack:serving"])
    serving["models"]["sampled"] = {**NEO, "monitoring": {"sampleRate": 0.1}}
    with pytest.raises(Exception, match=r"sampleRate > 0 is wired for the in-cluster object store only"):
        run_program("full-gke", ({**values, "mlops-stack:serving": json.dumps(serving)}, secret_keys))


def test_a_canary_candidate_keeps_no_sample_a_shadow_does():
    from modules.serving.contract import InferenceLog, ModelDeploymentArgs, RegistryAccess, RegistryAlias

    log = InferenceLog(uri="s3://b/inference-log", rate=0.1)
    main, candidate = RegistryAlias("NEOs", "champion"), RegistryAlias("NEOs", "challenger")
    for mode, kept in (("shadow", log), ("canary", None)):
        args = ModelDeploymentArgs(namespace="serving", source=main, candidate=candidate, candidate_mode=mode,
                                   registry=RegistryAccess("http://mlflow", "reader"), inference_log=log)
        assert (args.inference_log_of(main), args.inference_log_of(candidate)) == (log, kept)
