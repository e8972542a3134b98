"""What a plan asks the cluster for: every pod it runs, with the requests and limits it really gets.

A Helm release's values are not its pods: a chart merges them over its own defaults and decides
which containers exist (a sidecar setting that applies to two containers, a hook Job that runs once,
a default limit the values never clear). So each pinned chart is modelled here from its templates
at that version (the defaults it needs are kept as data, with their source); a chart or version
without a model is an error, not a silent zero. SeldonDeployments count as the operator builds
them: per predictor, the model container, the executor it adds (resources from the operator's
values) and the storage-initializer init container of prepackaged servers.

Long-running pods (Deployments, StatefulSets, DaemonSets counted once on a one-node cluster) are
summed over replicas; Jobs, CronJobs and Helm hook Jobs run now and then, and their largest single
pod is reported separately as a peak.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.plan import Plan

RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"}
BATCH = {"Job", "CronJob"}
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def cpu_m(quantity: Any) -> int:
    """Millicores of a Kubernetes CPU quantity ("250m", "1", 2, "0.5")."""
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)


def memory_mib(quantity: Any) -> int:
    """MiB (rounded down) of a Kubernetes memory quantity ("512Mi", "1Gi", "100M", bytes)."""
    match = re.fullmatch(r"([0-9.]+)([KMGT]i?|k)?", str(quantity))
    if match is None:
        raise ValueError(f"memory quantity {quantity!r}: expected a number with an optional unit (Mi, Gi, M, ...)")
    number, unit = match.groups()
    return int(float(number) * _MEMORY_UNITS.get(unit or "", 1) // 2**20)


@dataclass(frozen=True)
class Container:
    name: str
    cpu_m: int = 0
    memory_mib: int = 0
    cpu_limit_m: int | None = None  # None: no limit
    memory_limit_mib: int | None = None

    @classmethod
    def of(cls, name: str, resources: dict[str, Any] | None) -> Container:
        """From a container's `resources` block (requests default to limits, as in Kubernetes)."""
        resources = resources or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        cpu_limit = cpu_m(limits["cpu"]) if limits.get("cpu") else None
        memory_limit = memory_mib(limits["memory"]) if limits.get("memory") else None
        cpu = cpu_m(requests["cpu"]) if requests.get("cpu") else (cpu_limit or 0)
        memory = memory_mib(requests["memory"]) if requests.get("memory") else (memory_limit or 0)
        return cls(name, cpu, memory, cpu_limit, memory_limit)


@dataclass(frozen=True)
class Pod:
    """One pod template as the cluster runs it; `component` names where it comes from."""

    component: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    replicas: int = 1
    batch: bool = False

    def requests(self) -> tuple[int, int]:
        """Effective pod request: the larger of the app containers' sum and any init container."""
        cpu = sum(c.cpu_m for c in self.containers)
        mem = sum(c.memory_mib for c in self.containers)
        for init in self.init_containers:
            cpu, mem = max(cpu, init.cpu_m), max(mem, init.memory_mib)
        return cpu, mem

    def container(self, name: str) -> Container:
        for c in (*self.containers, *self.init_containers):
            if c.name == name:
                return c
        raise KeyError(f"{self.component}: no container {name}")


def _coalesce(defaults: Any, values: Any) -> Any:
    """Helm's merge of user values over chart defaults: maps merge, anything else replaces, and
    a null removes the default (istio's charts drop nil resource fields the same way since 1.30)."""
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return copy.deepcopy(values)
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _coalesce(merged.get(key), value)
    return merged


