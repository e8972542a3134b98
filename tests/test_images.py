"""Every image a stack runs can be pulled by its cluster: the project's images are built and pushed by
the program (pulumi-docker-build) and referenced by digest, or pre-built and pinned by digest; only
minikube runs images `make up` built into its node; anything else is a config error naming the key."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.images import LOCAL_PREFIX, PROJECT_BUILDS, ROOT, has_registry_host, local_builds, project_build
from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.plan import Plan, run_program, stack_config
from modules.images import ImageBuild, content_hash, content_tag, context_files

REGISTRY = "registry.example.org/mlops"  # what the onprem and full stack files name
SCHEMA = json.loads((Path(__file__).parent / "data/docker-build-image-schema.json").read_text())
DIGEST_REF = re.compile(r"^(?P<repository>[^@]+):(?P<tag>[\w][\w.-]*)@sha256:[0-9a-f]{64}$")
ONPREM = {"platform": "existing", "environment": "prod", "kubernetes": {"context": "lab"}}
PINNED = "sha256:" + "ab" * 32


# --- what the plan runs ------------------------------------------------------------------------

def _images_in(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _images_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images_in(item)


def pod_images(plan: Plan) -> set[str]:
    """Images of every container in the plan's objects, and of Seldon's prepackaged MLServer."""
    images = {i for obj in plan.kubernetes_objects for i in _images_in(obj.get("spec", {}))}
    for release in plan.of_type("kubernetes:helm.sh/v3:Release"):
        servers = (release["inputs"].get("values") or {}).get("predictor_servers") or {}
        for server in servers.values():
            for protocol in server.get("protocols", {}).values():
                images.add(f"{protocol['image']}:{protocol['defaultImageVersion']}")
    return images


def builds(plan: Plan) -> dict[str, dict[str, Any]]:
    return {r["name"].removeprefix("images-"): r["inputs"] for r in plan.of_type("docker-build:index:Image")}


def _values(stack: str, stacks_dir: Path | None = None, **sections: Any) -> tuple[dict[str, str], list[str]]:
    values, secrets = stack_config(stack, stacks_dir)
    for key, section in sections.items():
        values[f"mlops-stack:{key}"] = json.dumps(section)
    return values, secrets


@pytest.fixture(scope="module")
def full() -> Plan:
    return run_program("full", stack_config("full", Path(__file__).parent / "stacks"))


def test_onprem_builds_pushes_and_runs_mlflow_and_mlserver_by_digest(plan_of):
    plan = plan_of("onprem")
    built = builds(plan)
    assert set(built) == {"mlflow-server", "mlserver"}
    for name, inputs in built.items():
        assert inputs["push"] is True
        [tag] = inputs["tags"]
        assert tag.startswith(f"{REGISTRY}/{name}:")
        runs = [i for i in pod_images(plan) if i.startswith(f"{REGISTRY}/{name}:")]
        assert runs and all(i.startswith(f"{tag}@") and DIGEST_REF.match(i) for i in runs), (name, runs)
    mlflow = plan.manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["image"]
    migrate = plan.manifest("Job", "mlflow-db-upgrade")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert mlflow == migrate and mlflow.startswith(built["mlflow-server"]["tags"][0] + "@sha256:")


@pytest.mark.parametrize("stack", ["onprem", "full"])
def test_no_pod_on_an_existing_cluster_runs_an_image_it_cannot_pull(stack, plan_of, full):
    plan = full if stack == "full" else plan_of(stack)
    images = pod_images(plan)
    assert images
    assert [i for i in images if i.startswith(LOCAL_PREFIX) or not has_registry_host(i)] == []


def test_full_stack_builds_the_enabled_workloads_for_every_platform(full):
    built = builds(full)
    # the full stack retrains nothing (no workloads.<name>.retrain); its drift CronJob runs the evaluation image
    assert set(built) == set(PROJECT_BUILDS) - {"retraining"}
    assert built["mnist"]["target"] == "train"
    assert built["energy"]["context"] == {"location": "."}  # workload Dockerfiles copy from the repo root
    assert built["energy"]["dockerfile"] == {"location": "workloads/energy/Dockerfile"}
    for inputs in built.values():
        assert inputs["platforms"] == ["linux/amd64", "linux/arm64"]
        assert inputs["registries"] == [{"address": "registry.example.org", "username": "ci-robot",
                                         "password": "[secret]"}]
    training = {i for i in pod_images(full) if re.search(r"/(energy|neo|mnist):", i)}
    assert {i.split("@")[0] for i in training} == {built[n]["tags"][0] for n in ("energy", "neo", "mnist")}
    assert all(DIGEST_REF.match(i) for i in training)


def test_dev_stack_builds_nothing_and_runs_the_images_make_up_loads(plan_of):
    plan = plan_of("dev")
    assert builds(plan) == {}
    local = {i for i in pod_images(plan) if i.startswith(LOCAL_PREFIX)}
    assert local == {b.ref for b in local_builds(_config("dev"))}
    assert local == {"mlops-stack/mlflow-server:3.17.2-1", "mlops-stack/mlserver:1.7.1-1"}


def test_make_up_builds_the_images_of_enabled_workloads_too():
    """`make up` builds what `mlops local-images` lists: with every workload on, their images as well,
    each from the context and Dockerfile (and target) its slot names."""
    refs = {b.ref: (b.context, b.dockerfile, b.target) for b in local_builds(_config("full-dev", TEST_STACKS))}
    assert refs["mlops-stack/mnist:0.1.0"] == (ROOT, ROOT / "workloads/mnist/Dockerfile", "train")
    assert set(refs) == {"mlops-stack/mlflow-server:3.17.2-1", "mlops-stack/mlserver:1.7.1-1",
                         "mlops-stack/energy:0.1.0", "mlops-stack/neo:0.1.0", "mlops-stack/mnist:0.1.0"}
    assert local_builds(_config("onprem")) == []  # only minikube loads images into its node


def _config(stack: str, stacks_dir: Path | None = None):
    return parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, stacks_dir)))


TEST_STACKS = ROOT / "tests" / "stacks"


# --- validation ----------------------------------------------------------------------------------

def _problems(raw: dict[str, Any], secret_top: set[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, secret_top)
    return str(caught.value)


def test_existing_cluster_without_a_registry_fails_naming_the_key():
    message = _problems(ONPREM)
    assert 'mlops-stack:images.registry: got null; mode build pushes' in message
    assert "registry.example.org/mlops" in message


@pytest.mark.parametrize(("section", "fragments"), [
    ({"images": {"mode": "prebuilt"}},
     ['mlops-stack:mlflow.image: got "mlops-stack/mlflow-server:3.17.2-1"; only `make up` on minikube',
      'mlops-stack:serving.seldon.mlserverImage: got "mlops-stack/mlserver:1.7.1-1"',
      "images.registry", "digest: sha256:"]),
    ({"images": {"mode": "prebuilt"}, "mlflow": {"image": {"repository": f"{REGISTRY}/mlflow-server"}},
      "serving": {"seldon": {"mlserverImage": {"repository": f"{REGISTRY}/mlserver", "digest": PINNED}}}},
     ['mlops-stack:mlflow.image: got "registry.example.org/mlops/mlflow-server:3.17.2-1"',
      "must be pinned by digest"]),
    ({"images": {"registry": REGISTRY},
      "serving": {"models": {"mnist": {"source": {"image": {"repository": "mlops-stack/mnist-server", "tag": "1"}}}}}},
     ['mlops-stack:serving.models.mnist.source.image: got "mlops-stack/mnist-server:1"',
      "push it to a registry the cluster pulls from"]),
    ({"images": {"registry": REGISTRY},
      "database": {"image": {"repository": "library/postgres", "tag": "17.6"}}},
     ['mlops-stack:database.image: got "library/postgres:17.6"; no registry host', "docker.io/library/postgres"]),
    ({"images": {"mode": "local"}}, ['mlops-stack:images.mode: got "local"; local images exist only in minikube']),
    ({"images": {"mode": "prebuilt", "registry": REGISTRY},
      "mlflow": {"image": {"repository": f"{REGISTRY}/mlflow-server", "digest": PINNED}},
      "serving": {"seldon": {"mlserverImage": {"repository": f"{REGISTRY}/mlserver", "digest": PINNED}}}},
     ['mlops-stack:images.mode: got "prebuilt"; images.registry, username and password are read only']),
    ({"images": {"registry": "https://registry.example.org"}}, ["mlops-stack:images.registry: got", "no scheme"]),
    ({"images": {"registry": REGISTRY, "platforms": ["linux/amd65"]}}, ["mlops-stack:images.platforms.0"]),
], ids=["prebuilt-local-names", "prebuilt-no-digest", "model-image-local", "implicit-docker-hub", "local-mode",
        "registry-without-build", "registry-scheme", "platform"])
def test_images_the_cluster_cannot_pull_are_rejected(section, fragments):
    message = _problems({**ONPREM, **section})
    for fragment in fragments:
        assert fragment in message, message


def test_pinned_prebuilt_images_pass_and_nothing_is_built():
    images = {"mlflow": {"image": {"repository": f"{REGISTRY}/mlflow-server", "digest": PINNED}},
              "serving": {"seldon": {"mlserverImage": {"repository": f"{REGISTRY}/mlserver", "digest": PINNED}}}}
    parse_stack_config({**ONPREM, "images": {"mode": "prebuilt"}, **images})
    plan = run_program("onprem", _values("onprem", images={"mode": "prebuilt"}, **images))
    assert builds(plan) == {}
    assert f"{REGISTRY}/mlflow-server:3.17.2-1@{PINNED}" in pod_images(plan)
    assert f"{REGISTRY}/mlserver:1.7.1-1@{PINNED}" in pod_images(plan)


def test_registry_credentials_go_together_and_stay_secret():
    raw = {**ONPREM, "images": {"registry": REGISTRY, "password": "t0ps3cret"}}
    message = _problems(raw)
    assert "mlops-stack:images.password: stored in plain text" in message
    assert "mlops-stack:images.username: got null; username and password" in message
    assert "t0ps3cret" not in message
    config = parse_stack_config({**raw, "images": {**raw["images"], "username": "robot"}}, {"images"})
    assert config.images.password.get_secret_value() == "t0ps3cret"


# --- content-derived tags ------------------------------------------------------------------------

@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/main.py").write_text("print('v1')\n")
    (tmp_path / "README.md").write_text("docs\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11.14-slim-bookworm\nCOPY app /app\n")
    (tmp_path / ".dockerignore").write_text("README.md\n**/__pycache__\n")
    return tmp_path


def test_content_hash_follows_the_files_docker_sends(context):
    build = ImageBuild(context, version="1.0")
    before = content_hash(build, ["linux/amd64"])
    assert content_hash(build, ["linux/amd64"]) == before
    (context / "README.md").write_text("other docs\n")  # ignored
    (context / "app/__pycache__").mkdir()
    (context / "app/__pycache__/main.cpython-311.pyc").write_bytes(b"\0")
    assert content_hash(build, ["linux/amd64"]) == before
    (context / "app/main.py").write_text("print('v2')\n")
    changed = content_hash(build, ["linux/amd64"])
    assert changed != before
    (context / "app/util.py").write_text("")
    assert content_hash(build, ["linux/amd64"]) not in (before, changed)
    assert content_hash(build, ["linux/amd64", "linux/arm64"]) != content_hash(build, ["linux/amd64"])
    assert re.fullmatch(r"1\.0-[0-9a-f]{12}", content_tag(build, ["linux/amd64"]))


def test_repository_root_context_is_only_what_the_workload_copies(tmp_path):
    """The workloads' <Dockerfile>.dockerignore allow-lists their own folder: other files never retag."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "workloads", root / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "README.md").write_text("x\n")
    (root / ".venv/lib").mkdir(parents=True)
    (root / ".venv/lib/big.bin").write_bytes(b"\0")
    energy = ImageBuild(root, root / "workloads/energy/Dockerfile")
    files = context_files(energy)
    assert files and all(f == "workloads/__init__.py" or f.startswith(("workloads/common/", "workloads/energy/"))
                         for f in files)
    before = content_hash(energy, ["linux/amd64"])
    (root / "workloads/neo/model.py").write_text("changed\n")
    (root / "README.md").write_text("y\n")
    assert content_hash(energy, ["linux/amd64"]) == before
    (root / "workloads/common/tracking.py").write_text("changed\n")
    assert content_hash(energy, ["linux/amd64"]) != before


