"""Seldon Core v1 as the serving engine: the operator (Helm, pinned) and one SeldonDeployment per model.

Licence: the operator is pinned to 1.17.1, the last Apache-2.0 release (later v1 releases and v2
are under the Business Source License 1.1); see docs/decisions/0003-serving-seldon-core-licence.md.
Prepackaged MLflow models run on MLServer (Apache-2.0) with the V2 inference protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.serving.contract import (
    Autoscaling,
    CustomImage,
    DeployedModel,
    InferenceLog,
    ModelDeploymentArgs,
    ModelSource,
    RegistryAccess,
    RegistryAlias,
    RegistryModel,
    ServingEngine,
    SharedServer,
    SharedServerArgs,
    followed_alias,
)

CHART = "seldon-core-operator"
CHART_REPO = "https://storage.googleapis.com/seldon-charts"
API_VERSION = "machinelearning.seldon.io/v1"
IMPLEMENTATIONS = {"mlflow": "MLFLOW_SERVER"}
# Prepackaged servers and the protocols Seldon Core 1.17 serves them with (Seldon docs, "Prepackaged
# Model Servers"); their model is fetched by the rclone storage initializer.
PREPACKAGED_PROTOCOLS = {
    "SKLEARN_SERVER": {"seldon", "v2"},
    "MLFLOW_SERVER": {"seldon", "v2"},
    "XGBOOST_SERVER": {"seldon", "v2"},
    "TENSORFLOW_SERVER": {"seldon", "tensorflow"},
    "TRITON_SERVER": {"v2"},
    "HUGGINGFACE_SERVER": {"v2"},
}
STOCK_MLFLOW_RUNTIME = "mlserver_mlflow.MLflowRuntime"
# serves models:/<model>@<alias> and follows the alias (modules/serving/mlserver-image/mlops_mlserver.py)
ALIAS_RUNTIME = "mlops_mlserver.RegistryAliasRuntime"
# The V2 model name of every node: for a custom container the operator sets MLSERVER_MODEL_NAME to the
# container's name and the executor calls /v2/models/<node name>/… (operator/controllers/
# seldondeployment_controller.go createContainerService, executor/api/rest/client.go at v1.17.1)
NODE = "model"
ANNOTATION_PREFIX = "mlops-stack.io/"
MANAGER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
STORAGE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://")
# Env the operator sets on a graph node's container with SetEnvVar(..., override=false), which returns
# an empty list when the variable is already there: setting one wipes the container's whole env
# (operator/utils/utils.go SetEnvVar, controllers/seldondeployment_controller.go addPortEnvs, v1.17.1)
OPERATOR_PORT_ENV = ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT",
                     "PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "PREDICTIVE_UNIT_GRPC_SERVICE_PORT")
ALIAS_ENV = ("MLSERVER_MODEL_EXTRA", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass(frozen=True)
class SeldonCoreArgs:
    namespace: pulumi.Input[str]
    version: str
    istio_gateway: str  # "<namespace>/<name>" of the Gateway model routes attach to
    gateway_host: pulumi.Input[str]  # base URL models are reached at ("<scheme>://<host>[:<port>]"), for their URLs
    manager_resources: Mapping[str, str]
    executor_resources: Mapping[str, str]
    mlserver_image: tuple[str, str] = ("seldonio/mlserver", "1.7.1-mlflow")  # repository, tag
    # MLServer class serving registry models; the project's image adds one that answers 400, not
    # 500, to requests the model's signature rejects (modules/serving/mlserver-image)
    mlflow_runtime: str = STOCK_MLFLOW_RUNTIME


def _image_ref(image: tuple[pulumi.Input[str], pulumi.Input[str]]) -> pulumi.Output[str]:
    return pulumi.Output.concat(image[0], ":", image[1])


class SeldonCore(pulumi.ComponentResource, ServingEngine):
    """The Seldon Core v1 operator, wired to Istio; `deploy()` adds models."""

    name = "seldon-core"

    def __init__(self, name: str, args: SeldonCoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:SeldonCore", name, None, opts)
        self._args = args
        m, e = args.manager_resources, args.executor_resources
        self.release = k8s.helm.v3.Release(
            f"{name}-operator",
            name="seldon-core",
            chart=CHART,
            version=args.version,
            namespace=args.namespace,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            atomic=True,
            timeout=600,
            values={
                "usageMetrics": {"enabled": False},
                "ambassador": {"enabled": False},
                "istio": {"enabled": True, "gateway": args.istio_gateway},
                "crd": {"create": True},
                "manager": {"cpuRequest": m["cpu"], "cpuLimit": m["cpu_limit"],
                            "memoryRequest": m["memory"], "memoryLimit": m["memory_limit"],
                            # with the chart's pod-level runAsUser 8888, this passes the
                            # `restricted` Pod Security Standard of the operator's namespace
                            "containerSecurityContext": MANAGER_SECURITY},
                "executor": {"resources": {"cpuRequest": e["cpu"], "cpuLimit": e["cpu_limit"],
                                           "memoryRequest": e["memory"], "memoryLimit": e["memory_limit"]}},
                "predictor_servers": {
                    "MLFLOW_SERVER": {"protocols": {"v2": {"image": args.mlserver_image[0],
                                                           "defaultImageVersion": args.mlserver_image[1]}}},
                },
            },
            opts=kube.child(self),
        )
        self.register_outputs({"release": self.release.status})

    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        return SeldonModel(name, args, self._args.gateway_host, self._args.mlflow_runtime,
                           _image_ref(self._args.mlserver_image),
                           pulumi.ResourceOptions.merge(kube.after([self.release]), opts))

    def deploy_shared(self, name: str, args: SharedServerArgs,
                      opts: pulumi.ResourceOptions | None = None) -> SharedServer:
        from modules.serving.density import SeldonSharedServer  # it builds on this module's helpers

        return SeldonSharedServer(name, args, self._args.gateway_host, self._args.istio_gateway,
                                  _image_ref(self._args.mlserver_image),
                                  pulumi.ResourceOptions.merge(kube.after([self.release]), opts))


def alias_env(source: RegistryAlias, registry: RegistryAccess,
              inference_log: InferenceLog | None = None) -> list[dict[str, Any]]:
    """The MLServer container's environment for an alias model: the runtime in MLServer's main
    process (no inference workers: one process polls, swaps and reports), which alias to follow,
    the tracking server with a read-only user, and where its request sample goes (if any). The
    operator adds the ports, the model name and MLSERVER_METRICS_PORT/ENDPOINT (the `metrics` port
    at /prometheus the PodMonitor scrapes). KServe uses the same env (kserve.py `model_env`)."""
    extra = {"registry_model": source.model, "alias": source.alias, "poll_seconds": source.poll_seconds}
    return [
        {"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": ALIAS_RUNTIME},
        dict(NO_WORKERS),
        {"name": "MLSERVER_MODEL_EXTRA", "value": json.dumps(extra, sort_keys=True)},
        *registry_env(registry, inference_log),
    ]


NO_WORKERS = {"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}
FOLLOWER_ENV = ("MODEL_URI", "MODEL_POLL_SECONDS", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD")


def custom_env(source: CustomImage, args: ModelDeploymentArgs) -> list[dict[str, Any]]:
    """A custom server's environment: its own variables, and for one that follows an alias the
    alias, the poll interval, the read-only login and the request sample (contract.CustomImage).
    KServe gives the same env (kserve.py `predictor_spec`)."""
    env = [{"name": k, "value": v} for k, v in source.env.items()]
    if source.follows is None:
        return env
    assert args.registry is not None  # ModelDeploymentArgs checks it
    a = source.follows
    return env + [{"name": "MODEL_URI", "value": f"models:/{a.model}@{a.alias}"},
                  {"name": "MODEL_POLL_SECONDS", "value": str(a.poll_seconds)},
                  *registry_env(args.registry, args.inference_log_of(source))]


def registry_env(registry: RegistryAccess, inference_log: InferenceLog | None = None) -> list[dict[str, Any]]:
    """What every alias runtime of a server process shares: the tracking server and its read-only
    login, and the request sample's settings."""
    secret = {"name": registry.credentials_secret}
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": registry.tracking_uri},
        {"name": "MLFLOW_TRACKING_USERNAME", "valueFrom": {"secretKeyRef": {**secret, "key": "username"}}},
        {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": {**secret, "key": "password"}}},
        *(inference_log.env() if inference_log is not None else []),
    ]


