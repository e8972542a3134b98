"""`tenants` and `tenantDefaults`: one namespace, quota, policy set, CI access and MLflow identity per
student or team (modules/tenants).

A class of 60 stays readable because every tenant only states who it is (members, repositories)
and what it serves; sizes come from the one `tenantDefaults` block, so all models run under the
same limits. `tenants.fromFile` reads tenants from a YAML file (path relative to the project),
validated the same way; its errors name the file and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from infra.config.base import _CPU, _MEMORY, DNS_LABEL, Model, Resources, cpu_millicores, memory_mib
from infra.config.serving import ServedModelConfig, dns_model_names

ROOT = Path(__file__).resolve().parents[2]  # the project (Pulumi.yaml); `fromFile` is relative to it
FROM_FILE = "fromFile"
GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}/[A-Za-z0-9._-]{1,100}$")
# namespaces a tenant may not take: Kubernetes' own and those of the charts the platform installs
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease", "istio-system",
                               "seldon-system", "kserve", "cert-manager", "cnpg-system", "arc-systems", "arc-runners"})
MAX_TENANT = 40  # keeps `<prefix>-t-<tenant>` (IAM role, at most 64) and the MLflow logins short


def registered_model(tenant: str, model: str) -> str:
    """The registry name a tenant's model lives under: '.' never occurs in a tenant or model name (DNS
    labels), so no two tenants can own the same name."""
    return f"{tenant}.{model}"


def experiment(tenant: str, model: str) -> str:
    return f"{tenant}/{model}"


def _quantity(pattern: re.Pattern[str], example: str, v: str) -> str:
    if not pattern.match(v):
        raise ValueError(f"a quantity such as {example!r} is allowed")
    return v


class TenantQuota(Model):
    """The tenant namespace's ResourceQuota: requests and limits of all its pods together. The
    defaults fit 3 models × (model 100m/512Mi, limits 500m/1Gi + Seldon's executor 100m/128Mi,
    limits 500m/512Mi); a tenant's unset keys are those of `tenantDefaults.quota`."""

    cpu: str = Field(default="1", description="sum of CPU requests")
    memory: str = Field(default="2Gi", description="sum of memory requests")
    cpu_limit: str = Field(default="3", description="sum of CPU limits")
    memory_limit: str = Field(default="5Gi", description="sum of memory limits")
    pods: int = Field(default=6, ge=1, le=1000, description="pods (replicas × predictors of its models)")
    models: int = Field(default=3, ge=0, le=100, description="served models (SeldonDeployments)")

    @field_validator("cpu", "cpu_limit")
    @classmethod
    def _cpu(cls, v: str) -> str:
        return _quantity(_CPU, "500m", v)

    @field_validator("memory", "memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        return _quantity(_MEMORY, "2Gi", v)


class ContainerMax(Model):
    cpu: str = Field(default="1", description="most CPU limit a tenant container may state")
    memory: str = Field(default="1Gi", description="most memory limit a tenant container may state")

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        return _quantity(_CPU, "1", v)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        return _quantity(_MEMORY, "1Gi", v)


class TenantLimits(Model):
    """The LimitRange of every tenant namespace: what a container gets when it states nothing, and
    the most it may state. Model pods state the model's resources, so all models get the same."""

    default: Resources = Field(default=Resources(cpu="100m", memory="512Mi", cpu_limit="500m", memory_limit="1Gi"),
                               description="a container's requests and limits when it states none; also "
                                           "every tenant model's resources unless tenantDefaults.model says others")
    max: ContainerMax = ContainerMax()

    @model_validator(mode="after")
    def _default_within_max(self) -> TenantLimits:
        if self.default.cpu_limit is None:
            raise ValueError("default.cpuLimit is required: every tenant container runs with a CPU limit")
        if (cpu_millicores(self.default.cpu_limit) > cpu_millicores(self.max.cpu)
                or memory_mib(self.default.memory_limit) > memory_mib(self.max.memory)):
            raise ValueError(f"default limits ({self.default.cpu_limit}, {self.default.memory_limit}) exceed max "
                             f"({self.max.cpu}, {self.max.memory})")
        return self


CpuQuantity = Annotated[str, AfterValidator(lambda v: _quantity(_CPU, "25m", v))]
MemoryQuantity = Annotated[str, AfterValidator(lambda v: _quantity(_MEMORY, "32Mi", v))]


class PerModel(Model):
    """What each model adds to a shared server's requests (and memory limit)."""

    cpu: CpuQuantity = Field(default="25m", description="CPU request per hosted model")
    memory: MemoryQuantity = Field(default="32Mi", description="memory request per hosted model")
    memory_limit: MemoryQuantity = Field(default="128Mi", description="memory limit per hosted model")


SHARED_SERVER = re.compile(r"^models-\d+$")  # the shared servers' names (and URL paths); no model may take one


class TenantServing(Model):
    """How a tenant's models run (docs/decisions/0020-multi-model-serving.md). `dedicated`: one pod
    per model, its own limits. `shared`: up to `modelsPerServer` models in one MLServer process (no
    Seldon executor), each on its own route; one model's crash or memory takes its server's other
    models with it, and they share its CPU. Defaults from benchmarks/results/density.json: one
    MLServer with one small model is ~290 MiB RSS (~220 MiB PSS) and each further small model adds
    ~1 MiB; the per-model allowance leaves room for bigger student models. One CPU limit: the server
    answers in one process (MLSERVER_PARALLEL_WORKERS=0), so more would never be used."""

    mode: Literal["dedicated", "shared"] = Field(default="dedicated", description="dedicated: a SeldonDeployment "
                                                 "per model; shared: models-per-server in one MLServer")
    models_per_server: int = Field(default=3, ge=1, le=60, description="shared: models in one server process")
    server: Resources = Field(default=Resources(cpu="100m", memory="320Mi", cpu_limit="1", memory_limit="512Mi"),
                              description="shared: the server's own requests and limits, models excluded")
    per_model: PerModel = Field(default=PerModel(), description="shared: added to the server's per hosted model")

    def servers(self, models: list[str]) -> list[tuple[str, list[str]]]:
        """(server name, its models) in declaration order: `models-0` holds the first N, and so on."""
        n = self.models_per_server
        return [(f"models-{i // n}", models[i:i + n]) for i in range(0, len(models), n)]

    def server_resources(self, models: int) -> Resources:
        s, m = self.server, self.per_model
        return Resources(cpu=f"{cpu_millicores(s.cpu) + models * cpu_millicores(m.cpu)}m",
                         memory=f"{memory_mib(s.memory) + models * memory_mib(m.memory)}Mi",
                         cpu_limit=s.cpu_limit,
                         memory_limit=f"{memory_mib(s.memory_limit) + models * memory_mib(m.memory_limit)}Mi")

    @model_validator(mode="after")
    def _cpu_limit(self) -> TenantServing:
        if self.server.cpu_limit is None:
            raise ValueError("server.cpuLimit is required: every tenant container runs with a CPU limit")
        return self


class TenantDefaults(Model):
    """`tenantDefaults`: what every tenant gets unless it says otherwise (quota) or never may change
    (limits, pod security: the same conditions for all)."""

    pod_security: Literal["baseline", "restricted"] = Field(
        default="baseline", description="Pod Security Standard enforced (Seldon's model pods meet baseline)")
    quota: TenantQuota = TenantQuota()
    limits: TenantLimits = TenantLimits()
    deploy_ref: str = Field(default="refs/heads/main", pattern=r"^refs/(heads|tags)/[\w./-]+$",
                            description="gke/eks: the only ref of a tenant repository whose jobs get its identity")
    serving: TenantServing = TenantServing()
    model: dict[str, Any] = Field(default_factory=dict, description="defaults of each tenant model (the keys of "
                                  "serving.models.<name>); resources default to limits.default")

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, data: Any) -> Any:
        """A stack sets only the keys it changes (e.g. quota.pods); the rest stay the defaults."""
        if not isinstance(data, dict):
            return data
        base = {"quota": TenantQuota().model_dump(by_alias=True), "limits": TenantLimits().model_dump(by_alias=True),
                "serving": TenantServing().model_dump(by_alias=True)}
        return _merge(base, data)


