"""The gateway's exposure (issue 11, defects 2 and 10): a Service type every target can make ready,
URLs that work as exported (port and scheme), certificates cert-manager can issue through Istio,
and `make up` (scripts/up.sh) driven for real against stub tools.

Istio's behaviour is read from istio/istio at tag 1.30.3 (pilot/pkg/networking/core/gateway.go,
route/route.go, pkg/config/kube/ingress); `_port80` below models the part the TLS design rests on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from infra.settings import ConfigError, parse_stack_config
from mlops.crds import validate_custom_resource
from mlops.paths import ROOT
from mlops.plan import Plan, run_program, stack_config
from modules.gateway import INGRESS_RELEASE, ISTIO_INGRESS_CLASS, NODE_PORTS, PORT_FORWARD, tls_problems
from tests.services import free_port
from tests.tools import require_tool

STACKS = ("dev", "onprem", "gke", "eks")
TEST_STACKS = ROOT / "tests" / "stacks"
NEO_URI = "s3://mlflow-artifacts/1/models/m-0123456789abcdef/artifacts"
RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def full() -> Plan:
    return run_program("full", stack_config("full", TEST_STACKS))


@pytest.fixture(scope="module")
def full_dev() -> Plan:
    return run_program("full-dev", stack_config("full-dev", TEST_STACKS))


@pytest.fixture(scope="module")
def dev_with_model() -> Plan:
    values, secrets = stack_config("dev")
    models = {"models": {"neo": {"source": {"uri": NEO_URI}}}}
    return run_program("dev", ({**values, "mlops-stack:serving": json.dumps(models)}, secrets))


def _release(plan: Plan, chart: str) -> dict[str, Any]:
    [release] = [r["inputs"] for r in plan.of_type(RELEASE) if r["inputs"]["chart"] == chart]
    return release


def _urls(plan: Plan) -> list[str]:
    o = plan.outputs
    return [o["mlflowUrl"], o["grafanaUrl"], o["modelsBaseUrl"], *(o.get("modelUrls") or {}).values()]


# --- the Service type: readiness every target can provide -----------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_the_gateway_release_can_become_ready_on_its_platform(plan_of, stack):
    """Helm waits for an atomic release (install.go: Wait = Wait || Atomic), and a LoadBalancer is
    ready only with an address: only clusters that hand addresses out get one."""
    plan = plan_of(stack)
    config = parse_stack_config(_raw(stack))
    gateway = _release(plan, "gateway")
    assert gateway["atomic"] is True and not gateway.get("skipAwait")
    service_type = gateway["values"]["service"]["type"]
    assert service_type == config.gateway.service_type
    assert (service_type == "LoadBalancer") == config.kubernetes.load_balancers, (stack, service_type)


def test_minikube_reaches_the_gateway_by_port_forward_and_bare_metal_on_fixed_node_ports(plan_of):
    dev, onprem = plan_of("dev"), plan_of("onprem")
    assert _release(dev, "gateway")["values"]["service"] == {"type": "ClusterIP", "annotations": {}}
    ports = {p["name"]: p for p in _release(onprem, "gateway")["values"]["service"]["ports"]}
    assert (ports["http2"]["port"], ports["http2"]["nodePort"]) == (80, NODE_PORTS["http"])
    assert (ports["https"]["port"], ports["https"]["nodePort"]) == (443, NODE_PORTS["https"])
    assert ports["status-port"]["port"] == 15021  # the chart's list is replaced whole: keep its ports


@pytest.mark.parametrize(("raw", "fragments"), [
    ({"platform": "minikube", "environment": "dev", "gateway": {"serviceType": "LoadBalancer"}},
     ["mlops-stack:gateway.serviceType: got \"LoadBalancer\"", "kubernetes.loadBalancers"]),
    ({"platform": "existing", "environment": "prod", "kubernetes": {"context": "lab"},
      "gateway": {"tls": {"issuer": "letsencrypt", "email": "ops@example.org"}}},
     ["mlops-stack:gateway.tls.issuer: got \"letsencrypt\"", "HTTP-01 on port 80", "NodePort"]),
])
def test_exposures_the_cluster_cannot_serve_are_config_errors(raw, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    assert all(f in str(caught.value) for f in fragments), str(caught.value)


def test_a_load_balancer_is_allowed_where_the_cluster_has_a_provisioner():
    config = parse_stack_config({"platform": "minikube", "environment": "dev",
                                 "kubernetes": {"loadBalancers": True}, "gateway": {"serviceType": "LoadBalancer"}})
    assert config.gateway.service_type == "LoadBalancer"


# --- resources: the chart's defaults do not survive --------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_the_gateway_runs_with_the_limits_its_stack_declares(plan_of, stack):
    declared = parse_stack_config(_raw(stack)).gateway.gateway_resources.to_k8s()
    assert _release(plan_of(stack), "gateway")["values"]["resources"] == declared
    assert declared["limits"]["cpu"]  # else the chart's own 2000m would stay (mustMergeOverwrite)


def test_a_gateway_without_a_cpu_limit_is_refused_naming_the_key():
    values, secrets = stack_config("dev")
    resources = {"gatewayResources": {"cpu": "50m", "memory": "128Mi", "cpuLimit": None, "memoryLimit": "512Mi"}}
    with pytest.raises(Exception, match=r"gateway\.gatewayResources\.cpuLimit.*2000m"):
        run_program("dev", ({**values, "mlops-stack:gateway": json.dumps(resources)}, secrets))


# --- URLs: what `pulumi stack output` prints works as printed ------------------------------------

def test_dev_urls_name_the_port_forward_that_serves_them(dev_with_model):
    o = dev_with_model.outputs
    assert o["mlflowUrl"] == f"http://mlflow.localtest.me:{PORT_FORWARD['http']}"
    assert o["grafanaUrl"] == f"http://grafana.localtest.me:{PORT_FORWARD['http']}"
    assert o["modelUrls"]["neo"] == (f"http://models.localtest.me:{PORT_FORWARD['http']}"
                                     "/seldon/serving/neo/v2/models/model/infer")
    command = o["gatewayPortForward"].split()
    assert command[:3] == ["kubectl", "-n", "istio-system"] and command[3:5] == ["port-forward", f"svc/{INGRESS_RELEASE}"]
    assert command[5:] == [f"{PORT_FORWARD['http']}:80"]
    assert _release(dev_with_model, "gateway")["name"] == INGRESS_RELEASE  # the chart names the Service after it


def test_tls_stacks_export_https_urls_on_the_port_clients_use(full, full_dev, plan_of):
    for plan, port in ((full, None), (full_dev, PORT_FORWARD["https"]), (plan_of("onprem"), NODE_PORTS["https"]),
                       (plan_of("gke"), None)):
        for url in _urls(plan):
            parts = urlsplit(url)
            assert (parts.scheme, parts.port) == ("https", port), (plan.stack, url)
    assert full_dev.outputs["gatewayPortForward"].endswith(f"{PORT_FORWARD['http']}:80 {PORT_FORWARD['https']}:443")
    assert "gatewayPortForward" not in full.outputs


@pytest.mark.parametrize("stack", [*STACKS, "full", "full-dev"])
def test_mlflow_admits_the_host_header_of_its_exported_url(plan_of, full, full_dev, stack):
    """With a port in the URL, the Host header carries it; Envoy routes it (the gateway's route
    configuration sets ignore_port_in_host_matching, gateway.go) and forwards it unchanged, so
    MLflow's DNS-rebinding guard must admit host:port (measured: 403 otherwise)."""
    plan = {"full": full, "full-dev": full_dev}.get(stack) or plan_of(stack)
    server = plan.manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    allowed = next(e["value"] for e in server["env"] if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS").split(",")
    host = urlsplit(plan.outputs["mlflowUrl"]).netloc
    assert is_allowed_host_header(allowed, host), (host, allowed)


@pytest.mark.parametrize("stack", ["dev", "onprem", "eks"])
def test_grafana_builds_its_links_from_the_url_users_open(plan_of, stack):
    """Grafana's default root_url is http://<domain>:3000/: wrong scheme and port behind the gateway."""
    plan = plan_of(stack)
    server = _release(plan, "kube-prometheus-stack")["values"]["grafana"]["grafana.ini"]["server"]
    assert server["root_url"] == plan.outputs["grafanaUrl"] + "/"
    assert server["domain"] == urlsplit(plan.outputs["grafanaUrl"]).hostname


# --- certificates: cert-manager can issue what the plan asks for ---------------------------------

def _tls_objects(plan: Plan) -> list[dict[str, Any]]:
    return [o for o in plan.kubernetes_objects
            if o["kind"] in ("Issuer", "ClusterIssuer", "Certificate", "Gateway", "VirtualService", "IngressClass")]


def test_the_letsencrypt_issuer_can_issue_through_the_gateway(full):
    objects = _tls_objects(full)
    issuer = full.manifest("Issuer", "platform-issuer", "istio-system")
    assert issuer["spec"]["acme"]["solvers"] == [{"http01": {"ingress": {"class": ISTIO_INGRESS_CLASS,
                                                                         "serviceType": "ClusterIP"}}}]
    certificate = full.manifest("Certificate", "platform-gateway", "istio-system")
    assert certificate["spec"]["dnsNames"] == [f"{s}.mlops.example.org" for s in ("mlflow", "grafana", "models")]
    assert tls_problems(objects) == []
    for obj in objects:  # the pinned CRDs' schemas, with pruning: an unknown field is an error
        assert validate_custom_resource(obj) == [], obj["kind"]


def test_the_self_signed_stacks_pass_the_same_checks(full_dev, plan_of):
    for plan in (full_dev, plan_of("onprem")):
        assert tls_problems(_tls_objects(plan)) == []
        assert plan.manifest("Issuer", "platform-issuer", "istio-system")["spec"] == {"selfSigned": {}}


OLD_ISSUER = {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory", "email": "a@example.org",
                       "privateKeySecretRef": {"name": "k"},
                       "solvers": [{"http01": {"ingress": {"ingressClassName": "istio"}}}]}}


