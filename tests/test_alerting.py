"""Alerts reach someone (issue 13, item 1; docs/decisions/0012-alert-routing.md).

The AlertmanagerConfig the program declares is turned into the alertmanager.yml the operator would
write (`operator_config`: prometheus-operator v0.90.1 pkg/alertmanager/amcfg.go, the path of the
global `alertmanagerConfiguration` resource), checked with `amtool check-config`, and run by a real
Alertmanager on 127.0.0.1 that delivers to a webhook receiver in this test. The plans show no
credential, only Secret references, and the stack without receivers is warned about.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config.alerting import DEFAULT_INHIBIT, AlertingConfig
from infra.settings import ConfigError, parse_stack_config
from mlops.crds import validate_custom_resource
from mlops.plan import Plan, run_program, stack_config
from modules.monitoring.alerting import CONFIG_NAME, CREDENTIALS_SECRET, config_spec
from tests import services
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "monitoring"

# --- the operator's translation (amcfg.go at v0.90.1), for the fields the platform declares ----------

# CRD config key -> alertmanager.yml key, per receiver type; the value of `secret` comes from a Secret
RECEIVER_FIELDS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "webhookConfigs": ("webhook_configs", {"url": "url", "maxAlerts": "max_alerts", "sendResolved": "send_resolved"},
                       {"urlSecret": "url"}),
    "slackConfigs": ("slack_configs", {"channel": "channel", "sendResolved": "send_resolved"}, {"apiURL": "api_url"}),
    "emailConfigs": ("email_configs", {"to": "to", "from": "from", "smarthost": "smarthost",
                                       "authUsername": "auth_username", "requireTLS": "require_tls",
                                       "sendResolved": "send_resolved"}, {"authPassword": "auth_password"}),
    "pagerdutyConfigs": ("pagerduty_configs", {"url": "url", "sendResolved": "send_resolved"},
                         {"routingKey": "routing_key"}),
}


def _matcher(m: Mapping[str, str]) -> str:
    """monitoringv1alpha1.Matcher.String(): name, match type, the value quoted (OpenMetrics escapes)."""
    value = m["value"].replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{m["name"]}{m["matchType"]}"{value}"'


def _route(route: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {"receiver": prefix + route["receiver"]}
    for crd, am in (("groupBy", "group_by"), ("groupWait", "group_wait"), ("groupInterval", "group_interval"),
                    ("repeatInterval", "repeat_interval"), ("continue", "continue")):
        if route.get(crd):
            out[am] = route[crd]
    if route.get("matchers"):
        out["matchers"] = [_matcher(m) for m in route["matchers"]]
    if route.get("routes"):
        out["routes"] = [_route(r, prefix) for r in route["routes"]]
    return out


def _receiver(receiver: Mapping[str, Any], prefix: str, secrets: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": prefix + receiver["name"]}
    for crd_key, configs in receiver.items():
        if crd_key == "name":
            continue
        am_key, plain, secret = RECEIVER_FIELDS[crd_key]
        out[am_key] = []
        for config in configs:
            unknown = set(config) - set(plain) - set(secret)
            assert not unknown, f"operator_config does not translate {crd_key} fields {unknown}"
            item = {plain[k]: v for k, v in config.items() if k in plain}
            for k, am in secret.items():
                if k in config:
                    ref = (config[k]["name"], config[k]["key"])
                    if ref not in secrets:
                        raise LookupError(f"Secret {NAMESPACE}/{ref[0]} has no key {ref[1]!r}")
                    item[am] = secrets[ref]
            out[am_key].append(item)
    return out


def operator_config(spec: Mapping[str, Any], secrets: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """alertmanager.yml as the operator writes it from the global AlertmanagerConfig `spec`
    (initializeFromAlertmanagerConfig: no namespace matcher, names prefixed `<ns>/<name>/`)."""
    root = spec["route"]
    # checkAlertmanagerConfigRootRoute
    if not root.get("receiver") or root.get("continue") or root.get("matchers"):
        raise ValueError("root route: a receiver, no continue, no matchers")
    prefix = f"{NAMESPACE}/{CONFIG_NAME}/"
    return {
        "route": _route(root, prefix),
        "receivers": [_receiver(r, prefix, secrets) for r in spec["receivers"]],
        "inhibit_rules": [{"source_matchers": [_matcher(m) for m in i.get("sourceMatch", [])],
                           "target_matchers": [_matcher(m) for m in i.get("targetMatch", [])],
                           **({"equal": i["equal"]} if i.get("equal") else {})} for i in spec.get("inhibitRules", [])],
    }


def placeholder_secrets(spec: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """A value for every Secret key the spec references, shaped as its field expects."""
    values = {"urlSecret": "https://hooks.example.org/t/0123", "apiURL": "https://hooks.slack.com/services/T/B/x",
              "authPassword": "smtp-password", "routingKey": "0123456789abcdef0123456789abcdef"}
    return {(c[k]["name"], c[k]["key"]): v for r in spec["receivers"] for key, configs in r.items() if key != "name"
            for c in configs for k, v in values.items() if k in c}


# --- amtool ---------------------------------------------------------------------------------------


def amtool_check(config: Mapping[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    amtool = require_tool("amtool", "Alertmanager's config check (Debian prometheus-alertmanager)")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)


def spec_of(plan: Plan) -> dict[str, Any]:
    return plan.manifest("AlertmanagerConfig", CONFIG_NAME, NAMESPACE)["spec"]


@pytest.fixture(scope="module")
def full() -> Plan:
    return run_program("full", stack_config("full", ROOT / "tests" / "stacks"))


@pytest.mark.parametrize("stack", ["dev", "full"])
def test_generated_config_passes_amtool(stack, plan_of, full, tmp_path):
    spec = spec_of(full if stack == "full" else plan_of(stack))
    result = amtool_check(operator_config(spec, placeholder_secrets(spec)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_rejects_a_route_to_a_missing_receiver(full, tmp_path):
    spec = json.loads(json.dumps(spec_of(full)))
    spec["route"]["routes"][-1]["receiver"] = "nobody"
    result = amtool_check(operator_config(spec, placeholder_secrets(spec)), tmp_path)
    assert result.returncode != 0
    assert "undefined receiver" in result.stdout + result.stderr


def test_translation_refuses_what_the_operator_refuses(full):
    spec = json.loads(json.dumps(spec_of(full)))
    with pytest.raises(LookupError, match="alerting-credentials has no key 'oncall'"):
        operator_config(spec, {})
    spec["route"]["continue"] = True
    with pytest.raises(ValueError, match="root route"):
        operator_config(spec, placeholder_secrets(spec))


def test_child_routes_match_the_crd_route_schema(full):
    """`spec.route.routes` is preserve-unknown in the CRD (the operator parses it itself): each child
    route is checked as a route of its own, so a misspelt field is found here."""
    obj = full.manifest("AlertmanagerConfig", CONFIG_NAME, NAMESPACE)
    for child in spec_of(full)["route"]["routes"]:
        assert validate_custom_resource({**obj, "spec": {"route": child}}) == []
    bad = {**obj, "spec": {"route": {"receiver": "x", "matcher": []}}}
    assert any("matcher" in e for e in validate_custom_resource(bad))


# --- config ---------------------------------------------------------------------------------------


def test_receivers_need_a_default_that_exists():
    slack = {"type": "slack", "credential": "https://hooks.slack.com/services/T/B/x"}
    with pytest.raises(ValueError, match="default is missing"):
        AlertingConfig.model_validate({"receivers": {"team": slack}})
    with pytest.raises(ValueError, match="routes\\[0\\].receiver is 'pager'"):
        AlertingConfig.model_validate({"receivers": {"team": slack}, "default": "team",
                                       "routes": [{"match": {"severity": "critical"}, "receiver": "pager"}]})
    with pytest.raises(ValueError, match="type slack needs \\['credential'\\]"):
        AlertingConfig.model_validate({"receivers": {"team": {"type": "slack"}}, "default": "team"})
    assert AlertingConfig.model_validate({"receivers": {"team": slack}, "default": "team"}).warnings() == []
    assert "notify nobody" in AlertingConfig().warnings()[0]


KPS_ALERTS = {"InfoInhibitor"}  # kube-prometheus-stack's default rules


def unknown_alertnames(inhibit: list[dict[str, Any]], rule_files: list[Path]) -> set[str]:
    """Alert names the inhibitions name that no rule file defines (a renamed rule would silently
    end an inhibition)."""
    defined = {r["alert"] for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]
               for r in g["rules"] if "alert" in r} | KPS_ALERTS
    named = {n for i in inhibit for side in ("source", "sourceRe", "target", "targetRe")
             for n in i.get(side, {}).get("alertname", "").split("|") if n}
    return named - defined


def test_default_inhibitions_name_the_platforms_alerts():
    rules = sorted((ROOT / "modules" / "monitoring" / "rules").glob("*.yaml"))
    assert unknown_alertnames(DEFAULT_INHIBIT, rules) == set()
    assert unknown_alertnames([{"source": {"alertname": "MLflowGone"}, "target": {"severity": "info"}}],
                              rules) == {"MLflowGone"}


def dev_raw(alerting: dict[str, Any]) -> dict[str, Any]:
    return {"platform": "minikube", "environment": "dev", "monitoring": {"alerting": alerting}}


def test_a_plain_text_credential_is_refused():
    raw = dev_raw({"receivers": {"team": {"type": "slack", "credential": "https://hooks.slack.com/x"}},
                   "default": "team"})
    with pytest.raises(ConfigError, match="monitoring.alerting.receivers.team.credential: stored in plain text"):
        parse_stack_config(raw, set())
    assert parse_stack_config(raw, {"monitoring"}).monitoring.alerting.default == "team"


def test_config_errors_never_show_a_credential():
    token = "https://hooks.example.org/t/very-secret-token"
    raw = dev_raw({"receivers": {"hook": {"type": "webhook", "url": "https://a.example.org", "credential": token}},
                   "default": "hook"})
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, {"monitoring"})
    assert "exactly one of url" in str(error.value)
    assert token not in str(error.value) and "[secret]" in str(error.value)


# --- plans ----------------------------------------------------------------------------------------


def test_stack_without_receivers_says_so_and_still_routes_everything(plan_of):
    plan = plan_of("dev")
    assert any("monitoring.alerting.receivers: none" in w for w in plan.warnings)
    spec = spec_of(plan)
    assert spec["route"]["receiver"] == "null" and spec["receivers"] == [{"name": "null"}]
    [release] = [r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "kps"]
    assert release["inputs"]["values"]["alertmanager"]["alertmanagerSpec"]["alertmanagerConfiguration"] == {
        "name": CONFIG_NAME}


def test_full_stack_routes_to_its_receivers_without_warning(full):
    assert not [w for w in full.warnings if "alerting" in w]
    spec = spec_of(full)
    assert spec["route"]["receiver"] == "team-slack"
    assert [r["receiver"] for r in spec["route"]["routes"]] == ["deadman", "null", "oncall", "chatops", "team-mail"]


def full_config_with(tokens: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The full stack's config with distinctive credential values, marked secret as `secure:` ones are."""
    values, secret_keys = stack_config("full", ROOT / "tests" / "stacks")
    monitoring = json.loads(values["mlops-stack:monitoring"])
    for name, token in tokens.items():
        monitoring["alerting"]["receivers"][name]["credential"] = token
    return {**values, "mlops-stack:monitoring": json.dumps(monitoring)}, secret_keys


