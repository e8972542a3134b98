"""Many alias models in one MLServer process, on Seldon Core 1.17.1 (docs/decisions/0020-multi-model-serving.md).

One SeldonDeployment per server with a single `model` container and no executor (predictor
annotation `seldon.io/no-engine: "true"`: the operator then points the predictor Service
`<server>-main` at the container's HTTP port, 9000, and adds no sidecar; operator/controllers/
seldondeployment_controller.go at v1.17.1). The container is the project's MLServer image; its model
repository (MLSERVER_MODELS_DIR, /mnt/models in the image) is a ConfigMap with one
`<model>/model-settings.json` per model, each the alias runtime following its own alias, named
after the model (V2 `/v2/models/<model>/…`). MLServer loads them all at start; a change of the
model list changes a hash in the pod's env, so the server restarts with the new repository.

Routes: a VirtualService on the gateway gives every model the endpoint a dedicated deployment of it
would have, `/seldon/<namespace>/<model>/v2/models/model/…`, rewritten to the server's
`/v2/models/<model>/…`: a tenant moves between modes without its callers noticing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.serving.contract import RegistryAlias, SharedServer, SharedServerArgs
from modules.serving.seldon import ALIAS_RUNTIME, API_VERSION, NO_WORKERS, NODE, registry_env

NO_ENGINE = "seldon.io/no-engine"
PREDICTOR = "main"
MODEL_HTTP_PORT = 9000  # operator/constants FirstHttpPortNumber (v1.17.1): the no-engine Service's port
MODELS_DIR = "/mnt/models"  # MLSERVER_MODELS_DIR of seldonio/mlserver 1.7.1 (its Dockerfile)
SETTINGS_FILE = "model-settings.json"
MODELS_ANNOTATION = "mlops-stack.io/models"


def model_settings(name: str, source: RegistryAlias) -> dict[str, Any]:
    """A model of the repository: the alias runtime, told to start unready rather than stop the
    server when its alias does not load yet (a student who has not registered a version)."""
    extra = {"registry_model": source.model, "alias": source.alias, "poll_seconds": source.poll_seconds,
             "start_unready": True}
    return {"name": name, "implementation": ALIAS_RUNTIME, "parameters": {"extra": extra}}


def repository(models: dict[str, RegistryAlias]) -> dict[str, str]:
    """ConfigMap data: model name (a DNS label, a valid key) -> its model-settings.json."""
    return {name: json.dumps(model_settings(name, source), sort_keys=True) for name, source in sorted(models.items())}


def _probes() -> dict[str, Any]:
    """Ready once every model has loaded (MLServer's /v2/health/ready), so a restart with a new
    model list takes no traffic before; a model whose alias does not load yet counts as loaded
    (`start_unready`) and answers 503, so it never holds the others back. Liveness on the server."""
    http = lambda path: {"httpGet": {"path": path, "port": "http"}}  # noqa: E731
    return {"readinessProbe": {**http("/v2/health/ready"), "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**http("/v2/health/live"), "initialDelaySeconds": 30, "periodSeconds": 10,
                              "failureThreshold": 6}}


def shared_deployment_spec(args: SharedServerArgs, config_map: pulumi.Input[str],
                           mlserver_image: pulumi.Input[str]) -> dict[str, Any]:
    data = repository(dict(args.models))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    env = [dict(NO_WORKERS), *registry_env(args.registry, args.inference_log),
           {"name": "MLOPS_MODELS_HASH", "value": digest}]  # a new model list restarts the server
    container = {"name": NODE, "image": mlserver_image, "env": env, "resources": dict(args.resources),
                 "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR, "readOnly": True}], **_probes()}
    volume = {"name": "models", "configMap": {"name": config_map, "items": [
        {"key": name, "path": f"{name}/{SETTINGS_FILE}"} for name in data]}}
    pod = {"containers": [container], "volumes": [volume], **args.placement}
    return {"protocol": "v2", "predictors": [{
        "name": PREDICTOR, "replicas": 1, "annotations": {NO_ENGINE: "true"},
        "graph": {"name": NODE, "type": "MODEL", "children": []},
        "componentSpecs": [{"spec": pod}], "labels": {"app.kubernetes.io/part-of": kube.PART_OF}}]}


def _routes(namespace: pulumi.Input[str], server: str, models: list[str]) -> list[dict[str, Any]]:
    """Per model: its dedicated-mode V2 path (model name `model`) onto its name in the server."""
    host = pulumi.Output.concat(server, f"-{PREDICTOR}.", namespace, ".svc.cluster.local")
    destination = [{"destination": {"host": host, "port": {"number": MODEL_HTTP_PORT}}}]
    routes = []
    for model in models:
        public = pulumi.Output.concat("/seldon/", namespace, f"/{model}/v2/models/{NODE}")
        routes += [{"match": [{"uri": {"exact": public}}], "rewrite": {"uri": f"/v2/models/{model}"},
                    "route": destination},
                   {"match": [{"uri": {"prefix": pulumi.Output.concat(public, "/")}}],
                    "rewrite": {"uri": f"/v2/models/{model}/"}, "route": destination}]
    return routes


def shared_in_cluster_url(namespace: pulumi.Input[str], server: str, model: str) -> pulumi.Output[str]:
    """A model's predictions endpoint on its shared server's Service (no gateway)."""
    return pulumi.Output.concat("http://", server, f"-{PREDICTOR}.", namespace,
                                f".svc.cluster.local:{MODEL_HTTP_PORT}/v2/models/{model}/infer")


class SeldonSharedServer(SharedServer):
    """A ConfigMap repository, the SeldonDeployment serving it and the per-model routes."""

    def __init__(self, name: str, args: SharedServerArgs, gateway_host: pulumi.Input[str], istio_gateway: str,
                 mlserver_image: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:SeldonSharedServer", name, None, opts)
        server = args.object_name
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-repository", metadata=kube.metadata(f"{server}-repository", args.namespace, "serving"),
            data=repository(dict(args.models)), opts=kube.child(self))
        aliases = {m: f"models:/{s.model}@{s.alias}" for m, s in sorted(args.models.items())}
        k8s.apiextensions.CustomResource(
            f"{name}-deployment", api_version=API_VERSION, kind="SeldonDeployment",
            metadata=kube.metadata(server, args.namespace, "serving",
                                   annotations={MODELS_ANNOTATION: json.dumps(aliases, sort_keys=True)}),
            spec=shared_deployment_spec(args, config_map.metadata.name, mlserver_image), opts=kube.child(self))
        k8s.apiextensions.CustomResource(
            f"{name}-routes", api_version="networking.istio.io/v1", kind="VirtualService",
            metadata=kube.metadata(f"{server}-routes", args.namespace, "serving"),
            spec={"hosts": ["*"], "gateways": [istio_gateway], "http": _routes(args.namespace, server, list(aliases))},
            opts=kube.child(self))
        self.urls = {model: pulumi.Output.concat(gateway_host, "/seldon/", args.namespace,
                                                 f"/{model}/v2/models/{NODE}/infer") for model in aliases}
        self.register_outputs({"urls": self.urls})