def _replace_spec(objects: list[dict[str, Any]], kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**o, "spec": spec} if o["kind"] == kind else o for o in objects]


def test_the_old_issuer_spec_is_rejected_for_each_of_its_faults(full):
    objects = _tls_objects(full)
    old = _replace_spec(objects, "Issuer", OLD_ISSUER)
    certificate = full.manifest("Certificate", "platform-gateway", "istio-system")
    old = _replace_spec(old, "Certificate", {**certificate["spec"], "dnsNames": ["mlops.example.org",
                                                                                   "*.mlops.example.org"]})
    gateway = full.manifest("Gateway", "platform-gateway", "istio-system")
    servers = [{**s, "tls": {"httpsRedirect": True}} if s["port"]["number"] == 80 else s
               for s in gateway["spec"]["servers"]]
    old = _replace_spec(old, "Gateway", {**gateway["spec"], "servers": servers})
    problems = "\n".join(tls_problems(old))
    assert "'*.mlops.example.org': ACME cannot validate a wildcard over HTTP-01" in problems
    assert "ingressClassName 'istio': no IngressClass of that name" in problems
    assert "redirects port 80" in problems and "httpsRedirect" in problems
    # an IngressClass with Istio's controller makes ingressClassName work
    istio_class = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "istio"},
                   "spec": {"controller": "istio.io/ingress-controller"}}
    assert "IngressClass" not in "\n".join(tls_problems(_replace_spec(objects, "Issuer", OLD_ISSUER) + [istio_class]))