TOKENS = {"oncall": "pd-routing-key-7f3a9c", "team-slack": "https://hooks.slack.com/services/T0/B0/slack-7f3a9c",
          "team-mail": "smtp-password-7f3a9c", "chatops": "https://chat.example.org/hook?token=7f3a9c"}


def test_no_credential_appears_in_the_plan_only_secret_references():
    config = full_config_with(TOKENS)
    assert "mlops-stack:monitoring" in config[1]
    plan = run_program("full", config)
    text = json.dumps(plan.resources)
    assert not [name for name, token in TOKENS.items() if token in text]
    secret = plan.manifest("Secret", CREDENTIALS_SECRET, NAMESPACE)
    assert secret["stringData"] == {name: "[secret]" for name in TOKENS}
    refs = {(c[k]["name"], c[k]["key"]) for r in spec_of(plan)["receivers"] for key, cs in r.items() if key != "name"
            for c in cs for k in ("urlSecret", "apiURL", "authPassword", "routingKey") if k in c}
    assert refs == {(CREDENTIALS_SECRET, name) for name in TOKENS}
    # the tokens did reach the program: revealed, they are in the Secret and nowhere else
    revealed = run_program("full", config, reveal_secrets=True)
    assert revealed.manifest("Secret", CREDENTIALS_SECRET, NAMESPACE)["stringData"] == TOKENS
    others = [r for r in revealed.resources if (r.get("manifest") or {}).get("metadata", {}).get("name")
              != CREDENTIALS_SECRET]
    assert not [name for name, token in TOKENS.items() if token in json.dumps(others)]


