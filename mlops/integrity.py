"""Plan integrity: what a real cluster would refuse or never finish, checked on the offline plan.

The OpenAPI schema sees one object at a time; these rules look across objects, as the API server,
Helm and the kubelet do when the plan is applied:
- every namespaced object and every Helm release lands in a namespace that exists (the plan makes
  it, the release is told to create it, or Kubernetes has it built in);
- every custom resource's kind comes from a CRD that a release or object of the plan installs, and
  the resource waits for it (its dependencies reach that release);
- every Secret, ConfigMap, ServiceAccount, PVC and StorageClass a pod names exists, with the keys
  it reads; every image is pinned and can be pulled by this cluster;
- whatever claims a volume of a StorageClass the plan makes (a PVC, a StatefulSet, a release whose
  values carry a claim template; the plan's default class where none is named) waits for that
  class: its dependencies, or those of its provider, reach it;
- no awaited release waits for something the platform never provides (a LoadBalancer address on
  a cluster without a load-balancer provisioner).
Each error names the object, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlops.plan import Plan
from modules.platform.contract import ClusterFacts

RELEASE = "kubernetes:helm.sh/v3:Release"
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass", "CustomResourceDefinition",
    "PersistentVolume", "ClusterIssuer", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "PriorityClass", "IngressClass", "RuntimeClass", "APIService",
})
# API groups every cluster serves; a kind from any other group needs its CRD.
BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io", "networking.k8s.io",
    "storage.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io", "certificates.k8s.io", "events.k8s.io",
    "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io",
})
# Which chart installs which API groups' CRDs (read in each pinned chart's crds/ or templates/).
CHART_CRD_GROUPS: dict[str, frozenset[str]] = {
    "seldon-core-operator": frozenset({"machinelearning.seldon.io"}),         # crd.create (default true)
    "base": frozenset({"networking.istio.io", "security.istio.io", "telemetry.istio.io",
                       "extensions.istio.io"}),                                 # istio/base
    "kube-prometheus-stack": frozenset({"monitoring.coreos.com"}),             # charts/crds
    "cert-manager": frozenset({"cert-manager.io", "acme.cert-manager.io"}),    # crds.enabled: true
    "gha-runner-scale-set-controller": frozenset({"actions.github.com"}),
    "cloudnative-pg": frozenset({"postgresql.cnpg.io"}),                      # crds.create (default true)
    "kserve-crd": frozenset({"serving.kserve.io"}),                            # templates/ (kserve v0.20.0)
}
# Charts that template custom resources of another chart's CRDs (so must wait for that release).
CHART_USES_GROUPS: dict[str, frozenset[str]] = {
    "gha-runner-scale-set": frozenset({"actions.github.com"}),
    # its webhook Certificate and Issuer, and the default ClusterStorageContainer (kserve v0.20.0)
    "kserve-resources": frozenset({"cert-manager.io", "serving.kserve.io"}),
}
# Where a chart's values set the type of a Service the release waits for (Helm: a LoadBalancer
# is ready only once it has an ingress address).
CHART_SERVICE_TYPE: dict[str, tuple[str, ...]] = {"gateway": ("service", "type")}
LOCAL_PREFIX = "mlops-stack/"  # repositories of the project's images as `make up` loads them into minikube
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"})


@dataclass
class _Index:
    namespaces: set[str] = field(default_factory=set)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, ns, name)
    storage_classes: set[str] = field(default_factory=set)
    storage_class_urns: dict[str, str] = field(default_factory=dict)  # classes the plan makes -> URN
    default_class: str | None = None  # the plan's class annotated as the cluster default
    crd_groups: dict[str, str] = field(default_factory=dict)  # API group -> URN of what installs it
    built_images: set[str] = field(default_factory=set)


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def _chart_name(inputs: dict[str, Any]) -> str:
    """The chart's name, also when it is given as an OCI reference (oci://host/path/<name>)."""
    return str(inputs.get("chart", "")).rsplit("/", 1)[-1]