def test_a_certificate_naming_a_missing_issuer_or_another_ingress_class_is_rejected(full):
    objects = _tls_objects(full)
    issuer = full.manifest("Issuer", "platform-issuer", "istio-system")
    nginx = json.loads(json.dumps(issuer["spec"]).replace('"class": "istio"', '"class": "nginx"'))
    assert any("ingress.class 'nginx'" in p for p in tls_problems(_replace_spec(objects, "Issuer", nginx)))
    assert any("which the plan does not make" in p
               for p in tls_problems([o for o in objects if o["kind"] != "Issuer"]))


# Istio 1.30.3 on the gateway's port 80, as buildGatewayHTTPRouteConfig assembles it: every
# VirtualService bound to a gateway with a port-80 server adds its port-80 routes to the virtual host
# of each host it shares with that server; a server with tls.httpsRedirect makes the virtual host
# require TLS (a 301 for every path); catch-all routes ("/") go last (route.SortVHostRoutes); a
# request picks the exact host's virtual host before "*".

def _port80_vhosts(objects: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    servers = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": [
        s for s in o["spec"]["servers"] if s["port"]["number"] == 80]
        for o in objects if o["kind"] == "Gateway"}
    vhosts: dict[str, dict[str, Any]] = {}
    for vs in (o for o in objects if o["kind"] == "VirtualService"):
        routes = [(m.get("uri", {}), rule) for rule in vs["spec"]["http"] for m in (rule.get("match") or [{}])
                  if m.get("port", 80) == 80]
        for server in (s for g in vs["spec"]["gateways"] for s in servers.get(g, [])):
            for host in vs["spec"]["hosts"]:
                if routes and (host in server["hosts"] or "*" in server["hosts"]):
                    vhost = vhosts.setdefault(host, {"require_tls": False, "routes": []})
                    vhost["routes"] += routes
                    vhost["require_tls"] |= bool((server.get("tls") or {}).get("httpsRedirect"))
    for vhost in vhosts.values():
        vhost["routes"].sort(key=lambda r: not r[0])  # stable: catch-alls (no uri) last
    return vhosts


