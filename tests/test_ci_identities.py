"""Keyless CI identities on GKE/EKS and in-cluster runners: who may assume what, with which rights."""

from __future__ import annotations

import json

import pytest

from infra.settings import ConfigError, parse_stack_config
from mlops.plan import SECRET, Plan, run_program, stack_config

REPO = "repo:my-org/mlops-stack"
SUBJECTS = {
    "preview": [f"{REPO}:pull_request"],
    "infra": [f"{REPO}:environment:production"],  # the shipped cloud stacks are prod
    "models": [f"{REPO}:ref:refs/heads/main"],  # + the promotion environment, named after the stack
}


def models_subjects(stack: str) -> list[str]:
    return [*SUBJECTS["models"], f"{REPO}:environment:models-{stack}"]


def with_config(stack: str, overrides: dict[str, str], secrets: tuple[str, ...] = ()) -> Plan:
    values, secret_keys = stack_config(stack)
    values = {**values, **{f"mlops-stack:{k}": v for k, v in overrides.items()}}
    return run_program(stack, (values, [*secret_keys, *(f"mlops-stack:{k}" for k in secrets)]), reveal_secrets=True)


def inputs(plan: Plan, type_token: str) -> list[dict]:
    return [r["inputs"] for r in plan.of_type(type_token)]


# ---- GKE -------------------------------------------------------------------------------------

def test_gke_provider_accepts_only_the_repository(plan_of):
    [provider] = inputs(plan_of("gke"), "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")
    assert provider["attributeCondition"] == "assertion.repository == 'my-org/mlops-stack'"
    assert provider["oidc"]["issuerUri"] == "https://token.actions.githubusercontent.com"
    assert provider["attributeMapping"]["google.subject"] == "assertion.sub"


def test_gke_each_account_is_impersonable_only_by_its_subjects(plan_of):
    plan = plan_of("gke")
    [pool_id] = [p["workloadIdentityPoolId"] for p in inputs(plan, "gcp:iam/workloadIdentityPool:WorkloadIdentityPool")]
    assert pool_id.startswith("mlops-gke-github-")  # a random suffix: a deleted pool's ID stays taken ~30 days
    pool = f"principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/{pool_id}"
    members: dict[str, set[str]] = {}
    for binding in inputs(plan, "gcp:serviceaccount/iAMMember:IAMMember"):
        if binding["member"].startswith("principal://"):
            assert binding["role"] == "roles/iam.workloadIdentityUser"
            account = binding["serviceAccountId"].split("/")[-1].split("@")[0]
            members.setdefault(account, set()).add(binding["member"].removeprefix(pool + "/subject/"))
    assert members == {"mlops-gke-ci-preview": set(SUBJECTS["preview"]), "mlops-gke-ci-infra": set(SUBJECTS["infra"]),
                       "mlops-gke-ci-models": set(models_subjects("gke"))}


