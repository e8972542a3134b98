"""`serving.engine: sagemaker` on the eks stack (modules/serving/sagemaker.py,
docs/decisions/0021-sagemaker-engine.md): the plan's SageMaker, autoscaling and IAM resources with
their arguments, the execution role's policy parsed and checked statement by statement, the config
errors, and the container contract (`<image> serve`, GET /ping, POST /invocations) on the real
MLServer with the environment the plan gives the SageMaker Model."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from infra.platforms import cluster_facts
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from policy.rules import violations
from modules.serving.sagemaker import MODEL_DIR, image_uri
from tests.runtimes import MLSERVER_IMAGE, TOOLS, _server, tool_script
from tests.managed_engines import (
    assert_config_error,
    in_cluster_serving,
    mlflow_model_folder,
    raw_config,
    resources_of,
)
from tests.services import free_port

STACKS = Path(__file__).resolve().parent / "stacks"
STACK = "eks-sagemaker"
MAIN_URI = "s3://mlflow-artifacts/1/models/m-0123456789abcdef/artifacts"
CANDIDATE_URI = "s3://mlflow-artifacts/1/models/m-fedcba9876543210/artifacts"
SERVE = MLSERVER_IMAGE / "serve"


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {stack: run_program(stack, stack_config(stack, STACKS)) for stack in ("full-eks", STACK)}


# neo as a 20 % canary with autoscaling, and a second model at three fixed instances
CANARY_MODELS = {
    "neo": {"source": {"uri": MAIN_URI}, "candidate": {"uri": CANDIDATE_URI}, "candidateMode": "canary",
            "canaryPercent": 20, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}},
    "energy": {"source": {"uri": "s3://mlflow-artifacts/2/models/m-00000000000000aa/artifacts"}, "replicas": 3},
}


@pytest.fixture(scope="module")
def canary_plan() -> Plan:
    values, secrets = stack_config(STACK, STACKS)
    values["mlops-stack:serving"] = json.dumps({**json.loads(values["mlops-stack:serving"]), "models": CANARY_MODELS})
    return run_program(STACK, (values, secrets))


_of = resources_of


def _raw(stack: str = STACK, **changes: Any) -> dict[str, Any]:
    return raw_config(stack, **changes)


# ------------------------------------------------------------------------------ stack file and plan

def test_the_sagemaker_twin_of_full_eks_differs_only_in_its_engine():
    """The plan comparison below is only meaningful while the two files carry the same options."""
    full, twin = (yaml.safe_load((STACKS / f"Pulumi.{s}.yaml").read_text())["config"] for s in ("full-eks", STACK))
    serving = twin["mlops-stack:serving"]
    assert serving.pop("engine") == "sagemaker" and serving.pop("sagemaker")
    assert twin["mlops-stack:aws"].pop("namePrefix") == "mlops-full-eks"  # full-eks's default
    assert twin == full


def _above_serving(plan: Plan) -> dict[str, str]:
    """Every resource outside the engine's component (and the Seldon operator's namespace, which
    only Seldon has), keyed by URN with the stack name read as full-eks, as JSON."""
    kept = {}
    for r in plan.resources:
        if "mlops:serving:" in r["urn"] or r["urn"].endswith("namespaces-seldon") or in_cluster_serving(r["urn"]):
            continue
        body = json.dumps({k: r.get(k) for k in ("type", "inputs", "manifest")}, sort_keys=True, default=str)
        kept[r["urn"].replace(f":{STACK}::", ":full-eks::")] = body.replace(STACK, "full-eks")
    return kept


def test_engine_choice_changes_nothing_above_the_serving_contract(plans):
    seldon, sagemaker = _above_serving(plans["full-eks"]), _above_serving(plans[STACK])
    assert not [r["urn"] for r in plans[STACK].resources if in_cluster_serving(r["urn"])]  # no unused role
    assert sorted(seldon) == sorted(sagemaker)
    assert [urn for urn in seldon if seldon[urn] != sagemaker[urn]] == []
    assert len(seldon) > 100  # VPC, EKS, RDS, S3, ECR, IAM, MLflow, gateway, monitoring, workloads ...


def test_the_sagemaker_stack_passes_validate_and_every_policy_rule(plans):
    plan = plans[STACK]
    report = validate_plan(plan, "1.34", cluster_facts(parse_stack_config(*raw_from_pulumi_config(
        *stack_config(STACK, STACKS)))))
    assert report.ok, report.render()
    found = [(r["name"], v) for r in plan.resources for v in violations(r["type"], r.get("manifest") or r["inputs"])]
    assert found == []


def test_models_answer_at_the_sagemaker_runtime_api(plans):
    outputs = plans[STACK].outputs
    assert outputs["modelUrls"] == {
        "neo": "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/mlops-full-eks-neo/invocations"}
    assert outputs["modelsBaseUrl"] == "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/"
    kinds = {r["type"] for r in plans[STACK].resources}
    assert "kubernetes:machinelearning.seldon.io/v1:SeldonDeployment" not in kinds
    assert not [r for r in plans[STACK].resources if r["type"] == "kubernetes:helm.sh/v3:Release"
                and r["inputs"].get("chart") == "seldon-core-operator"]


def test_models_run_the_stacks_mlserver_build_on_their_s3_prefix_without_network(plans):
    models = _of(plans[STACK], "aws:sagemaker/model:Model")
    assert sorted(models) == ["neo-candidate", "neo-main"]
    builds = [r["inputs"] for r in plans[STACK].resources if r["type"] == "docker-build:index:Image"
              and any(t.split(":")[0].endswith("/mlops/mlserver") for t in r["inputs"]["tags"])]
    assert len(builds) == 1
    for variant, uri in (("main", MAIN_URI), ("candidate", CANDIDATE_URI)):
        model = models[f"neo-{variant}"]
        container = model["primaryContainer"]
        # the pushed build, by digest, from the stack's own ECR repository
        assert re.fullmatch(r"123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com/mlops/mlserver@sha256:[0-9a-f]{64}",
                            container["image"]), container["image"]
        assert container["modelDataSource"] == {"s3DataSources": [
            {"s3Uri": f"{uri}/", "s3DataType": "S3Prefix", "compressionType": "None"}]}
        assert "modelDataUrl" not in container  # uncompressed: MLflow's own files, no model.tar.gz copy
        assert container["environment"] == {
            "MLSERVER_MODEL_NAME": "neo", "MLSERVER_MODEL_IMPLEMENTATION": "mlops_mlserver.MLflowRuntime",
            "MLSERVER_MODEL_URI": MODEL_DIR, "MLSERVER_HTTP_PORT": "8080", "MLSERVER_HOST": "0.0.0.0",
            "MLSERVER_PARALLEL_WORKERS": "0"}
        assert model["enableNetworkIsolation"] is True and "vpcConfig" not in model
        assert model["executionRoleArn"] == "arn:aws:iam::123456789012:role/mlops-full-eks-neo-sagemaker"
        assert model["name"].startswith(f"mlops-full-eks-neo-{variant}-") and len(model["name"]) <= 63
    assert models["neo-main"]["name"] != models["neo-candidate"]["name"]


def test_image_uri_prefers_the_digest():
    assert image_uri("r.example/mlops/mlserver:1.7.1-1@sha256:ab") == "r.example/mlops/mlserver@sha256:ab"
    assert image_uri("r.example/mlops/mlserver:1.7.1-1") == "r.example/mlops/mlserver:1.7.1-1"


def test_shadow_candidate_is_a_shadow_variant_copied_every_request(plans):
    config = _of(plans[STACK], "aws:sagemaker/endpointConfiguration:EndpointConfiguration")["neo"]
    models = _of(plans[STACK], "aws:sagemaker/model:Model")
    common = {"instanceType": "ml.m5.large", "containerStartupHealthCheckTimeoutInSeconds": 600,
              "modelDataDownloadTimeoutInSeconds": 600}
    assert config["productionVariants"] == [{**common, "variantName": "main", "modelName": models["neo-main"]["name"],
                                             "initialInstanceCount": 2, "initialVariantWeight": 100}]
    assert config["shadowProductionVariants"] == [{
        **common, "variantName": "candidate", "modelName": models["neo-candidate"]["name"],
        "initialInstanceCount": 2, "initialVariantWeight": 100}]
    assert config["kmsKeyArn"].startswith("arn:aws:kms:eu-west-1:123456789012:key/")
    endpoint = _of(plans[STACK], "aws:sagemaker/endpoint:Endpoint")["neo"]
    assert endpoint == {"name": "mlops-full-eks-neo", "endpointConfigName": config["name"]}


def test_autoscaling_tracks_invocations_per_instance_within_the_models_bounds(plans):
    targets = _of(plans[STACK], "aws:appautoscaling/target:Target")
    policies = _of(plans[STACK], "aws:appautoscaling/policy:Policy")
    assert sorted(targets) == sorted(policies) == ["neo-main"]  # the shadow variant keeps its count
    assert targets["neo-main"] == {"serviceNamespace": "sagemaker",
                                   "scalableDimension": "sagemaker:variant:DesiredInstanceCount",
                                   "resourceId": "endpoint/mlops-full-eks-neo/variant/main",
                                   "minCapacity": 2, "maxCapacity": 6}
    policy = policies["neo-main"]
    assert policy["policyType"] == "TargetTrackingScaling"
    assert {k: policy[k] for k in ("serviceNamespace", "scalableDimension", "resourceId")} == {
        k: targets["neo-main"][k] for k in ("serviceNamespace", "scalableDimension", "resourceId")}
    assert policy["targetTrackingScalingPolicyConfiguration"] == {
        "targetValue": 200, "scaleInCooldown": 300, "scaleOutCooldown": 60,
        "predefinedMetricSpecification": {"predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}


def test_canary_is_a_weighted_production_variant_and_fixed_models_do_not_scale(canary_plan):
    configs = _of(canary_plan, "aws:sagemaker/endpointConfiguration:EndpointConfiguration")
    neo = configs["neo"]
    assert [(v["variantName"], v["initialVariantWeight"], v["initialInstanceCount"])
            for v in neo["productionVariants"]] == [("main", 80, 1), ("candidate", 20, 1)]
    assert not neo.get("shadowProductionVariants")
    assert [(v["variantName"], v["initialInstanceCount"]) for v in configs["energy"]["productionVariants"]] == [
        ("main", 3)]
    targets = _of(canary_plan, "aws:appautoscaling/target:Target")
    assert {name: (t["resourceId"], t["minCapacity"], t["maxCapacity"]) for name, t in targets.items()} == {
        "neo-main": ("endpoint/mlops-full-eks-neo/variant/main", 1, 4),
        "neo-candidate": ("endpoint/mlops-full-eks-neo/variant/candidate", 1, 4)}


# ------------------------------------------------------------------------------------------- IAM

def _statements(plan: Plan) -> dict[str, dict[str, Any]]:
    policy = json.loads(_of(plan, "aws:iam/rolePolicy:RolePolicy")["neo"]["policy"])
    assert policy["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in policy["Statement"]}


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_execution_role_is_assumable_by_sagemaker_for_this_account_only(plans):
    role = _of(plans[STACK], "aws:iam/role:Role")["neo"]
    trust = json.loads(role["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                   "Action": "sts:AssumeRole",
                                   "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}}]
    assert not [r for r in plans[STACK].resources if r["type"] == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
                and "sagemaker" in json.dumps(r["inputs"])]  # no managed policy (AmazonSageMakerFullAccess) attached


def test_execution_policy_grants_one_repository_two_prefixes_one_key_one_log_group(plans):
    statements = _statements(plans[STACK])
    everything = [a for s in statements.values() for a in _listed(s["Action"])]
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert not [a for a in everything if "*" in a]  # no wildcard actions
    assert not [a for a in everything if a.split(":")[0] in ("ec2", "iam", "sagemaker", "secretsmanager")]
    # "*" only where IAM has no resource-level permission, and metrics only in the endpoints' namespace
    unscoped = {sid: s for sid, s in statements.items() if "*" in _listed(s["Resource"])}
    assert {sid: _listed(s["Action"]) for sid, s in unscoped.items()} == {
        "EcrToken": ["ecr:GetAuthorizationToken"], "InstanceMetrics": ["cloudwatch:PutMetricData"]}
    assert unscoped["InstanceMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"}}
    assert statements["PullImage"]["Resource"] == "arn:aws:ecr:eu-west-1:123456789012:repository/mlops/mlserver"
    assert sorted(statements["PullImage"]["Action"]) == [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert statements["ReadModels"] == {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
                                        "Resource": [f"arn:aws:s3:::{MAIN_URI[5:]}/*",
                                                     f"arn:aws:s3:::{CANDIDATE_URI[5:]}/*"]}
    listing = statements["ListModels0"]
    assert listing["Action"] == "s3:ListBucket" and listing["Resource"] == "arn:aws:s3:::mlflow-artifacts"
    prefixes = [MAIN_URI[len("s3://mlflow-artifacts/"):], CANDIDATE_URI[len("s3://mlflow-artifacts/"):]]
    assert sorted(listing["Condition"]["StringLike"]["s3:prefix"]) == sorted(
        prefixes + [f"{p}/*" for p in prefixes])
    assert statements["DecryptModels"]["Action"] == "kms:Decrypt"
    assert statements["DecryptModels"]["Resource"] == _of(plans[STACK], "aws:sagemaker/endpointConfiguration:"
                                                                       "EndpointConfiguration")["neo"]["kmsKeyArn"]
    assert statements["DecryptModels"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    group = _of(plans[STACK], "aws:cloudwatch/logGroup:LogGroup")["neo"]
    assert group == {"name": "/aws/sagemaker/Endpoints/mlops-full-eks-neo", "retentionInDays": 90}
    arn = f"arn:aws:logs:eu-west-1:123456789012:log-group:{group['name']}"
    assert statements["Logs"]["Resource"] == [arn, f"{arn}:log-stream:*"]
    assert set(statements) == {"EcrToken", "PullImage", "ReadModels", "ListModels0", "DecryptModels", "Logs",
                               "InstanceMetrics"}


# ----------------------------------------------------------------------------------- config errors

@pytest.mark.parametrize(("raw", "fragments"), [
    (_raw("dev", serving__engine="sagemaker"),
     ['mlops-stack:serving.engine: got "sagemaker"', "allowed on platform eks only",
      "minikube allowed seldon or kserve"]),
    (_raw(serving__models={"neo": {"source": {"model": "NEOs", "alias": "champion"}}}),
     ['mlops-stack:serving.models.neo.source.alias: got "champion"', "allowed source: {uri: s3://",
      "mlops resolve-model --name NEOs --alias champion"]),
    (_raw(serving__models={"neo": {"source": {"uri": MAIN_URI}, "candidate": {"uri": "gs://b/m"}}}),
     ['mlops-stack:serving.models.neo.candidate.uri: got "gs://b/m"', "allowed candidate: {uri: s3://"]),
    (_raw(images__registry="registry.example.org/mlops"),
     ["mlops-stack:serving.seldon.mlserverImage:", "pulls the project's MLServer image from the stack's ECR"]),
    (_raw(serving__sagemaker={"instanceType": "m5.large"}),
     ["mlops-stack:serving.sagemaker.instanceType: got \"m5.large\""]),
    (_raw(serving__sagemaker={"startupTimeout": 30}),
     ["mlops-stack:serving.sagemaker.startupTimeout: got 30"]),
    (_raw(serving__sagemaker={"instanceType": "ml.c7g.large"}),
     ['mlops-stack:serving.sagemaker.instanceType: got "ml.c7g.large"', "its instances run linux/arm64",
      "builds the MLServer image for linux/amd64"]),
], ids=["not-eks", "alias", "gcs-candidate", "foreign-registry", "instance-type", "startup-timeout", "arm-instances"])
def test_sagemaker_config_errors_name_the_key_the_value_and_what_is_allowed(raw, fragments):
    assert_config_error(raw, STACK, fragments)


def test_the_sagemaker_stack_config_is_valid():
    config = parse_stack_config(_raw(), stack=STACK)
    assert config.serving.engine == "sagemaker" and config.serving.sagemaker.instance_type == "ml.m5.large"


# ------------------------------------------------------------------------- container contract

@pytest.fixture(scope="module")
def model_prefix():
    """What SageMaker leaves in /opt/ml/model: the files of an MLflow model's artifact prefix."""
    with mlflow_model_folder("opt-ml-model-") as folder:
        yield folder


