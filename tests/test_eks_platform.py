"""EKS (issue 12) on the offline plan: NetworkPolicies enforced, metrics-server and the Cluster
Autoscaler able to act, access entries for people, a closed prod control plane, a final snapshot
that a second destroy does not collide with, the account's GitHub OIDC provider looked up, the S3
gateway endpoint, no unused bucket, the workload pool tainted, and volumes claimed only after their
StorageClass exists."""

from __future__ import annotations

import copy
import functools
import json

import pytest

from infra.settings import ConfigError, parse_stack_config
from mlops.integrity import check_integrity
from mlops.plan import FAKE_ACCOUNT, Plan, run_program, stack_config
from modules.ci.github import ISSUER
from modules.platform.contract import POOL_LABEL, ClusterFacts, pool_placement
from modules.platform.eks.autoscaler import CHART_VERSION, IMAGE_TAGS
from policy.rules import violations

AWS = {"region": "eu-west-1", "authorizedNetworks": ["203.0.113.0/24"]}
ADMIN = "arn:aws:iam::123456789012:role/PlatformAdmin"
VIEWERS = ["arn:aws:iam::123456789012:role/team/Developer", "arn:aws:iam::123456789012:user/auditor"]
GITHUB = {"repository": "my-org/mlops-stack"}


@functools.cache
def eks(name: str, **overrides: str) -> Plan:
    """The shipped eks stack's plan with top-level config keys replaced (JSON values)."""
    values, secret_keys = stack_config("eks")
    values = {**values, **{f"mlops-stack:{key}": value for key, value in overrides.items()}}
    return run_program(name, (values, secret_keys))


def dev() -> Plan:
    return eks("eks-dev", environment="dev", aws=json.dumps({"region": "eu-west-1"}))


def people() -> Plan:
    return eks("eks-people", aws=json.dumps({**AWS, "clusterAdmins": [ADMIN], "clusterViewers": VIEWERS}))


def inputs(plan: Plan, type_token: str) -> list[dict]:
    return [r["inputs"] for r in plan.of_type(type_token)]


def named(plan: Plan, type_token: str, name: str) -> dict:
    [resource] = [r for r in plan.of_type(type_token) if r["name"] == name]
    return resource


def parse(environment: str = "dev", **aws: object) -> object:
    return parse_stack_config({"platform": "eks", "environment": environment, "aws": aws})


def problems(**config: object) -> str:
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"platform": "eks", "environment": "dev", **config})
    return str(error.value)


# --- 1. NetworkPolicies are enforced --------------------------------------------------------------

def test_the_vpc_cni_addon_enables_its_network_policy_agent(plan_of):
    plan = plan_of("eks")
    cni = named(plan, "aws:eks/addon:Addon", "eks-vpc-cni")
    assert json.loads(cni["inputs"]["configurationValues"]) == {"enableNetworkPolicy": "true"}  # a string
    assert violations(cni["type"], cni["inputs"]) == []
    # in place before any node joins, so no pod starts unenforced
    for group in plan.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert cni["urn"] in group["depends_on"]
    assert plan.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")  # there is something to enforce


# --- 2. autoscaling can act -------------------------------------------------------------------

