"""Delivery (DORA) metrics (mlops/delivery.py) on a real MLflow server, a real Pushgateway and a real
Prometheus: versions registered with their commit time, promoted, one rolled back and one failing
its smoke test through the pipeline's own code (workloads/common), then their event times set
exactly, so every figure `mlops delivery` prints and pushes is known in advance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from mlops import cli, delivery
from mlops.plan import run_program, stack_config
from tests.services import free_port, mlflow_server, postgres, s3_api, stop, wait_http
from tests.services import pushgateway as start_pushgateway
from tests.tools import require_tool
from workloads.common import hooks, lineage, promotion

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "mlflow-artifacts"
MODEL = "delivery-demo"
HOUR, DAY = 3600, 86400


def smoke() -> None:
    raise hooks.HookError("the served answers are wrong")


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def registry():
    """MODEL's versions 1-5: v1 promoted before the window; in it v2 (lead 1 d), v3 (2 h, rolled
    back after 1 h), v4 (30 min, its champion smoke test failed), v5 (1 h; its challenger smoke
    test failed before promotion: no change failure)."""
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as server:
        patch = pytest.MonkeyPatch()
        for key, value in {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
                           "MLFLOW_TRACKING_PASSWORD": server.password, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
            patch.setenv(key, value)
        client = MlflowClient()
        now = datetime.now(UTC).replace(microsecond=0)
        committed = {"1": now - timedelta(days=41), "2": now - timedelta(days=20), "3": now - timedelta(days=10),
                     "4": now - timedelta(days=5), "5": now - timedelta(days=3)}
        promoted = {"1": now - timedelta(days=40), "2": committed["2"] + timedelta(days=1),
                    "3": committed["3"] + timedelta(hours=2), "4": committed["4"] + timedelta(minutes=30),
                    "5": committed["5"] + timedelta(hours=1)}
        experiment = client.create_experiment(MODEL)
        client.create_registered_model(MODEL)
        for v, when in committed.items():
            patch.setenv("GIT_SHA", f"{int(v):040x}")
            patch.setenv("GIT_COMMIT_TIME", iso(when))
            run = client.create_run(experiment, tags=lineage.provenance())
            client.set_terminated(run.info.run_id)
            version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
            assert version.version == v
            lineage.tag_version(MODEL, v, run.info.run_id)
        patch.delenv("GIT_COMMIT_TIME")
        for v in ("1", "2", "3"):
            promotion.promote(client, MODEL, v)
        assert promotion.rollback(client, MODEL) == ("3", "2")
        promotion.promote(client, MODEL, "4")
        patch.setenv("MODEL_VERSION", "4")
        patch.setenv("MODEL_ROLE", "champion")
        assert hooks.run(MODEL, {"smoke": smoke}, ["smoke"]) == 1
        patch.setenv("MODEL_VERSION", "5")
        patch.setenv("MODEL_ROLE", "challenger")
        assert hooks.run(MODEL, {"smoke": smoke}, ["smoke"]) == 1
        promotion.promote(client, MODEL, "5")
        recorded = {v.version: v.tags for v in client.search_model_versions(f"name = '{MODEL}'")}
        assert all(promotion.PROMOTED_TAG in recorded[v] for v in promoted)
        assert promotion.ROLLED_BACK_TAG in recorded["3"]
        assert {v for v, tags in recorded.items() if promotion.SMOKE_FAILED_TAG in tags} == {"4", "5"}
        # the events' times, exactly
        events = {(v, promotion.PROMOTED_TAG): t for v, t in promoted.items()}
        events[("3", promotion.ROLLED_BACK_TAG)] = promoted["3"] + timedelta(hours=1)
        events[("4", promotion.SMOKE_FAILED_TAG)] = promoted["4"] + timedelta(minutes=10)
        events[("5", promotion.SMOKE_FAILED_TAG)] = promoted["5"] - timedelta(minutes=20)
        for (v, tag), when in events.items():
            client.set_model_version_tag(MODEL, v, tag, iso(when))
        yield server, client, now
        patch.undo()


@pytest.fixture(scope="module")
def pushgateway():
    with start_pushgateway() as url:
        yield url


def pushed(gateway: str, model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric, other labels) → value of the delivery gauges the Pushgateway holds for `model`."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "model", "instance")))):
            s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("mlops_delivery_") and s.labels.get("model") == model
            and s.labels.get("job") == delivery.PUSH_JOB}


def row_of(output: str, model: str) -> list[str]:
    [line] = [line for line in output.splitlines() if line.startswith(model + " ")]
    return [cell for cell in line.split("  ") if cell.strip()]


def test_mlops_delivery_prints_and_pushes_the_four_figures(registry, pushgateway, capsys):
    assert cli.main(["delivery", "--model", MODEL, "--window-days", "30", "--push", pushgateway]) == 0
    out = capsys.readouterr().out
    # in the window: v2..v5; lead times 1 d, 2 h, 30 min, 1 h; failures v3 (rolled back), v4 (smoke)
    assert [c.strip() for c in row_of(out, MODEL)] == [
        MODEL, "4", "0.13", "1.0h", "1.5h", "50% (2/4)", "1.0h (1 from rollbacks)"]
    assert pushed(pushgateway, MODEL) == {
        ("mlops_delivery_deployments", ()): 4,
        ("mlops_delivery_deployments_per_day", ()): pytest.approx(4 / 30),
        ("mlops_delivery_window_days", ()): 30,
        ("mlops_delivery_lead_time_seconds", (("stat", "last"),)): HOUR,
        ("mlops_delivery_lead_time_seconds", (("stat", "median"),)): 1.5 * HOUR,
        ("mlops_delivery_change_failure_ratio", ()): 0.5,
        ("mlops_delivery_time_to_restore_seconds", (("source", "rollbacks"),)): HOUR,
        ("mlops_delivery_timestamp_seconds", ()): pytest.approx(datetime.now(UTC).timestamp(), abs=120),
    }


def test_a_shorter_window_counts_only_its_promotions(registry, capsys):
    assert cli.main(["delivery", "--model", MODEL, "--window-days", "7"]) == 0
    # v4 and v5 only: no rollback in the window, so nothing restored
    assert [c.strip() for c in row_of(capsys.readouterr().out, MODEL)] == [
        MODEL, "2", "0.29", "1.0h", "45m", "50% (1/2)", "- (0 from rollbacks)"]


def openmetrics_alerts(now: float) -> str:
    """ALERTS samples every 60 s, as a rule evaluation writes them, for MODEL: resolved episodes of
    2 h and 30 min inside the window, one firing across the window's start and one still firing;
    for another model one of 10 min; a pending series that never fired."""
    def series(labels: str, first: float, minutes: int) -> list[tuple[str, float]]:
        return [(labels, first + 60 * i) for i in range(minutes + 1)]

    firing = 'alertname="ModelQualityDegraded",alertstate="firing",metric="f1",severity="warning"'
    window_start = now - 30 * DAY
    samples = (series(f'{{{firing},model="{MODEL}"}}', window_start - HOUR, 120)
               + series(f'{{{firing},model="{MODEL}"}}', now - 8 * DAY, 120)
               + series(f'{{{firing},model="{MODEL}"}}', now - 2 * DAY, 30)
               + series(f'{{{firing},model="{MODEL}"}}', now - 30 * 60, 29)
               + series(f'{{{firing},model="other"}}', now - 3 * DAY, 10)
               + series(f'{{alertname="ModelQualityDegraded",alertstate="pending",model="{MODEL}"}}',
                        now - 4 * DAY, 5))
    lines = ["# TYPE ALERTS gauge"]
    for labels in dict.fromkeys(label for label, _ in samples):
        lines += [f"ALERTS{labels} 1 {t:.0f}" for label, t in sorted(samples, key=lambda s: s[1]) if label == labels]
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus on a TSDB backfilled with the alert samples (promtool tsdb create-blocks-from)."""
    binary = require_tool("prometheus", "Prometheus server (Debian prometheus)")
    promtool = require_tool("promtool", "Prometheus tools (Debian prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    now = datetime.now(UTC).timestamp()
    (work / "alerts.om").write_text(openmetrics_alerts(now))
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(work / "alerts.om"), str(work / "data")],
                   check=True, capture_output=True, timeout=60)
    (work / "prometheus.yml").write_text("global: {}\n")
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                                f"--storage.tsdb.path={work / 'data'}", "--storage.tsdb.retention.time=10y",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", timeout=30, process=process)
        yield url
    finally:
        stop(process)


