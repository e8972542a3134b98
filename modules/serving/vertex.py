"""Vertex AI online prediction endpoints as the serving engine of the gke stack (docs/decisions/0022-vertex-engine.md).

One endpoint per model, next to the cluster rather than in it: a `gcp.vertex.AiEndpoint` (pulumi-gcp),
a service account its deployed models run as, reading exactly the versions' GCS prefixes, and the
model uploads and deployments, which pulumi-gcp has no resource for, as a Pulumi dynamic resource
that calls `google-cloud-aiplatform` (`VertexDeployments`).

- Model data: each version is a Vertex Model whose `artifactUri` is the registry version's gs://
  prefix (MLflow's own artifacts in the stack's bucket; no copy of ours). Vertex copies it and
  passes the copy as AIP_STORAGE_URI; the image's `vertex_serve.py` downloads that folder and
  starts MLServer on it. A moved alias is served after the next deploy pins its prefix.
- Container contract: Vertex sends health checks and predictions to the first port (AIP_HTTP_PORT,
  8080) on the routes the Model names. The MLflow runtime's `/ping` and `/invocations` are those
  routes: MLflow's scoring protocol takes Vertex's `{"instances": [...]}` and answers
  `{"predictions": [...]}`, the body Vertex's `:predict` requires, so no adapter route is needed.
- Candidates: a canary is a second deployed model with `canaryPercent` of the endpoint's
  `trafficSplit`. Vertex has no shadow traffic (the config refuses `candidateMode: shadow`).
- Deployed models cannot be changed in place: their ids carry a hash of what they deploy, so a
  new version is uploaded and deployed beside the old one, the traffic moves, and only then is
  the old one undeployed and its Model deleted (blue/green, as on SageMaker).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp
from pulumi import dynamic

from modules.serving.contract import DeployedModel, ModelDeploymentArgs, ModelSource, ServingEngine
from modules.serving.managed import CANDIDATE, MAIN, artifact_location, image_uri, instance_bounds

PORT = 8080  # Vertex's default AIP_HTTP_PORT; MLServer listens on it
HEALTH_ROUTE, PREDICT_ROUTE = "/ping", "/invocations"  # the MLflow runtime's handlers
SERVE = ["python", "/opt/mlops/vertex_serve.py"]  # the image's entrypoint on Vertex (mlserver-image/vertex_serve.py)
MODEL_DIR = "/tmp/model"  # where vertex_serve.py puts AIP_STORAGE_URI's files
CPU_METRIC = "aiplatform.googleapis.com/prediction/online/cpu/utilization"
API_HOST = "{region}-aiplatform.googleapis.com"
# Cloud Monitoring's metrics of an endpoint (prediction_count, prediction_latencies, replicas, cpu)
METRICS_PREFIX = "aiplatform.googleapis.com/prediction/online/"
ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")  # IAM's service account id rule
PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")


@dataclass(frozen=True)
class VertexArgs:
    project: str
    region: str
    prefix: str  # of physical names (the gke platform's)
    image: pulumi.Input[str]  # the MLServer image in Artifact Registry: <repository>:<tag>[@<digest>]
    repository: gcp.artifactregistry.Repository  # the only repository Vertex pulls from for us
    mlflow_runtime: str  # MLServer class that loads the MLflow model (mlops_mlserver.MLflowRuntime)
    machine_type: str


class Vertex(pulumi.ComponentResource, ServingEngine):
    """Nothing runs until a model is deployed; Vertex's service agent may pull the MLServer image."""

    name = "vertex"

    def __init__(self, name: str, args: VertexArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:Vertex", name, None, opts)
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        # Vertex pulls serving images as its service agent, never as the deployed model's account
        agent = gcp.projects.ServiceIdentity(name, project=args.project, service="aiplatform.googleapis.com",
                                             opts=child)
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-pull", project=args.project, location=args.region, repository=args.repository.repository_id,
            role="roles/artifactregistry.reader", member=agent.member, opts=child)
        self.register_outputs({})

    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        return VertexEndpoint(name, args, self._args, pulumi.ResourceOptions.merge(
            pulumi.ResourceOptions(parent=self), opts))


