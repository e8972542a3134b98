"""Declares the whole platform for one `StackConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pydantic import SecretStr

from infra.config import ModelSourceConfig, Resources, ServedModelConfig, StackConfig
from infra.config.feedback import FEEDBACK_DIRECTORY
from infra.config.serving import MANAGED_ENGINES
from infra.config.tenants import experiment, registered_model
from infra.images import StackImages, declare_images
from infra.platforms import host_access, make_platform
from infra.workloads import declare_mnist_demo, declare_workloads, retraining_alerting
from modules import kube
from modules.ci.github import GithubOidc
from modules.ci.rbac import ModelDeployerAccess
from modules.ci.runners import BuilderArgs, GithubRunners, RunnersArgs
from modules.gateway import IstioGateway, IstioGatewayArgs, Route, Tls, public_url
from modules.gateway.auth import JwtPolicy, Sso
from modules.mlflow import PORT as MLFLOW_PORT
from modules.mlflow import Mlflow, MlflowArgs
from modules.mlflow.users import MlflowPermission, MlflowUser, MlflowUsers, MlflowUsersArgs
from modules.monitoring import Monitoring, MonitoringArgs, ScrapeTarget
from modules.namespaces import Namespaces, NamespacesArgs
from modules.platform.contract import BucketAccess, ObjectStore, Platform
from modules.serving.contract import (
    Autoscaling,
    CustomImage,
    ModelDeploymentArgs,
    ModelSource,
    InferenceLog,
    RegistryAccess,
    RegistryAlias,
    RegistryModel,
    ServingEngine,
    SharedServerArgs,
)
from modules.serving.density import shared_in_cluster_url
from modules.serving.kserve import KServe, KServeArgs
from modules.serving.seldon import SeldonCore, SeldonCoreArgs
from modules.evaluation import Evaluation, EvaluationArgs, evaluation_mlflow_user, in_cluster_url
from modules.monitoring.delivery import Delivery, DeliveryArgs, delivery_mlflow_user
from modules.monitoring.drift import Drift, DriftArgs, drift_mlflow_user
from modules.monitoring.feedback import Feedback, FeedbackArgs
from modules.monitoring.pushgateway import Pushgateway, PushgatewayArgs
from modules.tenants import READER_SECRET as TENANT_READER_SECRET
from modules.tenants import TenantSpec, Tenants, TenantsArgs, quota_hard, tenant_mlflow_users

MODEL_SERVER_ACCOUNT = "model-server"
# the read-only MLflow user alias models log in as (keys username, password, in the serving namespace)
MODEL_READER_SECRET = "mlflow-model-reader"
SELDON_NAMESPACE = "seldon-system"
KSERVE_NAMESPACE = "kserve"
CI_MLFLOW_USER = "ci-models"  # the model pipeline's MLflow login (Secret CI_MLFLOW_SECRET in MLflow's namespace)
CI_MLFLOW_SECRET = "mlflow-ci-models"
# workload -> (experiment, registered model) its training writes (EXPERIMENT, MODEL_NAME in workloads/*/train.py)
CI_MLFLOW_RESOURCES = {"energy": ("energy-forecast", "energy-forecast"), "neo": ("Hazardous_NEOs", "NEOs"),
                       "mnist": ("mnist", "mnist")}
# the users reconcile Job (python + requests, a few REST calls): measured peak RSS in tests/test_mlflow_users.py
MLFLOW_USERS_RESOURCES = Resources(cpu="50m", memory="64Mi", memory_limit="128Mi")
# the request sample of models with monitoring.sampleRate > 0 (docs/decisions/0017-drift-monitoring.md):
# a prefix of the artifacts bucket, written by the model servers, read and pruned by the drift jobs
INFERENCE_LOG_PREFIX = "inference-log"
INFERENCE_LOG_WRITER, DRIFT_CLIENT = "inference-log-writer", "drift"
LABEL_SOURCE = "labels-{}"  # a model's label source (docs/decisions/0018): writes its labels, reads no sample


def declare(config: StackConfig) -> None:
    platform = make_platform(config)
    cluster = platform.cluster()
    images = declare_images(config, platform)
    k8s_opts = pulumi.ResourceOptions(providers=[cluster.provider])
    ns = config.namespaces
    namespaces = Namespaces(
        "namespaces",
        NamespacesArgs({
            "platform": (ns.platform, "restricted"),
            "mlflow": (ns.mlflow, "restricted"),
            "serving": (ns.serving, "baseline"),
            # the engine's release namespace: Helm creates none, and the charts have no template for it
            **({"kserve": (KSERVE_NAMESPACE, "restricted")} if config.serving.engine == "kserve"
               else {"seldon": (SELDON_NAMESPACE, "restricted")} if config.serving.engine == "seldon" else {}),
            # node-exporter reads the host; without it (Autopilot) the chart's pods meet baseline
            "monitoring": (ns.monitoring, "privileged" if host_access(config) else "baseline"),
            **({"workloads": (ns.workloads, "restricted")} if config.workloads.any_enabled else {}),
        }),
        opts=k8s_opts,
    )
    tenants = _tenants(config, platform, namespaces, k8s_opts)
    mlflow_access = BucketAccess(
        client="mlflow", namespace=namespaces.names["mlflow"], service_account="mlflow",
        buckets=["artifacts"],
    )
    # in-cluster model servers' identity; managed endpoints read the bucket with a role of their own
    serving_access = None if config.serving.engine in MANAGED_ENGINES else BucketAccess(
        client="model-server", namespace=namespaces.names["serving"], service_account=MODEL_SERVER_ACCOUNT,
        buckets=["artifacts"], write=False,
    )
    sampled = _sampled_models(config)
    database, object_store = platform.data_services(
        cluster, namespaces.names["platform"],
        [mlflow_access, *([serving_access] if serving_access else []),
         *_inference_log_clients(config, namespaces, sampled)],
    )

    admin_password = _secret_or_generated("mlflow-admin-password", config.mlflow.admin_password, config.protected)
    mlflow = Mlflow(
        "mlflow",
        MlflowArgs(
            namespace=namespaces.names["mlflow"],
            image=images.ref("mlflow.image", config.mlflow.image),
            database=database,
            artifacts=object_store,
            admin_username=config.mlflow.admin_username,
            admin_password=admin_password,
            replicas=config.mlflow.replicas,
            workers=config.mlflow.workers,
            resources=config.mlflow.resources.to_k8s(),
            default_permission=config.mlflow.default_permission,
            service_account_annotations=platform.identity_annotations(mlflow_access),
            external_hosts=(f"mlflow.{config.gateway.domain}",),
            placement=platform.placement("system").pod_spec(),
        ),
        opts=k8s_opts,
    )
    evaluator = ([evaluation_mlflow_user(namespaces.names["platform"], config.evaluation.dataset)]
                 if config.evaluation.enabled else [])
    delivery_models = _delivery_models(config)
    measurer = [delivery_mlflow_user(namespaces.names["platform"], delivery_models)] if delivery_models else []
    drifter = [drift_mlflow_user(namespaces.names["platform"], {m: e for m, _, _, e in sampled.values()})
               ] if sampled else []
    users = _mlflow_users(config, namespaces, mlflow, images, k8s_opts,
                          _tenant_users(config, tenants) + evaluator + measurer + drifter)

    gateway = _gateway(config, platform, k8s_opts)
    domain = config.gateway.domain
    gateway.route(Route("mlflow", f"mlflow.{domain}", namespaces.names["mlflow"], "mlflow", MLFLOW_PORT))
    gateway.route(Route("grafana", f"grafana.{domain}", namespaces.names["monitoring"],
                        Monitoring.grafana_service, 80))

    grafana_password = _secret_or_generated(
        "grafana-admin-password", config.monitoring.grafana_admin_password, config.protected)
    monitoring = _monitoring(config, namespaces, platform, admin_password, grafana_password, k8s_opts,
                             list(tenants.namespaces.values()))
    pushgateway = None
    if "workloads" in namespaces.names:
        pushgateway = declare_workloads(
            config, namespaces.names["workloads"], namespaces.names["monitoring"], mlflow.url, admin_password,
            database, images, k8s_opts, after=[mlflow, monitoring],
            pushers=[namespaces.names["platform"]] if config.evaluation.enabled or delivery_models or sampled else [])
    if pushgateway is None and (config.evaluation.enabled or delivery_models or sampled):
        pushgateway = _platform_pushgateway(config, namespaces, pulumi.ResourceOptions.merge(
            k8s_opts, kube.after([users.ready, monitoring])))

    engine = _serving_engine(config, platform, gateway, namespaces, images, object_store, monitoring, k8s_opts)
    model_urls = _models(config, engine, platform, object_store, namespaces, serving_access,
                         RegistryAccess(tracking_uri=mlflow.url, credentials_secret=MODEL_READER_SECRET),
                         users.ready, k8s_opts, _inference_log(config, object_store, namespaces, k8s_opts))
    tenant_urls = _tenant_models(config, engine, platform, tenants, mlflow.url, users.ready, k8s_opts)
    _evaluation(config, namespaces, tenants, images, mlflow.url, pushgateway, [users.ready, monitoring], k8s_opts)
    if pushgateway is not None and delivery_models:
        _delivery(config, namespaces, images, mlflow.url, pushgateway, delivery_models, [users.ready, monitoring],
                  k8s_opts)
    if pushgateway is not None and sampled:
        _drift(config, namespaces, images, object_store, mlflow.url, pushgateway, sampled, [users.ready, monitoring],
               k8s_opts)
    declare_mnist_demo(config, gateway, namespaces.names["serving"], k8s_opts)

    pipeline = {"mlflowUrl": gateway.url(f"mlflow.{domain}"), "modelUrls": model_urls,
                "kubeconfig": cluster.kubeconfig, "registryUrl": platform.registry_url}
    _ci(config, platform, namespaces.names["serving"], users, pipeline, k8s_opts)

    pulumi.export("platform", config.platform)
    pulumi.export("environment", config.environment)
    pulumi.export("clusterName", cluster.name)
    pulumi.export("namespaces", namespaces.names)
    pulumi.export("buckets", dict(object_store.buckets))
    pulumi.export("mlflowUrl", gateway.url(f"mlflow.{domain}"))
    pulumi.export("mlflowInClusterUrl", mlflow.url)
    pulumi.export("mlflowPortForward", mlflow.port_forward)
    pulumi.export("mlflowAdminUsername", config.mlflow.admin_username)
    pulumi.export("mlflowAdminPassword", admin_password)
    if CI_MLFLOW_USER in users.passwords:
        pulumi.export("mlflowCiUsername", CI_MLFLOW_USER)
        pulumi.export("mlflowCiPassword", users.passwords[CI_MLFLOW_USER])
    pulumi.export("grafanaUrl", gateway.url(f"grafana.{domain}"))
    pulumi.export("grafanaAdminPassword", grafana_password)
    pulumi.export("modelsBaseUrl", _models_base_url(config, gateway))
    if gateway.port_forward is not None:
        pulumi.export("gatewayPortForward", gateway.port_forward)
    pulumi.export("modelUrls", model_urls)
    if tenant_urls:
        pulumi.export("tenantModelUrls", tenant_urls)
    if cluster.kubeconfig is not None:
        pulumi.export("kubeconfig", cluster.kubeconfig)
    if platform.registry_url is not None:
        pulumi.export("registryUrl", platform.registry_url)


def _mlflow_users(config: StackConfig, namespaces: Namespaces, mlflow: Mlflow, images: StackImages,
                  opts: pulumi.ResourceOptions, tenant_users: list[MlflowUser]) -> MlflowUsers:
    """MLflow identities besides the admin: `model-reader`, READ on each registered model served by
    alias; the CI's; and each tenant's two (modules/tenants)."""
    served = sorted({s.model for m in config.serving.models.values() for s in m.aliases if s.model is not None})
    reader = MlflowUser(
        username="model-reader",
        secret_namespace=namespaces.names["serving"],
        secret_name=MODEL_READER_SECRET,
        permissions=tuple(MlflowPermission("registered_model", name, "READ") for name in served),
    )
    ci = [ci_mlflow_user(namespaces.names["mlflow"])] if config.ci.github is not None else []
    return MlflowUsers("mlflow-users", MlflowUsersArgs(
        namespace=namespaces.names["mlflow"],
        image=images.ref("mlflow.image", config.mlflow.image),
        tracking_url=mlflow.url,
        admin_secret="mlflow-server",  # the Mlflow component's Secret (key admin-password)
        admin_username=config.mlflow.admin_username,
        users=[reader, *ci, *tenant_users],
        resources=MLFLOW_USERS_RESOURCES.to_k8s(),
        protect=config.protected,
    ), opts=pulumi.ResourceOptions.merge(opts, kube.after([mlflow])))


def ci_mlflow_user(namespace: pulumi.Input[str]) -> MlflowUser:
    """The model pipeline's own MLflow login: it trains, registers and moves aliases of the demo
    workloads' models, and may do nothing else (no admin, no other experiment or model)."""
    permissions = [MlflowPermission(kind, name, "EDIT") for experiment, model in CI_MLFLOW_RESOURCES.values()
                   for kind, name in (("experiment", experiment), ("registered_model", model))]
    return MlflowUser(CI_MLFLOW_USER, namespace, CI_MLFLOW_SECRET, tuple(permissions))