def test_time_to_restore_comes_from_the_quality_alerts_in_prometheus(registry, prometheus, pushgateway, capsys):
    assert cli.main(["delivery", "--model", MODEL, "--model", "other", "--prometheus", prometheus,
                     "--push", pushgateway]) == 0
    out = capsys.readouterr().out
    # the 2 h and 30 min episodes: the one begun before the window and the one still firing are left out
    assert row_of(out, MODEL)[-1].strip() == "1.2h (2 from alerts)"
    assert pushed(pushgateway, MODEL)[("mlops_delivery_time_to_restore_seconds", (("source", "alerts"),))] == 4500
    other = pushed(pushgateway, "other")  # no registered model: only its restore time and the window
    assert other[("mlops_delivery_time_to_restore_seconds", (("source", "alerts"),))] == 600
    assert other[("mlops_delivery_deployments", ())] == 0
    assert ("mlops_delivery_change_failure_ratio", ()) not in other


def test_an_unreachable_prometheus_falls_back_to_the_rollbacks(registry, capsys):
    assert cli.main(["delivery", "--model", MODEL, "--prometheus", f"http://127.0.0.1:{free_port()}"]) == 0
    captured = capsys.readouterr()
    assert "from the rollbacks instead" in captured.err
    assert row_of(captured.out, MODEL)[-1].strip() == "1.0h (1 from rollbacks)"


