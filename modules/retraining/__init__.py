"""The retraining trigger: a small receiver that starts a workload's own training Job again
(docs/decisions/0016-retraining-trigger.md).

    retraining                Deployment + Service  mlops_retrain.py serve: POST /alerts (Alertmanager),
                                                    POST /trigger (CronJobs), GET /metrics
    <workload>-retrain-schedule  CronJob            POST {"trigger": "schedule"} on the workload's cron
    <workload>-retrain-newdata   CronJob            check-<workload>: POST {"trigger": "newData"} when there is new data

The Jobs it creates are the workload's training Job as the program declares it (`JobTemplates`
records it while the workload component declares it), plus RETRAIN_TRIGGER in every container; its
ServiceAccount may create, get and list Jobs in the workloads namespace and do nothing else. The
receiver's `retraining_triggers_total{model,trigger,outcome}` is scraped by a ServiceMonitor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes._tables import SNAKE_TO_CAMEL_CASE_TABLE

from modules import kube

NAME = "retraining"
COMPONENT = "retraining"
PORT = 8080
UID = 10001  # the image's non-root user (modules/retraining/image/Dockerfile)
CONFIG_DIR = "/etc/mlops-retraining"
CONFIG_KEY = "models.json"
SCRIPT = "/opt/mlops/mlops_retrain.py"
# exactly what the receiver does with the Kubernetes API (mlops_retrain.py Retrainer)
RULES = [{"api_groups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list"]}]
JOB_TYPE = "kubernetes:batch/v1:Job"
CHECK_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "DATABASE_URL", "HOME")
MAPS = ("labels", "annotations")  # keys under these are data, not field names


def manifest(value: Any, key: str | None = None) -> Any:
    """Pulumi's snake_case object as the Kubernetes API spells it (the provider's own name table)."""
    if isinstance(value, Mapping):
        if key in MAPS:
            return dict(value)
        named = {SNAKE_TO_CAMEL_CASE_TABLE.get(k, k): v for k, v in value.items()}
        return {k: manifest(v, k) for k, v in named.items()}
    if isinstance(value, list):
        return [manifest(v) for v in value]
    return value


class JobTemplates:
    """The training Job each workload component declares, recorded by a transformation on the
    component's options: the receiver then runs exactly that Job, not a copy kept in step by hand."""

    def __init__(self) -> None:
        self.jobs: dict[str, pulumi.Output[dict[str, Any]]] = {}

    def options(self, workload: str) -> pulumi.ResourceOptions:
        def record(args: pulumi.ResourceTransformationArgs) -> None:
            if args.type_ == JOB_TYPE:
                props = {"apiVersion": "batch/v1", "kind": "Job", "metadata": args.props["metadata"],
                         "spec": args.props["spec"]}
                self.jobs[workload] = pulumi.Output.from_input(props).apply(manifest)
            return None

        return pulumi.ResourceOptions(transformations=[record])


@dataclass(frozen=True)
class RetrainedModel:
    model: str  # the registered model: the `model` label of its alerts
    workload: str
    job: pulumi.Input[Mapping[str, Any]]  # the training Job manifest (JobTemplates)
    triggers: Sequence[str]
    cooldown_minutes: int
    schedule: str | None = None  # cron of the schedule trigger
    new_data_schedule: str | None = None  # cron of the new-data check
    new_data_command: Sequence[str] = ()  # the check's arguments after --url/--model (e.g. --min-rows 720)


@dataclass(frozen=True)
class RetrainingArgs:
    namespace: pulumi.Input[str]  # the workloads namespace: the receiver, its CronJobs and the Jobs
    monitoring_namespace: pulumi.Input[str]  # Alertmanager and Prometheus call in from there
    image: pulumi.Input[str]
    resources: Mapping[str, Any]
    time_zone: str
    models: Sequence[RetrainedModel]
    check_resources: Mapping[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "384Mi"}})


def service_url(namespace: str) -> str:
    return f"http://{NAME}.{namespace}.svc.cluster.local:{PORT}"


def _models_json(models: Sequence[RetrainedModel]) -> pulumi.Output[str]:
    return pulumi.Output.all(*(m.job for m in models)).apply(lambda jobs: json.dumps(
        {m.model: {"workload": m.workload, "triggers": list(m.triggers), "cooldownMinutes": m.cooldown_minutes,
                   "job": j} for m, j in zip(models, jobs)}, sort_keys=True))


