"""The retraining receiver and its clients (docs/decisions/0016-retraining-trigger.md).

    serve         HTTP on --port: POST /alerts (Alertmanager webhook, payload version 4), POST /trigger
                  ({"model", "trigger", "reason"}), GET /metrics, GET /healthz
    trigger       POST one trigger to the receiver (the schedule CronJob)
    check-energy  POST newData when energy_readings has --min-rows more rows than the champion was
                  trained on (its run's lineage tag lineage.dataset.consumption.rows)

For each trigger the receiver creates the model's training Job from the template the Pulumi program
rendered (--config: {model: {"triggers", "cooldownMinutes", "promote", "job"}}), with
RETRAIN_TRIGGER=<kind>, RETRAIN_JOB=<its name> and MLFLOW_RUN_CONTEXT (the run tag retrain.job=<its
name>) in every container and, when "promote" is set, the training containers first (as init
containers) and a `promote` container running the workload's gate after them, unless a Job of that
template is still running (deduplicated) or one started less than cooldownMinutes ago (cooling_down).
One lock serialises the decisions: one replica, one writer. A failure to reach the Kubernetes API
answers 500, so Alertmanager (or the CronJob) tries again.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import logging
import os
import sys
import threading
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

log = logging.getLogger("mlops-retrain")

TRIGGERS = ("schedule", "newData", "qualityDrop", "drift")
ALERTS = {"ModelQualityDegraded": "qualityDrop", "ModelDrift": "drift"}  # alertname -> trigger
OUTCOMES = ("started", "deduplicated", "cooling_down", "unknown_model", "failed")
NAME_LABEL = "app.kubernetes.io/name"  # the template's own label: selects the Pulumi-run Job too
MODEL_LABEL = "mlops-stack/retrain-model"
TRIGGER_LABEL = "mlops-stack/retrain-trigger"
REASON_ANNOTATION = "mlops-stack/retrain-reason"
RUN_TAG_JOB = "retrain.job"  # the training run's tag naming the Job: the promote step gates only that run's version
TTL_SECONDS = 7 * 24 * 3600  # kept a week: the cool-down reads the last start (infra/config/retraining.py)


class Retrainer:
    """Decides and starts retraining Jobs in `namespace` through the Kubernetes BatchV1Api `batch`."""

    def __init__(self, models: Mapping[str, Mapping[str, Any]], namespace: str, batch: Any,
                 registry: CollectorRegistry) -> None:
        self.models, self.namespace, self.batch = models, namespace, batch
        self.lock = threading.Lock()
        self.total = Counter("retraining_triggers", "Retraining triggers received, by model, trigger and outcome",
                             ["model", "trigger", "outcome"], registry=registry)
        for model, spec in models.items():  # every series exists from the start: rate() sees the first one
            for trigger in spec["triggers"]:
                for outcome in OUTCOMES:
                    self.total.labels(model, trigger, outcome)

    def trigger(self, model: str, trigger: str, reason: str) -> str:
        spec = self.models.get(model)
        if spec is None or trigger not in spec["triggers"]:
            outcome = "unknown_model"  # no workload retrains `model` on this trigger
        else:
            with self.lock:
                outcome = self._decide_and_start(model, spec, trigger, reason)
        log.info("model=%s trigger=%s outcome=%s reason=%s", model, trigger, outcome, reason)
        self.total.labels(model, trigger, outcome).inc()
        return outcome

    def _decide_and_start(self, model: str, spec: Mapping[str, Any], trigger: str, reason: str) -> str:
        template = spec["job"]
        selector = f"{NAME_LABEL}={template['metadata']['labels'][NAME_LABEL]}"
        now = dt.datetime.now(dt.timezone.utc)
        try:
            jobs = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
            if any(_running(j) for j in jobs):
                return "deduplicated"
            starts = [j.metadata.creation_timestamp for j in jobs if j.metadata.creation_timestamp]
            if starts and now - max(starts) < dt.timedelta(minutes=spec["cooldownMinutes"]):
                return "cooling_down"
            self.batch.create_namespaced_job(self.namespace, job(template, model, trigger, reason, now,
                                                                 spec.get("promote")))
        except Exception:  # the API unreachable, refusing, or answering nonsense: try again later
            log.exception("model=%s trigger=%s: Kubernetes API", model, trigger)
            return "failed"
        return "started"


def _running(j: Any) -> bool:
    """Neither Complete nor Failed (a Job just created has no status yet: running)."""
    conditions = (j.status.conditions or []) if j.status else []
    return not any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)


def job(template: Mapping[str, Any], model: str, trigger: str, reason: str, now: dt.datetime,
        promote: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template as a new Job: its name + trigger + time, the trigger in labels and env; with
    `promote` ({"command", "env"}) the training containers become init containers, so the gate
    (in the last training container's image and env) runs only once the training succeeded."""
    body = copy.deepcopy(dict(template))
    meta = body["metadata"]
    name = f"{meta['name']}-{trigger.lower()}-{now:%Y%m%d%H%M%S}"
    body["metadata"] = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**meta.get("labels", {}), MODEL_LABEL: model, TRIGGER_LABEL: trigger},
        "annotations": {REASON_ANNOTATION: reason[:1000]},
    }
    body["spec"]["ttlSecondsAfterFinished"] = TTL_SECONDS
    pod = body["spec"]["template"]["spec"]
    ours = {"RETRAIN_TRIGGER": trigger, "RETRAIN_JOB": name, "MLFLOW_RUN_CONTEXT": json.dumps({RUN_TAG_JOB: name})}
    for container in pod["containers"]:
        env = [e for e in container.get("env", []) if e["name"] not in ours]
        container["env"] = [*env, *({"name": k, "value": v} for k, v in ours.items())]
    if promote:
        last = pod["containers"][-1]
        env = [e for e in last["env"] if e["name"] not in {e["name"] for e in promote["env"]}]
        gate = {**last, "name": "promote", "command": list(promote["command"]), "env": [*env, *promote["env"]]}
        pod["initContainers"] = [*pod.get("initContainers", []), *pod["containers"]]
        pod["containers"] = [gate]
    return body


