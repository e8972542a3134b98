"""GKE/EKS images and the CI model pipeline's access (issue 12, blockers 1 and 5):

- the first `pulumi up` builds mlflow-server, mlserver and the enabled workloads' images into the
  registry the platform creates (logged in with the platform's token), and every pod runs them by
  digest; each ECR push waits for its own repository; Arm node pools get an arm64 (multi-arch) build;
  pre-built images must be pinned by digest;
- the `models` identity reads one cloud secret (no Pulumi state), which carries the pipeline's own
  MLflow user `ci-models` — EDIT on the demo workloads' experiments and models, nothing else.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.program import CI_MLFLOW_RESOURCES, CI_MLFLOW_USER
from infra.settings import ConfigError, parse_stack_config
from mlops.plan import FAKE_ACCOUNT, SECRET, Plan, run_program, stack_config

ROOT = Path(__file__).resolve().parents[1]
STACKS = ROOT / "tests/stacks"
REGISTRY = {"gke": "europe-west1-docker.pkg.dev/my-mlops-project/mlops",
            "eks": f"{FAKE_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlops"}
LOGIN_USER = {"gke": "oauth2accesstoken", "eks": "AWS"}
PLATFORM_IMAGES = {"mlflow-server", "mlserver"}
WORKLOAD_IMAGES = {"energy", "neo", "mnist"}
IMAGE = "docker-build:index:Image"
DIGEST_REF = re.compile(r"^(?P<repo>[^@:]+(?::[0-9]+)?/[^@:]+):[A-Za-z0-9_.-]+@sha256:[0-9a-f]{64}$")
SECTION = {"gke": "gcp", "eks": "aws"}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@functools.cache
def _plan(stack: str, reveal: bool = False, overrides: str = "{}") -> Plan:
    """The plan of a shipped (or tests/stacks `full-*`) stack with config sections deep-merged."""
    values, secret_keys = stack_config(stack, STACKS if stack.startswith("full") else None)
    for top, section in json.loads(overrides).items():
        key = f"mlops-stack:{top}"
        values[key] = json.dumps(_merge(json.loads(values.get(key, "{}")), section))
    return run_program(stack, (values, secret_keys), reveal_secrets=reveal)


def plan(stack: str, reveal: bool = False, **sections: Any) -> Plan:
    return _plan(stack, reveal, json.dumps(sections, sort_keys=True))


def builds(p: Plan) -> dict[str, dict[str, Any]]:
    """Image name (last path component of the tag's repository) → its docker-build registration."""
    return {r["inputs"]["tags"][0].rsplit(":", 1)[0].rsplit("/", 1)[1]: r for r in p.of_type(IMAGE)}


def _images(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "image" and isinstance(v, str)]
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def pod_images(p: Plan) -> list[str]:
    return [image for obj in p.kubernetes_objects for image in _images(obj.get("spec", {}))]


@pytest.mark.parametrize("cloud", ["gke", "eks"])
def test_shipped_cloud_stacks_build_the_platform_images_into_their_registry(cloud):
    found = builds(plan(cloud))
    assert set(found) == PLATFORM_IMAGES  # workloads are off in the shipped stacks
    for name, image in found.items():
        inputs = image["inputs"]
        assert inputs["push"] is True
        assert inputs["tags"][0].startswith(f"{REGISTRY[cloud]}/{name}:")
        [login] = inputs["registries"]
        assert login == {"address": REGISTRY[cloud].split("/", 1)[0], "username": LOGIN_USER[cloud],
                         "password": SECRET}


@pytest.mark.parametrize("cloud", ["gke", "eks"])
def test_every_project_image_runs_by_digest_from_the_stack_registry(cloud):
    p = plan(f"full-{cloud}")
    assert set(builds(p)) == PLATFORM_IMAGES | WORKLOAD_IMAGES
    images = pod_images(p)
    assert images and not [i for i in images if i.startswith("mlops-stack/")]
    ours = [i for i in images if i.startswith(REGISTRY[cloud] + "/")]
    assert {i.split("/")[-1].split(":")[0] for i in ours} == {"mlflow-server"} | WORKLOAD_IMAGES
    for image in ours:
        assert DIGEST_REF.match(image), image
    # MLServer runs from Seldon's operator config: repository + "tag@digest" in the chart values
    [operator] = [r for r in p.of_type("kubernetes:helm.sh/v3:Release") if r["name"] == "serving-operator"]
    values = json.dumps(operator["inputs"]["values"])
    assert re.search(rf'"{re.escape(REGISTRY[cloud])}/mlserver"', values)
    assert re.search(r'"[A-Za-z0-9_.-]+@sha256:[0-9a-f]{64}"', values)


def test_each_ecr_push_waits_for_its_own_repository():
    p = plan("full-eks")
    repositories = {r["inputs"]["name"].split("/", 1)[1]: r["urn"] for r in p.of_type("aws:ecr/repository:Repository")}
    for name, image in builds(p).items():
        assert repositories[name] in image["depends_on"], f"the push of {name} does not wait for its repository"


@pytest.mark.parametrize(("cloud", "arm_machine"), [("eks", "m7g.large"), ("gke", "c4a-standard-4")])
def test_an_arm_node_pool_makes_a_multi_arch_build(cloud, arm_machine):
    amd = {r["inputs"]["tags"][0]: r["inputs"]["platforms"] for r in plan(cloud).of_type(IMAGE)}
    assert set(map(tuple, amd.values())) == {("linux/amd64",)}
    mixed = plan(cloud, **{SECTION[cloud]: {"nodePools": {"workload": {"machineType": arm_machine}}}})
    for image in mixed.of_type(IMAGE):
        assert image["inputs"]["platforms"] == ["linux/amd64", "linux/arm64"]
    # the platforms are part of the content tag: an arm64 build never reuses an amd64-only tag
    assert not set(amd) & {r["inputs"]["tags"][0] for r in mixed.of_type(IMAGE)}


def test_graviton_only_node_pools_build_arm64_only():
    arm = plan("eks", aws={"nodePools": {"system": {"machineType": "t4g.large"},
                                         "workload": {"machineType": "m7g.large"}}})
    assert {tuple(r["inputs"]["platforms"]) for r in arm.of_type(IMAGE)} == {("linux/arm64",)}


GKE = {"platform": "gke", "environment": "dev", "gcp": {"project": "my-mlops-project"}}
EKS = {"platform": "eks", "environment": "dev"}
PINNED = "sha256:" + "a" * 64


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    return str(caught.value)


@pytest.mark.parametrize("raw", [GKE, EKS], ids=["gke", "eks"])
def test_cloud_defaults_build_and_a_minimal_stack_stays_valid(raw):
    assert parse_stack_config(raw).images.mode == "build"


@pytest.mark.parametrize(("raw", "registry"), [
    (GKE, "europe-west1-docker.pkg.dev/my-mlops-project/mlops"),
    (EKS, f"{FAKE_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/mlops"),
], ids=["gke", "eks"])
def test_prebuilt_images_must_be_pinned_by_digest(raw, registry):
    images = {"mlflow": {"image": {"repository": f"{registry}/mlflow-server", "tag": "3.17.2-1"}},
              "serving": {"seldon": {"mlserverImage": {"repository": f"{registry}/mlserver", "tag": "1.7.1-1",
                                                       "digest": PINNED}}}}
    message = _problems({**raw, "images": {"mode": "prebuilt"}, **images})
    assert "mlops-stack:mlflow.image: got" in message and "pinned by digest" in message
    assert "serving.seldon.mlserverImage" not in message  # that one has its digest
    images["mlflow"]["image"]["digest"] = PINNED
    assert parse_stack_config({**raw, "images": {"mode": "prebuilt"}, **images}).images.mode == "prebuilt"


def test_prebuilt_without_naming_the_images_names_each_key():
    message = _problems({**EKS, "images": {"mode": "prebuilt"}})
    assert "mlops-stack:mlflow.image: got \"mlops-stack/mlflow-server" in message
    assert "mlops-stack:serving.seldon.mlserverImage" in message


def test_explicit_platforms_must_cover_the_node_pools():
    arm_pool = {"nodePools": {"workload": {"machineType": "m7g.large"}}}
    message = _problems({**EKS, "aws": arm_pool, "images": {"platforms": ["linux/amd64"]}})
    assert "mlops-stack:images.platforms: got [\"linux/amd64\"]" in message and "add linux/arm64" in message
    both = {"platforms": ["linux/amd64", "linux/arm64"]}
    assert parse_stack_config({**EKS, "aws": arm_pool, "images": both}).images.platforms == both["platforms"]


def test_every_built_image_needs_an_ecr_repository():
    message = _problems({**EKS, "aws": {"registryImages": ["mlflow-server"]}})
    assert "mlops-stack:aws.registryImages: got [\"mlflow-server\"]" in message and "mlserver" in message


# --- the model pipeline: its stack values, and its own MLflow user ---------------------------------

def _values(p: Plan, cloud: str) -> dict[str, Any]:
    version = _values_version(p, cloud)
    return json.loads(version["inputs"]["secretData" if cloud == "gke" else "secretString"])


def _users_state(p: Plan) -> dict[str, Any]:
    secret = p.manifest("Secret", "mlflow-users-state", "mlflow")
    return json.loads(secret["stringData"]["state.json"])


def _values_version(p: Plan, cloud: str) -> dict[str, Any]:
    [version] = p.of_type("gcp:secretmanager/secretVersion:SecretVersion" if cloud == "gke"
                          else "aws:secretsmanager/secretVersion:SecretVersion")
    return version


@pytest.mark.parametrize("cloud", ["gke", "eks"])
def test_pipeline_values_carry_its_own_mlflow_login_not_the_admins(cloud):
    p = plan(cloud, reveal=True)
    values = _values(p, cloud)
    ci = {u["username"]: u for u in _users_state(p)["users"]}[CI_MLFLOW_USER]
    assert values["mlflowUsername"] == CI_MLFLOW_USER == p.outputs["mlflowCiUsername"]
    assert values["mlflowPassword"] == ci["password"]
    assert values["mlflowUrl"] == p.outputs["mlflowUrl"] and values["registryUrl"] == p.outputs["registryUrl"]
    assert set(values) == {"mlflowUrl", "mlflowUsername", "mlflowPassword", "modelUrls", "kubeconfig", "registryUrl"}
    # wiring, not look-alike values: the document is made from the CI user's password, never the admin's
    randoms = {r["name"]: r["urn"] for r in p.of_type("random:index/randomPassword:RandomPassword")}
    depends = _values_version(p, cloud)["depends_on"]
    assert randoms[f"mlflow-users-{CI_MLFLOW_USER}-password"] in depends
    assert randoms["mlflow-admin-password"] not in depends
    assert p.outputs["mlflowCiPassword"] == SECRET  # its own secret output


def test_gke_models_account_reads_its_secret_and_no_state():
    p = plan("gke")
    models = "serviceAccount:" + p.outputs["ciIdentities"]["modelsServiceAccount"]
    [secret] = p.of_type("gcp:secretmanager/secret:Secret")
    reference = f"projects/my-mlops-project/secrets/{secret['inputs']['secretId']}"
    assert p.outputs["ciIdentities"]["modelsStackValues"] == reference
    grants = [r for r in p.resources if r["inputs"].get("member") == models]
    kinds = {(r["type"], r["inputs"]["role"]) for r in grants}
    assert ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor") in kinds
    assert not [r for r in grants if r["type"].startswith("gcp:storage/")], "models must not read any bucket"
    project_roles = {r["inputs"]["role"] for r in grants if r["type"] == "gcp:projects/iAMMember:IAMMember"}
    assert project_roles == {"roles/container.clusterViewer"}  # no project-wide secret or storage role
    [accessor] = [r for r in grants if r["type"] == "gcp:secretmanager/secretIamMember:SecretIamMember"]
    assert accessor["inputs"]["secretId"] == secret["inputs"]["secretId"]
    assert "secretmanager" in " ".join(r["inputs"]["service"] for r in p.of_type("gcp:projects/service:Service"))


def _statements(p: Plan, role: str) -> list[dict[str, Any]]:
    policies = [r for r in p.of_type("aws:iam/rolePolicy:RolePolicy") if r["inputs"]["role"] == role]
    return [s for r in policies for s in json.loads(r["inputs"]["policy"])["Statement"]]


def test_eks_models_role_reads_its_secret_and_no_state():
    p = plan("eks")
    reference = p.outputs["ciIdentities"]["modelsStackValues"]
    statements = _statements(p, "mlops-eks-ci-models")
    reads = [s for s in statements if "secretsmanager:GetSecretValue" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in reads] == [reference]
    assert not [s for s in statements if "s3:" in json.dumps(s["Action"])], "models must not read any bucket"
    attached = [r for r in p.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r["inputs"]["role"] == "mlops-eks-ci-models"]
    assert attached == []  # no managed policy (ReadOnlyAccess would read the state bucket)


def test_ci_mlflow_user_has_edit_on_the_workloads_only_and_no_admin():
    p = plan("gke", reveal=True)
    users = {u["username"]: u for u in _users_state(p)["users"]}
    ci = users[CI_MLFLOW_USER]
    assert CI_MLFLOW_USER != p.outputs["mlflowAdminUsername"]
    assert {q["permission"] for q in ci["permissions"]} == {"EDIT"}  # no MANAGE: cannot grant itself more
    expected = {(kind, name) for experiment, model in CI_MLFLOW_RESOURCES.values()
                for kind, name in (("experiment", experiment), ("registered_model", model))}
    assert {(q["kind"], q["name"]) for q in ci["permissions"]} == expected
    assert users.keys() >= {"model-reader", CI_MLFLOW_USER}


@pytest.mark.parametrize("workload", sorted(CI_MLFLOW_RESOURCES))
def test_ci_permissions_name_what_training_writes(workload):
    """CI_MLFLOW_RESOURCES must follow EXPERIMENT / MODEL_NAME of workloads/<name>/train.py."""
    tree = ast.parse((ROOT / f"workloads/{workload}/train.py").read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert CI_MLFLOW_RESOURCES[workload] == (constants["EXPERIMENT"], constants["MODEL_NAME"])


def test_the_pipeline_never_logs_in_as_the_mlflow_admin():
    text = (ROOT / ".github/workflows/model-pipeline.yml").read_text()
    assert "mlflowAdmin" not in text
    assert text.count("run: .github/scripts/stack_values.sh") == text.count("command: output") > 0


def _fake_cli(tmp_path: Path, name: str, document: dict[str, Any], expected_args: str) -> None:
    """A stand-in for gcloud/aws that answers only the exact call the script must make."""
    tool = tmp_path / name
    tool.write_text(f"#!/usr/bin/env bash\n[ \"$*\" = {json.dumps(expected_args)} ] || "
                    f"{{ echo \"unexpected: $*\" >&2; exit 9; }}\ncat <<'JSON'\n{json.dumps(document)}\nJSON\n")
    tool.chmod(0o755)


def _run_values_script(tmp_path: Path, reference: str) -> subprocess.CompletedProcess[str]:
    output = tmp_path / "github_output"
    output.write_text("")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "STACK_VALUES": reference,
           "GITHUB_OUTPUT": str(output)}
    return subprocess.run([str(ROOT / ".github/scripts/stack_values.sh")], env=env, capture_output=True, text=True)


def _outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT's format: name=value lines and name<<DELIMITER blocks."""
    lines, values, i = text.splitlines(), {}, 0
    while i < len(lines):
        if "<<" in lines[i] and "=" not in lines[i].split("<<", 1)[0]:
            name, delimiter = lines[i].split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name], i = "\n".join(lines[i + 1:end]), end + 1
        else:
            name, value = lines[i].split("=", 1)
            values[name], i = value, i + 1
    return values