def _port80(objects: Sequence[Mapping[str, Any]], host: str, path: str) -> str:
    vhost = _port80_vhosts(objects).get(host) or _port80_vhosts(objects).get("*")
    if vhost is None:
        return "404"
    if vhost["require_tls"]:
        return "301 require_tls"
    for uri, rule in vhost["routes"]:
        if not uri or uri.get("exact") == path or path.startswith(uri.get("prefix", "\0")):
            return "redirect" if "redirect" in rule else rule["route"][0]["destination"]["host"]
    return "404"


def _acme_ingress(name: str, token: str) -> list[dict[str, Any]]:
    """What istiod makes of cert-manager's solver Ingress (ingress/gateways.go, virtualservices.go)."""
    return [
        {"kind": "Gateway", "metadata": {"namespace": "istio-system", "name": "solver-istio-autogenerated"},
         "spec": {"servers": [{"port": {"number": 80}, "hosts": ["*"]}]}},
        {"kind": "VirtualService", "metadata": {"namespace": "istio-system", "name": f"solver-{name}"},
         "spec": {"hosts": [name], "gateways": ["istio-system/solver-istio-autogenerated"],
                  "http": [{"match": [{"uri": {"exact": f"/.well-known/acme-challenge/{token}"}}],
                            "route": [{"destination": {"host": "cm-acme-http-solver"}}]}]}},
    ]


def test_http01_reaches_the_solver_and_everything_else_on_port_80_is_redirected(full):
    objects = _tls_objects(full)
    for name in full.manifest("Certificate", "platform-gateway", "istio-system")["spec"]["dnsNames"]:
        during = [*objects, *_acme_ingress(name, "t0k3n")]
        assert _port80(during, name, "/.well-known/acme-challenge/t0k3n") == "cm-acme-http-solver", name
        assert _port80(during, name, "/") == "redirect", name
        assert _port80(objects, name, "/seldon/serving/neo/v2/health/ready") == "redirect", name
        catch_alls = [r for r in _port80_vhosts(during)[name]["routes"] if not r[0]]
        assert len(catch_alls) == 1, f"{name}: port-80 catch-alls in an order istiod does not define"


def test_the_port80_model_sees_the_old_gateway_redirect_swallow_the_challenge(full):
    gateway = full.manifest("Gateway", "platform-gateway", "istio-system")
    servers = [{**s, "tls": {"httpsRedirect": True}} if s["port"]["number"] == 80 else s
               for s in gateway["spec"]["servers"]]
    old = [*_replace_spec(_tls_objects(full), "Gateway", {**gateway["spec"], "servers": servers}),
           *_acme_ingress("mlflow.mlops.example.org", "t")]
    assert _port80(old, "mlflow.mlops.example.org", "/.well-known/acme-challenge/t") == "301 require_tls"


def test_on_plain_http_stacks_the_routes_serve_port_80(plan_of):
    objects = _tls_objects(plan_of("dev"))
    assert _port80(objects, "mlflow.localtest.me", "/") == "mlflow.mlflow.svc.cluster.local"
    assert _port80(objects, "grafana.localtest.me", "/") == "kps-grafana.monitoring.svc.cluster.local"


# --- make up: scripts/up.sh against stub tools ---------------------------------------------------

def _raw(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in document.items()}


def test_up_sh_passes_shellcheck():
    shellcheck = require_tool("shellcheck", "lints scripts/up.sh; apt-get install shellcheck")
    result = subprocess.run([shellcheck, "scripts/up.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
"""
STUBS = {
    "make": "",
    "docker": "",
    "minikube": 'case "$1" in status) echo "${MINIKUBE_HOST:-Running}";; kubectl) shift 2; exec kubectl "$@";; esac\n',
    "pulumi": """case "$1 $2" in
  "version "*) echo v3.272.0;;
  "stack output") python3 -c 'import json,os,sys; v=json.load(open(os.environ["STUB_OUTPUTS"])).get(sys.argv[1]); print(v) if v else sys.exit(1)' "$3";;
