"""The demo workloads on the platform: their namespace, the Secrets they read, the Pushgateway the
energy monitor pushes to, and each enabled workload's component (`workloads/<name>/deploy.py`):
energy (training Job + daily CronJobs), neo and mnist (training Jobs; their models are served
from `serving.models`), and the mnist drawing page beside the served mnist model.

Workloads log to MLflow as its admin user (MLflow's basic auth has no declarative users yet: a
per-workload account would be created through its REST API after `pulumi up`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.config import Image, StackConfig
from infra.images import StackImages
from infra.platforms import WORKLOADS_DATABASE
from modules import kube
from modules.gateway import IstioGateway
from modules.monitoring.pushgateway import Pushgateway, PushgatewayArgs
from modules.platform.contract import Database
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
    Returns the Pushgateway (energy only), which `pushers` may push to besides the workloads."""
    w = config.workloads
    pushgateway = None
    if not w.any_enabled:
        return pushgateway
    after_opts = pulumi.ResourceOptions.merge(opts, kube.after(after))
    tracking = _secret("mlflow-client", namespace, dict(zip(TRACKING_KEYS, (config.mlflow.admin_username,
                                                                              admin_password))), opts)

    def context(name: str, image: Image, **extra: Any) -> WorkloadContext:
        return WorkloadContext(namespace=namespace, image=images.ref(f"workloads.{name}.image", image),
                               tracking_uri=tracking_uri,
                               tracking_secret=tracking, timezone=w.time_zone, **extra)

    if w.energy.enabled:
        # the energy monitor pushes its daily MAPE to a Pushgateway (a CronJob is gone before a scrape)
        pushgateway = Pushgateway("pushgateway", PushgatewayArgs(
            namespace=monitoring_namespace, image=w.pushgateway_image.ref,
            resources=w.pushgateway_resources.to_k8s(), pusher_namespaces=[namespace, *pushers],
            monitoring_namespace=monitoring_namespace,
        ), opts=after_opts)
        e = w.energy
        database_secret = _secret("workloads-database", namespace, {DATABASE_KEY: _database_url(database)}, opts)
        EnergyWorkload("energy", EnergyArgs(
            context=context("energy", e.image, database_secret=database_secret, pushgateway_url=pushgateway.url),
            schedule=e.schedule, monitor_schedule=e.monitor_schedule, demo_data=e.demo_data,
            latitude=e.latitude, longitude=e.longitude,
        ), opts=after_opts)
    if w.neo.enabled:
        NeoWorkload("neo", NeoArgs(context=context("neo", w.neo.image), data_url=w.neo.data_url), opts=after_opts)
    if w.mnist.enabled:
        MnistWorkload("mnist", MnistArgs(context=context("mnist", w.mnist.image), epochs=w.mnist.epochs), opts=after_opts)
    return pushgateway


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
        predictions_path=serving_namespace.apply(lambda ns: predictions_path(ns, model)),
        gateway=gateway.gateway, host=host, https_only=gateway.tls,
    ), opts=pulumi.ResourceOptions.merge(opts, kube.after([gateway.ready])))
    pulumi.export("mnistDemoUrl", f"{gateway.url(host)}{PATH_PREFIX}")
