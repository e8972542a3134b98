"""The demo workloads on the platform: their namespace, the Secrets they read, the Pushgateway the
energy monitor pushes to, and each enabled workload's component (`workloads/<name>/deploy.py`):
energy (training Job + daily CronJobs), neo and mnist (training Jobs; their models are served
from `serving.models`), and the mnist drawing page beside the served mnist model.

Workloads log to MLflow as its admin user (MLflow's basic auth has no declarative users yet: a
per-workload account would be created through its REST API after `pulumi up`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.config import Image, StackConfig
from infra.config.retraining import REGISTERED_MODELS, EnergyRetrainConfig
from infra.images import StackImages
from infra.platforms import WORKLOADS_DATABASE
from modules import kube
from modules.gateway import IstioGateway
from modules.monitoring.alerting import AlertingArgs
from modules.monitoring.pushgateway import Pushgateway, PushgatewayArgs
from modules.platform.contract import Database
from modules.retraining import (ALERT_RECEIVER, ALERT_TRIGGERS, JobTemplates, RetrainedModel, RetrainingArgs,
                                RetrainingTrigger, alert_routes, service_url)
from workloads.common.deploy import DATABASE_KEY, TRACKING_KEYS, WorkloadContext
from workloads.energy.deploy import EnergyArgs, EnergyWorkload
from workloads.mnist.deploy import MnistArgs, MnistWorkload
from workloads.mnist.demo import PATH_PREFIX, MnistDemo, MnistDemoArgs, predictions_path
from workloads.neo.deploy import NeoArgs, NeoWorkload


def _database_url(db: Database) -> pulumi.Output[str]:
    return pulumi.Output.format(
        "postgresql://{0}:{1}@{2}:{3}/{4}?sslmode={5}", db.username,
        pulumi.Output.from_input(db.password).apply(lambda p: quote(p, safe="")), db.host, db.port,
        WORKLOADS_DATABASE, db.sslmode)


def _secret(name: str, namespace: pulumi.Input[str], data: dict[str, pulumi.Input[str]],
            opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    secret = k8s.core.v1.Secret(
        name, metadata=kube.metadata(name, namespace, "workloads"), type="Opaque",
        string_data={k: pulumi.Output.secret(v) for k, v in data.items()}, opts=opts)
    return secret.metadata.name


def declare_workloads(config: StackConfig, namespace: pulumi.Input[str], monitoring_namespace: pulumi.Input[str],
                      tracking_uri: pulumi.Input[str], admin_password: pulumi.Input[str], database: Database,
                      images: StackImages, opts: pulumi.ResourceOptions, after: list[pulumi.Resource],
                      pushers: Sequence[pulumi.Input[str]] = ()) -> Pushgateway | None:
    """Declare every enabled workload; `after` are what they need running first (MLflow, monitoring).
    Returns the Pushgateway (with energy or retraining), which `pushers` may push to besides the workloads."""
    w = config.workloads
    pushgateway = None
    if not w.any_enabled:
        return pushgateway
    after_opts = pulumi.ResourceOptions.merge(opts, kube.after(after))
    templates = JobTemplates()
    tracking = _secret("mlflow-client", namespace, dict(zip(TRACKING_KEYS, (config.mlflow.admin_username,
                                                                              admin_password))), opts)

    def context(name: str, image: Image, **extra: Any) -> WorkloadContext:
        return WorkloadContext(namespace=namespace, image=images.ref(f"workloads.{name}.image", image),
                               tracking_uri=tracking_uri,
                               tracking_secret=tracking, timezone=w.time_zone, **extra)

    if w.energy.enabled or w.retraining.enabled:
        # the energy monitor pushes its daily MAPE, a retraining's gate its outcome (a Job is gone
        # before a scrape)
        pushgateway = Pushgateway("pushgateway", PushgatewayArgs(
            namespace=monitoring_namespace, image=w.pushgateway_image.ref,
            resources=w.pushgateway_resources.to_k8s(), pusher_namespaces=[namespace, *pushers],
            monitoring_namespace=monitoring_namespace,
        ), opts=after_opts)
    if w.energy.enabled:
        e = w.energy
        for warning in e.warnings():
            pulumi.log.warn(warning)
        database_secret = _secret("workloads-database", namespace, {DATABASE_KEY: _database_url(database)}, opts)
        EnergyWorkload("energy", EnergyArgs(
            context=context("energy", e.image, database_secret=database_secret, pushgateway_url=pushgateway.url),
            schedule=e.schedule, monitor_schedule=e.monitor_schedule, ingest_schedule=e.ingest_schedule,
            demo_data=e.demo_data,
            latitude=e.latitude, longitude=e.longitude,
        ), opts=pulumi.ResourceOptions.merge(after_opts, templates.options("energy")))
    if w.neo.enabled:
        NeoWorkload("neo", NeoArgs(context=context("neo", w.neo.image), data_url=w.neo.data_url),
                    opts=pulumi.ResourceOptions.merge(after_opts, templates.options("neo")))
    if w.mnist.enabled:
        MnistWorkload("mnist", MnistArgs(context=context("mnist", w.mnist.image), epochs=w.mnist.epochs),
                      opts=pulumi.ResourceOptions.merge(after_opts, templates.options("mnist")))
    if w.retraining.enabled:
        _retraining(config, namespace, monitoring_namespace, images, templates, pushgateway.url, after_opts)
    return pushgateway


# new-data checks that need the workload's own code, run in its image (the rest: the receiver's image)
NEW_DATA_IN_IMAGE = {"neo": ["python", "-m", "workloads.neo.data", "check"]}


def retrained_models(config: StackConfig, templates: JobTemplates | None = None) -> list[RetrainedModel]:
    """What the retraining receiver retrains: each enabled workload with a trigger, and its training Job."""
    models = []
    for name, r in config.workloads.retrained.items():
        new = r.new_data
        models.append(RetrainedModel(
            model=REGISTERED_MODELS[name], workload=name, job=templates.jobs[name] if templates else {},
            triggers=r.triggers, cooldown_minutes=r.cooldown_minutes, schedule=r.schedule,
            new_data_schedule=new.schedule if new else None,
            new_data_command=["--min-rows", str(new.min_rows)] if new and new.min_rows else [],
            new_data_workload_command=NEW_DATA_IN_IMAGE.get(name, []) if new else [],
            promote=r.promote, promote_margin=r.promote_margin,
            promote_days=r.promote_days if isinstance(r, EnergyRetrainConfig) else None,
            # energy's gate compares days of shadow forecasts: asked again daily, with the MAPE monitor
            promote_schedule=config.workloads.energy.monitor_schedule if name == "energy" else None))
    return models


def _retraining(config: StackConfig, namespace: pulumi.Input[str], monitoring_namespace: pulumi.Input[str],
                images: StackImages, templates: JobTemplates, pushgateway_url: pulumi.Input[str],
                opts: pulumi.ResourceOptions) -> None:
    r = config.workloads.retraining
    RetrainingTrigger("retraining", RetrainingArgs(
        namespace=namespace, monitoring_namespace=monitoring_namespace,
        image=images.ref("workloads.retraining.image", r.image), resources=r.resources.to_k8s(),
        time_zone=config.workloads.time_zone, models=retrained_models(config, templates),
        pushgateway_url=pushgateway_url), opts=opts)


def retraining_alerting(config: StackConfig, alerting: AlertingArgs) -> AlertingArgs:
    """`alerting` plus the receiver's webhook and its routes, first, when a workload retrains on an alert."""
    models = retrained_models(config)
    if not any(set(m.triggers) & set(ALERT_TRIGGERS) for m in models):
        return alerting
    if any(rc.name == ALERT_RECEIVER for rc in alerting.receivers):
        raise ValueError(f"monitoring.alerting.receivers.{ALERT_RECEIVER}: the name is the retraining receiver's "
                         "(workloads.<name>.retrain): rename that receiver")
    receiver, routes = alert_routes(service_url(config.namespaces.workloads), models)
    return replace(alerting, receivers=[*alerting.receivers, receiver], routes=[*routes, *alerting.routes])