class TenantContext(Model):
    """What a tenant is checked against, filled in by `parse_tenants` (never written in a stack file)."""

    name: str
    reserved: tuple[str, ...]  # namespaces of the platform and the charts it installs
    limits: TenantLimits
    sidecar: Resources | None = None  # what the engine adds to each model pod (Seldon's executor)


CONTEXT = "mlops-stack/context"


class TenantConfig(Model):
    members: list[str] = Field(default_factory=list, description="GitHub users of the tenant")
    repositories: list[str] = Field(default_factory=list, description="owner/repo allowed to publish models (a "
                                    "keyless identity on gke/eks; `tenants.fromFile`: a YAML file of tenants)")
    quota: TenantQuota = TenantQuota()
    serving: TenantServing = Field(default=TenantServing(), description="dedicated or shared model servers "
                                   "(unset keys: tenantDefaults.serving)")
    models: dict[str, ServedModelConfig] = Field(default_factory=dict)
    context: TenantContext = Field(alias=CONTEXT, exclude=True)

    @field_validator("members")
    @classmethod
    def _members(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if not GITHUB_USER.match(m)]
        if bad:
            raise ValueError(f"members {bad}: GitHub user names are allowed (letters, digits, single '-')")
        return v

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if not REPOSITORY.match(r)]
        if bad:
            raise ValueError(f"repositories {bad}: 'owner/repo' GitHub repositories are allowed")
        if len(set(v)) != len(v):
            raise ValueError(f"repositories {v}: each repository once")
        return v

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ServedModelConfig]) -> dict[str, ServedModelConfig]:
        return dns_model_names(v)

    @model_validator(mode="after")
    def _fits(self) -> TenantConfig:
        problems = _name_problems(self.context) + [p for m, spec in self.models.items()
                                                   for p in _model_problems(self.context, m, spec)]
        problems += _shared_problems(self) + _quota_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def name(self) -> str:
        return self.context.name

    def pods(self) -> list[tuple[str, ServedModelConfig, int]]:
        """(model, its config, most pods it may run): replicas (or maxReplicas) × predictors."""
        return [(m, spec, (spec.autoscaling.max_replicas if spec.autoscaling else spec.replicas)
                 * (2 if spec.candidate else 1)) for m, spec in self.models.items()]

    def containers(self) -> list[tuple[Resources, int]]:
        """(resources, most pods) of every serving container: each model's and the engine sidecar's
        (dedicated), or each shared server's (one pod, no sidecar)."""
        if self.serving.mode == "shared":
            return [(self.serving.server_resources(len(models)), 1) for _, models in self.serving.servers(
                list(self.models))]
        pods = self.pods()
        return [(spec.resources, n) for _, spec, n in pods] + (
            [(self.context.sidecar, n) for _, _, n in pods] if self.context.sidecar else [])


