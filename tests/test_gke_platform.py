"""GKE: what a first `pulumi up`, a `pulumi destroy` and a second `up` need, on the offline plan
(issue 12): Autopilot's limits, destroyable peering, re-creatable IDs, the APIs Workload Identity
Federation calls, webhooks behind the private control plane, a closed prod control plane, the
node-pool split, and public DNS with Let's Encrypt DNS-01."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from infra.settings import ConfigError, parse_stack_config
from mlops.cost.autopilot import billed, billed_requests
from mlops.cost.estimate import price_gke
from mlops.cost.needs import needs_of
from mlops.cost.prices import price_file
from mlops.cost.usage import load_usage
from mlops.plan import Plan, run_program, stack_config
from modules.monitoring import NO_NODE_LEVEL, Monitoring, MonitoringArgs
from modules.platform.contract import POOL_LABEL, WORKLOAD_TAINT, Placement, pool_placement
from modules.platform.gke.cluster import WEBHOOK_PORTS
from tests.test_cloud_config import GKE, with_
from tests.test_cloud_platforms import of, only, variant

FULL = "full-gke"
RELEASE = "kubernetes:helm.sh/v3:Release"


@functools.cache
def full() -> Plan:
    """The full-options gke stack: prod, models, workloads, gateway.dns with Let's Encrypt."""
    return run_program(FULL, stack_config(FULL, Path(__file__).parent / "stacks"))


def autopilot() -> Plan:
    return variant("gke-ap", "gke", **{"gcp.autopilot": "true"})


def release(plan: Plan, chart: str) -> dict:
    [found] = [r for r in plan.of_type(RELEASE) if str(r["inputs"].get("chart", "")).endswith(chart)]
    return found["inputs"]


def pod_specs(plan: Plan, kind: str, name: str) -> list[dict]:
    obj = plan.manifest(kind, name)
    if kind == "SeldonDeployment":
        return [c["spec"] for p in obj["spec"]["predictors"] for c in p["componentSpecs"]]
    return [obj["spec"]["template"]["spec"]]


def tolerates(pod: dict, taint: dict) -> bool:
    """Kubernetes' rule: a toleration matches a taint by key, effect and (operator Equal) value."""
    for t in pod.get("tolerations") or []:
        if t.get("key") not in (None, taint["key"]) or t.get("effect") not in (None, taint["effect"]):
            continue
        if t.get("operator") == "Exists" or t.get("value") == taint["value"]:
            return True
    return False


# --- Autopilot -----------------------------------------------------------------------------------

def test_autopilot_turns_off_what_it_refuses_and_standard_keeps_it():
    values = release(autopilot(), "kube-prometheus-stack")["values"]
    for key, setting in NO_NODE_LEVEL.items():
        assert values[key] == setting
    assert values["prometheusOperator"]["kubeletService"] == {"enabled": False}  # a Service in kube-system
    standard = release(full(), "kube-prometheus-stack")["values"]
    assert "nodeExporter" not in standard and "kubeletService" not in standard["prometheusOperator"]


def test_autopilot_monitoring_namespace_is_not_privileged():
    def level(plan: Plan) -> str:
        return plan.manifest("Namespace", "monitoring")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    assert level(autopilot()) == "baseline"
    assert level(full()) == "privileged"  # node-exporter reads the host there


def test_monitoring_values_node_level_switch():
    args = MonitoringArgs(namespace="m", chart_version="83.6.0", retention="1d", storage_gi=None,
                          storage_class=None, grafana_admin_password="p", node_level=False,
                          resources={k: {} for k in ("prometheus", "alertmanager", "grafana", "sidecar", "operator",
                                                     "small", "kube_state_metrics", "node_exporter")})
    assert Monitoring._values(args, "s")["nodeExporter"] == {"enabled": False}
    on = Monitoring._values(MonitoringArgs(**{**args.__dict__, "node_level": True}), "s")
    assert "nodeExporter" not in on and "kubeletService" not in on["prometheusOperator"]