MNIST_SERVER = "mnist-server"  # the image workloads/mnist/Dockerfile's `serve` target is pushed as


def mnist_demo_model(config: StackConfig) -> str:
    """The `serving.models` entry the drawing page calls: the one running the mnist server image."""
    served = [name for name, m in config.serving.models.items() if m.source.image is not None
              and m.source.image.repository.rsplit("/", 1)[-1] == MNIST_SERVER and m.source.protocol == "seldon"]
    if len(served) != 1:
        raise ValueError(f"workloads.mnist.demo: the page needs exactly one serving.models entry with "
                         f"source.image.repository <registry>/{MNIST_SERVER} and protocol seldon, found {served}; "
                         "add it (workloads/mnist/README.md, Serving) or set demo: false")
    return served[0]


def declare_mnist_demo(config: StackConfig, gateway: IstioGateway, serving_namespace: pulumi.Output[str],
                       opts: pulumi.ResourceOptions) -> None:
    """The mnist drawing page at models.<domain>/demo/mnist/ (stack output `mnistDemoUrl`), when
    `workloads.mnist.demo` is on."""
    if not config.workloads.mnist.demo:
        return
    model = mnist_demo_model(config)
    host = f"models.{config.gateway.domain}"
    MnistDemo("mnist-demo", MnistDemoArgs(
        namespace=serving_namespace,
        predictions_path=serving_namespace.apply(lambda ns: predictions_path(ns, model, config.serving.engine)),
        gateway=gateway.gateway, host=host, https_only=gateway.tls,
    ), opts=pulumi.ResourceOptions.merge(opts, kube.after([gateway.ready])))
    pulumi.export("mnistDemoUrl", f"{gateway.url(host)}{PATH_PREFIX}")