class RetrainingTrigger(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: RetrainingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:retraining:RetrainingTrigger", name, None, opts)
        if not args.models:
            raise ValueError("RetrainingTrigger: no model to retrain")
        models = _models_json(args.models)
        config = k8s.core.v1.ConfigMap(
            f"{name}-models", metadata=kube.metadata(f"{NAME}-models", args.namespace, COMPONENT),
            data={CONFIG_KEY: models}, opts=kube.child(self))
        account = k8s.core.v1.ServiceAccount(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT), opts=kube.child(self))
        role = k8s.rbac.v1.Role(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT), rules=RULES, opts=kube.child(self))
        k8s.rbac.v1.RoleBinding(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata.name, "namespace": args.namespace}],
            opts=kube.child(self))
        self._receiver(name, args, config, account, models)
        self.url = pulumi.Output.from_input(args.namespace).apply(service_url)
        for m in args.models:
            if m.schedule is not None:
                self._cron(f"{name}-{m.workload}-schedule", f"{m.workload}-retrain-schedule", m.schedule, args,
                           ["trigger", "--url", self.url.apply(lambda u: f"{u}/trigger"), "--model", m.model,
                            "--trigger", "schedule", "--reason", f"schedule {m.schedule}"], [])
            if m.new_data_schedule is not None:
                self._cron(f"{name}-{m.workload}-newdata", f"{m.workload}-retrain-newdata", m.new_data_schedule,
                           args, [f"check-{m.workload}", "--url", self.url.apply(lambda u: f"{u}/trigger"),
                                  "--model", m.model, *m.new_data_command], _check_env(m.job))
        self.register_outputs({"url": self.url})

    def _receiver(self, name: str, args: RetrainingArgs, config: k8s.core.v1.ConfigMap,
                  account: k8s.core.v1.ServiceAccount, models: pulumi.Output[str]) -> None:
        container = {
            "name": "receiver", "image": args.image,
            "command": ["python", SCRIPT, "serve", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
                        "--namespace", args.namespace, "--port", str(PORT)],
            "ports": [{"name": "http", "container_port": PORT}],
            "resources": dict(args.resources), "security_context": kube.CONTAINER_SECURITY,
            "readiness_probe": kube.http_probe("/healthz", "http"),
            "liveness_probe": kube.http_probe("/healthz", "http", period=30),
            "volume_mounts": [{"name": "config", "mount_path": CONFIG_DIR, "read_only": True},
                              {"name": "tmp", "mount_path": "/tmp"}],
        }
        k8s.apps.v1.Deployment(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={
                "replicas": 1,  # one writer: the lock that de-duplicates is in its memory
                "strategy": {"type": "Recreate"},  # never two receivers, not even during a rollout
                "selector": {"match_labels": kube.selector(NAME)},
                "template": {
                    # the receiver reads its config once: a changed template rolls the pod
                    "metadata": {"labels": kube.labels(NAME, COMPONENT), "annotations": {
                        "mlops-stack/config-sha256": models.apply(lambda t: hashlib.sha256(t.encode()).hexdigest())}},
                    "spec": {
                        "service_account_name": account.metadata.name,
                        "security_context": kube.pod_security(UID),
                        "containers": [container],
                        "volumes": [{"name": "config", "config_map": {"name": config.metadata.name}},
                                    {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}],
                    },
                },
            },
            opts=kube.child(self))
        k8s.core.v1.Service(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={"selector": kube.selector(NAME), "ports": [{"name": "http", "port": PORT, "target_port": "http"}]},
            opts=kube.child(self))
        k8s.apiextensions.CustomResource(
            f"{name}-monitor", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
            metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={"selector": {"matchLabels": kube.selector(NAME)},
                  "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]},
            opts=kube.child(self))
        # Alertmanager and Prometheus (monitoring), and the trigger CronJobs (workloads namespace)
        kube.ingress_policy(name, args.namespace, COMPONENT, NAME, [{
            "from_": [{"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}}
                      for ns in (args.monitoring_namespace, args.namespace)],
            "ports": [{"port": PORT, "protocol": "TCP"}],
        }], kube.child(self))

    def _cron(self, logical: str, app: str, schedule: str, args: RetrainingArgs, command: list[Any],
              env: pulumi.Input[list[dict[str, Any]]]) -> None:
        container = {"name": "trigger", "image": args.image, "command": ["python", SCRIPT, *command], "env": env,
                     "resources": dict(args.check_resources), "security_context": kube.CONTAINER_SECURITY,
                     "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}]}
        k8s.batch.v1.CronJob(
            logical, metadata=kube.metadata(app, args.namespace, COMPONENT),
            spec={
                "schedule": schedule, "time_zone": args.time_zone,
                "concurrency_policy": "Forbid", "starting_deadline_seconds": 3600,
                "successful_jobs_history_limit": 1, "failed_jobs_history_limit": 3,
                "job_template": {"spec": {"backoff_limit": 3, "active_deadline_seconds": 900, "template": {
                    "metadata": {"labels": kube.labels(app, COMPONENT)},
                    "spec": {"restart_policy": "Never", "automount_service_account_token": False,
                             "security_context": kube.pod_security(UID), "containers": [container],
                             "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}]}}}},
            },
            opts=kube.child(self))


def _check_env(job: pulumi.Input[Mapping[str, Any]]) -> pulumi.Output[list[dict[str, Any]]]:
    """The new-data check reads MLflow and the workload's tables with the training Job's own Secrets."""
    def pick(j: Mapping[str, Any]) -> list[dict[str, Any]]:
        env = {e["name"]: e for c in j["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        return [env[n] for n in CHECK_ENV if n in env]

    return pulumi.Output.from_input(job).apply(pick)


ALERT_TRIGGERS = {"qualityDrop": "ModelQualityDegraded", "drift": "ModelDrift"}  # = mlops_retrain.ALERTS
ALERT_RECEIVER = "mlops-retraining"  # its name in the AlertmanagerConfig


def alert_routes(url: str, models: Sequence[RetrainedModel]) -> tuple[Any, list[Any]]:
    """The webhook receiver and, per alert, the route (first, `continue`: people are still notified)
    that sends the firing alerts of the retrained models to the receiver, one group per model."""
    from modules.monitoring.alerting import Receiver, Route

    receiver = Receiver(name=ALERT_RECEIVER, type="webhook", settings={"url": f"{url}/alerts"})
    routes = []
    for trigger, alertname in ALERT_TRIGGERS.items():
        names = sorted(m.model for m in models if trigger in m.triggers)
        if names:
            routes.append(Route(receiver=ALERT_RECEIVER, match={"alertname": alertname},
                                match_re={"model": "|".join(names)}, continue_=True, group_by=["alertname", "model"]))
    return receiver, routes