def uncopied_sources(build: ImageBuild) -> list[str]:
    """COPY sources of the built stages (up to the target) that are not in the build context."""
    files = context_files(build)
    missing, reached_target = [], False
    for line in build.dockerfile_path.read_text().splitlines():
        if line.startswith("FROM "):
            if reached_target:
                break  # later stages are not built
            reached_target = build.target is not None and line.rstrip().endswith(f" AS {build.target}")
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            for source in (w for w in words[1:-1] if not w.startswith("--")):
                if not any(f == source or f.startswith(source.rstrip("/") + "/") for f in files):
                    missing.append(source)
    return missing


@pytest.mark.parametrize("name", sorted(PROJECT_BUILDS))
def test_every_file_a_project_dockerfile_copies_is_in_its_context(name):
    assert uncopied_sources(project_build(name, "")) == []


def test_copy_check_rejects_an_ignore_file_that_drops_a_copied_folder(tmp_path):
    shutil.copytree(ROOT / "workloads", tmp_path / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    ignore = tmp_path / "workloads/neo/Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text().replace("!workloads/common\n", ""))
    assert uncopied_sources(ImageBuild(tmp_path, tmp_path / "workloads/neo/Dockerfile")) == ["workloads/common"]


# --- the provider's schema -----------------------------------------------------------------------

def schema_problems(value: Any, spec: Mapping[str, Any], where: str) -> list[str]:
    """Where `value` breaks pulumi-docker-build's schema (v0.0.22; tests/data, extracted at the tag)."""
    if "$ref" in spec:
        spec = SCHEMA["types"][spec["$ref"].rsplit("/", 1)[-1]]
    if value == "[secret]":
        return []
    kind = spec.get("type")
    if "enum" in spec:
        allowed = [e["value"] for e in spec["enum"]]
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for n, item in enumerate(value) for p in schema_problems(item, spec["items"], f"{where}[{n}]")]
    if kind == "object" and "properties" in spec:
        return object_problems(value, spec["properties"], spec.get("required", []), where)
    if kind == "object":
        return [] if isinstance(value, dict) else [f"{where}: expected an object"]
    python = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}.get(kind)
    return [] if python is None or isinstance(value, python) else [f"{where}: expected {kind}, got {value!r}"]


