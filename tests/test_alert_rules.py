"""Alert rules and dashboards are versioned data with their own tests.

promtool checks every rule file and runs every unit test file; every alert must be shown both firing
on a bad series and silent on a good one; every alert carries a severity, a summary and a runbook
that exists; dashboards are valid Grafana JSON that query only metrics the rules use (or the
documented allow-list), with PromQL that parses.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "modules" / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yaml"))
RULE_TESTS = sorted((MONITORING / "rules" / "tests").glob("*.yaml"))
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
ALLOWED_METRICS = MONITORING / "dashboards" / "allowed-metrics.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SEVERITIES = {"warning", "critical"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|count|sum)$")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _name(path: Path) -> str:
    return path.name


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _test_groups() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in _load(path)["tests"]]


def _alert_tests() -> list[dict[str, Any]]:
    return [case for test in _test_groups() for case in test.get("alert_rule_test", [])]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "checks and unit-tests the Prometheus alert rules")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=300, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (inside {} or by/on/... lists), strings, durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        token = match.group(0)
        if token.lower() in PROMQL_KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def family(metric: str) -> str:
    return HISTOGRAM_SUFFIX.sub("", metric)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in RUNBOOKS.read_text().splitlines()
            if re.match(r"#{1,6} ", line)}


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in panels(dashboard) for target in panel.get("targets", [])]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside collapsed rows
    return found


def as_promql(expr: str) -> str:
    """A dashboard query with its Grafana variables replaced, so promtool can parse it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


# ------------------------------------------------------------------------------------ rules

def test_the_platform_ships_rules_unit_tests_and_dashboards() -> None:
    assert {p.name for p in RULE_FILES} >= {"models.yaml", "platform.yaml", "quality.yaml"}
    assert {p.name for p in RULE_TESTS} >= {"models_test.yaml", "platform_test.yaml", "quality_test.yaml"}
    assert {p.name for p in DASHBOARDS} >= {"platform-overview.json", "model-serving.json", "mlflow.json"}


@pytest.mark.parametrize("path", RULE_FILES, ids=_name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", RULE_TESTS, ids=_name)
def test_rule_unit_tests_pass(path: Path) -> None:
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_files_are_plain_prometheus_groups_for_the_component_to_wrap() -> None:
    for path in RULE_FILES:
        document = _load(path)
        assert set(document) == {"groups"}, f"{path.name}: not a plain `groups:` rule file"
        for group in document["groups"]:
            assert group["name"].startswith("mlops-"), f"{path.name}: group {group['name']!r}"


def test_every_rule_file_is_loaded_by_a_unit_test() -> None:
    tested = {(path.parent / rule_file).resolve() for path in RULE_TESTS for rule_file in _load(path)["rule_files"]}
    untested = [path.name for path in RULE_FILES if path.resolve() not in tested]
    assert not untested, f"rule files no unit test loads: {untested}"


def test_every_alert_is_shown_firing_and_silent() -> None:
    alerts = {rule["alert"] for rule in _alerts()}
    firing: set[str] = set()
    silent: set[str] = set()
    for test in _test_groups():
        cases = test.get("alert_rule_test", [])
        fired_here = {case["alertname"] for case in cases if case.get("exp_alerts")}
        firing |= fired_here
        # silent on a good series: not the pending phase of a test whose series make it fire
        silent |= {case["alertname"] for case in cases if not case.get("exp_alerts")} - fired_here
    assert not alerts - firing, f"alerts never shown firing: {sorted(alerts - firing)}"
    assert not alerts - silent, f"alerts never shown silent: {sorted(alerts - silent)}"
    # promtool passes `exp_alerts: []` for a name no rule defines: a typo would prove nothing
    assert not (firing | silent) - alerts, f"tests of unknown alerts: {sorted((firing | silent) - alerts)}"


def test_every_severity_of_an_alert_is_shown_firing() -> None:
    defined = {(rule["alert"], rule["labels"]["severity"]) for rule in _alerts()}
    fired = {(case["alertname"], alert["exp_labels"]["severity"])
             for case in _alert_tests() for alert in case.get("exp_alerts") or []}
    assert not defined - fired, f"(alert, severity) never shown firing: {sorted(defined - fired)}"


def test_alerts_carry_severity_summary_description_and_an_existing_runbook() -> None:
    anchors = runbook_anchors()
    problems = []
    for rule in _alerts():
        name, labels, annotations = rule["alert"], rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        url = str(annotations.get("runbook_url", ""))
        page, _, anchor = url.partition("#")
        if page != "docs/runbooks.md" or anchor not in anchors:
            problems.append(f"{name}: runbook_url {url!r} is not a section of docs/runbooks.md")
    assert not problems, "\n".join(problems)


def test_alert_and_severity_pairs_are_unique() -> None:
    pairs = Counter((rule["alert"], rule["labels"]["severity"]) for rule in _alerts())
    assert not [pair for pair, n in pairs.items() if n > 1], pairs


# ------------------------------------------------------------------------------- dashboards

def test_metric_names_are_read_from_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (namespace, le) (rate(a_seconds_bucket{code=~"5..", x="y"}'
            '[$__rate_interval]))) / on (namespace) group_left () b:rec:ratio > 0.5 or vector(1e3) '
            'and ignoring (pod) c_total offset 5m')
    assert metric_names(expr) == {"a_seconds_bucket", "b:rec:ratio", "c_total"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=_name)
def test_dashboard_is_provisionable_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard.get("uid", "")), "uid must be set (≤ 40 chars)"
    assert dashboard.get("title", "").startswith("MLOps / ")
    assert 39 <= dashboard.get("schemaVersion", 0) <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {[i for i, n in Counter(ids).items() if n > 1]}"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), f"{panel['title']}: empty query"


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids


def test_dashboards_query_only_metrics_of_the_rules_or_the_allow_list() -> None:
    rule_metrics = {family(m) for rule in _rules() for m in metric_names(rule["expr"])}
    rule_metrics |= {rule["record"] for rule in _rules() if "record" in rule}
    allowed = {str(name) for name in _load(ALLOWED_METRICS)}
    used: set[str] = set()
    unknown = []
    for path in DASHBOARDS:
        for title, target in dashboard_targets(json.loads(path.read_text())):
            for metric in metric_names(target["expr"]):
                used.add(family(metric))
                if family(metric) not in rule_metrics | allowed:
                    unknown.append(f"{path.name} / {title}: {metric}")
    assert not unknown, "metrics neither in the rules nor in allowed-metrics.yaml:\n" + "\n".join(unknown)
    assert not allowed - used, f"allow-list entries no dashboard uses: {sorted(allowed - used)}"
    assert not allowed & rule_metrics, f"allow-list entries the rules already use: {sorted(allowed & rule_metrics)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query:{i}", "expr": as_promql(target["expr"])}
             for i, (_, target) in enumerate(t for path in DASHBOARDS
                                             for t in dashboard_targets(json.loads(path.read_text())))]
    variables = [v for path in DASHBOARDS for v in json.loads(path.read_text())["templating"]["list"]
                 if v["type"] == "query"]
    for i, variable in enumerate(variables):
        selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
        assert selector, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
        rules.append({"record": f"dashboard:variable:{i}", "expr": as_promql(selector.group(1))})
    rule_file = tmp_path / "dashboards.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_dashboard_filters_every_query_by_namespace_and_model() -> None:
    dashboard = json.loads((MONITORING / "dashboards" / "model-serving.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    for title, target in dashboard_targets(dashboard):
        assert "$namespace" in target["expr"] and "$model" in target["expr"], title