def _name_problems(c: TenantContext) -> list[str]:
    if not DNS_LABEL.match(c.name) or len(c.name) > MAX_TENANT:
        return [f"tenant name {c.name!r}: a DNS label of at most {MAX_TENANT} characters is allowed (it names the "
                "namespace and the endpoints /seldon/<tenant>/<model>)"]
    if c.name in c.reserved:
        return [f"tenant name {c.name!r} is a namespace of the platform or its charts: pick another name"]
    return []


def _model_problems(c: TenantContext, model: str, spec: ServedModelConfig) -> list[str]:
    where, problems = f"models.{model}", []
    for role, source in (("source", spec.source), ("candidate", spec.candidate)):
        if source is None:
            continue
        if source.uri is not None:
            problems.append(f"{where}.{role}.uri: tenant models are served by alias (or image); a pinned uri needs "
                            "bucket keys that read every tenant's artifacts")
        if source.model is not None and not source.model.startswith(f"{c.name}."):
            problems.append(f"{where}.{role}.model {source.model!r}: a tenant serves only registered models named "
                            f"'{c.name}.<model>' (its MLflow login may write those only); leave model unset for "
                            f"{registered_model(c.name, model)!r}")
    if spec.monitoring.sample_rate > 0:
        problems.append(f"{where}.monitoring.sampleRate {spec.monitoring.sample_rate}: tenant models do not sample "
                        "(the request sample, drift and feedback jobs are wired for serving.models only: each tenant "
                        "namespace would need a writer identity of its own); leave monitoring unset")
    r = spec.resources
    if r.cpu_limit is None:
        problems.append(f"{where}.resources.cpuLimit: required for tenant models (the same CPU for every model)")
    for container, res in (("model", r), ("engine sidecar", c.sidecar)):
        if res is None or res.cpu_limit is None:
            continue
        if (cpu_millicores(res.cpu_limit) > cpu_millicores(c.limits.max.cpu)
                or memory_mib(res.memory_limit) > memory_mib(c.limits.max.memory)):
            problems.append(f"{where}: the {container} container's limits ({res.cpu_limit}, {res.memory_limit}) "
                            f"exceed tenantDefaults.limits.max ({c.limits.max.cpu}, {c.limits.max.memory}); the "
                            "LimitRange would reject the pod")
    return problems