def test_the_evaluation_image_file_set_runs_the_delivery_job(registry, pushgateway, tmp_path):
    """The files modules/evaluation/Dockerfile copies run `python -m mlops.delivery` (the CronJob's
    command) with the checkout off the path; its peak RSS is measured for the pod's memory request."""
    server, _, _ = registry
    dockerfile = (ROOT / "modules" / "evaluation" / "Dockerfile").read_text()
    copied = [src for line in dockerfile.splitlines() if line.startswith("COPY ") and "requirements" not in line
              for src in line.split()[1:-1]]
    for src in copied:
        (tmp_path / src).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / src).write_text((ROOT / src).read_text())
    site_packages = sysconfig.get_paths()["purelib"]
    script = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}]; sys.path.append({site_packages!r}); "
              "import mlops.delivery as d; assert d.__file__.startswith(sys.path[0]), d.__file__; "
              "code = d.main(sys.argv[1:]); import resource; "
              "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
              "print(f'peak RSS {peak:.0f} MiB', file=sys.stderr); sys.exit(code)")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PUSHGATEWAY_URL": pushgateway}
    result = subprocess.run([sys.executable, "-S", "-c", script, "--model", MODEL, "--window-days", "30"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "50% (2/4)" in result.stdout and "pushed to" in result.stderr
    print(f"python -m mlops.delivery: {result.stderr.splitlines()[-1]}")
    dockerignore = (ROOT / "modules" / "evaluation" / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{src}" for src in copied} <= set(dockerignore)


def test_the_commit_time_comes_from_git_when_the_pipeline_does_not_set_it(tmp_path, monkeypatch):
    git = require_tool("git", "git")
    stamp = "2026-11-30T09:15:00+01:00"
    env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run([git, *command], cwd=tmp_path, env=env, check=True, capture_output=True)
    sha = subprocess.run([git, "rev-parse", "HEAD"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIT_COMMIT_TIME", raising=False)
    monkeypatch.setenv("GIT_SHA", sha)
    assert lineage.provenance()[lineage.COMMIT_TIME_TAG] == stamp
    monkeypatch.setenv("GIT_SHA", "f" * 40)  # not in this checkout: no time rather than a wrong one
    assert lineage.COMMIT_TIME_TAG not in lineage.provenance()
    assert delivery.COMMIT_TIME_TAG == lineage.COMMIT_TIME_TAG


def test_firing_episodes_and_what_counts_as_restored():
    samples = [100, 160, 220, 1000, 1060, 5000]
    assert delivery.firing_episodes(samples, gap=300) == [(100, 220), (1000, 1060), (5000, 5000)]
    # the first begins within `gap` of the start, the last ends within `gap` of the end
    assert delivery.restored_durations(samples, start=0, end=5100, gap=300) == [60]
    assert delivery.restored_durations([], start=0, end=5100) == []


def test_a_failure_is_a_rollback_or_smoke_failure_after_the_promotion():
    t = datetime(2026, 11, 1, tzinfo=UTC)
    p = delivery.Promotion("1", t, t - timedelta(hours=3), None, None)
    assert not p.failed and p.lead_time == 3 * HOUR and p.recovery_time is None
    assert delivery.Promotion("1", t, None, t + timedelta(hours=1), None).recovery_time == HOUR
    assert delivery.Promotion("1", t, None, None, t + timedelta(minutes=1)).failed
    assert not delivery.Promotion("1", t, None, t - timedelta(days=1), t - timedelta(minutes=1)).failed
    assert delivery.parse_time("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert delivery.parse_time("2026-11-01T10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert delivery.parse_time("yesterday") is None


NEO = {"neo": {"enabled": True, "dataUrl": "https://data.example.org/neo/nasa.csv"}}


def plan_with_delivery(stack: str, stacks_dir: Path | None = None, delivery_config: dict | None = None,
                       **sections: dict):
    values, secret_keys = stack_config(stack, stacks_dir)
    monitoring = {**json.loads(values.get("mlops-stack:monitoring", "{}")),
                  "delivery": delivery_config or {"enabled": True}}
    values = {**values, "mlops-stack:monitoring": json.dumps(monitoring),
              **{f"mlops-stack:{k}": json.dumps(v) for k, v in sections.items()}}
    return run_program(stack, (values, secret_keys), reveal_secrets=True)


def cron_of(plan) -> dict:
    return plan.manifest("CronJob", "delivery-metrics", "mlops-platform")


def test_off_by_default(plan_of):
    """The dashboard ships with every stack; the job and its login only when turned on."""
    names = {(o["kind"], o["metadata"]["name"]) for o in plan_of("dev").kubernetes_objects}
    assert ("ConfigMap", "dashboard-delivery") in names
    assert not {("CronJob", "delivery-metrics"), ("Secret", "mlflow-delivery")} & names


def test_dev_with_a_workload_runs_the_job_with_a_read_only_login_and_validates():
    from mlops.validate import validate_plan

    plan = plan_with_delivery("dev", workloads=NEO)
    spec = cron_of(plan)["spec"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "mlops-stack/evaluation:1"
    assert container["command"] == ["python", "-m", "mlops.delivery", "--model", "NEOs", "--window-days", "30"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PUSHGATEWAY_URL"]["value"] == "http://pushgateway.monitoring.svc.cluster.local:9091"
    assert env["PROMETHEUS_URL"]["value"] == "http://kps-prometheus.monitoring.svc.cluster.local:9090"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-delivery"
    assert spec["concurrencyPolicy"] == "Forbid" and pod["automountServiceAccountToken"] is False
    state = json.loads(plan.manifest("Secret", "mlflow-users-state", "mlflow")["stringData"]["state.json"])
    [login] = [u for u in state["users"] if u["username"] == "delivery"]
    assert login["permissions"] == [{"kind": "registered_model", "name": "NEOs", "permission": "READ"}]
    gateway_policy = plan.manifest("NetworkPolicy", "pushgateway-ingress", "monitoring")
    sources = [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for f in gateway_policy["spec"]["ingress"][0]["from"]]
    assert "mlops-platform" in sources  # neo alone has no energy Pushgateway: the platform's own
    policy = plan.manifest("NetworkPolicy", "delivery-metrics-ingress", "mlops-platform")
    assert policy["spec"]["ingress"] == []
    report = validate_plan(plan, "1.34")
    assert report.ok, report.render()


def test_full_stack_with_delivery_builds_the_image_and_validates():
    from infra.platforms import cluster_facts
    from infra.settings import parse_stack_config, raw_from_pulumi_config
    from mlops.validate import validate_plan

    stacks = ROOT / "tests" / "stacks"
    plan = plan_with_delivery("full", stacks, {"enabled": True, "models": ["NEOs", "energy-forecast"],
                                               "windowDays": 14})
    [container] = cron_of(plan)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("registry.example.org/mlops/evaluation:")  # built by the stack
    assert container["command"][3:] == ["--model", "NEOs", "--model", "energy-forecast", "--window-days", "14"]
    values, secret_keys = stack_config("full", stacks)
    config = parse_stack_config(*raw_from_pulumi_config(values, secret_keys))
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()


def test_a_bad_delivery_schedule_is_refused_naming_the_key(tmp_path):
    from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config

    values, secret_keys = stack_config("dev")
    values = {**values, "mlops-stack:monitoring": json.dumps({"delivery": {"enabled": True, "schedule": "hourly"}})}
    with pytest.raises(ConfigError) as error:
        parse_stack_config(*raw_from_pulumi_config(values, secret_keys))
    assert "monitoring.delivery.schedule" in str(error.value) and "hourly" in str(error.value)


def test_delivery_with_nothing_to_measure_says_which_keys_to_set():
    with pytest.raises(ValueError, match="nothing to measure: set monitoring.delivery.models"):
        plan_with_delivery("dev")