def _tenants(config: StackConfig, platform: Platform, namespaces: Namespaces,
             opts: pulumi.ResourceOptions) -> Tenants:
    """A fenced namespace per tenant (modules/tenants). On gke/eks its repositories get a keyless
    identity bound to its Role alone; elsewhere its CI deploys with a namespaced token
    (docs/decisions/0015-tenant-ci-access.md)."""
    d = config.tenant_defaults
    keyless = config.platform in ("gke", "eks")
    repositories = {name: t.repositories for name, t in config.tenants.items() if t.repositories}
    identities = platform.tenant_ci_identities(repositories, d.deploy_ref) if keyless and repositories else {}
    if identities:
        pulumi.export("tenantCiIdentities", {name: dict(i.outputs) for name, i in identities.items()})
    limits = {"default": {"cpu": d.limits.default.cpu_limit, "memory": d.limits.default.memory_limit},
              "defaultRequest": {"cpu": d.limits.default.cpu, "memory": d.limits.default.memory},
              "max": {"cpu": d.limits.max.cpu, "memory": d.limits.max.memory}}
    specs = [TenantSpec(name=name, pod_security=d.pod_security, limits=limits, members=t.members,
                        repositories=t.repositories, quota=quota_hard(**t.quota.model_dump()),
                        ci_subjects=[identities[name].model_deployer] if name in identities else [])
             for name, t in config.tenants.items()]
    return Tenants("tenants", TenantsArgs(
        tenants=specs, gateway_namespace="istio-system", monitoring_namespace=namespaces.names["monitoring"],
        platform_namespace=namespaces.names["platform"], deploy_tokens=not keyless,
    ), opts=opts)