def _label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def _index(plan: Plan) -> _Index:
    index = _Index()
    for resource in plan.resources:
        obj = resource.get("manifest")
        if obj is not None:
            meta = obj.get("metadata") or {}
            index.objects[(obj["kind"], meta.get("namespace", ""), meta.get("name", ""))] = obj
            if obj["kind"] == "Namespace":
                index.namespaces.add(meta["name"])
            elif obj["kind"] == "StorageClass":
                index.storage_classes.add(meta["name"])
                index.storage_class_urns[meta["name"]] = resource["urn"]
                if (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                    index.default_class = meta["name"]
            elif obj["kind"] == "CustomResourceDefinition":
                index.crd_groups[obj["spec"]["group"]] = resource["urn"]
        elif resource["type"] == RELEASE:
            inputs = resource["inputs"]
            if inputs.get("createNamespace"):
                index.namespaces.add(inputs.get("namespace", "default"))
            for group in CHART_CRD_GROUPS.get(_chart_name(inputs), ()):
                index.crd_groups[group] = resource["urn"]
        elif resource["type"] == "docker-build:index:Image":
            index.built_images.update(str(t).rsplit(":", 1)[0] for t in resource["inputs"].get("tags", []))
    return index


def _closure(plan: Plan) -> dict[str, set[str]]:
    """URN -> every URN it waits for, transitively (a resource waits for its provider too)."""
    direct = {r["urn"]: set(r.get("depends_on") or ()) | ({r["provider"]} if r.get("provider") else set())
              for r in plan.resources}
    done: dict[str, set[str]] = {}

    def reach(urn: str, stack: set[str]) -> set[str]:
        if urn in done:
            return done[urn]
        found: set[str] = set()
        for dep in direct.get(urn, ()):
            if dep not in stack:
                found |= {dep} | reach(dep, stack | {dep})
        done[urn] = found
        return found

    return {urn: reach(urn, {urn}) for urn in direct}


def _pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, pod spec) of every pod template an object carries."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        yield "spec", spec
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template.spec", spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}).get("spec", {})
    elif kind in POD_KINDS:
        yield "spec.template.spec", spec.get("template", {}).get("spec", {})
    elif kind == "SeldonDeployment":
        for i, predictor in enumerate(spec.get("predictors") or []):
            for j, component in enumerate(predictor.get("componentSpecs") or []):
                yield f"spec.predictors[{i}].componentSpecs[{j}].spec", component.get("spec") or {}
    elif kind == "InferenceService":  # the predictor is a PodSpec; `model` is its main container
        predictor = dict(spec.get("predictor") or {})
        if predictor.get("model") is not None:
            predictor["containers"] = [*(predictor.get("containers") or []), predictor["model"]]
        yield "spec.predictor", predictor
    elif kind == "ServingRuntime":
        yield "spec", spec


def _secret_keys(obj: dict[str, Any]) -> set[str]:
    return set(obj.get("stringData") or {}) | set(obj.get("data") or {})