def _alias_probes() -> dict[str, Any]:
    """Ready once the aliased version is loaded (the operator's default is a TCP check, true as soon
    as the port opens); a swap never makes the model unready. Liveness on the server alone, so a
    slow first download is not killed."""
    http = lambda path: {"httpGet": {"path": path, "port": "http"}}  # noqa: E731
    return {"readinessProbe": {**http(f"/v2/models/{NODE}/ready"), "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**http("/v2/health/live"), "initialDelaySeconds": 30, "periodSeconds": 10,
                              "failureThreshold": 6}}


def _predictor(name: str, source: ModelSource, args: ModelDeploymentArgs, mlflow_runtime: str,
               mlserver_image: pulumi.Input[str]) -> dict[str, Any]:
    graph: dict[str, Any] = {"name": NODE, "type": "MODEL", "children": []}
    container: dict[str, Any] = {"name": NODE, "resources": dict(args.resources)}
    if isinstance(source, RegistryAlias):
        assert args.registry is not None  # ModelDeploymentArgs checks it
        container |= {"image": mlserver_image, "env": alias_env(source, args.registry, args.inference_log_of(source)),
                      **_alias_probes()}
    elif isinstance(source, RegistryModel):
        graph |= {"implementation": IMPLEMENTATIONS[source.runtime], "modelUri": source.uri}
        if args.storage_secret is not None:
            graph["envSecretRefName"] = args.storage_secret
        project_runtime = source.runtime == "mlflow" and mlflow_runtime != STOCK_MLFLOW_RUNTIME
        # no inference worker process, as on KServe (kserve.py `model_env`)
        container["env"] = [*([{"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": mlflow_runtime}]
                              if project_runtime else []), dict(NO_WORKERS)]
    else:
        container |= {"image": source.image, "env": custom_env(source, args)}
    pod: dict[str, Any] = {"containers": [container], **args.placement}
    if args.service_account:
        pod["serviceAccountName"] = args.service_account
    component: dict[str, Any] = {"spec": pod}
    if args.autoscaling is not None:
        component["hpaSpec"] = hpa_spec(args.autoscaling)
    return {"name": name, "replicas": args.replicas, "graph": graph, "componentSpecs": [component],
            "labels": {"app.kubernetes.io/part-of": kube.PART_OF}}