def _tenant_users(config: StackConfig, tenants: Tenants) -> list[MlflowUser]:
    """Per tenant: EDIT on `<tenant>/<model>` experiments and `<tenant>.<model>` registered models."""
    return [user for name, t in config.tenants.items()
            for user in tenant_mlflow_users(name, tenants.namespaces[name], [experiment(name, m) for m in t.models],
                                            [registered_model(name, m) for m in t.models])]


def _tenant_models(config: StackConfig, engine: ServingEngine, platform: Platform, tenants: Tenants,
                   tracking_url: pulumi.Input[str], reader: pulumi.Resource,
                   opts: pulumi.ResourceOptions) -> dict[str, dict[str, pulumi.Output[str]]]:
    """Each tenant's models through the stack's engine, in its namespace, loading their alias with
    the tenant's read-only login: tenant -> model -> URL (/seldon/<tenant>/<model>/…)."""
    registry = RegistryAccess(tracking_uri=tracking_url, credentials_secret=TENANT_READER_SECRET)
    poll = config.serving.registry.poll_seconds
    placement = platform.placement("workload").pod_spec()
    after = pulumi.ResourceOptions.merge(opts, kube.after([reader]))
    urls: dict[str, dict[str, pulumi.Output[str]]] = {}
    for name, t in config.tenants.items():
        if t.serving.mode == "shared":  # docs/decisions/0020-multi-model-serving.md
            for server, models in t.serving.servers(list(t.models)):
                shared = engine.deploy_shared(f"{name}.{server}", SharedServerArgs(
                    namespace=tenants.namespaces[name], object_name=server, registry=registry, placement=placement,
                    models={m: _source(t.models[m].source, poll) for m in models},
                    resources=t.serving.server_resources(len(models)).to_k8s()), opts=after)
                urls.setdefault(name, {}).update(shared.urls)
            continue
        for model, spec in t.models.items():
            args = replace(_deployment_args(spec, tenants.namespaces[name], None, registry, poll),
                           service_account=None, placement=placement, object_name=model)
            # '.' is in no tenant or model name: distinct Pulumi names for every tenant's every model
            urls.setdefault(name, {})[model] = engine.deploy(f"{name}.{model}", args, opts=after).url
    return urls


def _tenant_endpoint(config: StackConfig, tenant: str, namespace: pulumi.Input[str], model: str) -> pulumi.Output[str]:
    """A tenant model's in-cluster predictions URL: its shared server's, or its own Seldon executor's."""
    t = config.tenants[tenant]
    if t.serving.mode == "shared":
        return shared_in_cluster_url(namespace, next(s for s, ms in t.serving.servers(list(t.models)) if model in ms),
                                     model)
    spec = t.models[model]
    return in_cluster_url(namespace, model, spec.source.protocol if spec.source.image else "v2")