class _Checker:
    def __init__(self, plan: Plan, facts: ClusterFacts):
        self.plan, self.facts = plan, facts
        self.index = _index(plan)
        self.closure = _closure(plan)
        self.errors: list[str] = []

    def run(self) -> list[str]:
        for resource in self.plan.resources:
            obj = resource.get("manifest")
            if obj is not None:
                self._namespace(obj)
                self._custom_resource(resource, obj)
                for path, pod in _pod_specs(obj):
                    self._pod(obj, path, pod)
                self._claims(obj, resource["urn"])
            elif resource["type"] == RELEASE:
                self._release(resource)
        return self.errors

    def _namespace(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") in CLUSTER_SCOPED:
            return
        namespace = (obj.get("metadata") or {}).get("namespace")
        if not namespace:
            self.errors.append(f"{_label(obj)}: metadata.namespace is unset, so it lands in 'default'; "
                               "set the namespace it belongs to")
        elif namespace not in self.index.namespaces | BUILTIN_NAMESPACES:
            self.errors.append(f"{_label(obj)}: metadata.namespace {namespace!r} is created by nothing in "
                               "the plan; declare a Namespace for it")

    def _custom_resource(self, resource: dict[str, Any], obj: dict[str, Any]) -> None:
        group = _group(obj.get("apiVersion", ""))
        if group in BUILTIN_GROUPS:
            return
        installer = self.index.crd_groups.get(group)
        if installer is None:
            self.errors.append(f"{_label(obj)}: no release or CRD in the plan installs {group} "
                               f"({obj.get('apiVersion')}); install the operator that owns it")
        elif installer not in self.closure[resource["urn"]]:
            self.errors.append(f"{_label(obj)}: does not depend on {installer.rsplit('::', 1)[-1]}, which "
                               f"installs the {group} CRDs; add it to depends_on")

    def _release(self, resource: dict[str, Any]) -> None:
        inputs = resource["inputs"]
        name, chart = inputs.get("name", resource["name"]), inputs.get("chart", "")
        namespace = inputs.get("namespace") or "default"
        where = f"Helm release {name} (chart {chart})"
        if namespace not in self.index.namespaces | BUILTIN_NAMESPACES:
            self.errors.append(f"{where}: namespace {namespace!r} exists nowhere (Helm creates none unless "
                               "createNamespace is set); declare the Namespace and make the release depend on it")
        for group in CHART_USES_GROUPS.get(_chart_name(inputs), ()):
            installer = self.index.crd_groups.get(group)
            if installer is None or installer not in self.closure[resource["urn"]]:
                self.errors.append(f"{where}: templates {group} resources but does not wait for the release "
                                   "that installs their CRDs; add it to depends_on")
        path = CHART_SERVICE_TYPE.get(chart)
        # Helm forces the wait on atomic releases (`Wait = Wait || Atomic`), whatever skipAwait says
        awaited = inputs.get("atomic") or not inputs.get("skipAwait")
        if path and awaited and not self.facts.load_balancers:
            value: Any = inputs.get("values") or {}
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value == "LoadBalancer":
                self.errors.append(f"{where}: values.{'.'.join(path)} is LoadBalancer in an awaited release, "
                                   "but this cluster has no load-balancer provisioner: Helm waits for an "
                                   "address that never comes and rolls back; use NodePort/ClusterIP "
                                   "(gateway.serviceType) or set kubernetes.loadBalancers if the cluster has one")
        for claim_path, storage_class in _value_storage_classes(inputs.get("values") or {}):
            self._storage_class(where, f"values.{claim_path}", storage_class, resource["urn"])

    def _pod(self, obj: dict[str, Any], path: str, pod: dict[str, Any]) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace", "default")
        account = pod.get("serviceAccountName")
        if account and account != "default":
            self._needs(obj, f"{path}.serviceAccountName", "ServiceAccount", namespace, account)
        for i, ref in enumerate(pod.get("imagePullSecrets") or []):
            self._needs(obj, f"{path}.imagePullSecrets[{i}]", "Secret", namespace, ref.get("name"))
        for i, volume in enumerate(pod.get("volumes") or []):
            where = f"{path}.volumes[{i}]"
            if "secret" in volume:
                self._needs(obj, where + ".secret", "Secret", namespace, volume["secret"].get("secretName"),
                            [item["key"] for item in volume["secret"].get("items") or []])
            if "configMap" in volume:
                self._needs(obj, where + ".configMap", "ConfigMap", namespace, volume["configMap"].get("name"),
                            [item["key"] for item in volume["configMap"].get("items") or []])
            if "persistentVolumeClaim" in volume:
                self._needs(obj, where + ".persistentVolumeClaim", "PersistentVolumeClaim", namespace,
                            volume["persistentVolumeClaim"].get("claimName"))
        for group in ("initContainers", "containers"):
            for i, container in enumerate(pod.get(group) or []):
                self._container(obj, f"{path}.{group}[{i}]", container, namespace)
        if obj.get("kind") == "SeldonDeployment":
            for i, predictor in enumerate(obj["spec"].get("predictors") or []):
                secret = (predictor.get("graph") or {}).get("envSecretRefName")
                if secret:
                    self._needs(obj, f"spec.predictors[{i}].graph.envSecretRefName", "Secret", namespace, secret)

    def _container(self, obj: dict[str, Any], path: str, container: dict[str, Any], namespace: str) -> None:
        for i, env in enumerate(container.get("env") or []):
            source = env.get("valueFrom") or {}
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if key in source and not source[key].get("optional"):
                    self._needs(obj, f"{path}.env[{i}].valueFrom.{key}", kind, namespace,
                                source[key].get("name"), [source[key].get("key")])
        for i, env_from in enumerate(container.get("envFrom") or []):
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if key in env_from and not env_from[key].get("optional"):
                    self._needs(obj, f"{path}.envFrom[{i}].{key}", kind, namespace, env_from[key].get("name"))
        image = container.get("image")
        if image:
            self._image(obj, f"{path}.image", image)

    def _image(self, obj: dict[str, Any], path: str, image: str) -> None:
        repository, _, digest = image.partition("@")
        last = repository.rsplit("/", 1)[-1]
        if ":" in last:
            repository, _, tag = repository.rpartition(":")
        else:
            tag = ""
        if not digest and tag in ("", "latest"):
            self.errors.append(f"{_label(obj)}: {path} {image!r} is not pinned; give a version tag or a digest")
        if repository.startswith(LOCAL_PREFIX) and repository not in (
                self.facts.local_images | self.index.built_images):
            self.errors.append(f"{_label(obj)}: {path} {image!r} is built by this project and exists only where "
                               "`make up` loads it; on this cluster build and push it (images.registry) or "
                               "name a pullable image with its digest")

    def _claims(self, obj: dict[str, Any], urn: str) -> None:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "PersistentVolumeClaim":
            self._storage_class(_label(obj), "spec.storageClassName", spec.get("storageClassName"), urn)
        for i, template in enumerate(spec.get("volumeClaimTemplates") or []):
            self._storage_class(_label(obj), f"spec.volumeClaimTemplates[{i}].spec.storageClassName",
                                (template.get("spec") or {}).get("storageClassName"), urn)

    def _storage_class(self, where: str, path: str, storage_class: str | None, claimant: str) -> None:
        if storage_class is None and not self.facts.default_storage_class and self.index.default_class is None:
            self.errors.append(f"{where}: {path} is unset and this cluster has no default StorageClass; "
                               "set kubernetes.storageClass")
            return
        if storage_class is not None and storage_class not in self.index.storage_classes | self.facts.storage_classes:
            self.errors.append(f"{where}: {path} {storage_class!r} is neither made by the plan nor known to "
                               "exist on this platform; set kubernetes.storageClass to one the cluster has")
            return
        made = self.index.storage_class_urns.get(storage_class or self.index.default_class or "")
        if storage_class is None and self.facts.default_storage_class:
            made = None  # the cluster's own default class takes it, which exists before the plan runs
        if made is not None and made not in self.closure[claimant]:
            self.errors.append(f"{where}: {path} claims a volume of StorageClass {storage_class or '(default)'} "
                               f"that the plan makes ({made.rsplit('::', 1)[-1]}), but does not wait for it: "
                               "the claim would stay Pending or take another class; add the StorageClass to "
                               "depends_on (or to its provider's)")

    def _needs(self, obj: dict[str, Any], path: str, kind: str, namespace: str, name: str | None,
               keys: list[str | None] = ()) -> None:
        target = self.index.objects.get((kind, namespace, name or ""))
        if target is None:
            self.errors.append(f"{_label(obj)}: {path} names {kind} {namespace}/{name}, which the plan does "
                               f"not create; declare it (or fix the name)")
            return
        if kind in ("Secret", "ConfigMap"):
            present = _secret_keys(target) if kind == "Secret" else set(target.get("data") or {})
            for key in keys:
                if key is not None and key not in present:
                    self.errors.append(f"{_label(obj)}: {path} reads key {key!r} of {kind} {namespace}/{name}, "
                                       f"which has only {sorted(present)}")


def _value_storage_classes(values: Any, path: str = "") -> Iterator[tuple[str, str | None]]:
    """storageClassName of every volume claim template in Helm values (e.g. Prometheus storageSpec)."""
    if isinstance(values, dict):
        for key, child in values.items():
            here = f"{path}.{key}" if path else key
            if key == "volumeClaimTemplate" and isinstance(child, dict):
                yield here + ".spec.storageClassName", (child.get("spec") or {}).get("storageClassName")
            else:
                yield from _value_storage_classes(child, here)


def check_integrity(plan: Plan, facts: ClusterFacts) -> list[str]:
    """Every cross-object problem of the plan on a cluster with these facts; [] when it would apply."""
    return _Checker(plan, facts).run()
