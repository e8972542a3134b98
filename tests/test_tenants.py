"""Tenants (issue 14 items 1-2): a class of 60 students × 3 models plans and validates; each tenant is
fenced on the plan (quota, limits, policy, RBAC, MLflow grants only on its own names); config
errors name the file and the key; and the MLflow grants hold on the real MLflow server."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.config.tenants import experiment, registered_model
from infra.platforms import cluster_facts
from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from modules.mlflow.users import JOB
from modules.tenants import MLFLOW_SECRET, READER_SECRET, TENANT_LABEL, quota_hard, reader_username, tenant_mlflow_users
from tests.test_mlflow_users import Api, invocation, password_of, plan_users, run_job
from tests.services import mlflow_server, postgres, s3_api

ROOT = Path(__file__).resolve().parents[1]
TEST_STACKS = ROOT / "tests/stacks"
GATEWAY = "istio-system"
TENANT_KINDS = {"ResourceQuota", "LimitRange", "NetworkPolicy", "ServiceAccount", "Secret", "Role", "RoleBinding",
                "SeldonDeployment", "PodMonitor"}
MODEL_SERVER_RULES = ({"apiGroups": ["machinelearning.seldon.io"], "resources": ["seldondeployments"]},
                      {"apiGroups": [""], "resources": ["pods", "pods/log", "services", "events"],
                       "verbs": ["get", "list", "watch"]})


@pytest.fixture(scope="module")
def class_stack() -> tuple[Plan, Any]:
    values = stack_config("class", TEST_STACKS)
    config = parse_stack_config(*raw_from_pulumi_config(*values))
    return run_program("class", values, reveal_secrets=True), config


def test_the_class_file_has_60_students_with_3_models(class_stack):
    _, config = class_stack
    assert len(config.tenants) == 60
    assert {len(t.models) for t in config.tenants.values()} == {3}


def test_the_class_stack_passes_validation(class_stack):
    plan, config = class_stack
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()


# ---- isolation on the plan ----------------------------------------------------------------------


def _state(plan: Plan) -> dict[str, Any]:
    return json.loads(invocation(plan)[1]["MLOPS_USERS_STATE"])


def _allowed_rule(rule: dict[str, Any]) -> bool:
    if rule.get("resources") == ["secrets"]:
        return rule.get("resourceNames") == [MLFLOW_SECRET] and rule.get("verbs") == ["get"]
    return any(all(rule.get(k) == v for k, v in allowed.items()) for allowed in MODEL_SERVER_RULES)


def _policy_problems(tenant: str, policy: dict[str, Any], callers: set[str]) -> list[str]:
    spec, problems = policy["spec"], []
    if spec.get("podSelector") != {} or spec.get("policyTypes") != ["Ingress"]:
        problems.append(f"{tenant}: NetworkPolicy {policy['metadata']['name']} does not cover every pod's ingress")
    for rule in spec.get("ingress", []):
        for peer in rule.get("from", []):
            names = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            same_namespace = set(peer) == {"podSelector"}
            if not same_namespace and names not in callers:
                problems.append(f"{tenant}: NetworkPolicy admits {peer}")
    return problems


def _object_problems(tenant: str, objects: list[dict[str, Any]], config: Any, callers: set[str]) -> list[str]:
    t = config.tenants[tenant]
    problems = [f"{tenant}: unexpected {o['kind']} {o['metadata']['name']}" for o in objects
                if o["kind"] not in TENANT_KINDS]
    kinds = {kind: [o for o in objects if o["kind"] == kind] for kind in TENANT_KINDS}
    quotas = [o["spec"]["hard"] for o in kinds["ResourceQuota"]]
    if quotas != [quota_hard(**t.quota.model_dump())]:
        problems.append(f"{tenant}: quotas {quotas}")
    limits = [item for o in kinds["LimitRange"] for item in o["spec"]["limits"]]
    if len(limits) != 1 or not {"default", "max"} <= set(limits[0]):
        problems.append(f"{tenant}: LimitRange items {limits}")
    if not kinds["NetworkPolicy"]:
        problems.append(f"{tenant}: no NetworkPolicy")
    for policy in kinds["NetworkPolicy"]:
        problems += _policy_problems(tenant, policy, callers)
    problems += [f"{tenant}: Role {r['metadata']['name']} grants {rule}" for r in kinds["Role"]
                 for rule in r["rules"] if not _allowed_rule(rule)]
    for binding in kinds["RoleBinding"]:
        if binding["roleRef"]["kind"] != "Role":
            problems.append(f"{tenant}: RoleBinding {binding['metadata']['name']} binds a {binding['roleRef']['kind']}")
        problems += [f"{tenant}: RoleBinding subject {s}" for s in binding["subjects"]
                     if s.get("kind") != "ServiceAccount" or s.get("namespace") != tenant]
    for sdep in kinds["SeldonDeployment"]:
        env = [e for p in sdep["spec"]["predictors"] for c in p["componentSpecs"]
               for k in c["spec"]["containers"] for e in k.get("env", [])]
        served = [json.loads(e["value"])["registry_model"] for e in env if e["name"] == "MLSERVER_MODEL_EXTRA"]
        if not served or any(not m.startswith(f"{tenant}.") for m in served):
            problems.append(f"{tenant}: SeldonDeployment {sdep['metadata']['name']} serves {served}")
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
        if secrets - {READER_SECRET}:
            problems.append(f"{tenant}: SeldonDeployment {sdep['metadata']['name']} reads Secrets {secrets}")
    return problems


def _grant_problems(tenant: str, users: dict[str, dict[str, Any]], models: list[str]) -> list[str]:
    expected = {
        f"tenant-{tenant}": {("experiment", experiment(tenant, m), "EDIT") for m in models}
        | {("registered_model", registered_model(tenant, m), "EDIT") for m in models},
        reader_username(tenant): {("registered_model", registered_model(tenant, m), "READ") for m in models},
    }
    problems = []
    for username, grants in expected.items():
        found = {(p["kind"], p["name"], p["permission"]) for p in users.get(username, {}).get("permissions", [])}
        if found != grants:
            problems.append(f"{tenant}: MLflow user {username} has {sorted(found ^ grants)} beyond/short of its own")
    return problems


def isolation_problems(objects: list[dict[str, Any]], state: dict[str, Any], config: Any) -> list[str]:
    """Everything a tenant is given, checked against what it may have: its namespace only."""
    ns = config.namespaces
    callers = {GATEWAY, ns.platform, ns.monitoring}
    users = {u["username"]: u for u in state["users"]}
    problems = []
    for tenant, t in config.tenants.items():
        namespace = [o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == tenant]
        labels = namespace[0]["metadata"]["labels"] if namespace else {}
        if labels.get(TENANT_LABEL) != tenant or labels.get("pod-security.kubernetes.io/enforce") != "baseline":
            problems.append(f"{tenant}: namespace labels {labels}")
        inside = [o for o in objects if o["metadata"].get("namespace") == tenant]
        problems += _object_problems(tenant, inside, config, callers)
        problems += _grant_problems(tenant, users, list(t.models))
    for binding in (o for o in objects if o["kind"] == "ClusterRoleBinding"):
        problems += [f"ClusterRoleBinding {binding['metadata']['name']} names tenant subject {s}"
                     for s in binding.get("subjects") or [] if s.get("namespace") in config.tenants]
    # no other MLflow user holds a grant on a tenant's names
    logins = {name: {f"tenant-{name}", reader_username(name)} for name in config.tenants}
    owners = set().union(*logins.values())
    for user in state["users"]:
        for p in user["permissions"]:
            owner = re.split(r"[./]", p["name"])[0]
            if owner in config.tenants and user["username"] not in logins[owner]:
                problems.append(f"MLflow user {user['username']} holds {p['permission']} on {p['name']}")
            if user["username"] in owners and owner not in config.tenants:
                problems.append(f"MLflow user {user['username']} holds {p['permission']} on {p['name']}")
    return problems


def test_each_tenant_is_fenced_in_its_namespace(class_stack):
    plan, config = class_stack
    assert isolation_problems(plan.kubernetes_objects, _state(plan), config) == []


def _tampered(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return copy.deepcopy(plan.kubernetes_objects), copy.deepcopy(_state(plan))


def _first(objects: list[dict[str, Any]], kind: str, namespace: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"].get("namespace") == namespace)


@pytest.mark.parametrize("tamper, message", [
    (lambda o, s: next(u for u in s["users"] if u["username"] == "tenant-student-00")["permissions"].append(
        {"kind": "registered_model", "name": "student-01.iris", "permission": "EDIT"}), "student-01.iris"),
    (lambda o, s: _first(o, "RoleBinding", "student-02")["subjects"].append(
        {"kind": "ServiceAccount", "name": "ci-deployer", "namespace": "student-03"}), "RoleBinding subject"),
    (lambda o, s: _first(o, "Role", "student-04")["rules"].append(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}), "grants"),
    (lambda o, s: _first(o, "NetworkPolicy", "student-05")["spec"]["ingress"].append(
        {"from": [{"namespaceSelector": {}}]}), "NetworkPolicy admits"),
    (lambda o, s: o.remove(_first(o, "ResourceQuota", "student-06")), "quotas []"),
    (lambda o, s: _first(o, "SeldonDeployment", "student-08")["spec"]["predictors"][0]["componentSpecs"][0]["spec"][
        "containers"][0]["env"][2].update(value='{"registry_model": "student-09.iris"}'), "serves ['student-09.iris']"),
    (lambda o, s: _first(o, "ResourceQuota", "student-07")["spec"]["hard"].update({"limits.cpu": "100"}), "quotas"),
])
def test_the_isolation_check_rejects_a_leak(class_stack, tamper, message):
    plan, config = class_stack
    objects, state = _tampered(plan)
    tamper(objects, state)
    problems = isolation_problems(objects, state, config)
    assert problems and any(message in p for p in problems), problems


def test_endpoints_are_per_tenant_and_model(class_stack):
    plan, config = class_stack
    urls = plan.outputs["tenantModelUrls"]
    assert set(urls) == set(config.tenants)
    assert urls["student-11"]["iris"].endswith("/seldon/student-11/iris/v2/models/model/infer")


def test_prometheus_scrapes_every_tenant_namespace(class_stack):
    plan, config = class_stack
    monitored = {o["metadata"]["namespace"] for o in plan.kubernetes_objects if o["kind"] == "PodMonitor"}
    assert set(config.tenants) <= monitored


def test_each_tenant_ci_reads_only_its_own_mlflow_login(class_stack):
    plan, _ = class_stack
    secret = plan.manifest("Secret", MLFLOW_SECRET, "student-09")
    assert secret["stringData"]["username"] == "tenant-student-09"
    assert password_of(plan, "tenant-student-09") == secret["stringData"]["password"]
    assert plan.manifest("Job", JOB)["metadata"]["namespace"] == "mlflow"  # admin credentials stay there


def test_names_that_share_a_prefix_stay_distinct():
    """Tenant `a` with model `b-c` and tenant `a-b` with model `c`; tenant `x` and `x-reader`."""
    values, secrets = stack_config("dev")
    tenants = {"a": {"models": {"b-c": {"source": {"alias": "champion"}}}},
               "a-b": {"models": {"c": {"source": {"alias": "champion"}}}}, "x": {}, "x-reader": {}}
    plan = run_program("dev", ({**values, "mlops-stack:tenants": json.dumps(tenants)}, secrets), reveal_secrets=True)
    served = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in plan.kubernetes_objects
              if o["kind"] == "SeldonDeployment"}
    assert served == {("a", "b-c"), ("a-b", "c")}
    usernames = [u["username"] for u in _state(plan)["users"]]
    assert len(usernames) == len(set(usernames)) == 1 + 2 * len(tenants)


# ---- config errors ------------------------------------------------------------------------------

BASE = {"platform": "minikube", "environment": "dev"}


def _tenant(**extra: Any) -> dict[str, Any]:
    return {"members": ["alice"], "repositories": ["class/alice-models"],
            "models": {"iris": {"source": {"alias": "champion"}}}, **extra}


def _errors(tenants: Any, **raw: Any) -> str:
    with pytest.raises(ConfigError) as error:
        parse_stack_config({**BASE, "tenants": tenants, **raw})
    return str(error.value)


def test_a_duplicate_tenant_in_the_class_file_is_an_error(tmp_path):
    path = tmp_path / "class.yaml"
    path.write_text("alice:\n  members: [alice]\nbob:\n  members: [bob]\nalice:\n  members: [alice2]\n")
    message = _errors({"fromFile": str(path)})
    assert str(path) in message and "['alice'] appear twice" in message


def test_a_tenant_both_in_the_file_and_inline_is_an_error(tmp_path):
    path = tmp_path / "class.yaml"
    path.write_text("alice:\n  members: [alice]\n")
    assert "tenant 'alice' is also declared inline" in _errors({"fromFile": str(path), "alice": _tenant()})


def test_an_error_in_the_class_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "class.yaml"
    path.write_text("bob:\n  repositories: [not-a-repository]\n")
    message = _errors({"fromFile": str(path)})
    assert f"{path}: tenants.bob.repositories:" in message and "'owner/repo'" in message


def test_a_bad_repository_is_an_error():
    assert "'owner/repo' GitHub repositories are allowed" in _errors({"alice": _tenant(repositories=["alice"])})


def test_a_repository_of_two_tenants_is_an_error():
    message = _errors({"alice": _tenant(), "bob": _tenant(members=["bob"])})
    assert "repository 'class/alice-models' is listed by each" in message


def test_a_quota_below_the_limits_times_the_models_is_an_error():
    models = {m: {"source": {"alias": "champion"}} for m in ("a", "b")}
    message = _errors({"alice": _tenant(models=models, quota={"cpuLimit": "1500m"})})
    # 2 models × (model 500m + Seldon executor 500m) = 2000m of CPU limits
    assert "quota.cpuLimit 1500m is below what the models need at their limits × pods (2000m" in message
    assert "quota.models 1 is below the 2 models" in _errors({"alice": _tenant(models=models, quota={"models": 1})})


@pytest.mark.parametrize("tenant, message", [
    (("mlflow", _tenant()), "is a namespace of the platform"),
    (("kube-system", _tenant()), "is a namespace of the platform"),
    (("alice", _tenant(models={"iris": {"source": {"model": "bob.iris", "alias": "champion"}}})),
     "a tenant serves only registered models named 'alice.<model>'"),
    (("alice", _tenant(models={"iris": {"source": {"uri": "s3://mlflow-artifacts/1/x"}}})),
     "tenant models are served by alias"),
    (("alice", _tenant(models={"iris": {"source": {"alias": "champion"},
                                        "resources": {"cpu": "1", "memory": "1Gi", "cpuLimit": "2",
                                                      "memoryLimit": "2Gi"}}})), "exceed tenantDefaults.limits.max"),
    (("alice", _tenant(models={"iris": {"source": {"alias": "champion"}, "monitoring": {"sampleRate": 0.1}}})),
     "models.iris.monitoring.sampleRate 0.1: tenant models do not sample"),
])
def test_a_tenant_outside_its_fence_is_an_error(tenant, message):
    name, spec = tenant
    assert message in _errors({name: spec})


def test_tenant_defaults_apply_and_a_tenant_quota_overrides_them():
    config = parse_stack_config({**BASE, "tenantDefaults": {"quota": {"pods": 4}},
                                 "tenants": {"alice": _tenant(), "bob": _tenant(repositories=[], quota={"pods": 5})}})
    assert (config.tenants["alice"].quota.pods, config.tenants["bob"].quota.pods) == (4, 5)
    assert config.tenants["alice"].quota.cpu_limit == "3"  # the untouched defaults stay
    assert config.tenants["alice"].models["iris"].source.model == "alice.iris"
    assert config.tenants["alice"].models["iris"].resources.cpu_limit == "500m"


# ---- MLflow grants on the real server -----------------------------------------------------------

BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="module")
def tenant_server():
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as srv:
        users = [u for t in ("alice", "bob") for u in tenant_mlflow_users(
            t, t, [experiment(t, m) for m in ("iris", "digits")], [registered_model(t, m) for m in ("iris", "digits")])]
        plan = plan_users(users, srv.url, srv.password)
        code, _, stderr, _ = run_job(plan)
        assert code == 0, stderr
        yield srv, plan


def _as(server, plan: Plan, username: str) -> Api:
    return Api(server.url, username, password_of(plan, username))


def _experiment_id(api: Api, name: str) -> str:
    return api("GET", "/api/2.0/mlflow/experiments/get-by-name",
               params={"experiment_name": name}).json()["experiment"]["experiment_id"]


def _publish(api: Api, tenant: str) -> dict[str, int | str]:
    """What a tenant's training does: a run in its experiment, register the model (which the Job made:
    `mlflow.register_model` takes RESOURCE_ALREADY_EXISTS as "add a version"), a version, the alias."""
    run = api("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": _experiment_id(api, f"{tenant}/iris")})
    info = run.json()["run"]["info"] if run.ok else {}
    steps = {
        "run": run,
        "model": api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": f"{tenant}.iris"}),
        "version": api("POST", "/api/2.0/mlflow/model-versions/create", json={
            "name": f"{tenant}.iris", "source": f"{info.get('artifact_uri')}/model", "run_id": info.get("run_id")}),
        "alias": api("POST", "/api/2.0/mlflow/registered-models/alias",
                     json={"name": f"{tenant}.iris", "alias": "champion", "version": "1"}),
    }
    return {step: r.status_code if r.ok else r.json().get("error_code", r.status_code) for step, r in steps.items()}


@pytest.fixture(scope="module")
def published(tenant_server) -> dict[str, dict[str, int | str]]:
    server, plan = tenant_server
    return {tenant: _publish(_as(server, plan, f"tenant-{tenant}"), tenant) for tenant in ("alice", "bob")}


@pytest.mark.integration
def test_a_student_writes_its_own_experiment_and_model(published):
    assert published == {t: {"run": 200, "model": "RESOURCE_ALREADY_EXISTS", "version": 200, "alias": 200}
                         for t in ("alice", "bob")}


@pytest.mark.integration
def test_a_student_cannot_write_another_students_model_or_experiment(tenant_server, published):
    server, plan = tenant_server
    alice = _as(server, plan, "tenant-alice")
    bob_experiment = _experiment_id(alice, "bob/iris")
    denied = {
        "run in bob's experiment": alice("POST", "/api/2.0/mlflow/runs/create",
                                          json={"experiment_id": bob_experiment}),
        "rename bob's experiment": alice("POST", "/api/2.0/mlflow/experiments/update",
                                          json={"experiment_id": bob_experiment, "new_name": "taken"}),
        "delete bob's experiment": alice("POST", "/api/2.0/mlflow/experiments/delete",
                                          json={"experiment_id": bob_experiment}),
        "version of bob's model": alice("POST", "/api/2.0/mlflow/model-versions/create",
                                         json={"name": "bob.iris", "source": "s3://mlflow-artifacts/x"}),
        "move bob's alias": alice("POST", "/api/2.0/mlflow/registered-models/alias",
                                   json={"name": "bob.iris", "alias": "champion", "version": "1"}),
        "delete bob's model": alice("DELETE", "/api/2.0/mlflow/registered-models/delete", json={"name": "bob.iris"}),
    }
    assert {what: r.status_code for what, r in denied.items()} == {what: 403 for what in denied}
    assert alice("GET", "/api/2.0/mlflow/registered-models/get", params={"name": "bob.iris"}).ok  # still there


@pytest.mark.integration
def test_a_student_cannot_take_a_model_name_another_student_has_not_registered_yet(tenant_server, published):
    """MLflow lets any user create a registered model and makes the creator its MANAGE owner: the Job
    creates each tenant's models empty, so nobody else can claim `alice.digits` first."""
    server, plan = tenant_server
    bob = _as(server, plan, "tenant-bob")
    claimed = bob("POST", "/api/2.0/mlflow/registered-models/create", json={"name": "alice.digits"})
    assert claimed.status_code in (400, 403), claimed.text
    version = bob("POST", "/api/2.0/mlflow/model-versions/create",
                  json={"name": "alice.digits", "source": "s3://mlflow-artifacts/x"})
    assert version.status_code == 403, version.text
    alice = _as(server, plan, "tenant-alice")
    assert alice("POST", "/api/2.0/mlflow/model-versions/create",
                 json={"name": "alice.digits", "source": "s3://mlflow-artifacts/x"}).status_code == 200