def _evaluation(config: StackConfig, namespaces: Namespaces, tenants: Tenants, images: StackImages,
                tracking_url: pulumi.Input[str], pushgateway: Pushgateway | None, after: list[pulumi.Resource],
                opts: pulumi.ResourceOptions) -> None:
    """The professor's scheduled evaluation (modules/evaluation) of the configured tenants' models,
    pushing to the energy workload's Pushgateway, or to the platform's where there is none."""
    e = config.evaluation
    if not e.enabled or pushgateway is None:
        return
    platform_ns = namespaces.names["platform"]
    after_opts = pulumi.ResourceOptions.merge(opts, kube.after(after))
    endpoints = {name: {model: _tenant_endpoint(config, name, tenants.namespaces[name], model)
                        for model in config.tenants[name].models}
                 for name in (e.tenants or config.tenants) if config.tenants[name].models}
    Evaluation("evaluation", EvaluationArgs(
        namespace=platform_ns, image=images.ref("evaluation.image", e.image), schedule=e.schedule,
        time_zone=config.workloads.time_zone, dataset=e.dataset, endpoints=endpoints, tracking_uri=tracking_url,
        resources=e.resources.to_k8s(), pushgateway_url=pushgateway.url, data_url=e.data_url, rows=e.rows,
        batch_size=e.batch_size, timeout_seconds=e.timeout_seconds,
    ), opts=after_opts)


def _platform_pushgateway(config: StackConfig, namespaces: Namespaces, opts: pulumi.ResourceOptions) -> Pushgateway:
    """The Pushgateway the platform namespace's jobs (evaluation, delivery) push to without energy's."""
    w, monitoring_ns = config.workloads, namespaces.names["monitoring"]
    return Pushgateway("pushgateway", PushgatewayArgs(
        namespace=monitoring_ns, image=w.pushgateway_image.ref, resources=w.pushgateway_resources.to_k8s(),
        pusher_namespaces=[namespaces.names["platform"]], monitoring_namespace=monitoring_ns), opts=opts)


def _delivery_models(config: StackConfig) -> list[str]:
    """What monitoring.delivery measures: its `models`, else the models served by alias and the
    enabled workloads' (the ones the pipeline promotes); [] when it is off."""
    d = config.monitoring.delivery
    if not d.enabled:
        return []
    served = {s.model for m in config.serving.models.values() for s in m.aliases if s.model is not None}
    workloads = {model for name, (_, model) in CI_MLFLOW_RESOURCES.items() if getattr(config.workloads, name).enabled}
    models = list(d.models) or sorted(served | workloads)
    if not models:
        raise ValueError("monitoring.delivery.enabled: true, but nothing to measure: set monitoring.delivery.models, "
                         "serve a model by alias (serving.models.<name>.source.alias) or enable a workload")
    return models


def _delivery(config: StackConfig, namespaces: Namespaces, images: StackImages, tracking_url: pulumi.Input[str],
              pushgateway: Pushgateway, models: list[str], after: list[pulumi.Resource],
              opts: pulumi.ResourceOptions) -> None:
    """The delivery (DORA) metrics CronJob (modules/monitoring/delivery.py) in the platform namespace."""
    d = config.monitoring.delivery
    prometheus = pulumi.Output.concat("http://", Monitoring.prometheus_service, ".", namespaces.names["monitoring"],
                                      ".svc.cluster.local:9090")
    Delivery("delivery", DeliveryArgs(
        namespace=namespaces.names["platform"], image=images.ref("monitoring.delivery.image", d.image),
        schedule=d.schedule, time_zone=config.workloads.time_zone, models=models, window_days=d.window_days,
        tracking_uri=tracking_url, pushgateway_url=pushgateway.url, prometheus_url=prometheus,
        resources=d.resources.to_k8s(),
    ), opts=pulumi.ResourceOptions.merge(opts, kube.after(after)))


def _sampled_models(config: StackConfig) -> dict[str, tuple[str, str, str | None, str]]:
    """The served models with monitoring.sampleRate > 0: name -> (registered model, alias, the
    shadow candidate's alias or None, the training experiment whose runs hold the reference)."""
    experiments = {model: experiment for experiment, model in CI_MLFLOW_RESOURCES.values()}
    sampled = {}
    for name, m in config.serving.models.items():
        if m.monitoring.sample_rate <= 0:
            continue
        model, alias = m.source.model, m.source.alias
        assert model is not None and alias is not None  # ServedModelConfig: only alias sources sample
        experiment = m.monitoring.experiment or experiments.get(model)
        if experiment is None:
            raise ValueError(f"serving.models.{name}.monitoring: registered model {model!r} is no demo workload's, "
                             "so its training experiment is unknown: set monitoring.experiment (the drift job "
                             "reads the reference from the run behind the alias)")
        shadow = m.candidate.alias if m.candidate is not None and m.candidate_mode == "shadow" else None
        sampled[name] = (model, alias, shadow, experiment)
    return sampled


def _inference_log_clients(config: StackConfig, namespaces: Namespaces,
                           sampled: Mapping[str, Any]) -> list[BucketAccess]:
    """Object-store identities of the request sample: the model servers write it, the drift jobs read
    and prune it, both under `inference-log/` of the artifacts bucket only (SeaweedFS prefix grants;
    an `objectStore.external` store has one key for every client, which this cannot narrow). On
    gke/eks the model servers' service account has one workload identity (read-only): sampling there
    is not wired yet (docs/decisions/0017-drift-monitoring.md)."""
    if not sampled:
        return []
    if config.platform in ("gke", "eks"):
        raise ValueError(f"serving.models {sorted(sampled)}: monitoring.sampleRate > 0 is wired for the "
                         f"in-cluster object store only (minikube, existing); on {config.platform} leave it at 0 "
                         "(docs/decisions/0017-drift-monitoring.md)")
    labels = [BucketAccess(client=LABEL_SOURCE.format(name), namespace=namespaces.names["serving"],
                           service_account=LABEL_SOURCE.format(name), buckets=["artifacts"], prefix=prefix)
              for name, prefix in _label_prefixes(config, sampled).items()]
    return [BucketAccess(client=INFERENCE_LOG_WRITER, namespace=namespaces.names["serving"],
                         service_account=MODEL_SERVER_ACCOUNT, buckets=["artifacts"], prefix=INFERENCE_LOG_PREFIX),
            BucketAccess(client=DRIFT_CLIENT, namespace=namespaces.names["platform"], service_account=DRIFT_CLIENT,
                         buckets=["artifacts"], prefix=INFERENCE_LOG_PREFIX), *labels]