def hpa_spec(a: Autoscaling) -> dict[str, Any]:
    """Seldon 1.17.1's SeldonHpaSpec: `metrics` holds autoscaling/v2beta1 MetricSpecs (and, when set,
    overrides everything else); the autoscaling/v2 shape Kubernetes 1.26+ serves goes in
    `metricsv2`, which the operator copies into the HPA as it is (operator/controllers/
    seldondeployment_controller.go `createHpa`). A v2 `target` under `metrics` is pruned by the CRD
    and leaves an HPA the API server rejects."""
    return {
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        "metricsv2": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_percent}}}],
    }


def _protocol(source: ModelSource) -> str:
    return source.protocol if isinstance(source, CustomImage) else "v2"


def seldon_deployment_spec(args: ModelDeploymentArgs, mlflow_runtime: str = STOCK_MLFLOW_RUNTIME,
                           mlserver_image: pulumi.Input[str] = "seldonio/mlserver:1.7.1-mlflow") -> dict[str, Any]:
    """The SeldonDeployment spec for a model (and its optional shadow/canary candidate)."""
    if args.candidate is not None and _protocol(args.candidate) != _protocol(args.source):
        raise ValueError("a candidate must speak the same protocol as the model it runs beside")
    main = _predictor("main", args.source, args, mlflow_runtime, mlserver_image)
    predictors = [main]
    if args.candidate is not None:
        candidate = _predictor("candidate", args.candidate, args, mlflow_runtime, mlserver_image)
        if args.candidate_mode == "shadow":
            candidate["shadow"] = True
            main["traffic"] = 100
        else:
            main["traffic"], candidate["traffic"] = 100 - args.canary_percent, args.canary_percent
        predictors.append(candidate)
    return {"protocol": _protocol(args.source), "predictors": predictors}


