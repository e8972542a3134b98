"""KServe as the serving engine: the controller (Helm, pinned) and one InferenceService per model.

KServe (Apache-2.0, CNCF) runs in `Standard` mode by default (KServe 0.20's name for
RawDeployment: a Deployment, a Service and an HPA per model, no Knative), or in `Knative` mode
(scale to zero) where Knative Serving is already installed. Facts below were read in
kserve/kserve at tag v0.20.0 (docs/decisions/0014-kserve-engine.md).

- Models run on the project's MLServer image through a namespaced ServingRuntime `mlops-mlserver`
  (`modelFormat: mlflow`, V2). It carries no `serving.kserve.io/server-type: mlserver` annotation:
  with it, `SetMlServerDefaults` adds `MLSERVER_LOAD_MODELS_AT_STARTUP=false` to a model without
  `storageUri`, and an alias model would never load (pkg/apis/serving/v1beta1/inference_service_defaults.go).
- Alias models set the same RegistryAliasRuntime env as on Seldon and no `storageUri`, so no
  storage initializer and no bucket keys; `uri` models get `storageUri` and the storage
  initializer reads the rclone Secret's keys (the chart's `kserve.storage.s3.*Name` values name them).
- Routing: KServe creates no Ingress (`disableIngressCreation`); a VirtualService per model on the
  platform gateway serves `/kserve/<namespace>/<name>/` (rewritten to `/`). The V2 model name is
  the model's name, as KServe's own runtimes use the InferenceService name.
- Candidates: a second InferenceService `<name>-candidate`; the VirtualService splits traffic
  (canary) or mirrors it (shadow). KServe has canary (0.20 `spec.canary` in Standard mode, which
  cannot autoscale the canary) but no shadow; Istio's `mirror` gives both modes one shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.serving.contract import (
    CustomImage,
    DeployedModel,
    ModelDeploymentArgs,
    ModelSource,
    RegistryAlias,
    RegistryModel,
    ServingEngine,
)
from modules.serving.seldon import (
    ALIAS_ENV,
    ALIAS_RUNTIME,
    NO_WORKERS,
    alias_annotations,
    alias_env,
    custom_env,
    follower_problems,
)

CHARTS = "oci://ghcr.io/kserve/charts"
CRD_CHART = f"{CHARTS}/kserve-crd"
CONTROLLER_CHART = f"{CHARTS}/kserve-resources"
API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
RUNTIME = "mlops-mlserver"
CONTAINER = "kserve-container"  # constants.InferenceServiceContainerName
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 9000, 8082
SELDON_WRAPPER_PORT = 9000  # seldon-core-microservice's default HTTP port, for `protocol: seldon` images
METRICS_PATH = "/prometheus"  # as on the Seldon path, so both engines' model pods expose the same endpoint
MODEL_MOUNT = "/mnt/models"  # constants.DefaultModelLocalMountPath: where the storage initializer writes
ANNOTATION = "serving.kserve.io/"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # IsvcNameFmt, inference_service_validation.go
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")  # constants.AutoscalerAllowedClassList
DeploymentMode = Literal["Standard", "Knative"]
# the rclone Secret of `uri` models (infra/program.py _storage_secret): KServe reads its keys by these names
S3_KEY_NAMES = {"accessKeyIdName": "RCLONE_CONFIG_S3_ACCESS_KEY_ID",
                "secretAccessKeyName": "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY"}
CERT_MANAGER_REPO = "https://charts.jetstack.io"


@dataclass(frozen=True)
class KServeArgs:
    namespace: pulumi.Input[str]  # the controller's release namespace
    models_namespace: pulumi.Input[str]  # where the InferenceServices (and their ServingRuntime) live
    version: str  # kserve-crd and kserve-resources chart version (one release train)
    istio_gateway: str  # "<namespace>/<name>" of the Gateway model routes attach to
    gateway_host: pulumi.Input[str]  # base URL models are reached at ("<scheme>://<host>[:<port>]")
    models_host: pulumi.Input[str]  # host name of that URL, the VirtualServices' host
    tls: bool  # the gateway serves HTTPS: model routes match port 443 only (80 redirects)
    controller_resources: Mapping[str, Any]
    rbac_proxy_resources: Mapping[str, Any]
    mlserver_image: pulumi.Input[str]
    mlflow_runtime: str  # MLServer class of `uri` models (mlops_mlserver.MLflowRuntime)
    cert_manager_version: str
    cert_manager_resources: Mapping[str, Any]
    cert_manager: pulumi.Resource | None = None  # the gateway's cert-manager release, if it has one
    deployment_mode: DeploymentMode = "Standard"
    scale_to_zero: bool = False  # Knative mode only: minReplicas 0
    s3_endpoint: pulumi.Input[str] | None = None  # in-cluster S3 API of `uri` models' buckets
    monitoring: tuple[pulumi.Resource, ...] = ()  # what installs the PodMonitor CRD


class KServe(pulumi.ComponentResource, ServingEngine):
    """The KServe controller in `Standard` (or `Knative`) mode; `deploy()` adds models."""

    name = "kserve"

    def __init__(self, name: str, args: KServeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:KServe", name, None, opts)
        self._args = args
        # the controller's webhook certificate comes from cert-manager (files/kserve/resources.yaml)
        cert_manager = args.cert_manager or k8s.helm.v3.Release(
            f"{name}-cert-manager", name="cert-manager", chart="cert-manager", version=args.cert_manager_version,
            namespace="cert-manager", create_namespace=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CERT_MANAGER_REPO), atomic=True, timeout=600,
            values={"crds": {"enabled": True}, "resources": dict(args.cert_manager_resources),
                    "webhook": {"resources": dict(args.cert_manager_resources)},
                    "cainjector": {"resources": dict(args.cert_manager_resources)}},
            opts=kube.child(self),
        )
        crds = k8s.helm.v3.Release(
            f"{name}-crd", name="kserve-crd", chart=CRD_CHART, version=args.version, namespace=args.namespace,
            atomic=True, timeout=600, opts=kube.child(self),
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-controller", name="kserve", chart=CONTROLLER_CHART, version=args.version,
            namespace=args.namespace, atomic=True, timeout=600, values=controller_values(args),
            opts=kube.child(self, depends_on=[crds, cert_manager]),
        )
        # one runtime for the models' namespace, and a PodMonitor for their pods
        self.runtime = k8s.apiextensions.CustomResource(
            f"{name}-runtime", api_version=RUNTIME_API_VERSION, kind="ServingRuntime",
            metadata=kube.metadata(RUNTIME, args.models_namespace, "serving"),
            spec=serving_runtime_spec(args.mlserver_image), opts=kube.child(self, depends_on=[self.release]),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-models-monitor", api_version="monitoring.coreos.com/v1", kind="PodMonitor",
            metadata=kube.metadata("kserve-models", args.models_namespace, "monitoring"),
            spec=pod_monitor_spec(), opts=kube.child(self, depends_on=list(args.monitoring)),
        )
        self.register_outputs({"release": self.release.status})

    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        return KServeModel(name, args, self._args,
                           pulumi.ResourceOptions.merge(kube.after([self.release, self.runtime]), opts))


def controller_values(args: KServeArgs) -> dict[str, Any]:
    """kserve-resources values (charts/kserve-resources/values.yaml at v0.20.0): the deployment
    mode, no Ingress/HTTPRoute/Istio virtual host of KServe's own (our VirtualServices route), the
    rclone Secret's key names for the storage initializer, and the controller's resources."""
    s3: dict[str, Any] = dict(S3_KEY_NAMES)
    if args.s3_endpoint is not None:
        s3 |= {"endpoint": args.s3_endpoint, "useHttps": "0", "verifySSL": "0"}
    return {"kserve": {
        "controller": {
            "deploymentMode": args.deployment_mode,
            "gateway": {"disableIngressCreation": True, "disableIstioVirtualHost": True,
                        "urlScheme": "https" if args.tls else "http"},
            "resources": dict(args.controller_resources),
            "rbacProxy": {"resources": dict(args.rbac_proxy_resources)},
        },
        "storage": {"s3": s3},
    }}


def serving_runtime_spec(mlserver_image: pulumi.Input[str]) -> dict[str, Any]:
    """The project's MLServer image as a V2 runtime for MLflow models. The model class is set per
    model (an alias model's differs), the ports and the metrics endpoint here."""
    env = {"MLSERVER_HTTP_PORT": str(HTTP_PORT), "MLSERVER_GRPC_PORT": str(GRPC_PORT),
           "MLSERVER_METRICS_PORT": str(METRICS_PORT), "MLSERVER_METRICS_ENDPOINT": METRICS_PATH}
    return {
        "supportedModelFormats": [{"name": "mlflow", "version": "2", "autoSelect": True},
                                  {"name": "mlflow", "version": "3", "autoSelect": True}],
        "protocolVersions": ["v2"],
        "containers": [{
            "name": CONTAINER, "image": mlserver_image, "env": kube.env(env),
            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        }],
    }


def pod_monitor_spec() -> dict[str, Any]:
    """MLServer's own metrics of every predictor pod (incl. mlops_model_version_info and
    mlops_model_load_failures_total of alias models), labelled with the InferenceService."""
    return {"selector": {"matchExpressions": [{"key": ISVC_LABEL, "operator": "Exists"}]},
            "podTargetLabels": [ISVC_LABEL],
            "podMetricsEndpoints": [{"port": "metrics", "path": METRICS_PATH, "interval": "30s"}]}


def _probes(model_name: str) -> dict[str, Any]:
    """Ready once the model is loaded; liveness on the server alone (a slow first download is not killed)."""
    http = lambda path: {"httpGet": {"path": path, "port": HTTP_PORT}}  # noqa: E731
    return {"readinessProbe": {**http(f"/v2/models/{model_name}/ready"), "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**http("/v2/health/live"), "initialDelaySeconds": 30, "periodSeconds": 10,
                              "failureThreshold": 6}}


def model_env(model_name: str, source: ModelSource, args: ModelDeploymentArgs, mlflow_runtime: str) -> list[dict[str, Any]]:
    """The MLServer env of a registry model: the V2 name clients call, then the alias runtime's
    env (the same as on Seldon) or the MLflow runtime over the storage initializer's download."""
    env: list[dict[str, Any]] = [{"name": "MLSERVER_MODEL_NAME", "value": model_name}]
    if isinstance(source, RegistryAlias):
        assert args.registry is not None  # ModelDeploymentArgs checks it
        return env + alias_env(source, args.registry, args.inference_log_of(source))
    # no inference worker process (MLServer 1.7.1 starts one by default): for a small CPU model it
    # adds a multiprocessing hop per request and a second copy of the model and runtime, competing
    # for the same small CPU limit (benchmarks/serving_overhead.py); alias models set it too
    return env + [{"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": mlflow_runtime},
                  {"name": "MLSERVER_MODEL_URI", "value": MODEL_MOUNT}, dict(NO_WORKERS)]


def predictor_spec(model_name: str, source: ModelSource, args: ModelDeploymentArgs, engine: KServeArgs) -> dict[str, Any]:
    """The InferenceService's predictor: replicas/HPA fields, placement, and the model or container."""
    predictor: dict[str, Any] = {**args.placement}
    if args.service_account:
        predictor["serviceAccountName"] = args.service_account
    a = args.autoscaling
    if a is not None:
        predictor |= {"minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
                      "scaleMetric": "cpu", "scaleTarget": a.target_cpu_percent}
    else:
        predictor |= {"minReplicas": args.replicas, "maxReplicas": args.replicas}
    if engine.deployment_mode == "Knative" and engine.scale_to_zero:
        predictor["minReplicas"] = 0
    if isinstance(source, CustomImage):
        port = SELDON_WRAPPER_PORT if source.protocol == "seldon" else HTTP_PORT
        predictor["containers"] = [{"name": CONTAINER, "image": source.image, "resources": dict(args.resources),
                                    "env": custom_env(source, args),
                                    "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}]
        return predictor
    # `name`: the runtime's container this one is merged into (the typed model fills it in, as "")
    model: dict[str, Any] = {"name": CONTAINER, "modelFormat": {"name": source.runtime}, "runtime": RUNTIME,
                             "protocolVersion": "v2",
                             "env": model_env(model_name, source, args, engine.mlflow_runtime),
                             "resources": dict(args.resources), **_probes(model_name)}
    if isinstance(source, RegistryModel):
        model["storageUri"] = source.uri
    predictor["model"] = model
    return predictor


def inference_service(name: str, model_name: str, source: ModelSource, args: ModelDeploymentArgs,
                      engine: KServeArgs, annotations: Mapping[str, str]) -> dict[str, Any]:
    """metadata annotations and spec of one InferenceService (the main model or its candidate)."""
    notes = {f"{ANNOTATION}deploymentMode": engine.deployment_mode, **annotations}
    if engine.deployment_mode == "Standard":
        notes[f"{ANNOTATION}autoscalerClass"] = "hpa" if args.autoscaling else "none"
    if isinstance(source, RegistryModel) and args.storage_secret is not None:
        notes[f"{ANNOTATION}secretName"] = args.storage_secret  # the storage initializer's credentials
    return {"annotations": notes, "spec": {"predictor": predictor_spec(model_name, source, args, engine)}}


def _service_host(isvc: str, namespace: pulumi.Input[str]) -> pulumi.Output[str]:
    """The predictor Service KServe makes (constants.PredictorServiceName: `<isvc>-predictor`, port 80)."""
    return pulumi.Output.concat(isvc, "-predictor.", namespace, ".svc.cluster.local")


def route_spec(name: str, args: ModelDeploymentArgs, engine: KServeArgs) -> dict[str, Any]:
    """`/kserve/<ns>/<name>/` on the platform gateway to the model's predictor; a canary gets its
    share, a shadow a copy of every request (Istio mirrors and drops the response)."""
    main = {"host": _service_host(name, args.namespace), "port": {"number": 80}}
    candidate = {"host": _service_host(f"{name}-candidate", args.namespace), "port": {"number": 80}}
    match: dict[str, Any] = {"uri": {"prefix": pulumi.Output.concat("/kserve/", args.namespace, f"/{name}/")}}
    if engine.tls:
        match["port"] = 443
    http: dict[str, Any] = {"name": name, "match": [match], "rewrite": {"uri": "/"}}
    if engine.deployment_mode == "Knative":  # the Knative local gateway routes by Host
        http["rewrite"]["authority"] = main["host"]
    if args.candidate is None:
        http["route"] = [{"destination": main}]
    elif args.candidate_mode == "canary":
        http["route"] = [{"destination": main, "weight": 100 - args.canary_percent},
                         {"destination": candidate, "weight": args.canary_percent}]
    else:
        http |= {"route": [{"destination": main}], "mirror": candidate, "mirrorPercentage": {"value": 100.0}}
    return {"hosts": [engine.models_host], "gateways": [engine.istio_gateway], "http": [http]}


class KServeModel(DeployedModel):
    """One InferenceService (two with a candidate) and its route; `url` is its V2 endpoint."""

    def __init__(self, name: str, args: ModelDeploymentArgs, engine: KServeArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:KServeModel", name, None, opts)
        if not NAME.match(name) or len(name) > 45:  # "-candidate-predictor" must still fit 63
            raise ValueError(f"serving.models.{name}: an InferenceService name must match {NAME.pattern} "
                             "and stay within 45 characters (KServe appends -candidate-predictor)")
        roles = alias_annotations(args)
        main_note = {k: v for k, v in roles.items() if k.endswith("main-model")}
        services = [(name, args.source, main_note)]
        if args.candidate is not None:
            candidate_note = {k: v for k, v in roles.items() if k.endswith("candidate-model")}
            services.append((f"{name}-candidate", args.candidate, candidate_note))
        for isvc, source, notes in services:
            body = inference_service(isvc, name, source, args, engine, notes)
            k8s.apiextensions.CustomResource(
                f"{isvc}-inferenceservice", api_version=API_VERSION, kind="InferenceService",
                metadata=kube.metadata(isvc, args.namespace, "serving", annotations=body["annotations"]),
                spec=body["spec"], opts=kube.child(self),
            )
        k8s.apiextensions.CustomResource(
            f"{name}-route", api_version="networking.istio.io/v1", kind="VirtualService",
            metadata=kube.metadata(f"kserve-{name}", args.namespace, "serving"),
            spec=route_spec(name, args, engine), opts=kube.child(self),
        )
        custom = args.source if isinstance(args.source, CustomImage) else None
        path = "api/v1.0/predictions" if custom and custom.protocol == "seldon" else f"v2/models/{name}/infer"
        self.url = pulumi.Output.concat(engine.gateway_host, "/kserve/", args.namespace, f"/{name}/{path}")
        self.register_outputs({"url": self.url})


# ---- offline checks of a planned InferenceService: what KServe 0.20.0's webhook rejects, and our wiring ----

def _containers(predictor: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found = [(f"spec.predictor.containers[{i}]", c) for i, c in enumerate(predictor.get("containers") or [])]
    if predictor.get("model") is not None:
        found.append(("spec.predictor.model", predictor["model"]))
    return found


def _alias_problems(where: str, container: Mapping[str, Any]) -> list[str]:
    env = {e.get("name"): e for e in container.get("env") or []}
    if env.get("MLSERVER_MODEL_IMPLEMENTATION", {}).get("value") != ALIAS_RUNTIME:
        return follower_problems(where, env)
    problems = []
    if container.get("storageUri") or container.get("storage"):
        problems.append(f"{where}: an alias model loads through MLflow; a storageUri would add the storage "
                        "initializer, which needs bucket keys")
    missing = [n for n in (*ALIAS_ENV, "MLSERVER_MODEL_NAME") if n not in env]
    if missing:
        problems.append(f"{where}: {ALIAS_RUNTIME} needs env {missing}")
    if env.get("MLSERVER_PARALLEL_WORKERS", {}).get("value") != "0":
        problems.append(f"{where}: {ALIAS_RUNTIME} needs MLSERVER_PARALLEL_WORKERS=0")
    if env.get("MLSERVER_LOAD_MODELS_AT_STARTUP", {}).get("value") == "false":
        problems.append(f"{where}: MLSERVER_LOAD_MODELS_AT_STARTUP=false: the model never loads; drop it "
                        "(and the runtime's serving.kserve.io/server-type annotation, which adds it)")
    if "value" in env.get("MLFLOW_TRACKING_PASSWORD", {}):
        problems.append(f"{where}: MLFLOW_TRACKING_PASSWORD is a plain value; read it from the reader's Secret")
    try:
        extra = json.loads(env.get("MLSERVER_MODEL_EXTRA", {}).get("value") or "{}")
    except ValueError:
        extra = None
    if not (isinstance(extra, dict) and extra.get("registry_model") and extra.get("alias")):
        problems.append(f"{where}: MLSERVER_MODEL_EXTRA must be JSON with registry_model and alias")
    return problems


def validate_inference_service(obj: Mapping[str, Any]) -> list[str]:
    """Problems KServe 0.20.0's validating webhook would reject (pkg/apis/serving/v1beta1/
    inference_service_validation.go: name, autoscaler class, exactly one implementation, HPA
    metric and target, canary only in Standard mode) and alias models' wiring (as on Seldon)."""
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != "InferenceService":
        return [f"apiVersion/kind must be {API_VERSION}/InferenceService"]
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    notes = meta.get("annotations") or {}
    predictor = spec.get("predictor") or {}
    problems = []
    if not NAME.match(str(meta.get("name", ""))):
        problems.append(f"metadata.name {meta.get('name')!r}: must match {NAME.pattern}")
    autoscaler = notes.get(f"{ANNOTATION}autoscalerClass")
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:
        problems.append(f"annotation {ANNOTATION}autoscalerClass {autoscaler!r}: allowed {', '.join(AUTOSCALER_CLASSES)}")
    frameworks = [k for k in ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
                              "huggingface", "pmml", "lightgbm", "paddle") if predictor.get(k) is not None]
    if len(frameworks) + bool(predictor.get("containers")) != 1:
        problems.append("spec.predictor: exactly one of model, a framework or containers is allowed "
                        f"(found {frameworks + (['containers'] if predictor.get('containers') else [])})")
    if predictor.get("scaleMetric") not in (None, "cpu", "memory") and autoscaler in (None, "hpa"):
        problems.append(f"spec.predictor.scaleMetric {predictor['scaleMetric']!r}: the HPA scales on cpu or memory")
    target = predictor.get("scaleTarget")
    if target is not None and predictor.get("scaleMetric", "cpu") in ("cpu", "memory") and not 1 <= target <= 100:
        problems.append(f"spec.predictor.scaleTarget {target}: a utilization percentage 1-100")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if high and low > high:
        problems.append(f"spec.predictor: minReplicas {low} > maxReplicas {high}")
    if spec.get("canary") and notes.get(f"{ANNOTATION}deploymentMode") != "Standard":
        problems.append("spec.canary: only in Standard deployment mode (annotation serving.kserve.io/deploymentMode)")
    for where, container in _containers(predictor):
        problems += _alias_problems(where, container)
        requests = (container.get("resources") or {}).get("requests") or {}
        if not requests.get("cpu") or not requests.get("memory"):
            problems.append(f"{where}: no cpu/memory requests (KServe would give it 1 CPU and 2Gi)")
    return problems