@pytest.mark.parametrize(("cpu_m", "memory_mib", "expected"), [
    (100, 128, (250, 256)),  # CPU up to 1/4 vCPU, then memory up to 1 GiB per vCPU
    (250, 1024, (250, 1024)),  # already in range
    (250, 2048, (500, 2048)),  # 8 GiB per vCPU is over 6.5: CPU goes up, not memory down
    (250, 4096, (750, 4096)),  # 4 GiB needs at least 4/6.5 vCPU, rounded to 3/4
])
def test_autopilot_bills_rounded_requests(cpu_m, memory_mib, expected):
    cpu, memory = billed(cpu_m, memory_mib)
    assert (cpu, memory) == expected
    assert cpu % 250 == 0 and cpu / 1000 * 1024 <= memory <= cpu / 1000 * 6.5 * 1024


def test_autopilot_is_priced_from_the_plans_requests_not_node_pools():
    plan = autopilot()
    requests = billed_requests(plan)
    assert requests["cpu_m"] > 0 and requests["cpu_m"] % 250 == 0
    config = parse_stack_config(with_(GKE, environment="prod", gcp={
        "project": "my-mlops-project", "autopilot": True, "regional": True,
        "authorizedNetworks": ["203.0.113.0/24"]}))
    est = price_gke(needs_of("gke-ap", config, load_usage(None), requests), load_usage(None))
    items = {line.resource for line in est.lines}
    assert "Autopilot pods" in items and not any(i.startswith("node pool") for i in items)
    vcpu_line = next(line for line in est.lines if line.unit == "vCPU-hour")
    assert vcpu_line.quantity == pytest.approx(requests["cpu_m"] / 1000 * 730)
    for key in ("gke.autopilot.vcpu", "gke.autopilot.memory"):
        price = price_file("gke")[key]
        assert price.source.startswith("https://cloud.google.com/") and (price.verified or price.reason)


def test_autopilot_without_plan_requests_is_refused():
    config = parse_stack_config(with_(GKE, gcp={"project": "my-mlops-project", "autopilot": True,
                                                "regional": True}))
    with pytest.raises(Exception, match="gcp.autopilot"):
        needs_of("gke-ap", config, load_usage(None))


# --- destroy, and up again -----------------------------------------------------------------------

def test_service_networking_connection_lets_destroy_finish():
    connection = only(full(), "gcp:servicenetworking/connection:Connection")["inputs"]
    assert connection["deletionPolicy"] == "REMOVE_PEERING"


@pytest.mark.parametrize(("type_", "field", "limit"), [
    ("gcp:iam/workloadIdentityPool:WorkloadIdentityPool", "workloadIdentityPoolId", 32),
    ("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", "workloadIdentityPoolProviderId", 32),
    ("gcp:sql/databaseInstance:DatabaseInstance", "name", 98),
])
def test_soft_deleted_ids_carry_a_random_suffix_kept_in_state(type_, field, limit):
    plan = full()
    value = only(plan, type_)["inputs"][field]
    # a RandomString (kept in state, redrawn only when the base name changes) makes the suffix
    suffixes = [r["inputs"] for r in plan.of_type("random:index/randomString:RandomString")
                if r["name"].endswith("-suffix")]
    assert any(value.startswith(f"{s['keepers']['base']}-") and len(value) == len(s["keepers"]["base"]) + 1 +
               s["length"] and not s["upper"] and not s["special"] for s in suffixes), \
        f"{type_}.{field} {value!r} has no state-kept random suffix"
    assert re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", value) and 4 <= len(value) <= limit


def test_workload_identity_federation_apis_are_enabled():
    services = {r["inputs"]["service"] for r in full().of_type("gcp:projects/service:Service")}
    assert {"sts.googleapis.com", "iamcredentials.googleapis.com", "dns.googleapis.com"} <= services


# --- private control plane → webhooks ------------------------------------------------------------

def test_control_plane_reaches_the_webhooks_on_the_nodes():
    plan = full()
    cluster = only(plan, "gcp:container/cluster:Cluster")["inputs"]
    master = cluster["privateClusterConfig"]["masterIpv4CidrBlock"]
    rule = only(plan, "gcp:compute/firewall:Firewall")["inputs"]
    assert rule["direction"] == "INGRESS" and rule["sourceRanges"] == [master]
    assert {p for a in rule["allows"] for p in a["ports"]} == set(WEBHOOK_PORTS) == {"15017", "4443"}
    node_account = only(plan, "gcp:serviceaccount/account:Account", "gke-nodes")["inputs"]["accountId"]
    assert rule["targetServiceAccounts"][0].startswith(f"{node_account}@")
    # the ports are the charts' defaults: nothing in the plan moves them
    assert "webhook" not in release(plan, "seldon-core-operator")["values"]
    assert "securePort" not in (release(plan, "cert-manager")["values"].get("webhook") or {})