class SeldonModel(DeployedModel):
    """One SeldonDeployment; `url` is its predictions endpoint through the Istio gateway."""

    def __init__(self, name: str, args: ModelDeploymentArgs, gateway_host: pulumi.Input[str],
                 mlflow_runtime: str, mlserver_image: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:SeldonModel", name, None, opts)
        spec = seldon_deployment_spec(args, mlflow_runtime, mlserver_image)
        k8s.apiextensions.CustomResource(
            f"{name}-deployment",
            api_version=API_VERSION,
            kind="SeldonDeployment",
            metadata=kube.metadata(args.object_name or name, args.namespace, "serving",
                                   **({"annotations": a} if (a := alias_annotations(args)) else {})),
            spec=spec,
            opts=kube.child(self),
        )
        path = f"v2/models/{NODE}/infer" if spec["protocol"] == "v2" else "api/v1.0/predictions"
        self.url = pulumi.Output.concat(gateway_host, "/seldon/", args.namespace,
                                        f"/{args.object_name or name}/{path}")
        self.register_outputs({"url": self.url})


def alias_annotations(args: ModelDeploymentArgs) -> dict[str, str]:
    """Which registry alias each predictor follows (the served version itself changes without a
    redeploy, so it is reported by the pods: metadata, response model_version, metrics)."""
    found = {"main": followed_alias(args.source), "candidate": followed_alias(args.candidate)}
    return {f"{ANNOTATION_PREFIX}{role}-model": f"models:/{a.model}@{a.alias}"
            for role, a in found.items() if a is not None}


def _nodes(graph: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield graph
    for child in graph.get("children") or []:
        yield from _nodes(child)


def follower_problems(where: str, env: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A custom server that follows an alias (MODEL_URI models:/…@…) without the rest of its wiring."""
    uri = env.get("MODEL_URI", {}).get("value") or ""
    if not (uri.startswith("models:/") and "@" in uri):
        return []
    problems = []
    missing = [n for n in FOLLOWER_ENV if n not in env]
    if missing:
        problems.append(f"{where}: MODEL_URI {uri} follows an alias and needs env {missing}")
    if "value" in env.get("MLFLOW_TRACKING_PASSWORD", {}):
        problems.append(f"{where}: MLFLOW_TRACKING_PASSWORD is a plain value; read it from the reader's Secret "
                        "(valueFrom.secretKeyRef)")
    return problems


def _env_problems(where: str, container: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    """A custom container's env against what the operator does to it, and an alias model's wiring."""
    env = {e.get("name"): e for e in container.get("env") or []}
    problems = [f"{where}: env {name} is set by the operator, and setting it too makes the operator drop the "
                "container's whole env (SetEnvVar in 1.17.1); remove it" for name in OPERATOR_PORT_ENV if name in env]
    problems += follower_problems(where, env)
    if env.get("MLSERVER_MODEL_IMPLEMENTATION", {}).get("value") != ALIAS_RUNTIME:
        return problems
    if node.get("modelUri") or node.get("implementation") or node.get("envSecretRefName"):
        problems.append(f"{where}: an alias model loads through MLflow; its node takes no implementation, "
                        "modelUri or envSecretRefName (the storage initializer would need bucket keys)")
    missing = [name for name in ALIAS_ENV if name not in env]
    if missing:
        problems.append(f"{where}: {ALIAS_RUNTIME} needs env {missing}")
    if env.get("MLSERVER_PARALLEL_WORKERS", {}).get("value") != "0":
        problems.append(f"{where}: {ALIAS_RUNTIME} needs MLSERVER_PARALLEL_WORKERS=0 (it polls and swaps in "
                        "MLServer's main process)")
    if "value" in env.get("MLFLOW_TRACKING_PASSWORD", {}):
        problems.append(f"{where}: MLFLOW_TRACKING_PASSWORD is a plain value; read it from the reader's Secret "
                        "(valueFrom.secretKeyRef)")
    try:
        extra = json.loads(env.get("MLSERVER_MODEL_EXTRA", {}).get("value") or "{}")
    except ValueError:
        extra = None
    if "MLSERVER_MODEL_EXTRA" in env and not (isinstance(extra, dict) and extra.get("registry_model")
                                                 and extra.get("alias")):
        problems.append(f"{where}: MLSERVER_MODEL_EXTRA must be JSON with registry_model and alias")
    return problems


def validate_seldon_deployment(obj: Mapping[str, Any]) -> list[str]:
    """Problems the Seldon Core 1.17 operator would reject or mis-serve, from Seldon's documentation:
    kind/version, graph nodes backed by a container or a prepackaged implementation, protocol
    supported by that implementation, model URI scheme the storage initializer can fetch, resources
    set, pinned images and traffic that adds up; from the operator's source at v1.17.1: no env the
    operator sets itself, and alias models (a custom MLServer container, V2) wired to MLflow."""
    problems: list[str] = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != "SeldonDeployment":
        return [f"apiVersion/kind must be {API_VERSION}/SeldonDeployment"]
    spec = obj.get("spec") or {}
    protocol = spec.get("protocol", "seldon")
    if protocol not in ("seldon", "v2", "tensorflow"):
        problems.append(f"spec.protocol {protocol!r}: allowed seldon, v2, tensorflow")
    predictors = spec.get("predictors") or []
    if not predictors:
        problems.append("spec.predictors is empty")
    names = [p.get("name") for p in predictors]
    if len(set(names)) != len(names):
        problems.append(f"predictor names are not unique: {names}")
    live = [p for p in predictors if not p.get("shadow")]
    if len(live) > 1 and sum(p.get("traffic", 0) for p in live) != 100:
        problems.append("traffic of non-shadow predictors must add up to 100")
    for p in predictors:
        where = f"predictor {p.get('name')}"
        containers = {c.get("name"): c for cs in p.get("componentSpecs") or []
                      for c in (cs.get("spec") or {}).get("containers") or []}
        nodes = list(_nodes(p.get("graph") or {}))
        for node in nodes:
            implementation = node.get("implementation")
            if implementation:
                if implementation not in PREPACKAGED_PROTOCOLS:
                    problems.append(f"{where}: node {node.get('name')}: unknown implementation {implementation}")
                elif protocol not in PREPACKAGED_PROTOCOLS[implementation]:
                    problems.append(f"{where}: {implementation} does not serve protocol {protocol!r}")
                uri = node.get("modelUri", "")
                if not uri.startswith(STORAGE_SCHEMES):
                    problems.append(f"{where}: modelUri {uri!r}: the storage initializer fetches "
                                    f"{', '.join(STORAGE_SCHEMES)} (resolve models:/ aliases first)")
            elif node.get("name") not in containers or not containers[node["name"]].get("image"):
                problems.append(f"{where}: node {node.get('name')} has neither an implementation nor a "
                                "container with an image of the same name")
        for cname, container in containers.items():
            if cname not in {n.get("name") for n in nodes}:
                problems.append(f"{where}: container {cname} matches no graph node")
            problems += _env_problems(f"{where}: container {cname}", container,
                                      next((n for n in nodes if n.get("name") == cname), {}))
            requests = (container.get("resources") or {}).get("requests") or {}
            if not requests.get("cpu") or not requests.get("memory"):
                problems.append(f"{where}: container {cname} has no cpu/memory requests")
            image = container.get("image")
            if image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                problems.append(f"{where}: container {cname} image {image!r} is not pinned")
        for cs in p.get("componentSpecs") or []:
            hpa = cs.get("hpaSpec")
            if hpa and hpa.get("minReplicas", 1) > hpa.get("maxReplicas", 0):
                problems.append(f"{where}: hpaSpec minReplicas > maxReplicas")
    return problems