@pytest.mark.integration
def test_a_tenant_model_reader_reads_and_cannot_write(tenant_server, published):
    server, plan = tenant_server
    reader = _as(server, plan, reader_username("alice"))
    assert reader("GET", "/api/2.0/mlflow/registered-models/alias",
                  params={"name": "alice.iris", "alias": "champion"}).status_code == 200
    assert reader("POST", "/api/2.0/mlflow/model-versions/create",
                  json={"name": "alice.iris", "source": "s3://mlflow-artifacts/x"}).status_code == 403
    assert reader("POST", "/api/2.0/mlflow/runs/create",
                  json={"experiment_id": _experiment_id(reader, "alice/iris")}).status_code == 403


# ---- keyless identities on the clouds -----------------------------------------------------------

CLOUD_TENANTS = {"alice": _tenant(), "bob": _tenant(members=["bob"], repositories=["class/bob-models",
                                                                                   "bob/side-project"])}


def _cloud_plan(stack: str) -> Plan:
    values, secrets = stack_config(stack, TEST_STACKS)
    return run_program(stack, ({**values, "mlops-stack:tenants": json.dumps(CLOUD_TENANTS)}, secrets))


def _tenant_binding_subjects(plan: Plan, tenant: str) -> list[dict[str, Any]]:
    return [s for o in plan.kubernetes_objects if o["kind"] == "RoleBinding"
            and o["metadata"]["namespace"] == tenant for s in o["subjects"]]