@pytest.mark.parametrize(("cidr", "message"), [("172.16.0.0/24", "a /28 range"),
                                               ("10.10.0.0/28", "overlaps subnetCidr")])
def test_master_cidr_is_checked(cidr, message):
    with pytest.raises(ConfigError, match=message):
        parse_stack_config(with_(GKE, gcp={"project": "my-mlops-project", "network": {"masterCidr": cidr}}))


# --- prod control plane ----------------------------------------------------------------------------

def test_prod_control_plane_must_not_be_open():
    with pytest.raises(ConfigError, match=r"mlops-stack:gcp.authorizedNetworks: .*privateEndpoint"):
        parse_stack_config(with_(GKE, environment="prod", gcp={"project": "my-mlops-project"}))
    parse_stack_config(with_(GKE, environment="prod", gcp={"project": "my-mlops-project", "privateEndpoint": True}))


def test_dev_open_control_plane_is_a_plan_warning():
    values, secrets = stack_config("gke")
    values = {**values, "mlops-stack:environment": "dev", "mlops-stack:gcp.authorizedNetworks": "[]"}
    warnings = [w for w in run_program("gke-open", (values, secrets)).summary("gke")["warnings"]
                if "alerting" not in w]  # no receivers: tests/test_alerting.py
    assert len(warnings) == 1 and warnings[0].startswith("mlops-stack:gcp.authorizedNetworks")
    assert [w for w in full().summary("gke")["warnings"] if "alerting" not in w] == []


# --- node pools: the split is real -----------------------------------------------------------------

def test_only_the_workload_pool_is_tainted_and_both_are_labelled():
    pools = {r["name"]: r["inputs"]["nodeConfig"] for r in of(full(), "gcp:container/nodePool:NodePool")}
    assert pools["gke-system"]["labels"] == {POOL_LABEL: "system"} and not pools["gke-system"].get("taints")
    assert pools["gke-workload"]["labels"] == {POOL_LABEL: "workload"}
    [taint] = pools["gke-workload"]["taints"]
    assert taint == {"key": WORKLOAD_TAINT["key"], "value": WORKLOAD_TAINT["value"], "effect": "NO_SCHEDULE"}


def test_model_servers_run_on_the_workload_pool_and_the_platform_on_the_system_pool():
    plan = full()
    for pod in pod_specs(plan, "SeldonDeployment", "neo"):
        assert pod["nodeSelector"] == {POOL_LABEL: "workload"} and tolerates(pod, WORKLOAD_TAINT)
    [mlflow] = pod_specs(plan, "Deployment", "mlflow")
    assert mlflow["nodeSelector"] == {POOL_LABEL: "system"} and not tolerates(mlflow, WORKLOAD_TAINT)
    kps = release(plan, "kube-prometheus-stack")["values"]
    for part in (kps["prometheus"]["prometheusSpec"], kps["alertmanager"]["alertmanagerSpec"], kps["grafana"],
                 kps["prometheusOperator"], kps["kube-state-metrics"]):
        assert part["nodeSelector"] == {POOL_LABEL: "system"}


def test_toleration_check_rejects_a_pod_without_the_toleration():
    assert not tolerates(Placement().pod_spec(), WORKLOAD_TAINT)
    assert not tolerates(pool_placement("system").pod_spec(), WORKLOAD_TAINT)
    assert not tolerates({"tolerations": [{**WORKLOAD_TAINT, "value": "other", "operator": "Equal"}]}, WORKLOAD_TAINT)
    assert tolerates(pool_placement("workload").pod_spec(), WORKLOAD_TAINT)


def test_autopilot_places_nothing():
    plan = autopilot()
    [mlflow] = pod_specs(plan, "Deployment", "mlflow")
    assert "nodeSelector" not in mlflow and "tolerations" not in mlflow


# --- public DNS + DNS-01 ----------------------------------------------------------------------------