def _label_prefixes(config: StackConfig, sampled: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Per model with monitoring.feedback: where its label source writes (mlops/feedback.py LABELS
    beside the model's samples), the only keys its identity reaches."""
    return {name: f"{INFERENCE_LOG_PREFIX}/{model}/{FEEDBACK_DIRECTORY}" for name, (model, *_) in sampled.items()
            if config.serving.models[name].monitoring.feedback is not None}


def _inference_log_uri(store: ObjectStore) -> pulumi.Output[str]:
    return pulumi.Output.concat(store.url("artifacts"), f"/{INFERENCE_LOG_PREFIX}")


def _inference_log(config: StackConfig, store: ObjectStore, namespaces: Namespaces,
                   opts: pulumi.ResourceOptions) -> dict[str, InferenceLog]:
    """Per sampled model: where its pods write the sample, with the writer's keys in the serving namespace."""
    sampled = {name: m.monitoring for name, m in config.serving.models.items() if m.monitoring.sample_rate > 0}
    if not sampled:
        return {}
    creds = store.credentials[INFERENCE_LOG_WRITER]  # _inference_log_clients: in-cluster stores only
    secret = k8s.core.v1.Secret(
        "inference-log-writer",
        metadata=kube.metadata("inference-log-writer", namespaces.names["serving"], "serving"),
        type="Opaque",
        string_data={"AWS_ACCESS_KEY_ID": pulumi.Output.secret(creds.access_key_id),
                     "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(creds.secret_access_key)},
        opts=opts,
    )
    for name in _label_prefixes(config, _sampled_models(config)):
        # for whatever knows the true labels (`mlops feedback send`, envFrom): write under the labels' prefix only
        source = store.credentials[LABEL_SOURCE.format(name)]
        k8s.core.v1.Secret(
            LABEL_SOURCE.format(name),
            metadata=kube.metadata(LABEL_SOURCE.format(name), namespaces.names["serving"], "serving"),
            type="Opaque",
            string_data={"AWS_ACCESS_KEY_ID": pulumi.Output.secret(source.access_key_id),
                         "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(source.secret_access_key),
                         "MLFLOW_S3_ENDPOINT_URL": store.endpoint_url or "",
                         "MLOPS_INFERENCE_LOG_URI": _inference_log_uri(store)},
            opts=opts,
        )
    return {name: InferenceLog(uri=_inference_log_uri(store), rate=m.sample_rate, flush_seconds=m.flush_seconds,
                               credentials_secret=secret.metadata.name, endpoint_url=store.endpoint_url)
            for name, m in sampled.items()}


def _drift(config: StackConfig, namespaces: Namespaces, images: StackImages, store: ObjectStore,
           tracking_url: pulumi.Input[str], pushgateway: Pushgateway,
           sampled: Mapping[str, tuple[str, str, str | None, str]], after: list[pulumi.Resource],
           opts: pulumi.ResourceOptions) -> None:
    """One drift CronJob (modules/monitoring/drift.py) per sampled model, in the platform namespace."""
    d = config.serving.drift
    for name, (model, alias, shadow, _) in sampled.items():
        m = config.serving.models[name].monitoring
        Drift(f"drift-{name}", DriftArgs(
            namespace=namespaces.names["platform"], image=images.ref("serving.drift.image", d.image),
            schedule=m.drift_schedule, time_zone=config.workloads.time_zone, model=model, alias=alias, shadow=shadow,
            log_uri=_inference_log_uri(store), window_hours=m.window_hours, retention_days=m.retention_days,
            min_samples=m.min_samples, tracking_uri=tracking_url, pushgateway_url=pushgateway.url,
            resources=d.resources.to_k8s(), s3_credentials=store.credentials.get(DRIFT_CLIENT),
            s3_endpoint=store.endpoint_url,
        ), opts=pulumi.ResourceOptions.merge(opts, kube.after(after)))
        if m.feedback is not None:  # labels beside the sample, scored as F1/accuracy (docs/decisions/0018-label-feedback.md)
            Feedback(f"feedback-{name}", FeedbackArgs(
                namespace=namespaces.names["platform"], image=images.ref("serving.drift.image", d.image),
                schedule=m.feedback.schedule, time_zone=config.workloads.time_zone, model=model, alias=alias,
                metric=config.serving.models[name].feedback_metric, positive_class=m.feedback.positive_class,
                log_uri=_inference_log_uri(store), window_hours=m.feedback.window_hours,
                min_labels=m.feedback.min_labels, retention_days=m.retention_days, pushgateway_url=pushgateway.url,
                resources=d.resources.to_k8s(), s3_credentials=store.credentials.get(DRIFT_CLIENT),
                s3_endpoint=store.endpoint_url,
            ), opts=pulumi.ResourceOptions.merge(opts, kube.after(after)))


def _ci(config: StackConfig, platform: Platform, serving_ns: pulumi.Output[str], users: MlflowUsers,
        pipeline: Mapping[str, Any], opts: pulumi.ResourceOptions) -> None:
    """Keyless identities for GitHub Actions (clouds) and in-cluster runners (any cluster). The model
    pipeline reads `pipeline` plus its MLflow login from a cloud secret only `models` may read, never
    the Pulumi state (docs/decisions/0010-ci-stack-outputs.md)."""
    github = config.ci.github
    if github is not None:
        identities = platform.ci_identities(GithubOidc(
            repository=github.repository,
            deploy_ref=github.deploy_ref,
            infra_environment=github.infra_environment or (
                "production" if config.environment == "prod" else config.environment),
            models_environment=github.models_environment or f"models-{pulumi.get_stack()}",
            aws_provider_arn=github.aws_oidc_provider_arn,
        ))
        ModelDeployerAccess("ci-model-deployer", serving_ns, [identities.model_deployer], opts=opts)
        values = {**pipeline, "mlflowUsername": CI_MLFLOW_USER, "mlflowPassword": users.passwords[CI_MLFLOW_USER]}
        reference = platform.ci_values(pulumi.Output.secret(pulumi.Output.json_dumps(values)))
        pulumi.export("ciIdentities", {**identities.outputs, "modelsStackValues": reference})
    r = config.ci.runners
    if r.enabled:
        assert r.github_config_url is not None and r.github_token is not None  # checked by the config model
        GithubRunners("ci-runners", RunnersArgs(
            chart_version=r.chart_version,
            github_config_url=r.github_config_url,
            github_token=pulumi.Output.secret(r.github_token.get_secret_value()),
            scale_set_name=r.scale_set_name,
            min_runners=r.min_runners,
            max_runners=r.max_runners,
            runner_image=r.runner_image.ref,
            runner_resources=r.resources.to_k8s(),
            controller_resources=r.controller_resources.to_k8s(),
            deploy_scope=r.deploy_scope,
            serving_namespace=serving_ns,
            builder=BuilderArgs(r.builder.image.ref, r.builder.resources.to_k8s(),
                                tuple(r.builder.insecure_registries)) if r.builder.enabled else None,
        ), opts=opts)


def _secret_or_generated(name: str, configured: SecretStr | None, protect: bool) -> pulumi.Output[str]:
    """The configured secret, or a generated one kept in the stack state (also a secret)."""
    if configured is not None:
        return pulumi.Output.secret(configured.get_secret_value())
    generated = random.RandomPassword(name, length=24, special=False, opts=pulumi.ResourceOptions(protect=protect))
    return pulumi.Output.secret(generated.result)


def _gateway(config: StackConfig, platform: Platform, opts: pulumi.ResourceOptions) -> IstioGateway:
    g = config.gateway
    hosts = [f"{service}.{g.domain}" for service in ("mlflow", "grafana", "models")]
    dns = platform.public_dns(g.dns.zone, g.dns.project, hosts, g.dns.ttl) if g.dns else None
    tls = None
    if g.tls.enabled:
        tls = Tls(issuer=g.tls.issuer, email=g.tls.email, cert_manager_version=g.tls.cert_manager_version,
                  resources=config.monitoring.resources.small.to_k8s())
    return IstioGateway(
        "gateway",
        IstioGatewayArgs(
            namespace="istio-system",
            version=g.istio_version,
            hosts=hosts,
            service_type=g.service_type,
            istiod_resources=g.istiod_resources.to_k8s(),
            gateway_resources=g.gateway_resources.to_k8s(),
            gateway_replicas=g.replicas,
            tls=tls,
            service_annotations=platform.gateway_service_annotations,
            dns=dns,
            jwt=_endpoint_jwt(config),
            sso=_sso(config, [f"{service}.{g.domain}" for service in ("mlflow", "grafana")]),
        ),
        opts=opts,
    )


def _endpoint_jwt(config: StackConfig) -> JwtPolicy | None:
    """Tokens on every tenant's and the platform's model endpoints but those left anonymous."""
    a = config.gateway.auth
    if a is None or a.mode != "jwt":
        return None
    assert a.issuer is not None  # AuthConfig requires it in mode jwt
    serving = config.namespaces.serving
    return JwtPolicy(
        issuer=a.issuer, audiences=tuple(a.audiences), tenant_claim=a.tenant_claim, tenant_value=a.tenant_value,
        admin_values=tuple(a.admin_values), jwks_uri=a.jwks_uri, jwks=a.jwks,
        engine=config.serving.engine, tenants=tuple(t for t in config.tenants if t not in a.anonymous),
        platform=() if serving in a.anonymous else (serving,), open=tuple(a.anonymous))


def _sso(config: StackConfig, hosts: list[str]) -> Sso | None:
    """oauth2-proxy in front of MLflow and Grafana, with a generated cookie secret (24 bytes)."""
    a = config.gateway.auth
    if a is None or a.sso is None:
        return None
    assert a.issuer is not None  # AuthConfig requires it with sso
    s = a.sso
    return Sso(issuer=a.issuer, client_id=s.client_id, client_secret=pulumi.Output.secret(
                   s.client_secret.get_secret_value()),
               cookie_secret=_secret_or_generated("oauth2-proxy-cookie-secret", None, config.protected),
               cookie_domain=f".{config.gateway.domain}", hosts=tuple(hosts), secure=config.gateway.tls.enabled,
               image=s.image.ref, resources=s.resources.to_k8s(), email_domains=tuple(s.email_domains),
               allowed_groups=tuple(s.allowed_groups))


def _monitoring(config: StackConfig, namespaces: Namespaces, platform: Platform,
                mlflow_password: pulumi.Output[str], grafana_password: pulumi.Output[str],
                opts: pulumi.ResourceOptions, tenant_namespaces: list[pulumi.Output[str]]) -> Monitoring:
    m = config.monitoring
    # Prometheus scrapes MLflow's /metrics behind basic auth, with a Secret next to the ServiceMonitor
    scrape_auth = k8s.core.v1.Secret(
        "mlflow-scrape-auth",
        metadata=kube.metadata("mlflow-scrape-auth", namespaces.names["mlflow"], "monitoring"),
        type="Opaque",
        string_data={"username": config.mlflow.admin_username, "password": mlflow_password},
        opts=opts,
    )
    platform_ns = namespaces.names["platform"]
    resources = {name: r.to_k8s() for name, r in m.resources}
    return Monitoring(
        "monitoring",
        MonitoringArgs(
            namespace=namespaces.names["monitoring"],
            chart_version=m.chart_version,
            retention=m.retention,
            storage_gi=m.storage_gi,
            storage_class=config.kubernetes.storage_class,
            resources=resources,
            grafana_admin_password=grafana_password,
            grafana_url=public_url(f"grafana.{config.gateway.domain}", config.gateway.service_type,
                                   config.gateway.tls.enabled),
            targets=[
                ScrapeTarget("mlflow", namespaces.names["mlflow"], kube.selector("mlflow"), "http",
                             basic_auth_secret=scrape_auth.metadata.name),
                *(ScrapeTarget(service, platform_ns, kube.selector(service), "metrics")
                  for service in platform.metrics_services),
            ],
            model_namespaces=[namespaces.names["serving"], *tenant_namespaces],
            runbook_base_url=m.runbook_base_url,
            node_level=host_access(config),
            placement=platform.placement("system").pod_spec(),
            alerting=retraining_alerting(config, m.alerting.args()),
        ),
        opts=opts,
    )


def _serving_engine(config: StackConfig, platform: Platform, gateway: IstioGateway, namespaces: Namespaces,
                    images: StackImages, object_store: ObjectStore, monitoring: Monitoring,
                    opts: pulumi.ResourceOptions) -> ServingEngine:
    s = config.serving.seldon
    mlserver = images.resolve("serving.seldon.mlserverImage", s.mlserver_image)
    if config.serving.engine == "sagemaker":
        return _sagemaker(config, platform, pulumi.Output.concat(mlserver.repository, ":", mlserver.version))
    if config.serving.engine == "vertex":
        return _vertex(config, platform, pulumi.Output.concat(mlserver.repository, ":", mlserver.version))
    if config.serving.engine == "kserve":
        return _kserve(config, gateway, namespaces, object_store, monitoring,
                       pulumi.Output.concat(mlserver.repository, ":", mlserver.version), opts)
    return SeldonCore(
        "serving",
        SeldonCoreArgs(
            namespace=namespaces.names["seldon"],
            version=s.version,
            istio_gateway=gateway.gateway,
            gateway_host=gateway.url(f"models.{config.gateway.domain}"),
            manager_resources=s.manager_resources.model_dump(),
            executor_resources=s.executor_resources.model_dump(),
            mlserver_image=(mlserver.repository, mlserver.version),
            mlflow_runtime=s.mlflow_runtime,
        ),
        opts=pulumi.ResourceOptions.merge(opts, kube.after([gateway.ready])),
    )


def _kserve(config: StackConfig, gateway: IstioGateway, namespaces: Namespaces, object_store: ObjectStore,
            monitoring: Monitoring, mlserver: pulumi.Input[str], opts: pulumi.ResourceOptions) -> KServe:
    k, g = config.serving.kserve, config.gateway
    pinned = any(s is not None and s.uri is not None for m in config.serving.models.values()
                 for s in (m.source, m.candidate))
    return KServe(
        "serving",
        KServeArgs(
            namespace=namespaces.names["kserve"],
            models_namespace=namespaces.names["serving"],
            version=k.version,
            istio_gateway=gateway.gateway,
            gateway_host=gateway.url(f"models.{g.domain}"),
            models_host=f"models.{g.domain}",
            tls=gateway.tls,
            controller_resources=k.controller_resources.to_k8s(),
            rbac_proxy_resources=k.rbac_proxy_resources.to_k8s(),
            mlserver_image=mlserver,
            mlflow_runtime=config.serving.seldon.mlflow_runtime,
            cert_manager_version=g.tls.cert_manager_version,
            cert_manager_resources=config.monitoring.resources.small.to_k8s(),
            cert_manager=gateway.cert_manager,
            deployment_mode=k.deployment_mode,
            scale_to_zero=k.scale_to_zero,
            s3_endpoint=object_store.endpoint_url if pinned and object_store.credentials else None,
            monitoring=(monitoring,),
        ),
        opts=pulumi.ResourceOptions.merge(opts, kube.after([gateway.ready])),
    )


def _models_base_url(config: StackConfig, gateway: IstioGateway) -> pulumi.Input[str]:
    """Where models answer: the gateway's engine path, SageMaker's runtime API (SigV4-signed) or
    Vertex AI's regional API (OAuth 2 access tokens)."""
    if config.serving.engine == "sagemaker" and config.aws is not None:
        from modules.serving.sagemaker import RUNTIME_URL

        return RUNTIME_URL.format(region=config.aws.region)
    if config.serving.engine == "vertex" and config.gcp is not None:
        from modules.serving.vertex import API_HOST

        g = config.gcp
        return f"https://{API_HOST.format(region=g.region)}/v1/projects/{g.project}/locations/{g.region}/endpoints/"
    return f"{gateway.url(f'models.{config.gateway.domain}')}/{config.serving.engine}/{config.namespaces.serving}/"


def _sagemaker(config: StackConfig, platform: Platform, mlserver: pulumi.Output[str]) -> ServingEngine:
    """Endpoints beside the cluster (eks only, checked by the config): AWS resources on the
    platform's provider, the MLServer image the stack pushed to its ECR. Imported here, as the
    platforms are: pulumi_aws is the aws extra's."""
    from modules.platform.eks import EksPlatform
    from modules.serving.sagemaker import SageMaker, SageMakerArgs

    assert isinstance(platform, EksPlatform) and platform.registry is not None  # managed_engine_problems
    aws_ctx, sm = platform.aws_context(), config.serving.sagemaker
    repository = platform.registry.repositories["mlserver"]
    return SageMaker("serving", SageMakerArgs(
        prefix=aws_ctx.prefix, region=aws_ctx.region, image=mlserver, repository_arn=repository.arn,
        key_arn=aws_ctx.key_arn, mlflow_runtime=config.serving.seldon.mlflow_runtime, instance_type=sm.instance_type,
        invocations_per_instance=sm.invocations_per_instance, scale_in_cooldown=sm.scale_in_cooldown,
        scale_out_cooldown=sm.scale_out_cooldown, startup_timeout=sm.startup_timeout,
        log_retention_days=aws_ctx.log_retention_days,
    ), opts=pulumi.ResourceOptions.merge(aws_ctx.opts, pulumi.ResourceOptions(depends_on=[repository])))


def _vertex(config: StackConfig, platform: Platform, mlserver: pulumi.Output[str]) -> ServingEngine:
    """Endpoints beside the cluster (gke only, checked by the config): Google resources on the
    platform's provider, the MLServer image the stack pushed to its Artifact Registry."""
    from modules.platform.gke import GkePlatform
    from modules.serving.vertex import Vertex, VertexArgs

    assert isinstance(platform, GkePlatform)  # managed_engine_problems
    g = platform.gcp_context()
    return Vertex("serving", VertexArgs(
        project=g.project, region=g.region, prefix=g.prefix, image=mlserver, repository=g.repository,
        mlflow_runtime=config.serving.seldon.mlflow_runtime, machine_type=config.serving.vertex.machine_type,
    ), opts=pulumi.ResourceOptions.merge(g.opts, pulumi.ResourceOptions(depends_on=[g.repository])))


def _source(source: ModelSourceConfig, poll_seconds: int) -> ModelSource:
    alias = None
    if source.alias is not None:
        assert source.model is not None  # checked by the config model
        alias = RegistryAlias(model=source.model, alias=source.alias, runtime=source.runtime, poll_seconds=poll_seconds)
    if source.image is not None:
        return CustomImage(image=source.image.ref, protocol=source.protocol, follows=alias)
    if alias is not None:
        return alias
    assert source.uri is not None
    return RegistryModel(uri=source.uri, runtime=source.runtime)


def _models(config: StackConfig, engine: ServingEngine, platform, object_store: ObjectStore,
            namespaces: Namespaces, access: BucketAccess | None, registry: RegistryAccess, reader: pulumi.Resource,
            opts: pulumi.ResourceOptions, inference_logs: Mapping[str, InferenceLog]) -> dict[str, pulumi.Output[str]]:
    """The service account in-cluster model servers share, bucket credentials only if a model is
    pinned to an artifact URI (alias models read through MLflow, as the user the `reader` Job
    creates), then one deployment per model. A managed engine (`access` None) needs neither."""
    serving_ns = namespaces.names["serving"]
    storage_secret = None
    if access is not None:
        k8s.core.v1.ServiceAccount(
            "model-server-account",
            metadata=kube.metadata(MODEL_SERVER_ACCOUNT, serving_ns, "serving",
                                   annotations=dict(platform.identity_annotations(access))),
            opts=opts,
        )
        pinned = any(s is not None and s.uri is not None
                     for m in config.serving.models.values() for s in (m.source, m.candidate))
        storage_secret = _storage_secret(object_store, access, serving_ns, opts) if pinned else None
    poll = config.serving.registry.poll_seconds
    urls = {}
    for name, model in config.serving.models.items():
        args = replace(_deployment_args(model, serving_ns, storage_secret, registry, poll),
                       placement=platform.placement("workload").pod_spec(),  # model servers: workload pool
                       service_account=MODEL_SERVER_ACCOUNT if access is not None else None,
                       inference_log=inference_logs.get(name))
        after = pulumi.ResourceOptions.merge(opts, kube.after([reader])) if model.aliases else opts
        urls[name] = engine.deploy(name, args, opts=after).url
    return urls


def _deployment_args(model: ServedModelConfig, namespace: pulumi.Input[str], storage_secret: pulumi.Input[str] | None,
                     registry: RegistryAccess, poll_seconds: int) -> ModelDeploymentArgs:
    a = model.autoscaling
    return ModelDeploymentArgs(
        namespace=namespace,
        source=_source(model.source, poll_seconds),
        replicas=model.replicas,
        resources=model.resources.to_k8s(),
        autoscaling=Autoscaling(a.min_replicas, a.max_replicas, a.target_cpu_percent) if a else None,
        candidate=_source(model.candidate, poll_seconds) if model.candidate else None,
        candidate_mode=model.candidate_mode,
        canary_percent=model.canary_percent,
        service_account=MODEL_SERVER_ACCOUNT,
        storage_secret=storage_secret,
        registry=registry if model.aliases else None,
    )


def _storage_secret(store: ObjectStore, access: BucketAccess, namespace: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> pulumi.Output[str] | None:
    """rclone settings for Seldon's storage initializer: static read-only keys for the in-cluster
    store; cloud stores authenticate through the service account's workload identity instead."""
    creds = store.credentials.get(access.client)
    remote = "RCLONE_CONFIG_S3_" if store.scheme == "s3" else "RCLONE_CONFIG_GS_"
    data: dict[str, pulumi.Input[str]] = {f"{remote}TYPE": "s3" if store.scheme == "s3" else "google cloud storage"}
    if creds is not None:
        data |= {f"{remote}PROVIDER": "Other", f"{remote}ENV_AUTH": "false",
                 f"{remote}ACCESS_KEY_ID": creds.access_key_id,
                 f"{remote}SECRET_ACCESS_KEY": creds.secret_access_key,
                 f"{remote}ENDPOINT": store.endpoint_url or ""}
    elif store.scheme == "s3":
        data |= {f"{remote}PROVIDER": "AWS", f"{remote}ENV_AUTH": "true"}
    else:
        data |= {f"{remote}ENV_AUTH": "true"}
    secret = k8s.core.v1.Secret(
        "model-storage",
        metadata=kube.metadata("model-storage", namespace, "serving"),
        type="Opaque",
        string_data={k: pulumi.Output.secret(v) for k, v in data.items()},
        opts=opts,
    )
    return secret.metadata.name