def test_metrics_server_runs_as_an_eks_addon_after_the_nodes(plan_of):
    plan = plan_of("eks")
    addon = named(plan, "aws:eks/addon:Addon", "eks-metrics-server")
    groups = {g["urn"] for g in plan.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert groups <= set(addon["depends_on"])
    provider = named(plan, "pulumi:providers:kubernetes", "eks-k8s")
    assert addon["urn"] in provider["depends_on"]  # HPAs are created once the metrics API can exist


def test_the_cluster_autoscaler_discovers_this_clusters_groups_with_its_own_role(plan_of):
    plan = plan_of("eks")
    release = named(plan, "kubernetes:helm.sh/v3:Release", "eks-autoscaler")["inputs"]
    assert (release["chart"], release["version"], release["namespace"]) == (
        "cluster-autoscaler", CHART_VERSION, "kube-system")
    values = release["values"]
    assert values["autoDiscovery"]["clusterName"] == "mlops-eks" and values["awsRegion"] == "eu-west-1"
    assert values["image"]["tag"] == IMAGE_TAGS["1.34"]
    account = values["rbac"]["serviceAccount"]
    role_arn = account["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn == f"arn:aws:iam::{FAKE_ACCOUNT}:role/mlops-eks-autoscaler"
    [role] = [r for r in inputs(plan, "aws:iam/role:Role") if r["name"] == "mlops-eks-autoscaler"]
    [trust] = json.loads(role["assumeRolePolicy"])["Statement"]
    assert list(trust["Condition"]["StringEquals"].values())[0] == \
        f"system:serviceaccount:kube-system:{account['name']}"
    # on the system pool, not on the (spot, tainted) workload nodes it may remove
    assert values["nodeSelector"] == {POOL_LABEL: "system"} and "tolerations" not in values


def test_the_autoscaler_may_resize_only_groups_tagged_for_this_cluster(plan_of):
    [policy] = [p for p in inputs(plan_of("eks"), "aws:iam/rolePolicy:RolePolicy") if p["name"] == "resize-node-groups"]
    statements = {s["Sid"]: s for s in json.loads(policy["policy"])["Statement"]}
    resize = statements["ResizeThisCluster"]
    assert set(resize["Action"]) == {"autoscaling:SetDesiredCapacity",
                                     "autoscaling:TerminateInstanceInAutoScalingGroup"}
    assert resize["Condition"] == {"Null": {"aws:ResourceTag/k8s.io/cluster-autoscaler/mlops-eks": "false"}}
    assert all(a.split(":")[1].startswith(("Describe", "GetInstanceTypes")) for a in statements["Describe"]["Action"])
    assert statements["NodeGroups"]["Resource"] == f"arn:aws:eks:eu-west-1:{FAKE_ACCOUNT}:nodegroup/mlops-eks/*"
    assert set(statements) == {"Describe", "ResizeThisCluster", "NodeGroups"}


def test_a_kubernetes_version_without_a_pinned_autoscaler_is_a_config_error():
    message = problems(kubernetes={"version": "1.30"})
    assert "mlops-stack:kubernetes.version: got \"1.30\"" in message and "Cluster Autoscaler" in message


# --- 3. access for people ----------------------------------------------------------------------

def test_configured_admins_and_viewers_get_access_entries_with_their_policy():
    plan = people()
    entries = {e["principalArn"] for e in inputs(plan, "aws:eks/accessEntry:AccessEntry")}
    assert {ADMIN, *VIEWERS} <= entries
    policies = {a["principalArn"]: a["policyArn"].rsplit("/", 1)[-1]
                for a in inputs(plan, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    assert policies[ADMIN] == "AmazonEKSClusterAdminPolicy"
    assert {policies[v] for v in VIEWERS} == {"AmazonEKSAdminViewPolicy"}
    for association in plan.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"):
        assert association["inputs"]["accessScope"] == {"type": "cluster"}
        assert any("AccessEntry" in u for u in association["depends_on"])  # the entry exists first


@pytest.mark.parametrize(("arns", "expected"), [
    (["arn:aws:sts::123456789012:assumed-role/Admin/me"], "an IAM role or user ARN is allowed"),
    (["arn:aws:iam::123456789012:group/admins"], "an IAM role or user ARN is allowed"),
    (["Admin"], "an IAM role or user ARN is allowed"),
    ([ADMIN, ADMIN], "each ARN at most once"),
])
def test_a_bad_principal_is_a_config_error_naming_the_key(arns, expected):
    message = problems(aws={"clusterViewers": arns})
    assert "mlops-stack:aws.clusterViewers" in message and expected in message


def test_a_principal_in_both_lists_is_a_config_error():
    message = problems(aws={"clusterAdmins": [ADMIN], "clusterViewers": [ADMIN]})
    assert "in both clusterAdmins and clusterViewers" in message


# --- 4. the prod control plane is not open to the internet ----------------------------------------

def test_prod_refuses_an_open_control_plane_and_names_the_keys():
    with pytest.raises(ConfigError) as error:
        parse("prod")
    assert "mlops-stack:aws.authorizedNetworks: got []" in str(error.value)
    assert "aws.privateEndpoint true" in str(error.value)
    assert parse("prod", authorizedNetworks=["198.51.100.0/24"]).aws.authorized_networks == ["198.51.100.0/24"]
    assert parse("prod", privateEndpoint=True).aws.private_endpoint is True


def test_prod_restricts_the_public_endpoint_and_dev_warns_in_the_plan(plan_of):
    vpc = named(plan_of("eks"), "aws:eks/cluster:Cluster", "eks")["inputs"]["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert not [w for w in plan_of("eks").warnings if "alerting" not in w]  # no receivers: tests/test_alerting.py
    [warning] = [w for w in dev().warnings if "aws.authorizedNetworks" in w]
    assert "accepts connections from any address" in warning


# --- 5. RDS final snapshot ---------------------------------------------------------------------

def test_the_final_snapshot_name_carries_a_suffix_kept_in_state(plan_of):
    plan = plan_of("eks")
    rds = named(plan, "aws:rds/instance:Instance", "database")
    suffix = named(plan, "random:index/randomId:RandomId", "database-final-snapshot")
    assert rds["inputs"]["skipFinalSnapshot"] is False
    assert rds["inputs"]["finalSnapshotIdentifier"] == "mlops-eks-postgres-final-" + "0f" * 4  # mock hex
    assert suffix["urn"] in rds["depends_on"]
    assert violations(rds["type"], rds["inputs"]) == []
    small = named(dev(), "aws:rds/instance:Instance", "database")["inputs"]
    assert small["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in small
    assert not dev().of_type("random:index/randomId:RandomId")


# --- 6. the account's GitHub OIDC provider ----------------------------------------------------

def _github_providers(plan: Plan) -> list[dict]:
    return [p for p in inputs(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider") if p["url"] == ISSUER]


def test_the_github_provider_is_looked_up_by_default(plan_of):
    plan = plan_of("eks")
    assert _github_providers(plan) == []
    [infra] = [r for r in inputs(plan, "aws:iam/role:Role") if r["name"] == "mlops-eks-ci-infra"]
    [statement] = json.loads(infra["assumeRolePolicy"])["Statement"]
    assert statement["Principal"]["Federated"] == \
        f"arn:aws:iam::{FAKE_ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"


def test_the_github_provider_is_created_only_when_asked():
    plan = eks("eks-oidc", ci=json.dumps({"github": {**GITHUB, "createAwsOidcProvider": True}}))
    [provider] = _github_providers(plan)
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]


def test_creating_and_naming_a_provider_at_once_is_a_config_error():
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    message = problems(ci={"github": {**GITHUB, "createAwsOidcProvider": True, "awsOidcProviderArn": arn}})
    assert "mlops-stack:ci.github" in message and "allowed one of them" in message
    message = problems(ci={"github": {**GITHUB, "awsOidcProviderArn": "arn:aws:iam::123:oidc-provider/x"}})
    assert "mlops-stack:ci.github.awsOidcProviderArn" in message


# --- 7. S3 without NAT -------------------------------------------------------------------------

def test_private_subnets_reach_s3_through_a_gateway_endpoint(plan_of):
    plan = plan_of("eks")
    [endpoint] = inputs(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint["vpcEndpointType"] == "Gateway" and endpoint["serviceName"] == "com.amazonaws.eu-west-1.s3"
    private = {f"{r['name']}-id" for r in plan.of_type("aws:ec2/routeTable:RouteTable") if "-private-" in r["name"]}
    assert len(private) == 3 and set(endpoint["routeTableIds"]) == private  # each zone's table, no public one


# --- 8. no bucket without a writer ----------------------------------------------------------------

def test_eks_has_no_backups_bucket(plan_of):
    plan = plan_of("eks")
    assert set(plan.outputs["buckets"]) == {"artifacts"}
    assert not [b for b in inputs(plan, "aws:s3/bucket:Bucket") if "backups" in b["bucketPrefix"]]


# --- 9. placement --------------------------------------------------------------------------------

def test_only_the_workload_group_is_tainted_and_both_carry_the_pool_label(plan_of):
    groups = {g["name"]: g["inputs"] for g in plan_of("eks").of_type("aws:eks/nodeGroup:NodeGroup")}
    assert {n: g["labels"] for n, g in groups.items()} == {
        "eks-system": {POOL_LABEL: "system"}, "eks-workload": {POOL_LABEL: "workload"}}
    assert "taints" not in groups["eks-system"]
    [taint] = groups["eks-workload"]["taints"]
    [toleration] = pool_placement("workload").tolerations
    assert (taint["key"], taint["value"], taint["effect"]) == (toleration["key"], toleration["value"], "NO_SCHEDULE")


# --- 10. volumes wait for their StorageClass ------------------------------------------------------

def test_every_kubernetes_object_waits_for_the_gp3_class(plan_of):
    plan = plan_of("eks")
    storage_class = next(r for r in plan.resources if (r.get("manifest") or {}).get("kind") == "StorageClass")
    provider = named(plan, "pulumi:providers:kubernetes", "eks-k8s")
    assert storage_class["urn"] in provider["depends_on"]
    assert storage_class["provider"] == named(plan, "pulumi:providers:kubernetes", "eks-k8s-bootstrap")["urn"]
    monitoring = next(r for r in plan.of_type("kubernetes:helm.sh/v3:Release")
                      if r["inputs"]["chart"] == "kube-prometheus-stack")
    assert monitoring["provider"] == provider["urn"]


FACTS = ClusterFacts(load_balancers=True, storage_classes=frozenset({"gp2"}), default_storage_class=False)


def _claims_plan(*, waits: bool, default: bool = False) -> Plan:
    """A StorageClass the plan makes and a StatefulSet claiming it (by name, or as the default)."""
    sc_urn, ss_urn = "urn:pulumi:s::p::kubernetes:storage.k8s.io/v1:StorageClass::fast", "urn:...::db"
    claim = {} if default else {"storageClassName": "fast"}
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return Plan("fixture", resources=[
        {"type": "kubernetes:storage.k8s.io/v1:StorageClass", "name": "fast", "urn": sc_urn, "depends_on": [],
         "inputs": {}, "manifest": {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                    "metadata": {"name": "fast", "annotations": annotations}}},
        {"type": "kubernetes:apps/v1:StatefulSet", "name": "db", "urn": ss_urn,
         "depends_on": [sc_urn] if waits else [], "inputs": {},
         "manifest": {"apiVersion": "apps/v1", "kind": "StatefulSet",
                      "metadata": {"name": "db", "namespace": "kube-system"},
                      "spec": {"volumeClaimTemplates": [{"spec": claim}], "template": {"spec": {}}}}},
    ])


@pytest.mark.parametrize("default", [False, True])
def test_integrity_rejects_a_claim_that_does_not_wait_for_the_plans_storage_class(default):
    [error] = check_integrity(_claims_plan(waits=False, default=default), FACTS)
    assert error.startswith("StatefulSet kube-system/db: spec.volumeClaimTemplates[0].spec.storageClassName")
    assert "does not wait for it" in error
    assert check_integrity(_claims_plan(waits=True, default=default), FACTS) == []


def test_integrity_rejects_the_eks_plan_without_the_provider_edge(plan_of):
    plan = copy.deepcopy(plan_of("eks"))
    provider = named(plan, "pulumi:providers:kubernetes", "eks-k8s")
    provider["depends_on"] = [u for u in provider["depends_on"] if "StorageClass" not in u]
    errors = check_integrity(plan, FACTS)
    assert errors and all("kube-prometheus-stack" in e and "gp3" in e for e in errors), errors


# --- 11. Route 53 records and DNS-01 ------------------------------------------------------------

ZONE = "Z0123456789ABCDEFGHIJ"
DNS_GATEWAY = {"domain": "mlops.example.com", "dns": {"zone": ZONE},
               "tls": {"issuer": "letsencrypt", "email": "ops@example.com"}, "auth": {"mode": "anonymous"}}


def with_dns() -> Plan:
    return eks("eks-dns", gateway=json.dumps(DNS_GATEWAY))


def test_gateway_hosts_resolve_to_elastic_ips_the_nlb_takes():
    plan = with_dns()
    addresses = [r for r in plan.of_type("aws:ec2/eip:Eip") if r["name"].startswith("dns-gateway-")]
    assert len(addresses) == 3  # one per zone: the NLB has one public subnet per zone
    records = {r["inputs"]["name"]: r["inputs"] for r in plan.of_type("aws:route53/record:Record")}
    assert set(records) == {f"{h}.mlops.example.com" for h in ("mlflow", "grafana", "models")}
    ips = {record["records"][0] for record in records.values()}
    assert all(r["zoneId"] == ZONE and r["type"] == "A" and len(r["records"]) == 3 for r in records.values())
    assert len(ips) == 1 and ips <= {f"198.51.100.{n}" for n in range(256)}
    gateway = next(r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == "gateway")
    annotations = gateway["inputs"]["values"]["service"]["annotations"]
    assert len(annotations["service.beta.kubernetes.io/aws-load-balancer-eip-allocations"].split(",")) == 3
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"  # kept beside the EIPs


def test_cert_manager_answers_dns01_in_that_zone_only_with_its_irsa_role():
    plan = with_dns()
    [issuer] = [o for o in plan.kubernetes_objects if o["kind"] == "Issuer"]
    assert issuer["spec"]["acme"]["solvers"] == [{"dns01": {"route53": {"region": "eu-west-1", "hostedZoneID": ZONE}}}]
    release = next(r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == "cert-manager")
    role_arn = release["inputs"]["values"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    [role] = [r for r in inputs(plan, "aws:iam/role:Role") if r["name"] == role_arn.rsplit("/", 1)[-1]]
    [trust] = json.loads(role["assumeRolePolicy"])["Statement"]
    assert "system:serviceaccount:cert-manager:cert-manager" in trust["Condition"]["StringEquals"].values()
    [policy] = [p for p in inputs(plan, "aws:iam/rolePolicy:RolePolicy") if p["role"] == role["name"]]
    statements = {s["Sid"]: s for s in json.loads(policy["policy"])["Statement"]}
    challenges = statements["Challenges"]
    assert challenges["Resource"] == f"arn:aws:route53:::hostedzone/{ZONE}"
    assert challenges["Condition"]["ForAllValues:StringEquals"] == {
        "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"]}
    assert statements["Changes"]["Action"] == "route53:GetChange" and set(statements) == {"Changes", "Challenges"}


def test_a_cloud_dns_zone_name_is_a_config_error_on_eks():
    message = problems(gateway={"dns": {"zone": "mlops-example-com"}})
    assert "mlops-stack:gateway.dns.zone" in message and "hosted-zone id" in message


# --- cost -------------------------------------------------------------------------------------

def test_cost_prices_the_gateway_endpoint_and_the_dns_addresses():
    from mlops.cost.estimate import price_eks
    from mlops.cost.needs import needs_of
    from mlops.cost.prices import price_file
    from mlops.cost.usage import load_usage

    usage = load_usage(None)
    lines = {}
    for name, gateway in (("plain", {"domain": "mlops.example.com"}), ("dns", DNS_GATEWAY)):
        config = parse_stack_config({"platform": "eks", "environment": "dev", "gateway": gateway})
        estimate = price_eks(needs_of(name, config, usage), usage)
        lines[name] = {(line.resource, line.item): line.monthly for line in estimate.lines}
    assert lines["plain"][("VPC endpoint", "S3 gateway endpoint")] == 0
    assert not [k for k in lines["plain"] if "Elastic IP" in k[1]]
    [dns_ips] = [v for k, v in lines["dns"].items() if "Elastic IP" in k[1]]
    assert dns_ips == pytest.approx(2 * usage.hours_per_month * price_file("eks")["ipv4.public"].price)  # 2 zones