esac
""",
    # the port-forward: serves /health on the URL's port, as the gateway would behind it
    "kubectl": """exec python3 -c '
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["STUB_PORT"])), H).serve_forever()'
""",
}


@pytest.fixture
def stub_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(STUB + body)
        (bin_dir / name).chmod(0o755)
    port = free_port()
    outputs = {"gatewayPortForward": "kubectl -n istio-system port-forward svc/istio-ingressgateway 8080:80",
               "mlflowUrl": f"http://127.0.0.1:{port}", "grafanaUrl": f"http://127.0.0.1:{port}",
               "modelsBaseUrl": f"http://127.0.0.1:{port}/seldon/serving/", "mlflowAdminUsername": "admin"}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "STUB_LOG": str(tmp_path / "log"),
            "STUB_OUTPUTS": str(tmp_path / "outputs.json"), "STUB_PORT": str(port),
            "PULUMI_STATE_DIR": str(tmp_path / "state")}


def _up(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "up.sh"), *args], env=dict(env), capture_output=True,
                          text=True, timeout=120)


def _forwarder(env: Mapping[str, str]) -> int | None:
    pid_file = Path(env["PULUMI_STATE_DIR"]) / "gateway-forward.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return subprocess.run(["ps", "-p", str(pid), "-o", "stat="], capture_output=True, text=True).stdout.strip()[:1] != "Z"


def test_make_up_forwards_the_gateway_after_pulumi_up_and_prints_urls_that_answer(stub_env):
    started: list[int] = []
    try:
        first = _up({**stub_env, "MINIKUBE_HOST": "Stopped"})
        assert first.returncode == 0, first.stdout + first.stderr
        calls = Path(stub_env["STUB_LOG"]).read_text().splitlines()
        order = [next(i for i, c in enumerate(calls) if c.startswith(p))
                 for p in ("minikube start", "pulumi up --stack dev --yes", "kubectl --context minikube -n istio-system")]
        assert order == sorted(order), calls  # the gateway needs no tunnel: forward once the stack is up
        # exactly the project images the stack runs are built into the node, before `pulumi up`
        builds = [c for c in calls if c.startswith("minikube image build")]
        assert builds == [f"minikube image build -t {ref} {context}" for ref, context in
                          [("mlops-stack/mlflow-server:3.17.2-1", "modules/mlflow/image"),
                           ("mlops-stack/mlserver:1.7.1-1", "modules/serving/mlserver-image")]], calls
        assert calls.index(builds[-1]) < order[1]
        assert "kubectl --context minikube -n istio-system port-forward svc/istio-ingressgateway 8080:80" in calls
        mlflow = json.loads(Path(stub_env["STUB_OUTPUTS"]).read_text())["mlflowUrl"]
        assert f"MLflow:  {mlflow}" in first.stdout and "warning" not in first.stderr  # /health answered
        started.append(_forwarder(stub_env))

        again = _up(stub_env)  # re-runnable: the old port-forward is replaced, not doubled
        assert again.returncode == 0, again.stdout + again.stderr
        started.append(_forwarder(stub_env))
        assert started[0] != started[1] and not _outlives(started[0]) and _alive(started[1])

        down = _up(stub_env, "--destroy")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "pulumi destroy --stack dev --yes" in Path(stub_env["STUB_LOG"]).read_text()
        assert _forwarder(stub_env) is None and not _outlives(started[1])
    finally:
        for pid in filter(None, started):
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)


def _outlives(pid: int) -> bool:
    """The process still runs 5 s from now."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(0.1)
    return True


def test_up_sh_refuses_an_unknown_argument(stub_env):
    result = _up(stub_env, "--nuke")
    assert result.returncode == 1 and "usage: scripts/up.sh [--forward|--destroy]" in result.stderr


# --- the e2e workflow: what it runs, step by step, is what the local tests run -------------------

def test_the_e2e_workflow_runs_make_up_smoke_train_serve_and_tears_down():
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    [job] = document["jobs"].values()
    steps = job["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    for command in ("make up", ".venv/bin/mlops smoke --stack dev", ".venv/bin/mlops train neo --stack dev -- --register",
                    ".venv/bin/mlops resolve-model --name NEOs --alias champion",
                    "pulumi config set --stack dev --path serving.models.neo.source.uri",
                    "python -m workloads.neo.payload --format v2"):
        assert command in run, command
    assert run.index("mlops train") < run.index("resolve-model") < run.rindex("make up") < run.index("payload")
    teardown = steps[-1]
    assert teardown["if"] == "always()" and "scripts/up.sh --destroy" in teardown["run"]


def test_the_config_path_the_e2e_sets_serves_the_model_at_its_exported_url():
    values, secrets = stack_config("dev")
    served = json.dumps({"models": {"neo": {"source": {"uri": NEO_URI}}}})  # `--path serving.models.neo.source.uri`
    plan = run_program("dev", ({**values, "mlops-stack:serving": served}, secrets))
    assert plan.manifest("SeldonDeployment", "neo", "serving")["spec"]["predictors"][0]["graph"]["modelUri"] == NEO_URI
    assert plan.outputs["modelUrls"]["neo"].startswith(plan.outputs["modelsBaseUrl"] + "neo/")