def _get(values: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


# ---- Seldon Core operator 1.17.1 (SeldonIO/seldon-core v1.17.1, helm-charts/seldon-core-operator) ----

# values.yaml: manager/executor/storageInitializer in the flat cpuRequest/memoryLimit form the
# templates read (deployment_seldon-controller-manager.yaml, configmap_seldon-config.yaml)
SELDON_DEFAULTS: dict[str, Any] = {
    "manager": {"cpuRequest": "100m", "cpuLimit": "500m", "memoryRequest": "200Mi", "memoryLimit": "300Mi"},
    "executor": {"resources": {"cpuRequest": "500m", "cpuLimit": "500m",
                               "memoryRequest": "512Mi", "memoryLimit": "512Mi"}},
    "storageInitializer": {"cpuRequest": "100m", "cpuLimit": "1", "memoryRequest": "100Mi", "memoryLimit": "1Gi"},
    "usageMetrics": {"enabled": False},
}
EXECUTOR_CONTAINER = "seldon-container-engine"  # operator/controllers/seldondeployment_engine.go
STORAGE_INITIALIZER = "model-initializer"  # operator/controllers/model_initializer_injector.go


def _flat(name: str, r: dict[str, Any]) -> Container:
    return Container.of(name, {"requests": {"cpu": r.get("cpuRequest"), "memory": r.get("memoryRequest")},
                               "limits": {"cpu": r.get("cpuLimit"), "memory": r.get("memoryLimit")}})


def _seldon(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce(SELDON_DEFAULTS, values)
    # the manager Deployment has `replicas: 1`; spartakus (usage metrics) sets no resources
    pods = [Pod(f"{release}: controller-manager", (_flat("manager", v["manager"]),))]
    if v["usageMetrics"]["enabled"]:
        pods.append(Pod(f"{release}: spartakus-volunteer", (Container("volunteer"),)))
    return pods


def seldon_operator_containers(values: dict[str, Any]) -> tuple[Container, Container]:
    """(executor, storage initializer) the operator adds to model pods, from its release's values:
    EXECUTOR_DEFAULT_* env of the manager and the `storageInitializer` entry of seldon-config."""
    v = _coalesce(SELDON_DEFAULTS, values)
    return _flat(EXECUTOR_CONTAINER, v["executor"]["resources"]), _flat(STORAGE_INITIALIZER, v["storageInitializer"])


def _graph_nodes(graph: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield graph
    for child in graph.get("children") or []:
        yield from _graph_nodes(child)


def seldon_deployment_pods(obj: dict[str, Any], executor: Container, initializer: Container) -> list[Pod]:
    """The pods the operator makes of a SeldonDeployment: one per predictor (shadows included), at
    its replicas or its autoscaler's minimum; no executor under `seldon.io/no-engine: "true"`."""
    meta = obj.get("metadata", {})
    no_engine = (meta.get("annotations") or {}).get("seldon.io/no-engine") == "true"
    pods = []
    for p in obj.get("spec", {}).get("predictors") or []:
        specs = p.get("componentSpecs") or [{}]
        containers = [Container.of(c.get("name", "?"), c.get("resources"))
                      for cs in specs for c in (cs.get("spec") or {}).get("containers") or []]
        named = {c.name for c in containers}
        for node in _graph_nodes(p.get("graph") or {}):
            if node.get("implementation") and node.get("name") not in named:
                containers.append(Container(node.get("name", "?")))  # prepackaged server without resources
        if not (no_engine or (p.get("annotations") or {}).get("seldon.io/no-engine") == "true"):  # the operator
            containers.append(executor)  # reads the predictor's annotation (seldondeployment_controller.go)
        inits = [initializer for node in _graph_nodes(p.get("graph") or {})
                 if node.get("implementation") and node.get("modelUri")]
        hpa = next((cs["hpaSpec"] for cs in specs if cs.get("hpaSpec")), None)
        replicas = hpa.get("minReplicas", 1) if hpa else p.get("replicas", 1)
        pods.append(Pod(f"{meta.get('namespace')}/SeldonDeployment/{meta.get('name')}: {p.get('name')}",
                        tuple(containers), tuple(inits), replicas))
    return pods


# ---- kube-prometheus-stack 83.6.0 (prometheus-community/helm-charts, tag kube-prometheus-stack-83.6.0) ----

# values.yaml of the chart and of its pinned subcharts (grafana 11.6.1 from grafana-community/helm-charts,
# kube-state-metrics 7.2.2, prometheus-node-exporter 4.53.1): only what decides pods and resources
KPS_DEFAULTS: dict[str, Any] = {
    "prometheusOperator": {
        "enabled": True, "resources": {},
        "admissionWebhooks": {"enabled": True, "patch": {"enabled": True, "resources": {}},
                              "deployment": {"enabled": False}, "certManager": {"enabled": False}},
        "prometheusConfigReloader": {"resources": {}},
    },
    "prometheus": {"enabled": True, "prometheusSpec": {"replicas": 1, "shards": 1, "resources": {}}},
    "alertmanager": {"enabled": True, "alertmanagerSpec": {"replicas": 1, "resources": {}}},
    "grafana": {
        "enabled": True, "replicas": 1, "resources": {},
        "persistence": {"enabled": False}, "initChownData": {"enabled": True, "resources": {}},
        "sidecar": {"resources": {},
                    "dashboards": {"enabled": True, "initDashboards": False},   # kps turns both on
                    "datasources": {"enabled": True, "initDatasources": False},
                    "alerts": {"enabled": False}, "notifiers": {"enabled": False}, "plugins": {"enabled": False}},
    },
    "kubeStateMetrics": {"enabled": True},
    "kube-state-metrics": {"replicas": 1, "resources": {}, "kubeRBACProxy": {"enabled": False}},
    "nodeExporter": {"enabled": True},
    "prometheus-node-exporter": {"resources": {}, "kubeRBACProxy": {"enabled": False}},
    "thanosRuler": {"enabled": False},
}


def _reloader(v: dict[str, Any]) -> Container:
    """prometheus-config-reloader: kps passes --config-reloader-*=<value or 0> to the operator
    (templates/prometheus-operator/deployment.yaml) and "0" means no request/limit (v0.90.1)."""
    return Container.of("config-reloader", _get(v, "prometheusOperator.prometheusConfigReloader.resources"))


def _grafana(release: str, g: dict[str, Any]) -> Pod:
    """charts/grafana/templates/_pod.tpl: one sidecar container per enabled sidecar kind, each with
    `sidecar.resources`; init-chown-data with a persistent volume."""
    sidecar = g["sidecar"]
    containers = [Container.of("grafana", g["resources"])]
    inits = []
    for kind, container, init_key in (("dashboards", "grafana-sc-dashboard", "initDashboards"),
                                      ("datasources", "grafana-sc-datasources", "initDatasources"),
                                      ("alerts", "grafana-sc-alerts", "initAlerts"),
                                      ("notifiers", "grafana-sc-notifiers", "initNotifiers"),
                                      ("plugins", "grafana-sc-plugins", "")):
        if sidecar[kind].get("enabled"):
            target = inits if init_key and sidecar[kind].get(init_key) else containers
            target.append(Container.of(container, sidecar["resources"]))
    if g["persistence"].get("enabled") and g["initChownData"].get("enabled"):
        inits.append(Container.of("init-chown-data", g["initChownData"]["resources"]))
    return Pod(f"{release}: grafana", tuple(containers), tuple(inits), g["replicas"])


def _kube_prometheus_stack(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce(KPS_DEFAULTS, values)
    op, reloader = v["prometheusOperator"], _reloader(v)
    pods: list[Pod] = []
    if op["enabled"]:
        pods.append(Pod(f"{release}: prometheus-operator", (Container.of("kube-prometheus-stack", op["resources"]),)))
        hooks = op["admissionWebhooks"]
        if hooks["enabled"] and hooks["patch"]["enabled"] and not hooks["certManager"]["enabled"]:
            # pre-install create-secret and post-install patch-webhook hook Jobs, one after the other
            for job in ("admission-create", "admission-patch"):
                pods.append(Pod(f"{release}: {job}", (Container.of(job, hooks["patch"]["resources"]),), batch=True))
    if v["prometheus"]["enabled"]:
        spec = v["prometheus"]["prometheusSpec"]
        pods.append(Pod(f"{release}: prometheus", (Container.of("prometheus", spec["resources"]), reloader),
                        (reloader,), spec["replicas"] * spec["shards"]))
    if v["alertmanager"]["enabled"]:
        spec = v["alertmanager"]["alertmanagerSpec"]
        pods.append(Pod(f"{release}: alertmanager", (Container.of("alertmanager", spec["resources"]), reloader),
                        (reloader,), spec["replicas"]))
    if v["grafana"]["enabled"]:
        pods.append(_grafana(release, v["grafana"]))
    if v["kubeStateMetrics"]["enabled"]:
        ksm = v["kube-state-metrics"]
        pods.append(Pod(f"{release}: kube-state-metrics", (Container.of("kube-state-metrics", ksm["resources"]),),
                        replicas=ksm["replicas"]))
    if v["nodeExporter"]["enabled"]:  # a DaemonSet: one pod per node
        pods.append(Pod(f"{release}: node-exporter",
                        (Container.of("node-exporter", v["prometheus-node-exporter"]["resources"]),)))
    return pods


# ---- Istio 1.30.3 (istio/istio, tag 1.30.3, manifests/charts/{base,istio-control/istio-discovery,gateway}) ----

# values.yaml `_internal_defaults_do_not_set`, merged under the user's values by zzz_profile.yaml
ISTIOD_DEFAULTS: dict[str, Any] = {"autoscaleEnabled": True, "autoscaleMin": 1, "replicaCount": 1,
                                   "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}}}
GATEWAY_DEFAULTS: dict[str, Any] = {
    "replicaCount": None,
    "autoscaling": {"enabled": True, "minReplicas": 1},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}},
}


def _istio_base(release: str, values: dict[str, Any]) -> list[Pod]:
    return []  # CRDs, a service account and webhook configurations: no pods


def _istiod(release: str, values: dict[str, Any]) -> list[Pod]:
    # zzy_descope_legacy.yaml copies everything under `pilot` to the top level
    v = _coalesce(_coalesce(ISTIOD_DEFAULTS, {k: x for k, x in values.items() if k != "pilot"}),
                  values.get("pilot") or {})
    replicas = v["autoscaleMin"] if v["autoscaleEnabled"] else v["replicaCount"]
    return [Pod(f"{release}: istiod", (Container.of("discovery", v["resources"]),), replicas=replicas)]


def _istio_gateway(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce(GATEWAY_DEFAULTS, values)
    replicas = v["autoscaling"]["minReplicas"] if v["autoscaling"]["enabled"] else (v["replicaCount"] or 1)
    return [Pod(f"{release}: gateway", (Container.of("istio-proxy", v["resources"]),), replicas=replicas)]


# ---- cert-manager v1.20.2 (cert-manager/cert-manager, tag v1.20.2, deploy/charts/cert-manager) ----

CERT_MANAGER_DEFAULTS: dict[str, Any] = {
    "replicaCount": 1, "resources": {},
    "webhook": {"replicaCount": 1, "resources": {}},
    "cainjector": {"enabled": True, "replicaCount": 1, "resources": {}},
    "startupapicheck": {"enabled": True, "resources": {}},  # a post-install hook Job
}


def _cert_manager(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce(CERT_MANAGER_DEFAULTS, values)
    pods = [Pod(f"{release}: controller", (Container.of("cert-manager-controller", v["resources"]),),
                replicas=v["replicaCount"]),
            Pod(f"{release}: webhook", (Container.of("cert-manager-webhook", v["webhook"]["resources"]),),
                replicas=v["webhook"]["replicaCount"])]
    if v["cainjector"]["enabled"]:
        pods.append(Pod(f"{release}: cainjector", (Container.of("cert-manager-cainjector",
                                                                 v["cainjector"]["resources"]),),
                        replicas=v["cainjector"]["replicaCount"]))
    if v["startupapicheck"]["enabled"]:
        pods.append(Pod(f"{release}: startupapicheck", (Container.of("cert-manager-startupapicheck",
                                                                      v["startupapicheck"]["resources"]),), batch=True))
    return pods


# ---- GitHub ARC 0.14.2 (actions/actions-runner-controller, tag gha-runner-scale-set-0.14.2) ----

def _arc_controller(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce({"replicaCount": 1, "resources": {}}, values)
    return [Pod(f"{release}: controller", (Container.of("manager", v["resources"]),), replicas=v["replicaCount"])]


def _arc_scale_set(release: str, values: dict[str, Any]) -> list[Pod]:
    """The listener pod the controller creates (listenerTemplate; no resources by default), the
    `minRunners` idle runners, and one busy runner as the batch peak."""
    v = _coalesce({"minRunners": 0, "listenerTemplate": {"spec": {"containers": []}}, "template": {"spec": {}}}, values)
    listener = [Container.of(c.get("name", "listener"), c.get("resources"))
                for c in v["listenerTemplate"]["spec"].get("containers") or []] or [Container("listener")]
    spec = v["template"]["spec"]
    runner = (tuple(Container.of(c.get("name", "runner"), c.get("resources")) for c in spec.get("containers") or []),
              tuple(Container.of(c.get("name", "init"), c.get("resources")) for c in spec.get("initContainers") or []))
    pods = [Pod(f"{release}: listener", tuple(listener)), Pod(f"{release}: runner", *runner, batch=True)]
    if v["minRunners"]:
        pods.append(Pod(f"{release}: idle runners", *runner, replicas=v["minRunners"]))
    return pods


# ---- Cluster Autoscaler 9.59.0 (kubernetes/autoscaler, tag cluster-autoscaler-chart-9.59.0,
# cluster-autoscaler/charts/cluster-autoscaler: one Deployment, `replicaCount` × `resources`) ----

def _cluster_autoscaler(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce({"replicaCount": 1, "resources": {}}, values)
    return [Pod(f"{release}: cluster-autoscaler", (Container.of("aws-cluster-autoscaler", v["resources"]),),
                replicas=v["replicaCount"])]


# ---- CloudNativePG 0.29.0 (cloudnative-pg/charts, tag cloudnative-pg-v0.29.0, charts/cloudnative-pg:
# one Deployment, `replicaCount` × `resources`). Its Cluster objects run `instances` pods whose
# `postgres` container (and bootstrap init container) take the Cluster's `resources`
# (cloudnative-pg/cloudnative-pg v1.30.0 pkg/specs/pods.go) ----

def _cloudnative_pg(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce({"replicaCount": 1, "resources": {}}, values)
    return [Pod(f"{release}: operator", (Container.of("manager", v["resources"]),), replicas=v["replicaCount"])]


def cnpg_cluster_pod(obj: dict[str, Any]) -> Pod:
    spec, meta = obj.get("spec", {}), obj.get("metadata", {})
    return Pod(f"{meta.get('namespace')}/Cluster/{meta.get('name')}", (Container.of("postgres", spec.get("resources")),),
               replicas=spec.get("instances", 1))


# ---- KServe v0.20.0 (kserve/kserve, tag v0.20.0, charts/kserve-crd and charts/kserve-resources) ----
# kserve-crd renders CRDs only. kserve-resources runs one controller Deployment (files/kserve/
# resources.yaml + deployment-patch.yaml): `manager` with kserve.controller.resources and
# `kube-rbac-proxy` with kserve.controller.rbacProxy.resources (values.yaml: 100m/300Mi both,
# requests = limits); no localmodel pods unless kserve.localmodel.enabled. InferenceService pods:
# the predictor container (model or containers[0]) at minReplicas, plus the storage-initializer
# init container (inferenceservice-config `storageInitializer`: 100m/100Mi, limits 1/1Gi) when
# the model has a storageUri.
KSERVE_CONTROLLER_DEFAULTS: dict[str, Any] = {"kserve": {"controller": {
    "resources": {"requests": {"cpu": "100m", "memory": "300Mi"}, "limits": {"cpu": "100m", "memory": "300Mi"}},
    "rbacProxy": {"resources": {"requests": {"cpu": "100m", "memory": "300Mi"},
                                "limits": {"cpu": "100m", "memory": "300Mi"}}}},
    "localmodel": {"enabled": False}}}
KSERVE_STORAGE_INITIALIZER = Container("storage-initializer", 100, 100, 1000, 1024)


def _kserve_controller(release: str, values: dict[str, Any]) -> list[Pod]:
    v = _coalesce(KSERVE_CONTROLLER_DEFAULTS, values)["kserve"]
    if v["localmodel"]["enabled"]:
        raise ValueError(f"{release}: kserve.localmodel.enabled runs a node agent DaemonSet this model does not count")
    c = v["controller"]
    return [Pod(f"{release}: controller-manager", (Container.of("manager", c["resources"]),
                                                    Container.of("kube-rbac-proxy", c["rbacProxy"]["resources"])))]


def inference_service_pods(obj: dict[str, Any]) -> list[Pod]:
    """The predictor pod KServe makes of an InferenceService, at its minimum replicas."""
    meta, predictor = obj.get("metadata", {}), (obj.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model")
    containers = [model] if model is not None else (predictor.get("containers") or [])[:1]
    inits = (KSERVE_STORAGE_INITIALIZER,) if model is not None and model.get("storageUri") else ()
    return [Pod(f"{meta.get('namespace')}/InferenceService/{meta.get('name')}: predictor",
                tuple(Container.of(c.get("name", "kserve-container"), c.get("resources")) for c in containers),
                inits, predictor.get("minReplicas", 1))]


ChartModel = Callable[[str, dict[str, Any]], list[Pod]]
CHARTS: dict[str, tuple[str, ChartModel]] = {
    "seldon-core-operator": ("1.17.1", _seldon),
    "kube-prometheus-stack": ("83.6.0", _kube_prometheus_stack),
    "base": ("1.30.3", _istio_base),
    "istiod": ("1.30.3", _istiod),
    "gateway": ("1.30.3", _istio_gateway),
    "cert-manager": ("v1.20.2", _cert_manager),
    "gha-runner-scale-set-controller": ("0.14.2", _arc_controller),
    "gha-runner-scale-set": ("0.14.2", _arc_scale_set),
    "cluster-autoscaler": ("9.59.0", _cluster_autoscaler),
    "cloudnative-pg": ("0.29.0", _cloudnative_pg),
    "kserve-crd": ("v0.20.0", _istio_base),  # CRDs only: no pods
    "kserve-resources": ("v0.20.0", _kserve_controller),
}


def release_pods(inputs: dict[str, Any]) -> list[Pod]:
    """The pods a Helm release runs, from the model of its chart at its pinned version."""
    chart, version = str(inputs.get("chart", "")).rsplit("/", 1)[-1], str(inputs.get("version", ""))
    release = inputs.get("name") or chart
    if chart not in CHARTS:
        raise ValueError(f"Helm release {release}: chart {chart!r} has no footprint model; read its templates "
                         f"at {version} and add one to mlops/footprint.py CHARTS")
    modelled, model = CHARTS[chart]
    if version != modelled:
        raise ValueError(f"Helm release {release}: chart {chart} {version} is modelled at {modelled}; re-read its "
                         f"templates at {version} and update mlops/footprint.py")
    return model(f"helm {release}", inputs.get("values") or {})


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def _object_pod(obj: dict[str, Any]) -> Pod:
    spec, meta = _pod_spec(obj), obj.get("metadata", {})
    scaled = obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
    replicas = obj.get("spec", {}).get("replicas", 1) if scaled else 1
    return Pod(f"{meta.get('namespace')}/{obj['kind']}/{meta.get('name')}",
               tuple(Container.of(c.get("name", "?"), c.get("resources")) for c in spec.get("containers") or []),
               tuple(Container.of(c.get("name", "?"), c.get("resources")) for c in spec.get("initContainers") or []),
               replicas, batch=obj["kind"] in BATCH)


def pods_of(plan: Plan) -> list[Pod]:
    """Every pod the plan runs: its workload objects, its Helm releases and its served models."""
    releases = plan.of_type("kubernetes:helm.sh/v3:Release")
    pods = [pod for release in releases for pod in release_pods(release["inputs"])]
    pods += [_object_pod(obj) for obj in plan.kubernetes_objects if obj.get("kind") in RUNNING | BATCH]
    pods += [cnpg_cluster_pod(obj) for obj in plan.kubernetes_objects
             if obj.get("kind") == "Cluster" and obj.get("apiVersion", "").startswith("postgresql.cnpg.io/")]
    pods += [pod for obj in plan.kubernetes_objects if obj.get("kind") == "InferenceService"
             for pod in inference_service_pods(obj)]
    models = [obj for obj in plan.kubernetes_objects if obj.get("kind") == "SeldonDeployment"]
    if models:
        seldon = [r for r in releases if str(r["inputs"].get("chart", "")).endswith("seldon-core-operator")]
        if not seldon:
            raise ValueError("SeldonDeployments in the plan but no seldon-core-operator release: nothing serves them")
        executor, initializer = seldon_operator_containers(seldon[0]["inputs"].get("values") or {})
        pods += [pod for obj in models for pod in seldon_deployment_pods(obj, executor, initializer)]
    return pods


def requests_of(plan: Plan) -> tuple[dict[str, int], dict[str, int]]:
    """(sum over running pods, peak of batch pods), each as {"cpu_m", "memory_mib"}."""
    cpu = mem = peak_cpu = peak_mem = 0
    for pod in pods_of(plan):
        pcpu, pmem = pod.requests()
        if pod.batch:
            peak_cpu, peak_mem = max(peak_cpu, pcpu), max(peak_mem, pmem)
        else:
            cpu, mem = cpu + pod.replicas * pcpu, mem + pod.replicas * pmem
    return {"cpu_m": cpu, "memory_mib": mem}, {"cpu_m": peak_cpu, "memory_mib": peak_mem}