@pytest.mark.parametrize(("tool", "reference", "args"), [
    ("gcloud", "projects/p/secrets/mlops-gke-ci-models",
     "secrets versions access projects/p/secrets/mlops-gke-ci-models/versions/latest"),
    ("aws", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf",
     "secretsmanager get-secret-value --secret-id arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf "
     "--query SecretString --output text"),
])
def test_stack_values_script_hands_the_values_to_the_stages_masked(tmp_path, tool, reference, args):
    kubeconfig = json.dumps({"apiVersion": "v1", "kind": "Config"}, indent=2)
    document = {"mlflowUrl": "https://mlflow.example.com", "mlflowUsername": "ci-models", "mlflowPassword": "s3cr3t",
                "modelUrls": {"neo": "https://models.example.com/neo"}, "kubeconfig": kubeconfig,
                "registryUrl": "r.example.com/mlops"}
    _fake_cli(tmp_path, tool, document, args)
    result = _run_values_script(tmp_path, reference)
    assert result.returncode == 0, result.stderr
    assert "::add-mask::s3cr3t" in result.stdout
    out = _outputs((tmp_path / "github_output").read_text())
    assert out["kubeconfig"] == kubeconfig and json.loads(out["modelUrls"]) == document["modelUrls"]
    assert (out["mlflowUrl"], out["mlflowUsername"], out["mlflowPassword"]) == (
        "https://mlflow.example.com", "ci-models", "s3cr3t")