def alert_triggers(payload: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(model, trigger, reason) of each firing retraining alert of an Alertmanager webhook message."""
    found = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        kind = ALERTS.get(labels.get("alertname", ""))
        if alert.get("status") == "firing" and kind and labels.get("model"):
            summary = alert.get("annotations", {}).get("summary", labels["alertname"])
            found.append((labels["model"], kind, f"{labels['alertname']}: {summary}"))
    return found


def serve(retrainer: Retrainer, registry: CollectorRegistry, port: int, host: str = "") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._reply(200, b'{"ok": true}')
            else:
                self._reply(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            try:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/alerts":
                    wanted = alert_triggers(payload)
                elif self.path == "/trigger":
                    if payload.get("trigger") not in TRIGGERS or not isinstance(payload.get("model"), str):
                        raise ValueError(f"model (a string) and trigger (one of {list(TRIGGERS)}) are required")
                    wanted = [(payload["model"], payload["trigger"], str(payload.get("reason", "")))]
                else:
                    return self._reply(404, b'{"error": "not found"}')
            except (ValueError, AttributeError) as error:
                return self._reply(400, json.dumps({"error": str(error)}).encode())
            outcomes = [{"model": m, "trigger": t, "outcome": retrainer.trigger(m, t, r)} for m, t, r in wanted]
            failed = any(o["outcome"] == "failed" for o in outcomes)
            self._reply(500 if failed else 200, json.dumps({"outcomes": outcomes}).encode())

        def log_message(self, *args: Any) -> None:  # decisions are logged, requests are not
            pass

    return ThreadingHTTPServer((host, port), Handler)


def batch_api(api_server: str | None) -> Any:
    """In-cluster credentials (the ServiceAccount's token), or an API server URL without auth."""
    from kubernetes import client, config

    if api_server is None:
        config.load_incluster_config()
        return client.BatchV1Api()
    configuration = client.Configuration()
    configuration.host = api_server
    return client.BatchV1Api(client.ApiClient(configuration))


def post(url: str, model: str, trigger: str, reason: str) -> int:
    """One trigger to the receiver; non-zero (the CronJob's pod fails and is retried) unless it was decided."""
    body = json.dumps({"model": model, "trigger": trigger, "reason": reason}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        print(response.read().decode())
    return 0


def new_readings(database_url: str, model: str) -> tuple[int, int]:
    """(rows in energy_readings now, rows the champion of `model` was trained on)."""
    import psycopg
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version_by_alias(model, "champion")
    trained = int(client.get_run(version.run_id).data.tags["lineage.dataset.consumption.rows"])
    with psycopg.connect(database_url) as conn:
        (now,) = conn.execute("SELECT count(*) FROM energy_readings").fetchone()
    return int(now), trained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops_retrain", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("--config", required=True, help="JSON: {model: {triggers, cooldownMinutes, job}}")
    s.add_argument("--namespace", required=True, help="where the training Jobs run")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--host", default="")
    s.add_argument("--api-server", help="Kubernetes API URL without auth; unset = in-cluster")
    for name in ("trigger", "check-energy"):
        c = commands.add_parser(name)
        c.add_argument("--url", required=True, help="the receiver's /trigger")
        c.add_argument("--model", required=True)
    commands.choices["trigger"].add_argument("--trigger", required=True, choices=TRIGGERS)
    commands.choices["trigger"].add_argument("--reason", default="")
    commands.choices["check-energy"].add_argument("--min-rows", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "trigger":
        return post(args.url, args.model, args.trigger, args.reason)
    if args.command == "check-energy":
        now, trained = new_readings(os.environ["DATABASE_URL"], args.model)
        log.info("energy_readings: %d rows, the champion trained on %d", now, trained)
        if now - trained < args.min_rows:
            return 0
        return post(args.url, args.model, "newData", f"{now - trained} readings since the champion's training")
    with open(args.config) as f:
        models = json.load(f)
    registry = CollectorRegistry()
    server = serve(Retrainer(models, args.namespace, batch_api(args.api_server), registry), registry,
                   args.port, args.host)
    log.info("serving on %s:%d for %s", args.host or "*", args.port, sorted(models))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