def object_problems(value: Any, properties: Mapping[str, Any], required: list[str], where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object"]
    problems = [f"{where}.{k}: required" for k in required if k not in value]
    for key, item in value.items():
        if key not in properties:
            problems.append(f"{where}.{key}: not an input of docker-build:index:Image")
        else:
            problems += schema_problems(item, properties[key], f"{where}.{key}")
    return problems


def test_image_inputs_match_the_provider_schema(full):
    built = builds(full)
    assert built
    for name, inputs in built.items():
        assert object_problems(inputs, SCHEMA["inputProperties"], SCHEMA["requiredInputs"], name) == []
        assert {"context", "dockerfile", "push", "registries", "tags", "platforms"} <= set(inputs)


def test_schema_check_rejects_wrong_inputs():
    bad = {"context": {"path": "."}, "platforms": ["linux/amd65"], "registries": [{"username": "u"}],
           "tag": "x"}
    assert sorted(object_problems(bad, SCHEMA["inputProperties"], SCHEMA["requiredInputs"], "bad")) == [
        "bad.context.location: required", "bad.context.path: not an input of docker-build:index:Image",
        "bad.platforms[0]: 'linux/amd65' is not one of " + str(
            [e["value"] for e in SCHEMA["types"]["docker-build:index:Platform"]["enum"]]),
        "bad.push: required", "bad.registries[0].address: required",
        "bad.tag: not an input of docker-build:index:Image"]