def _shared_problems(t: TenantConfig) -> list[str]:
    """A shared server hosts alias models only, one replica each, no candidate (its traffic split
    needs a pod of its own), and fits the LimitRange's maximum."""
    if t.serving.mode != "shared":
        return []
    problems = []
    for model, spec in t.models.items():
        where = f"models.{model}"
        if SHARED_SERVER.match(model):
            problems.append(f"{where}: the name is a shared server's (models-<n>); rename the model")
        if spec.source.kind != "alias":
            problems.append(f"{where}.source: a shared server serves registry aliases only; serve it with "
                            "serving.mode dedicated")
        if spec.candidate is not None or spec.replicas != 1 or spec.autoscaling is not None:
            problems.append(f"{where}: candidate, replicas and autoscaling need a pod per model; use serving.mode "
                            "dedicated for this tenant")
    biggest = max((len(models) for _, models in t.serving.servers(list(t.models))), default=0)
    r, top = t.serving.server_resources(biggest), t.context.limits.max
    if cpu_millicores(r.cpu_limit) > cpu_millicores(top.cpu) or memory_mib(r.memory_limit) > memory_mib(top.memory):
        problems.append(f"serving: a server of {biggest} models has limits ({r.cpu_limit}, {r.memory_limit}) above "
                        f"tenantDefaults.limits.max ({top.cpu}, {top.memory}); lower serving.modelsPerServer or "
                        "serving.perModel.memoryLimit, or raise limits.max")
    return problems


def _quota_problems(t: TenantConfig) -> list[str]:
    """The quota must admit every model at its most pods: otherwise the API server refuses pods
    (quota exceeded) long after `pulumi up` reported success."""
    q, pods = t.quota, t.pods()
    problems = []
    if len(t.models) > q.models:
        problems.append(f"quota.models {q.models} is below the {len(t.models)} models declared: raise quota.models "
                        "(here or in tenantDefaults.quota) or serve fewer")
    need_pods = len(t.serving.servers(list(t.models))) if t.serving.mode == "shared" else sum(n for _, _, n in pods)
    if need_pods > q.pods:
        problems.append(f"quota.pods {q.pods} is below the {need_pods} pods the models may run (replicas × "
                        "predictors): raise quota.pods")
    containers = t.containers()
    sums = {
        "cpu": (sum(cpu_millicores(r.cpu) * n for r, n in containers), cpu_millicores(q.cpu), "m"),
        "memory": (sum(memory_mib(r.memory) * n for r, n in containers), memory_mib(q.memory), "Mi"),
        "cpuLimit": (sum(cpu_millicores(r.cpu_limit or r.cpu) * n for r, n in containers),
                     cpu_millicores(q.cpu_limit), "m"),
        "memoryLimit": (sum(memory_mib(r.memory_limit) * n for r, n in containers), memory_mib(q.memory_limit), "Mi"),
    }
    for key, (need, have, unit) in sums.items():
        if need > have:
            problems.append(f"quota.{key} {getattr(q, _SNAKE[key])} is below what the models need at their limits × "
                            f"pods ({need}{unit}, engine sidecar included): raise quota.{key} or lower the models' "
                            "resources")
    return problems


_SNAKE = {"cpu": "cpu", "memory": "memory", "cpuLimit": "cpu_limit", "memoryLimit": "memory_limit"}


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in override.items()}}
    return override


def _tenant_raw(name: str, raw: Any, defaults: TenantDefaults, context: dict[str, Any]) -> Any:
    """A tenant's keys over the defaults: its quota over `tenantDefaults.quota`, each model over
    `tenantDefaults.model` (resources: `limits.default`), a model's registry name from the tenant."""
    if not isinstance(raw, dict):
        return raw
    quota = _merge(defaults.quota.model_dump(by_alias=True), raw.get("quota") or {})
    serving = _merge(defaults.serving.model_dump(by_alias=True, exclude_none=True), raw.get("serving") or {})
    model_base = _merge({"resources": defaults.limits.default.model_dump(by_alias=True, exclude_none=True)},
                        defaults.model)
    models = {}
    for model, spec in (raw.get("models") or {}).items():
        merged = _merge(model_base, spec) if isinstance(spec, dict) else spec
        source = merged.get("source") if isinstance(merged, dict) else None
        if isinstance(source, dict) and "alias" in source and "model" not in source:
            merged = {**merged, "source": {**source, "model": registered_model(name, str(model))}}
        models[model] = merged
    return {**raw, "quota": quota, "serving": serving, "models": models, CONTEXT: {**context, "name": name}}