def test_gke_models_account_pushes_to_the_registry_and_deploys_only_in_serving(plan_of):
    plan = plan_of("gke")
    email = "mlops-gke-ci-models@my-mlops-project.iam.gserviceaccount.com"
    project_roles = {b["role"] for b in inputs(plan, "gcp:projects/iAMMember:IAMMember")
                     if b["member"] == f"serviceAccount:{email}"}
    assert project_roles == {"roles/container.clusterViewer"}  # endpoints only, no Kubernetes rights
    [push] = [b for b in inputs(plan, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
              if b["member"] == f"serviceAccount:{email}"]
    assert push["role"] == "roles/artifactregistry.writer" and push["repository"] == "mlops"
    binding = plan.manifest("RoleBinding", "ci-model-deployer", "serving")
    assert binding["subjects"] == [{"kind": "User", "name": email, "apiGroup": "rbac.authorization.k8s.io"}]
    rules = plan.manifest("Role", "ci-model-deployer", "serving")["rules"]
    assert {v for r in rules for v in r["verbs"]} >= {"create", "patch"}
    writable = {res for r in rules if "create" in r["verbs"] for res in r["resources"]}
    assert writable == {"seldondeployments"}


def test_gke_preview_account_cannot_write(plan_of):
    roles = {b["role"] for b in inputs(plan_of("gke"), "gcp:projects/iAMMember:IAMMember")
             if "ci-preview@" in b["member"]}
    assert roles == {"roles/viewer", "roles/iam.securityReviewer"}


# ---- EKS -------------------------------------------------------------------------------------

def _roles(plan: Plan) -> dict[str, dict]:
    return {r["name"].removeprefix("mlops-eks-ci-"): r for r in inputs(plan, "aws:iam/role:Role")
            if r["name"].startswith("mlops-eks-ci-")}


def test_eks_roles_trust_only_their_subjects_of_github(plan_of):
    roles = _roles(plan_of("eks"))
    assert set(roles) == {"preview", "infra", "models"}
    for purpose, role in roles.items():
        [statement] = json.loads(role["assumeRolePolicy"])["Statement"]
        assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
        condition = statement["Condition"]["StringEquals"]
        assert condition["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
        expected = models_subjects("eks") if purpose == "models" else SUBJECTS[purpose]
        assert condition["token.actions.githubusercontent.com:sub"] == expected
        assert "StringLike" not in statement["Condition"]  # no wildcards


def test_eks_models_role_pushes_to_its_repositories_and_reaches_only_serving(plan_of):
    plan = plan_of("eks")
    [policy] = [p for p in inputs(plan, "aws:iam/rolePolicy:RolePolicy") if p["name"] == "push-and-deploy"]
    statements = {s["Sid"]: s for s in json.loads(policy["policy"])["Statement"]}
    assert all(arn.startswith("arn:aws:ecr:eu-west-1:123456789012:repository/mlops/")
               for arn in statements["Push"]["Resource"])
    assert statements["Kubeconfig"]["Resource"] == "arn:aws:eks:eu-west-1:123456789012:cluster/mlops-eks"
    attached = [a["policyArn"] for a in inputs(plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a["role"] == "mlops-eks-ci-models"]
    assert attached == []
    entries = {e["principalArn"].rsplit("/", 1)[-1]: e for e in inputs(plan, "aws:eks/accessEntry:AccessEntry")}
    assert entries["mlops-eks-ci-models"]["kubernetesGroups"] == ["mlops-model-deployers"]
    associated = {a["principalArn"].rsplit("/", 1)[-1] for a in
                  inputs(plan, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    assert associated == {"mlops-eks-ci-preview", "mlops-eks-ci-infra"}  # models: RBAC in serving only
    binding = plan.manifest("RoleBinding", "ci-model-deployer", "serving")
    assert binding["subjects"] == [{"kind": "Group", "name": "mlops-model-deployers",
                                    "apiGroup": "rbac.authorization.k8s.io"}]


def test_eks_reuses_an_existing_github_provider_when_given():
    plan = with_config("eks", {"ci": json.dumps({"github": {
        "repository": "my-org/mlops-stack",
        "awsOidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"}})})
    urls = [p["url"] for p in inputs(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")]
    assert urls and "https://token.actions.githubusercontent.com" not in urls  # only the cluster's (IRSA)
    assert len(_roles(plan)) == 3


def test_outputs_name_what_the_workflows_need(plan_of):
    # modelsStackValues: the cloud secret the model pipeline reads (docs/decisions/0010-ci-stack-outputs.md)
    assert set(plan_of("gke").outputs["ciIdentities"]) == {
        "workloadIdentityProvider", "previewServiceAccount", "infraServiceAccount", "modelsServiceAccount",
        "modelsStackValues"}
    assert set(plan_of("eks").outputs["ciIdentities"]) == {"previewRoleArn", "infraRoleArn", "modelsRoleArn",
                                                           "modelsStackValues"}
    assert "ciIdentities" not in plan_of("dev").outputs


# ---- in-cluster runners ----------------------------------------------------------------------

RUNNERS = {"runners": {"enabled": True, "githubConfigUrl": "https://github.com/my-org/mlops-stack",
                       "githubToken": "ghp_runner_token_value"}}


def test_runners_install_pinned_charts_with_the_token_as_a_secret():
    plan = with_config("dev", {"ci": json.dumps(RUNNERS)}, secrets=("ci",))
    releases = {r["inputs"]["chart"].rsplit("/", 1)[-1]: r["inputs"] for r in
                plan.of_type("kubernetes:helm.sh/v3:Release")}
    controller, scale_set = releases["gha-runner-scale-set-controller"], releases["gha-runner-scale-set"]
    assert controller["version"] == scale_set["version"] == "0.14.2"
    assert scale_set["values"]["githubConfigUrl"] == "https://github.com/my-org/mlops-stack"
    [container] = scale_set["values"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/actions/actions-runner:2.334.0" and container["resources"]["limits"]
    token = plan.manifest("Secret", "github-config", "arc-runners")
    assert token["stringData"]["github_token"] == "ghp_runner_token_value"
    for namespace in ("arc-systems", "arc-runners"):  # no privileged runner pods (no Docker-in-Docker)
        labels = plan.manifest("Namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert not plan.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    binding = plan.manifest("RoleBinding", "mlops-stack-deployer", "serving")
    assert binding["subjects"][0]["name"] == "deployer"


def test_runner_token_is_never_in_the_written_plan(tmp_path):
    values, secret_keys = stack_config("dev")
    values = {**values, "mlops-stack:ci": json.dumps(RUNNERS)}
    plan = run_program("dev", (values, [*secret_keys, "mlops-stack:ci"]))
    text = json.dumps(plan.resources)
    assert "ghp_runner_token_value" not in text and SECRET in text


def test_cluster_scope_gives_runners_cluster_admin():
    plan = with_config("dev", {"ci": json.dumps({"runners": {**RUNNERS["runners"], "deployScope": "cluster"}})},
                       secrets=("ci",))
    [binding] = inputs(plan, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "cluster-admin"


@pytest.mark.parametrize(("ci", "secret", "fragment"), [
    ({"github": {"repository": "my-org/mlops-stack"}}, False, "mlops-stack:ci.github: set, but platform is \"minikube\""),
    ({"github": {"repository": "not a repo"}}, False,
     "mlops-stack:ci.github.repository: got \"not a repo\"; 'owner/name' of a GitHub repository is allowed"),
    ({"runners": {"enabled": True}}, False, "enabled runners need githubConfigUrl and githubToken"),
    (RUNNERS, False, "mlops-stack:ci.runners.githubToken: stored in plain text"),
    ({"runners": {"minRunners": 3, "maxRunners": 2}}, False, "minRunners 3 is above maxRunners 2"),
    ({"runners": {"githubConfigUrl": "https://gitlab.com/x"}}, False, "mlops-stack:ci.runners.githubConfigUrl"),
])
def test_bad_ci_config_names_the_key(ci, secret, fragment):
    with pytest.raises(ConfigError) as raised:
        parse_stack_config({"platform": "minikube", "environment": "dev", "ci": ci},
                           secret_top={"ci"} if secret else set())
    assert fragment in str(raised.value)