def gcs_location(source: ModelSource) -> tuple[str, str]:
    """(bucket, object prefix without a trailing slash) of a version pinned to a GCS prefix."""
    return artifact_location(source, "gs", "vertex")


def numeric_id(*parts: Any) -> str:
    """A 10-digit id without a leading zero, from what it names: Vertex's rule for endpoint and
    deployed model ids, which we choose so that names are known at plan time."""
    digest = int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest(), 16)
    return str(10**9 + digest % (9 * 10**9))


def inference_workers(machine_type: str) -> int:
    """One MLServer inference worker per vCPU of the node (shared-core e2-micro/small/medium: one).
    Vertex scales on the node's CPU utilisation: a server without workers is one process, which uses
    at most 1/vCPUs of the node (49 % of 2 vCPUs, fully loaded) and never reaches a 70 % target;
    with 2 workers on 2 vCPUs it reaches 83 % (benchmarks/serving_workers.py)."""
    size = re.search(r"-([0-9]+)$", machine_type)
    return int(size[1]) if size else 1


def container_environment(model_name: str, mlflow_runtime: str, machine_type: str) -> dict[str, str]:
    """MLServer configured by environment alone, as in a Seldon or KServe pod, on Vertex's port."""
    return {"MLSERVER_MODEL_NAME": model_name, "MLSERVER_MODEL_IMPLEMENTATION": mlflow_runtime,
            "MLSERVER_MODEL_URI": MODEL_DIR, "MLSERVER_HTTP_PORT": str(PORT), "MLSERVER_HOST": "0.0.0.0",
            "MLSERVER_PARALLEL_WORKERS": str(inference_workers(machine_type))}