# --- a real Alertmanager --------------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """Webhook endpoint: records every POST by path; answers each path's queued statuses first, then 200."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, dict[str, Any]]] = []
        self.statuses: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    queued = server.statuses.get(self.path, [])
                    status = queued.pop(0) if queued else 200
                    server.messages.append((self.path, status, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, found: Callable[[list[tuple[str, int, dict[str, Any]]]], bool], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if found(list(self.messages)):
                    return
            time.sleep(0.1)
        raise AssertionError(f"not delivered within {seconds}s; got {self.messages}")

    def to(self, path: str, status: int | None = 200) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, s, body in self.messages if p == path and (status is None or s == status)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def alertmanager_config(alerting: dict[str, Any]) -> str:
    """The alertmanager.yml the operator would write for a stack's `alerting` block."""
    spec = config_spec(AlertingConfig.model_validate(alerting).args())
    secrets = {(CREDENTIALS_SECRET, name): r["credential"] for name, r in alerting["receivers"].items()
               if "credential" in r}
    return yaml.safe_dump(operator_config(spec, secrets), sort_keys=False)


def post_alerts(url: str, *alerts: dict[str, Any]) -> None:
    body = json.dumps([{"labels": a, "annotations": {"summary": a["alertname"]}} for a in alerts]).encode()
    request = urllib.request.Request(f"{url}/api/v2/alerts", body, {"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=10).status == 200


def alerting_to(receiver: Receiver) -> dict[str, Any]:
    """A stack's alerting block: critical alerts to on-call (a secret URL), the rest to the team."""
    return {
        "receivers": {"team": {"type": "webhook", "url": f"{receiver.url}/team"},
                      "oncall": {"type": "webhook", "credential": f"{receiver.url}/oncall"}},
        "routes": [{"match": {"severity": "critical"}, "receiver": "oncall"}],
        "default": "team",
        "groupWait": "1s", "groupInterval": "2s", "repeatInterval": "1h",
    }


@pytest.fixture
def alertmanager(receiver, tmp_path) -> Iterator[str]:
    with services.alertmanager(alertmanager_config(alerting_to(receiver)), tmp_path) as url:
        yield url


# labels as modules/monitoring/rules/models.yaml's ModelEndpointDown produces them (+ severity)
def endpoint_down(model: str) -> dict[str, str]:
    return {"alertname": "ModelEndpointDown", "severity": "critical", "namespace": "serving",
            "seldon_deployment_id": model}


def test_firing_alerts_are_delivered_grouped_to_their_route(alertmanager, receiver):
    post_alerts(alertmanager, endpoint_down("neo"), endpoint_down("mnist"))
    receiver.wait_for(lambda m: any(len(b["alerts"]) == 2 for p, s, b in m if p == "/oncall"))
    [message] = receiver.to("/oncall")
    assert message["receiver"] == f"{NAMESPACE}/{CONFIG_NAME}/oncall"
    assert message["status"] == "firing"
    assert message["groupLabels"] == {"alertname": "ModelEndpointDown", "namespace": "serving"}
    assert sorted(a["labels"]["seldon_deployment_id"] for a in message["alerts"]) == ["mnist", "neo"]
    assert receiver.to("/team") == []


def test_a_failing_receiver_gets_the_alert_again(alertmanager, receiver):
    receiver.statuses["/team"] = [500]
    post_alerts(alertmanager, {"alertname": "MLflowErrorRateHigh", "severity": "warning", "namespace": "mlflow",
                               "job": "mlflow"})
    receiver.wait_for(lambda m: [s for p, s, _ in m if p == "/team"] == [500, 200])
    first, second = receiver.to("/team", status=None)
    assert first["alerts"][0]["labels"] == second["alerts"][0]["labels"]


def test_critical_inhibits_the_matching_warning(alertmanager, receiver):
    """PersistentVolumeAlmostFull (modules/monitoring/rules/platform.yaml) has a warning and a critical."""
    pvc = {"alertname": "PersistentVolumeAlmostFull", "namespace": "platform", "persistentvolumeclaim": "pg-1"}
    post_alerts(alertmanager, pvc | {"severity": "critical"}, pvc | {"severity": "warning"})
    receiver.wait_for(lambda m: any(p == "/oncall" for p, _, _ in m))
    time.sleep(3)  # a group interval: a muted warning would have gone to /team by now
    assert [a["labels"]["severity"] for b in receiver.to("/oncall") for a in b["alerts"]] == ["critical"]
    assert receiver.to("/team") == []


def test_mlflow_down_inhibits_the_alerts_it_causes(alertmanager, receiver):
    post_alerts(alertmanager, {"alertname": "MLflowDown", "severity": "critical", "namespace": "mlflow",
                               "job": "mlflow"})
    receiver.wait_for(lambda m: any(p == "/oncall" for p, _, _ in m))
    stale = {"alertname": "ModelQualityStale", "severity": "warning", "namespace": "workloads", "model": "energy"}
    control = stale | {"alertname": "ModelLatencyP99High", "namespace": "serving"}
    post_alerts(alertmanager, stale, control)
    receiver.wait_for(lambda m: any(p == "/team" for p, _, _ in m))
    time.sleep(3)
    delivered = {a["labels"]["alertname"] for b in receiver.to("/team") for a in b["alerts"]}
    assert delivered == {"ModelLatencyP99High"}


def test_without_inhibitions_the_warning_is_delivered(receiver, tmp_path):
    """The bad fixture of the two tests above: with `inhibit: []` the same alerts all arrive."""
    with services.alertmanager(alertmanager_config(alerting_to(receiver) | {"inhibit": []}), tmp_path) as url:
        pvc = {"alertname": "PersistentVolumeAlmostFull", "namespace": "platform", "persistentvolumeclaim": "pg-1"}
        post_alerts(url, pvc | {"severity": "critical"}, pvc | {"severity": "warning"})
        receiver.wait_for(lambda m: any(p == "/team" for p, _, _ in m) and any(p == "/oncall" for p, _, _ in m))