def test_gke_tenant_repositories_impersonate_only_their_tenant_account():
    plan = _cloud_plan("full-gke")
    accounts = {r["inputs"]["accountId"] for r in plan.of_type("gcp:serviceaccount/account:Account")}
    members = [r["inputs"] for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
               if "tenant-github-" in r["name"]]
    subjects = sorted(m["member"].rsplit("/subject/", 1)[1] for m in members)
    assert subjects == ["repo:bob/side-project:ref:refs/heads/main", "repo:class/alice-models:ref:refs/heads/main",
                        "repo:class/bob-models:ref:refs/heads/main"]
    assert {m["role"] for m in members} == {"roles/iam.workloadIdentityUser"}
    roles = {r["inputs"]["role"] for r in plan.of_type("gcp:projects/iAMMember:IAMMember")
             if "tenant-github-" in r["name"]}
    assert roles == {"roles/container.clusterViewer"}
    provider = next(r for r in plan.of_type("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")
                    if r["name"] == "tenant-github")
    assert provider["inputs"]["attributeCondition"] == 'assertion.repository_owner in ["bob", "class"]'
    assert {"mlops-full-gke-t-alice", "mlops-full-gke-t-bob"} <= set(accounts)
    email = "mlops-full-gke-t-alice@my-mlops-project.iam.gserviceaccount.com"  # the mocks' e-mail for the account
    assert _tenant_binding_subjects(plan, "alice") == [
        {"kind": "User", "name": email, "apiGroup": "rbac.authorization.k8s.io"}]  # one binding: the tenant Role
    assert not [o for o in plan.kubernetes_objects if o["kind"] == "ServiceAccount"
                and o["metadata"].get("namespace") == "alice"]  # no deploy token where identities are keyless