def read_condition(bucket: str, prefixes: Sequence[str]) -> str:
    """CEL for roles/storage.objectViewer on some prefixes only: their objects, and listings under
    them (a list call's resource is the bucket; its prefix is the objectListPrefix attribute)."""
    terms = []
    for p in sorted(prefixes):
        terms += [f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{p}/")',
                  f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{p}/")']
    return " || ".join(terms)


class VertexEndpoint(DeployedModel):
    """One model's endpoint, its deployed versions and the account they run as."""

    def __init__(self, name: str, args: ModelDeploymentArgs, engine: VertexArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:VertexEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        model_name = args.object_name or name
        display, account_id = f"{engine.prefix}-{model_name}", f"{engine.prefix}-{model_name}-vx"
        if not ACCOUNT_ID.match(account_id) or len(display) > 128:
            raise ValueError(f"Vertex endpoint {display!r}: its service account id {account_id!r} must be 6-30 "
                             "lowercase letters, digits and '-' (shorten gcp.namePrefix or the model name)")
        sources = {MAIN: args.source, **({CANDIDATE: args.candidate} if args.candidate is not None else {})}
        locations = {key: gcs_location(source) for key, source in sources.items()}

        account = gcp.serviceaccount.Account(
            name, account_id=account_id, project=engine.project, display_name=f"Vertex endpoint {display}",
            description="Runs the endpoint's deployed models: reads their model versions, writes logs and metrics",
            opts=child)
        reads = []
        for bucket in sorted({b for b, _ in locations.values()}):
            prefixes = [p for b, p in locations.values() if b == bucket]
            reads.append(gcp.storage.BucketIAMMember(
                f"{name}-{bucket}", bucket=bucket, role="roles/storage.objectViewer", member=account.member,
                condition=gcp.storage.BucketIAMMemberConditionArgs(
                    title="model-versions", description=f"the model versions of Vertex endpoint {display}",
                    expression=read_condition(bucket, prefixes)),
                opts=child))
        for role in PROJECT_ROLES:
            reads.append(gcp.projects.IAMMember(f"{name}-{role.split('/')[1]}", project=engine.project, role=role,
                                                member=account.member, opts=child))

        endpoint_id = numeric_id(engine.project, engine.region, display)
        endpoint = gcp.vertex.AiEndpoint(
            name, name=endpoint_id, display_name=display, location=engine.region, region=engine.region,
            project=engine.project, description=f"mlops-stack model {model_name}",
            # the deployments below own the traffic split: deployed model ids exist only after deploying
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["trafficSplit"]))

        low, high = instance_bounds(args)
        cpu_target = args.autoscaling.target_cpu_percent if args.autoscaling else None
        weights = {MAIN: 100 - args.canary_percent, CANDIDATE: args.canary_percent} if args.candidate is not None \
            else {MAIN: 100}
        env = container_environment(model_name, engine.mlflow_runtime, engine.machine_type)

        def spec(key: str, image: str, service_account: str) -> dict[str, Any]:
            bucket, prefix = locations[key]
            body = {"key": key, "display_name": f"{display}-{key}", "artifact_uri": f"gs://{bucket}/{prefix}/",
                    "image": image, "command": SERVE, "env": env, "port": PORT, "health_route": HEALTH_ROUTE,
                    "predict_route": PREDICT_ROUTE, "machine_type": engine.machine_type,
                    "min_replicas": low if key == MAIN else 1, "max_replicas": high, "cpu_target": cpu_target,
                    "service_account": service_account}
            return body | {"id": numeric_id(body)}

        deployments = pulumi.Output.all(engine.image, account.email).apply(
            lambda v: [spec(key, image_uri(v[0]), v[1]) for key in weights])
        VertexDeployments(name, {
            "project": engine.project, "region": engine.region,
            "endpoint": f"projects/{engine.project}/locations/{engine.region}/endpoints/{endpoint_id}",
            "deployments": deployments,
            "traffic": deployments.apply(lambda ds: {d["id"]: weights[d["key"]] for d in ds}),
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[endpoint, *reads]))
        self.url = pulumi.Output.concat("https://", API_HOST.format(region=engine.region), "/v1/projects/",
                                        engine.project, "/locations/", engine.region, "/endpoints/", endpoint_id,
                                        ":predict")
        self.register_outputs({"url": self.url, "serviceAccount": account.email})


# ------------------------------------------------------------------ uploads and deployments

def _types():
    from google.cloud.aiplatform_v1 import types

    return types


@dataclass
class Clients:
    """The two aiplatform_v1 services the deployments call (a stub in tests)."""

    models: Any  # ModelServiceClient
    endpoints: Any  # EndpointServiceClient


def connect(region: str) -> Clients:
    """Regional clients with Application Default Credentials (whoever runs `pulumi up`)."""
    from google.cloud import aiplatform_v1

    options = {"api_endpoint": API_HOST.format(region=region)}
    return Clients(aiplatform_v1.ModelServiceClient(client_options=options),
                   aiplatform_v1.EndpointServiceClient(client_options=options))


def upload_request(project: str, region: str, d: Mapping[str, Any]):
    t = _types()
    return t.UploadModelRequest(parent=f"projects/{project}/locations/{region}", model=t.Model(
        display_name=d["display_name"], artifact_uri=d["artifact_uri"],
        labels={"mlops-stack": "serving", "variant": d["key"]},
        container_spec=t.ModelContainerSpec(
            image_uri=d["image"], command=list(d["command"]),
            env=[t.EnvVar(name=k, value=v) for k, v in d["env"].items()],
            ports=[t.Port(container_port=d["port"])],
            health_route=d["health_route"], predict_route=d["predict_route"])))


def deploy_request(endpoint: str, model: str, d: Mapping[str, Any], traffic: Mapping[str, int]):
    t = _types()
    scaling = [t.AutoscalingMetricSpec(metric_name=CPU_METRIC, target=d["cpu_target"])] if d["cpu_target"] else []
    return t.DeployModelRequest(endpoint=endpoint, traffic_split=dict(traffic), deployed_model=t.DeployedModel(
        id=d["id"], model=model, display_name=d["display_name"], service_account=d["service_account"],
        dedicated_resources=t.DedicatedResources(
            machine_spec=t.MachineSpec(machine_type=d["machine_type"]), min_replica_count=d["min_replicas"],
            max_replica_count=d["max_replicas"], autoscaling_metric_specs=scaling)))


def traffic_request(endpoint: str, traffic: Mapping[str, int]):
    from google.protobuf import field_mask_pb2

    t = _types()
    return t.UpdateEndpointRequest(endpoint=t.Endpoint(name=endpoint, traffic_split=dict(traffic)),
                                   update_mask=field_mask_pb2.FieldMask(paths=["traffic_split"]))


def apply_deployments(clients: Clients, props: Mapping[str, Any],
                      old: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Upload and deploy what `old` does not have (with no traffic, unless it is the first), move
    the traffic to `props["traffic"]`, then undeploy and delete what `props` no longer has.
    Returns deployed model id -> Model resource name."""
    t = _types()
    project, region, endpoint = props["project"], props["region"], props["endpoint"]
    models = dict((old or {}).get("models") or {})
    current = dict((old or {}).get("traffic") or {})
    for d in props["deployments"]:
        if d["id"] in models:
            continue
        uploaded = clients.models.upload_model(request=upload_request(project, region, d)).result()
        models[d["id"]] = uploaded.model
        traffic = {**current, "0": 0} if current else {"0": 100}  # "0": the model being deployed
        clients.endpoints.deploy_model(request=deploy_request(endpoint, uploaded.model, d, traffic)).result()
        current = {**current, d["id"]: 0} if current else {d["id"]: 100}
    target = {k: int(v) for k, v in props["traffic"].items()}
    if current != target:
        clients.endpoints.update_endpoint(request=traffic_request(endpoint, target))
    wanted = {d["id"] for d in props["deployments"]}
    for deployed_id in [i for i in models if i not in wanted]:
        clients.endpoints.undeploy_model(request=t.UndeployModelRequest(
            endpoint=endpoint, deployed_model_id=deployed_id, traffic_split=target)).result()
        clients.models.delete_model(request=t.DeleteModelRequest(name=models.pop(deployed_id))).result()
    return models


def remove_deployments(clients: Clients, state: Mapping[str, Any]) -> None:
    """Undeploy every deployed model, then delete its Model. Vertex undeploys a model with traffic
    only as the endpoint's last one, so the traffic goes to the last one first."""
    t = _types()
    models = dict(state.get("models") or {})
    *others, last = list(models) or [None]
    if others:
        clients.endpoints.update_endpoint(request=traffic_request(state["endpoint"], {last: 100}))
    for deployed_id in [*others, last] if last is not None else []:
        clients.endpoints.undeploy_model(request=t.UndeployModelRequest(
            endpoint=state["endpoint"], deployed_model_id=deployed_id)).result()
        clients.models.delete_model(request=t.DeleteModelRequest(name=models[deployed_id])).result()


class DeploymentsProvider(dynamic.ResourceProvider):
    """Create, update and delete through `apply_deployments` / `remove_deployments`; `connect`
    is a class attribute so that tests give it a stub."""

    connect: Callable[[str], Clients] = staticmethod(connect)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        models = apply_deployments(self.connect(props["region"]), props)
        return dynamic.CreateResult(id_=props["endpoint"], outs={**props, "models": models})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        keys = ("project", "region", "endpoint", "deployments", "traffic")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[k for k in changed if k in keys[:3]],
                                  delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        models = apply_deployments(self.connect(news["region"]), news, olds)
        return dynamic.UpdateResult(outs={**news, "models": models})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        remove_deployments(self.connect(props["region"]), props)


class VertexDeployments(dynamic.Resource):
    """An endpoint's uploaded Models and deployed models, with their traffic split."""

    models: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(DeploymentsProvider(), name, {**props, "models": None}, opts)