def test_dns_records_point_at_the_gateways_reserved_address():
    plan = full()
    address = only(plan, "gcp:compute/address:Address")
    ip = "203.0.113.10"  # the plan's mock of the reserved address
    records = {r["inputs"]["name"]: r["inputs"] for r in of(plan, "gcp:dns/recordSet:RecordSet")}
    assert set(records) == {f"{h}.mlops.example.com." for h in ("mlflow", "grafana", "models")}
    assert all(r["type"] == "A" and r["rrdatas"] == [ip] and r["managedZone"] == "mlops-example-com"
               for r in records.values())
    assert address["inputs"]["addressType"] == "EXTERNAL"
    service = release(plan, "gateway")["values"]["service"]
    assert service["type"] == "LoadBalancer" and service["loadBalancerIP"] == ip


def test_letsencrypt_uses_dns01_with_cert_managers_workload_identity():
    plan = full()
    issuer = plan.manifest("Issuer", "platform-issuer")
    [solver] = issuer["spec"]["acme"]["solvers"]
    assert solver == {"dns01": {"cloudDNS": {"project": "my-mlops-project", "hostedZoneName": "mlops-example-com"}}}
    values = release(plan, "cert-manager")["values"]
    assert "--issuer-ambient-credentials" in values["extraArgs"]  # a namespaced Issuer, ambient credentials
    email = values["serviceAccount"]["annotations"]["iam.gke.io/gcp-service-account"]
    account = only(plan, "gcp:serviceaccount/account:Account", "dns-cert-manager")["inputs"]["accountId"]
    assert email.startswith(f"{account}@")
    binding = only(plan, "gcp:serviceaccount/iAMMember:IAMMember", "dns-cert-manager-workload-identity")["inputs"]
    assert binding["member"] == "serviceAccount:my-mlops-project.svc.id.goog[cert-manager/cert-manager]"
    zone_grant = only(plan, "gcp:dns/dnsManagedZoneIamMember:DnsManagedZoneIamMember")["inputs"]
    assert zone_grant["managedZone"] == "mlops-example-com" and zone_grant["role"] == "roles/dns.admin"


def test_without_dns_the_http01_path_stays():
    issuer = variant("gke-le", "gke", **{"gateway.tls.issuer": "letsencrypt",
                                          "gateway.tls.email": "a@example.com"}).manifest("Issuer", "platform-issuer")
    assert [s.keys() for s in issuer["spec"]["acme"]["solvers"]] == [{"http01"}]


def test_dns_is_refused_off_the_clouds():
    raw = {"platform": "minikube", "environment": "dev", "gateway": {"dns": {"zone": "z"}}}
    with pytest.raises(ConfigError, match="mlops-stack:gateway.dns: .*allowed on gke and eks"):
        parse_stack_config(raw)


# --- workflows: the GKE kubeconfig's credential plugin -----------------------------------------------

WORKFLOWS = Path(__file__).parents[1] / ".github" / "workflows"
PLUGIN_STEP = "google-github-actions/setup-gcloud@"


def plugin_problems(workflow: dict) -> list[str]:
    """Jobs that reach a GKE cluster (pulumi up/preview, or a KUBECONFIG from the stack outputs) after
    Google auth, without installing gke-gcloud-auth-plugin between the two."""
    problems = []
    for name, job in (workflow.get("jobs") or {}).items():
        steps = job.get("steps") or []
        uses = [str(s.get("uses", "")) for s in steps]
        reaches = any("pulumi/actions@" in u for u in uses) or "KUBECONFIG" in str(steps)
        auth = next((i for i, u in enumerate(uses) if u.startswith("google-github-actions/auth@")), None)
        if auth is None or not reaches:
            continue
        installs = [s for s in steps[auth + 1:] if str(s.get("uses", "")).startswith(PLUGIN_STEP)
                    and "gke-gcloud-auth-plugin" in str((s.get("with") or {}).get("install_components"))]
        if not installs:
            problems.append(f"job {name}: no {PLUGIN_STEP} step installing gke-gcloud-auth-plugin after auth")
    return problems


@pytest.mark.parametrize("name", ["infra-deploy.yml", "infra-preview.yml", "model-pipeline.yml"])
def test_workflows_install_the_gke_auth_plugin(name):
    import yaml

    assert plugin_problems(yaml.safe_load((WORKFLOWS / name).read_text())) == []


def test_a_job_without_the_plugin_is_flagged():
    job = {"steps": [{"uses": "google-github-actions/auth@0"}, {"uses": "pulumi/actions@v7.0.0"}]}
    assert plugin_problems({"jobs": {"up": job}}) == [
        f"job up: no {PLUGIN_STEP} step installing gke-gcloud-auth-plugin after auth"]