def test_stack_values_script_refuses_an_unknown_reference(tmp_path):
    result = _run_values_script(tmp_path, "gs://pulumi-state/.pulumi/stacks/x.json")
    assert result.returncode == 1 and "stack-values must be" in result.stdout


# --- mlops cost: the registry holds what the stack builds ---------------------------------------

def _registry_line(raw: dict[str, Any], usage_file: Path | None = None):
    from mlops.cost.estimate import price_eks, price_gke
    from mlops.cost.needs import needs_of
    from mlops.cost.usage import load_usage

    config = parse_stack_config(raw)
    usage = load_usage(usage_file)
    priced = (price_gke if config.platform == "gke" else price_eks)(needs_of("cost", config, usage), usage)
    [line] = [x for x in priced.lines if x.resource == "container registry"]
    return line


@pytest.mark.parametrize("raw", [GKE, EKS], ids=["gke", "eks"])
def test_registry_storage_is_priced_from_the_images_the_stack_builds(raw):
    from infra.images import IMAGE_GIB, VERSIONS_KEPT

    stored = (IMAGE_GIB["mlflow-server"] + IMAGE_GIB["mlserver"]) * VERSIONS_KEPT
    assert f"{stored:g} GiB of images" == _registry_line(raw).item
    workloads = {"workloads": {"energy": {"enabled": True}, "mnist": {"enabled": True},
                               "neo": {"enabled": True, "dataUrl": "https://data.example.org/neo/nasa.csv"}}}
    with_workloads = _registry_line({**raw, **workloads})
    stored_all = stored + sum(IMAGE_GIB[n] for n in WORKLOAD_IMAGES) * VERSIONS_KEPT
    assert with_workloads.item == f"{stored_all:g} GiB of images"
    assert with_workloads.monthly > _registry_line(raw).monthly


def test_a_multi_arch_build_doubles_the_registry_storage():
    amd = _registry_line(EKS)
    mixed = _registry_line({**EKS, "aws": {"nodePools": {"workload": {"machineType": "m6g.large"}}}})
    assert float(mixed.item.split()[0]) == pytest.approx(2 * float(amd.item.split()[0]))


def test_a_usage_file_still_overrides_the_registry_estimate(tmp_path):
    usage_file = tmp_path / "usage.yaml"
    usage_file.write_text("registry: {storedGib: 200}\n")
    assert _registry_line(EKS, usage_file).item == "200 GiB of images"