class _UniqueKeys(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # libyaml: 5× faster
    """YAML's safe loader keeps the last of two equal keys; a class list must not lose a student."""


def _mapping(loader: _UniqueKeys, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"line {node.start_mark.line + 1}: keys {duplicates} appear twice; declare each once")
    return loader.construct_mapping(node)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _load_file(path: str) -> dict[str, Any]:
    file = ROOT / path
    if not file.is_file():
        raise ValueError(f"{FROM_FILE} {path!r}: no such file under {ROOT} (the path is relative to the project)")
    try:
        document = yaml.load(file.read_text(), Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    if isinstance(document, dict) and set(document) == {"tenants"}:
        document = document["tenants"]
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a mapping of tenant name -> {{members, repositories, quota, models}} is allowed")
    return document


def _errors(where: str, name: str, error: ValidationError) -> list[str]:
    """`<where>tenants.<name>.<key>: <message>` per error (`where`: the class file, if any)."""
    problems = []
    for e in error.errors():
        key = ".".join(str(p) for p in (name, *e["loc"]))
        problems.append(f"{where}tenants.{key}: {e['msg'].removeprefix('Value error, ')}")
    return problems


def _validated(where: str, name: str, raw: Any, defaults: TenantDefaults, context: dict[str, Any],
               problems: list[str]) -> TenantConfig | None:
    try:
        return TenantConfig.model_validate(_tenant_raw(name, raw, defaults, context))
    except ValidationError as error:
        problems += _errors(where, name, error)
        return None


def _context(info: ValidationInfo, defaults: TenantDefaults) -> dict[str, Any]:
    namespaces, serving = info.data.get("namespaces"), info.data.get("serving")
    reserved = SYSTEM_NAMESPACES | set(namespaces.model_dump().values() if namespaces else ())
    sidecar = serving.seldon.executor_resources if serving is not None and serving.engine == "seldon" else None
    return {"reserved": tuple(sorted(reserved)), "limits": defaults.limits.model_dump(by_alias=True),
            "sidecar": sidecar.model_dump(by_alias=True) if sidecar else None}


def parse_tenants(value: Any, info: ValidationInfo) -> Any:
    """`tenants` with `fromFile` expanded and `tenantDefaults` applied; a tenant both in the file and
    inline is an error, so a class list never silently replaces a hand-written tenant."""
    defaults = info.data.get("tenant_defaults")
    if defaults is None:
        return {}  # tenantDefaults is invalid and reported on its own; tenants cannot be checked without it
    if not isinstance(value, dict):
        return value  # pydantic reports the type
    serving = info.data.get("serving")
    if value and serving is not None and serving.engine != "seldon":
        raise ValueError(f"tenants need serving.engine seldon (the tenant Role and quota count SeldonDeployments); "
                         f"serving.engine is {serving.engine!r}")
    context, problems = _context(info, defaults), []
    inline = {str(k): v for k, v in value.items() if k != FROM_FILE}
    # validated here, not by pydantic after this returns: errors then show the tenant as written,
    # not merged with the defaults and the context
    tenants = {name: t for name, raw in inline.items()
               if (t := _validated("", name, raw, defaults, context, problems)) is not None}
    path = value.get(FROM_FILE)
    if path is not None:
        if not isinstance(path, str):
            raise ValueError(f"{FROM_FILE}: a path (string) relative to the project is allowed")
        for name, raw in _load_file(path).items():
            name = str(name)
            if name in inline:
                problems.append(f"{path}: tenant {name!r} is also declared inline under tenants; declare it once")
            elif (t := _validated(f"{path}: ", name, raw, defaults, context, problems)) is not None:
                tenants[name] = t
    problems += _shared_repositories(tenants)
    if problems:
        raise ValueError("; ".join(problems))
    return tenants


def _shared_repositories(tenants: dict[str, TenantConfig]) -> list[str]:
    """A repository publishes for one tenant: its token subject is what scopes it to a namespace."""
    owners: dict[str, list[str]] = {}
    for name, t in tenants.items():
        for repository in t.repositories:
            owners.setdefault(repository, []).append(name)
    return [f"tenants.{' and tenants.'.join(names)}: repository {repository!r} is listed by each; a repository "
            "publishes for one tenant" for repository, names in sorted(owners.items()) if len(names) > 1]


Tenants = Annotated[dict[str, TenantConfig], BeforeValidator(parse_tenants)]