def test_eks_tenant_roles_trust_their_repositories_and_map_to_their_group():
    plan = _cloud_plan("full-eks")
    roles = {r["inputs"]["name"]: json.loads(r["inputs"]["assumeRolePolicy"]) for r in plan.of_type(
        "aws:iam/role:Role") if r["name"].startswith("tenant-github-")}
    trusted = {name: policy["Statement"][0]["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
               for name, policy in roles.items()}
    assert sorted(trusted.values()) == [["repo:class/alice-models:ref:refs/heads/main"],
                                        ["repo:class/bob-models:ref:refs/heads/main",
                                         "repo:bob/side-project:ref:refs/heads/main"]]
    entries = {tuple(r["inputs"].get("kubernetesGroups") or []) for r in plan.of_type("aws:eks/accessEntry:AccessEntry")
               if r["name"].startswith("tenant-github-")}
    assert entries == {("mlops-tenant-alice",), ("mlops-tenant-bob",)}
    assert not [r for r in plan.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                if r["name"].startswith("tenant-github-")]  # nothing cluster-wide
    assert _tenant_binding_subjects(plan, "bob") == [
        {"kind": "Group", "name": "mlops-tenant-bob", "apiGroup": "rbac.authorization.k8s.io"}]


@pytest.mark.parametrize("stack", ["full-gke", "full-eks"])
def test_cloud_stacks_with_tenants_pass_validation(stack):
    values, secrets = stack_config(stack, TEST_STACKS)
    values = {**values, "mlops-stack:tenants": json.dumps(CLOUD_TENANTS)}
    config = parse_stack_config(*raw_from_pulumi_config(values, secrets))
    report = validate_plan(run_program(stack, (values, secrets)), config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()


def test_gke_tenant_account_ids_fit_and_stay_distinct():
    from modules.platform.gke.github import tenant_account_id

    ids = {tenant_account_id("mlops-class-prod", f"a-rather-long-student-name-{i}") for i in range(3)}
    assert len(ids) == 3 and all(len(i) <= 30 for i in ids)
    assert tenant_account_id("mlops-class", "alice") == "mlops-class-t-alice"


def test_create_applies_to_registered_models_only():
    from modules.mlflow.users import MlflowPermission, MlflowUser

    bad = MlflowUser("u", "ns", "s", (MlflowPermission("experiment", "e", "EDIT", create=True),))
    with pytest.raises(Exception, match="create applies to registered_model only"):
        plan_users([bad], "http://mlflow:5000", "admin-password-1")


@pytest.mark.integration
def test_the_users_job_reconciles_a_class_of_60_within_its_deadline_and_memory(class_stack, tenant_server):
    """The class plan's own Job (command, env, state) against the real server: 60 × 2 tenant users."""
    import time

    from infra.config import memory_mib
    from infra.program import MLFLOW_USERS_RESOURCES

    plan, _ = class_stack
    server, _ = tenant_server
    declared = len(_state(plan)["users"])
    started = time.monotonic()
    code, stdout, stderr, rss = run_job(plan, MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_PASSWORD=server.password)
    elapsed = time.monotonic() - started
    assert code == 0, stderr[-3000:]
    assert f"{declared} user(s) declared, 0 failure(s)" in stdout and declared == 121
    deadline = plan.manifest("Job", JOB)["spec"]["activeDeadlineSeconds"]
    print(f"class users Job: {declared} users in {elapsed:.1f} s, peak RSS {rss:.1f} MiB")
    assert elapsed < deadline / 2, f"{elapsed:.0f} s of the Job's {deadline} s deadline"
    assert rss < memory_mib(MLFLOW_USERS_RESOURCES.memory_limit)
