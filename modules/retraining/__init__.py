"""The retraining trigger: a small receiver that starts a workload's own training Job again
(docs/decisions/0016-retraining-trigger.md).

    retraining                Deployment + Service  mlops_retrain.py serve: POST /alerts (Alertmanager),
                                                    POST /trigger (CronJobs), GET /metrics
    <workload>-retrain-schedule  CronJob            POST {"trigger": "schedule"} on the workload's cron
    <workload>-retrain-promote   CronJob            energy: the promotion gate again for a retrained challenger
                                                    (`workloads.common.retrained energy --pending`)
    <workload>-retrain-newdata   CronJob            the check: POST {"trigger": "newData"} when there is new data
                                                    (energy: check-energy in this image; neo: the workload's
                                                    image, `python -m workloads.neo.data check`)

The Jobs it creates are the workload's training Job as the program declares it (`JobTemplates`
records it while the workload component declares it), plus RETRAIN_TRIGGER in every container and,
with `promote`, a last step running the workload's promotion gate (`workloads/common/retrained.py`);
its ServiceAccount may create, get and list Jobs in the workloads namespace and do nothing else. The
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
PROMOTE_MODULE = "workloads.common.retrained"  # in every workload image: the gate after a retraining
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
    # the check in the workload's image (the template's container and env): its command before --url/--model
    new_data_workload_command: Sequence[str] = ()
    promote: bool = False  # a last step of the retraining Job runs the workload's promotion gate
    promote_margin: float = 0.0  # its PROMOTE_MARGIN
    promote_days: int | None = None  # energy: its PROMOTE_DAYS (days of shadow forecasts compared)
    # cron of a CronJob gating a retrained challenger again (energy: its gate needs days of shadow forecasts)
    promote_schedule: str | None = None


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
    pushgateway_url: pulumi.Input[str] | None = None  # the promote step pushes its outcome there


def service_url(namespace: str) -> str:
    return f"http://{NAME}.{namespace}.svc.cluster.local:{PORT}"


def _gate_env(m: RetrainedModel, pushgateway_url: pulumi.Input[str] | None) -> list[dict[str, Any]]:
    """The gate's margin (and energy's days), and where it reports its outcome
    (`retraining_gate_timestamp_seconds`)."""
    env = [{"name": "PROMOTE_MARGIN", "value": f"{m.promote_margin:g}"}]
    if m.promote_days is not None:
        env.append({"name": "PROMOTE_DAYS", "value": str(m.promote_days)})
    if pushgateway_url is not None:
        env.append({"name": "PUSHGATEWAY_URL", "value": pushgateway_url})
    return env


def promote_step(m: RetrainedModel, pushgateway_url: str | None = None) -> dict[str, Any] | None:
    """What the receiver appends to the Job (mlops_retrain.job): the gate's command and environment."""
    if not m.promote:
        return None
    return {"command": ["python", "-m", PROMOTE_MODULE, m.workload], "env": _gate_env(m, pushgateway_url)}


def _models_json(models: Sequence[RetrainedModel], pushgateway_url: pulumi.Input[str] | None) -> pulumi.Output[str]:
    return pulumi.Output.all(pushgateway_url, *(m.job for m in models)).apply(lambda values: json.dumps(
        {m.model: {"workload": m.workload, "triggers": list(m.triggers), "cooldownMinutes": m.cooldown_minutes,
                   "promote": promote_step(m, values[0]), "job": j} for m, j in zip(models, values[1:])},
        sort_keys=True))


class RetrainingTrigger(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: RetrainingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:retraining:RetrainingTrigger", name, None, opts)
        if not args.models:
            raise ValueError("RetrainingTrigger: no model to retrain")
        models = _models_json(args.models, args.pushgateway_url)
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
            if m.new_data_schedule is not None and m.new_data_workload_command:
                self._workload_cron(f"{name}-{m.workload}-newdata", f"{m.workload}-retrain-newdata",
                                    m.new_data_schedule, args, m.job, self.url.apply(lambda u: [
                                        *m.new_data_workload_command, "--url", f"{u}/trigger", "--model", m.model]))
            elif m.new_data_schedule is not None:
                self._cron(f"{name}-{m.workload}-newdata", f"{m.workload}-retrain-newdata", m.new_data_schedule,
                           args, [f"check-{m.workload}", "--url", self.url.apply(lambda u: f"{u}/trigger"),
                                  "--model", m.model, *m.new_data_command], _check_env(m.job))
            if m.promote and m.promote_schedule is not None:
                self._workload_cron(f"{name}-{m.workload}-promote", f"{m.workload}-retrain-promote",
                                    m.promote_schedule, args, m.job,
                                    ["python", "-m", PROMOTE_MODULE, m.workload, "--pending"],
                                    _gate_env(m, args.pushgateway_url))
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
        """A CronJob running this image's `command` (the schedule trigger, energy's new-data check)."""
        container = {"name": "trigger", "image": args.image, "command": ["python", SCRIPT, *command], "env": env,
                     "resources": dict(args.check_resources), "security_context": kube.CONTAINER_SECURITY,
                     "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}]}
        self._cron_of(logical, app, schedule, args, {
            "restart_policy": "Never", "automount_service_account_token": False,
            "security_context": kube.pod_security(UID), "containers": [container],
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}]})

    def _workload_cron(self, logical: str, app: str, schedule: str, args: RetrainingArgs,
                       job: pulumi.Input[Mapping[str, Any]], command: pulumi.Input[list[str]],
                       env: pulumi.Input[Sequence[dict[str, Any]]] = ()) -> None:
        """A CronJob running `command` in the training Job's own container (image, env + `env`, user,
        volumes): what needs the workload's code (neo: the digest of its table as training computes
        it; energy: its promotion gate)."""
        self._cron_of(logical, app, schedule, args, pulumi.Output.all(job, command, env).apply(
            lambda jce: check_pod(jce[0], jce[1], args.check_resources, jce[2])))

    def _cron_of(self, logical: str, app: str, schedule: str, args: RetrainingArgs,
                 pod: pulumi.Input[Mapping[str, Any]]) -> None:
        k8s.batch.v1.CronJob(
            logical, metadata=kube.metadata(app, args.namespace, COMPONENT),
            spec={
                "schedule": schedule, "time_zone": args.time_zone,
                "concurrency_policy": "Forbid", "starting_deadline_seconds": 3600,
                "successful_jobs_history_limit": 1, "failed_jobs_history_limit": 3,
                "job_template": {"spec": {"backoff_limit": 3, "active_deadline_seconds": 900, "template": {
                    "metadata": {"labels": kube.labels(app, COMPONENT)}, "spec": pod}}},
            },
            opts=kube.child(self))


def check_pod(job: Mapping[str, Any], command: Sequence[str], resources: Mapping[str, Any],
              env: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The training Job's pod (API spelling) with one container: its first, running `command`."""
    pod = job["spec"]["template"]["spec"]
    first = pod["containers"][0]
    container = {**first, "name": "check", "command": list(command), "resources": dict(resources),
                 "env": [*first.get("env", []), *env]}
    keep = ("securityContext", "serviceAccountName", "volumes")
    return {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container],
            **{k: pod[k] for k in keep if k in pod}}


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
