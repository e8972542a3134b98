"""The in-cluster image builder (ci.runners.builder, modules/ci/runners.py): config errors, the
plan passing `mlops validate`, each pod meeting the Pod Security level its namespace enforces, the
NetworkPolicy admitting the runner pods alone, buildkitd's config, and Checkov on its manifests.

A real rootless buildkitd cannot run here: no registry this machine reaches ships BuildKit
(Debian bookworm has no buildkit package, PyPI none), so its build is checked on the plan only.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from infra.config.ci import RunnersConfig
from infra.platforms import cluster_facts
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.paths import ROOT
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from modules.ci.runners import (
    BUILDER_NAMESPACE,
    BUILDKIT_CLIENT_LABEL,
    RUNNERS_NAMESPACE,
    builder_endpoint,
    buildkitd_toml,
)
from tests.tools import require_tool

TEST_STACKS = Path(__file__).parent / "stacks"
MINIKUBE_REGISTRY = "registry.kube-system.svc.cluster.local:80"
LEVELS = ("privileged", "baseline", "restricted")
# Pod Security Standards, baseline: capabilities a container may add (kubernetes.io/docs/concepts/security/pod-security-standards)
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _builder_values(builder: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    values, secrets = stack_config("full", TEST_STACKS)
    ci = json.loads(values["mlops-stack:ci"])
    ci["runners"]["builder"] = builder
    return {**values, "mlops-stack:ci": json.dumps(ci)}, secrets


@pytest.fixture(scope="module")
def builder_stack() -> tuple[Plan, Any]:
    values = _builder_values({"enabled": True, "insecureRegistries": [MINIKUBE_REGISTRY]})
    return run_program("full", values), parse_stack_config(*raw_from_pulumi_config(*values))


def _objects(plan: Plan, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in plan.kubernetes_objects if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def _one(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in plan.kubernetes_objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _scale_set_values(plan: Plan) -> dict[str, Any]:
    return next(r["inputs"]["values"] for r in plan.of_type("kubernetes:helm.sh/v3:Release")
                if r["inputs"]["chart"].endswith("/gha-runner-scale-set"))


# --- config ----------------------------------------------------------------------------------

def _runners(**builder: Any) -> dict[str, Any]:
    return {"enabled": False, "scaleSetName": "s", "minRunners": 0, "maxRunners": 1, "chartVersion": "0.14.2",
            "runnerImage": {"repository": "r", "tag": "1"}, "deployScope": "serving",
            "resources": {"cpu": "1", "memory": "1Gi", "memoryLimit": "1Gi"},
            "controllerResources": {"cpu": "1", "memory": "1Gi", "memoryLimit": "1Gi"}, "builder": builder}


def test_builder_defaults_to_a_pinned_rootless_image_and_is_off():
    builder = RunnersConfig.model_validate(_runners()).builder
    assert not builder.enabled and builder.image.tag.endswith("-rootless") and builder.image.tag != "latest"


@pytest.mark.parametrize(("builder", "message"), [
    ({"enabled": True}, "set ci.runners.enabled true"),
    ({"image": {"repository": "moby/buildkit", "tag": "v0.32.2"}}, "'-rootless' BuildKit image"),
    ({"insecureRegistries": ["http://registry:80/path"]}, "no scheme or path"),
])
def test_config_rejects(builder, message):
    with pytest.raises(ValidationError, match=message):
        RunnersConfig.model_validate(_runners(**builder))


# --- the plan --------------------------------------------------------------------------------

def test_plan_passes_mlops_validate(builder_stack):
    plan, config = builder_stack
    assert {o["kind"] for o in _objects(plan, "Deployment", BUILDER_NAMESPACE)
            + _objects(plan, "Service", BUILDER_NAMESPACE)} == {"Deployment", "Service"}
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()


def test_disabled_builder_declares_nothing(plan_of):
    assert not [o for o in plan_of("onprem").kubernetes_objects
                if o["metadata"].get("namespace") == BUILDER_NAMESPACE or o["metadata"]["name"] == BUILDER_NAMESPACE]


def pod_security_violations(spec: dict[str, Any], level: str) -> list[str]:
    """What the Pod Security admission at `level` refuses in a pod spec (the fields these pods set)."""
    if level == "privileged":
        return []
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    found += [f"volume {v['name']}: hostPath" for v in spec.get("volumes", []) if "hostPath" in v]
    pod_seccomp = (spec.get("securityContext") or {}).get("seccompProfile", {}).get("type")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        ctx = c.get("securityContext") or {}
        where = f"container {c['name']}"
        found += [f"{where}: privileged"] if ctx.get("privileged") else []
        found += [f"{where}: hostPort"] if any(p.get("hostPort") for p in c.get("ports", [])) else []
        found += [f"{where}: adds {sorted(set(ctx.get('capabilities', {}).get('add', [])) - BASELINE_CAPABILITIES)}"
                  ] if set(ctx.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES else []
        seccomp = ctx.get("seccompProfile", {}).get("type", pod_seccomp)
        found += [f"{where}: seccomp Unconfined"] if seccomp == "Unconfined" else []
        found += [f"{where}: AppArmor Unconfined"] if ctx.get("appArmorProfile", {}).get("type") == "Unconfined" else []
        found += [f"{where}: procMount {ctx['procMount']}"] if ctx.get("procMount", "Default") != "Default" else []
        if level == "restricted":
            found += [f"{where}: allowPrivilegeEscalation not false"] if ctx.get("allowPrivilegeEscalation") is not False else []
            found += [f"{where}: seccomp unset"] if seccomp not in ("RuntimeDefault", "Localhost") else []
    return found


def _enforced(plan: Plan, namespace: str) -> str:
    return _one(plan, "Namespace", namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]


def test_builder_pod_meets_its_namespace_level_and_runners_stay_baseline(builder_stack):
    plan, _ = builder_stack
    assert _enforced(plan, RUNNERS_NAMESPACE) == "baseline"
    builder = _one(plan, "Deployment", "buildkitd")["spec"]["template"]["spec"]
    assert pod_security_violations(builder, _enforced(plan, BUILDER_NAMESPACE)) == []
    # rootless: never root, never a privileged container, no host access
    assert builder["securityContext"]["runAsNonRoot"] and builder["securityContext"]["runAsUser"] == 1000
    runner = _scale_set_values(plan)["template"]["spec"]
    assert pod_security_violations(runner, _enforced(plan, RUNNERS_NAMESPACE)) == []


def test_builder_pod_would_be_refused_in_a_baseline_namespace(builder_stack):
    """Bad fixture: why the builder has a namespace of its own (runners keep `baseline`)."""
    builder = _one(builder_stack[0], "Deployment", "buildkitd")["spec"]["template"]["spec"]
    assert pod_security_violations(builder, "baseline") == [
        "container buildkitd: seccomp Unconfined", "container buildkitd: AppArmor Unconfined"]
    privileged = copy.deepcopy(builder)
    privileged["containers"][0]["securityContext"]["privileged"] = True
    assert "container buildkitd: privileged" in pod_security_violations(privileged, "baseline")


def admitted(policy: dict[str, Any], namespace: str, pod_labels: dict[str, str], port: int) -> bool:
    """Whether a pod (its namespace, labels) may connect to `port` under one ingress NetworkPolicy."""
    for rule in policy["spec"].get("ingress", []):
        if port not in [p["port"] for p in rule.get("ports", [])] and rule.get("ports"):
            continue
        for peer in rule.get("from", []):
            ns_ok = peer.get("namespaceSelector", {}).get("matchLabels", {}).items() <= {
                "kubernetes.io/metadata.name": namespace}.items() if "namespaceSelector" in peer else (
                namespace == policy["metadata"]["namespace"])
            pods_ok = peer.get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items()
            if ns_ok and pods_ok:
                return True
    return False


def test_only_runner_pods_reach_buildkitd(builder_stack):
    plan, _ = builder_stack
    policy = _one(plan, "NetworkPolicy", "buildkitd-ingress")
    builder_labels = _one(plan, "Deployment", "buildkitd")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= builder_labels.items()
    runner_labels = _scale_set_values(plan)["template"]["metadata"]["labels"]
    assert runner_labels == BUILDKIT_CLIENT_LABEL
    assert admitted(policy, RUNNERS_NAMESPACE, {**runner_labels, "actions-ephemeral-runner": "True"}, 1234)
    # bad fixtures: a listener-like pod in the runners namespace, a labelled pod elsewhere, another port
    assert not admitted(policy, RUNNERS_NAMESPACE, {"app.kubernetes.io/component": "runner-scale-set-listener"}, 1234)
    assert not admitted(policy, "serving", runner_labels, 1234)
    assert not admitted(policy, RUNNERS_NAMESPACE, runner_labels, 8080)
    service = _one(plan, "Service", "buildkitd")
    assert builder_endpoint() == (f"tcp://{service['metadata']['name']}.{service['metadata']['namespace']}"
                                  f".svc.cluster.local:{service['spec']['ports'][0]['port']}")


def test_buildkitd_config_marks_only_the_named_registries_http(builder_stack):
    plan, _ = builder_stack
    parsed = tomllib.loads(_one(plan, "ConfigMap", "buildkitd-config")["data"]["buildkitd.toml"])
    assert parsed == {"registry": {MINIKUBE_REGISTRY: {"http": True}}}
    assert tomllib.loads(buildkitd_toml(())) == {}


def test_builder_manifests_pass_checkov_with_their_stated_exceptions(builder_stack, tmp_path):
    checkov = require_tool("checkov", "IaC scanner; `make test-deps` installs it into .venv/tools/checkov")
    plan, config = builder_stack
    skips = ",".join(yaml.safe_load((ROOT / "policy" / "checkov-skips.yaml").read_text()))
    deployment = _one(plan, "Deployment", "buildkitd")
    bare = copy.deepcopy(deployment)
    bare["metadata"]["annotations"] = {}
    others = [o for o in plan.kubernetes_objects if o["metadata"].get("namespace") == BUILDER_NAMESPACE
              and o["kind"] != "Deployment"]

    def failed(manifest: dict[str, Any], name: str) -> set[str]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "builder.yaml").write_text(yaml.safe_dump_all([manifest, *others]))
        result = subprocess.run([checkov, "-d", str(folder), "--framework", "kubernetes", "--quiet", "-o", "json",
                                 "--skip-check", skips], capture_output=True, text=True, timeout=600)
        report = json.loads(result.stdout)
        return {f["check_id"] for f in report["results"]["failed_checks"]} if isinstance(report, dict) else set()

    assert failed(deployment, "annotated") == set()
    stated = {v.split("=")[0] for k, v in deployment["metadata"]["annotations"].items() if k.startswith("checkov.io/skip")}
    assert failed(bare, "bare") == stated  # each exception is one checkov really raises


def test_policy_exempts_stated_privilege_escalation_only(builder_stack):
    """The builder's one policy exception (setuid newuidmap) is stated on it; bad fixtures: no or a
    too short reason, a privileged container, root: each still a violation."""
    from modules.ci import runners
    from policy import rules

    assert runners.ESCALATION_EXEMPTION == rules.ESCALATION_EXEMPTION
    deployment = _one(builder_stack[0], "Deployment", "buildkitd")
    assert rules.non_root("kubernetes:apps/v1:Deployment", deployment) == []
    for break_it in (lambda d: d["metadata"]["annotations"].pop(rules.ESCALATION_EXEMPTION),
                     lambda d: d["metadata"]["annotations"].update({rules.ESCALATION_EXEMPTION: "needs it"}),
                     lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(privileged=True),
                     lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False)):
        bad = copy.deepcopy(deployment)
        break_it(bad)
        assert rules.non_root("kubernetes:apps/v1:Deployment", bad), "the policy let a bad builder through"