def test_serve_starts_mlserver_that_answers_ping_and_invocations_as_sagemaker_calls(plans, model_prefix):
    """The image's `serve` (what `docker run <image> serve` runs) with the planned Model's
    environment; only the model folder and the ports are this machine's."""
    tool_script("mlserver", "mlserver", "MLServer, the runtime SageMaker's container runs")
    path, X, model = model_prefix
    env = dict(_of(plans[STACK], "aws:sagemaker/model:Model")["neo-main"]["primaryContainer"]["environment"])
    port = free_port()
    env |= {"MLSERVER_MODEL_URI": str(path), "MLSERVER_HTTP_PORT": str(port), "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_GRPC_PORT": str(free_port()), "MLSERVER_METRICS_PORT": str(free_port()),
            "PYTHONPATH": str(MLSERVER_IMAGE), "PATH": f"{TOOLS / 'mlserver' / 'bin'}:/usr/bin:/bin"}
    with tempfile.TemporaryDirectory(prefix="sagemaker-serve-") as workdir:
        with _server([str(SERVE)], env, "/ping", port, Path(workdir), 180) as url:
            assert requests.get(f"{url}/ping", timeout=10).status_code == 200
            rows = X.head(4)
            ok = requests.post(f"{url}/invocations", json={"dataframe_split": rows.to_dict(orient="split")},
                               timeout=30)
            assert ok.status_code == 200, ok.text
            assert ok.json()["predictions"] == model.predict(rows).tolist()
            inputs = requests.post(f"{url}/invocations", json={"inputs": rows.to_dict(orient="list")}, timeout=30)
            assert inputs.status_code == 200 and inputs.json()["predictions"] == model.predict(rows).tolist()
            bad = requests.post(f"{url}/invocations", json={"inputs": {"a": [1.0]}}, timeout=30)
            assert 400 <= bad.status_code < 500, (bad.status_code, bad.text)
            # the V2 API answers under the planned model name too (MLSERVER_MODEL_NAME)
            assert requests.get(f"{url}/v2/models/neo/ready", timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------- cost

PRICES = yaml.safe_load((Path(__file__).resolve().parents[1] / "pricing" / "aws-sagemaker-eu-west-1.yaml").read_text())
EKS_PRICES = yaml.safe_load((Path(__file__).resolve().parents[1] / "pricing" / "aws-eu-west-1.yaml").read_text())


def test_every_sagemaker_price_has_a_source_a_date_and_a_reason_when_unverified():
    assert PRICES["region"] == "eu-west-1" and PRICES["instances"]
    for key, entry in PRICES["instances"].items():
        assert key.startswith("ml.") and entry["unit"] == "instance-hour", key
        assert entry["source"].startswith("https://aws.amazon.com/sagemaker/"), key
        assert len(entry["taken"]) == 10 and entry["taken"][4] == "-", key
        assert entry["verified"] or entry.get("reason"), f"{key}: unverified without a reason"


def test_cost_model_counts_the_instances_the_plan_declares(plans, canary_plan):
    """mlops/cost/managed.py states the engine's variant counts; the plans are the truth."""
    from mlops.cost.managed import sagemaker_variants

    for plan, raw in ((plans[STACK], _raw()), (canary_plan, _raw(serving__models=CANARY_MODELS))):
        config = parse_stack_config(raw, stack=STACK)
        for name, endpoint in _of(plan, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").items():
            planned = {v["variantName"]: v["initialInstanceCount"]
                       for v in endpoint["productionVariants"] + (endpoint.get("shadowProductionVariants") or [])}
            assert sagemaker_variants(config.serving.models[name]) == planned, name


def test_mlops_cost_prices_endpoints_and_compares_them_with_in_cluster_serving():
    from mlops.cost.report import build_report, to_json

    report = to_json(build_report(STACK, stacks_dir=STACKS))
    eks = report["estimates"][0]
    hours, m5 = 730, PRICES["instances"]["ml.m5.large"]["price"]
    lines = [line for line in eks["lines"] if line["resource"] == "SageMaker endpoint neo"]
    assert len(lines) == 1 and lines[0]["unit"] == "instance-hour"
    assert lines[0]["quantity"] == 4 * hours  # main 2 + shadow 2, as planned
    assert lines[0]["monthly"] == pytest.approx(4 * hours * m5)
    assert eks["total"] == pytest.approx(sum(line["monthly"] for line in eks["lines"]), abs=0.01)
    [neo] = report["serving"]
    assert neo["variants"] == {"main": 2, "candidate": 2} and neo["instances"] == 4
    assert neo["managedMonthly"] == pytest.approx(round(4 * hours * m5, 2))
    # in the cluster: 4 pods of 100m/512Mi + Seldon's executor (100m/128Mi) on m6i.xlarge workers at 60 %
    node = EKS_PRICES["instances"]["m6i.xlarge"]
    share = max(0.2 / node["vcpu"], 0.625 / node["memoryGib"]) / 0.6
    assert neo["inClusterMonthly"] == pytest.approx(round(4 * share * node["price"] * hours, 2))
    assert report["prices"]["sagemaker"] == {"file": "pricing/aws-sagemaker-eu-west-1.yaml", "region": "eu-west-1",
                                             "taken": PRICES["taken"], "unverified": len(PRICES["instances"])}


def test_an_unpriced_instance_type_names_the_pricing_file():
    from mlops.cost.prices import PricingError
    from mlops.cost.report import build_report

    config = parse_stack_config(_raw(serving__sagemaker={"instanceType": "ml.g5.xlarge"}), stack=STACK)
    with pytest.raises(PricingError, match=r"ml\.g5\.xlarge.*aws-sagemaker-eu-west-1\.yaml"):
        build_report(STACK, config=config)


# ------------------------------------------------ the planned resources as the AWS APIs take them

# the Java regex constructs of the API models that Python's re spells differently
JAVA_REGEX = {r"\uD800\uDC00-\uDBFF\uDFFF": r"\U00010000-\U0010FFFF",  # a UTF-16 surrogate-pair range
              r"\p{Print}": r"[\x20-\x7E]"}  # java.util.regex: printable US-ASCII


def _python_regex(pattern: str | None) -> str | None:
    for java, python in JAVA_REGEX.items():
        pattern = pattern.replace(java, python) if pattern else pattern
    return pattern


def _constraint_problems(value: Any, shape, where: str) -> list[str]:
    """What botocore leaves to the service: enums, patterns and upper bounds of the API reference."""
    problems = []
    if shape.type_name == "structure":
        for key, sub in value.items():
            problems += _constraint_problems(sub, shape.members[key], f"{where}.{key}")
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            problems += _constraint_problems(item, shape.member, f"{where}[{i}]")
    elif shape.type_name == "map":
        for key, sub in value.items():
            problems += _constraint_problems(key, shape.key, f"{where} key") + _constraint_problems(
                sub, shape.value, f"{where}.{key}")
    elif shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of the API's {shape.name} values")
        pattern = _python_regex(shape.metadata.get("pattern"))
        if pattern and not re.fullmatch(pattern, value, re.DOTALL):
            problems.append(f"{where}: {value!r} does not match {pattern}")
        if len(value) > shape.metadata.get("max", len(value)):
            problems.append(f"{where}: longer than {shape.metadata['max']}")
    elif shape.type_name in ("integer", "long", "float", "double"):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            problems.append(f"{where}: {value} outside {low}..{high}")
    return problems


def _call(service: str, operation: str, params: dict[str, Any], response: dict[str, Any]) -> None:
    """One request through the real boto3 client (its parameter validation and serialization), the
    network replaced by botocore's Stubber, and the API reference's own constraints checked."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(service, region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test")
    shape = client.meta.service_model.operation_model(operation).input_shape
    assert _constraint_problems(params, shape, operation) == []
    method = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
    with Stubber(client) as stub:
        stub.add_response(method, response, params)
        getattr(client, method)(**params)
        stub.assert_no_pending_responses()


def _variant_request(v: dict[str, Any]) -> dict[str, Any]:
    return {"VariantName": v["variantName"], "ModelName": v["modelName"], "InstanceType": v["instanceType"],
            "InitialInstanceCount": v["initialInstanceCount"], "InitialVariantWeight": v["initialVariantWeight"],
            "ModelDataDownloadTimeoutInSeconds": v["modelDataDownloadTimeoutInSeconds"],
            "ContainerStartupHealthCheckTimeoutInSeconds": v["containerStartupHealthCheckTimeoutInSeconds"]}


@pytest.mark.parametrize("which", ["shadow", "canary"])
def test_planned_resources_are_requests_the_aws_apis_accept(which, plans, canary_plan):
    """The provider's create calls, built field by field from the planned inputs (the Terraform
    AWS provider's mapping: one `s3_data_sources` block is the API's S3DataSource)."""
    plan = plans[STACK] if which == "shadow" else canary_plan
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:"
    for name, model in _of(plan, "aws:sagemaker/model:Model").items():
        container = model["primaryContainer"]
        [s3] = container["modelDataSource"]["s3DataSources"]
        _call("sagemaker", "CreateModel", {
            "ModelName": model["name"], "ExecutionRoleArn": model["executionRoleArn"],
            "EnableNetworkIsolation": model["enableNetworkIsolation"],
            "PrimaryContainer": {"Image": container["image"], "Environment": container["environment"],
                                 "ModelDataSource": {"S3DataSource": {
                                     "S3Uri": s3["s3Uri"], "S3DataType": s3["s3DataType"],
                                     "CompressionType": s3["compressionType"]}}},
        }, {"ModelArn": f"{arn}model/{model['name']}"})
    for name, config in _of(plan, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").items():
        request = {"EndpointConfigName": config["name"], "KmsKeyId": config["kmsKeyArn"],
                   "ProductionVariants": [_variant_request(v) for v in config["productionVariants"]]}
        if config.get("shadowProductionVariants"):
            request["ShadowProductionVariants"] = [_variant_request(v) for v in config["shadowProductionVariants"]]
        _call("sagemaker", "CreateEndpointConfig", request, {"EndpointConfigArn": f"{arn}endpoint-config/{name}"})
    for name, endpoint in _of(plan, "aws:sagemaker/endpoint:Endpoint").items():
        _call("sagemaker", "CreateEndpoint", {"EndpointName": endpoint["name"],
                                              "EndpointConfigName": endpoint["endpointConfigName"]},
              {"EndpointArn": f"{arn}endpoint/{endpoint['name']}"})
    for target in _of(plan, "aws:appautoscaling/target:Target").values():
        _call("application-autoscaling", "RegisterScalableTarget", {
            "ServiceNamespace": target["serviceNamespace"], "ResourceId": target["resourceId"],
            "ScalableDimension": target["scalableDimension"], "MinCapacity": target["minCapacity"],
            "MaxCapacity": target["maxCapacity"]}, {})
    for policy in _of(plan, "aws:appautoscaling/policy:Policy").values():
        tracking = policy["targetTrackingScalingPolicyConfiguration"]
        _call("application-autoscaling", "PutScalingPolicy", {
            "PolicyName": policy["name"], "ServiceNamespace": policy["serviceNamespace"],
            "ResourceId": policy["resourceId"], "ScalableDimension": policy["scalableDimension"],
            "PolicyType": policy["policyType"], "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": tracking["targetValue"], "ScaleInCooldown": tracking["scaleInCooldown"],
                "ScaleOutCooldown": tracking["scaleOutCooldown"], "PredefinedMetricSpecification": {
                    "PredefinedMetricType": tracking["predefinedMetricSpecification"]["predefinedMetricType"]}}},
              {"PolicyARN": "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:x", "Alarms": []})
    roles = {n: r for n, r in _of(plan, "aws:iam/role:Role").items() if "sagemaker" in r["name"]}
    assert roles
    for name, role in roles.items():
        _call("iam", "CreateRole", {"RoleName": role["name"], "AssumeRolePolicyDocument": role["assumeRolePolicy"],
                                    "Description": role["description"]},
              {"Role": {"Path": "/", "RoleName": role["name"], "RoleId": "AROAEXAMPLE0000000000",
                        "Arn": f"arn:aws:iam::123456789012:role/{role['name']}",
                        "CreateDate": "2026-12-02T00:00:00Z"}})
        policy = _of(plan, "aws:iam/rolePolicy:RolePolicy")[name]
        _call("iam", "PutRolePolicy", {"RoleName": policy["role"], "PolicyName": policy["name"],
                                       "PolicyDocument": policy["policy"]}, {})
    for group in (g for g in _of(plan, "aws:cloudwatch/logGroup:LogGroup").values()
                  if g["name"].startswith("/aws/sagemaker/")):
        _call("logs", "CreateLogGroup", {"logGroupName": group["name"]}, {})
        _call("logs", "PutRetentionPolicy", {"logGroupName": group["name"],
                                             "retentionInDays": group["retentionInDays"]}, {})


def test_the_api_check_rejects_what_the_service_would():
    """The checker above can fail: values botocore sends but SageMaker and Auto Scaling refuse."""
    import botocore.session

    session = botocore.session.get_session()

    def problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
        shape = session.get_service_model(service).operation_model(operation).input_shape
        return _constraint_problems(params, shape, operation)

    variant = {"VariantName": "main_1", "ModelName": "m", "InstanceType": "m5.large", "InitialInstanceCount": 1,
               "ContainerStartupHealthCheckTimeoutInSeconds": 30}
    found = problems("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [variant]})
    where = "CreateEndpointConfig.ProductionVariants[0]."
    assert [p.split(":")[0] for p in found] == [
        f"{where}VariantName", f"{where}InstanceType", f"{where}ContainerStartupHealthCheckTimeoutInSeconds"], found
    assert problems("application-autoscaling", "PutScalingPolicy", {
        "PolicyName": "p", "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/main",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 1.0, "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantCpuUtilization"}}})
