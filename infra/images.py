"""Which images the stack builds and pushes, and whether the cluster can pull every image it runs.

Images named `mlops-stack/<name>` exist only where `make up` built them into minikube's node. On an
existing cluster each of them is either built by the program and pushed to a registry (`images.mode:
build`) or named as a pushed image pinned by digest (`prebuilt`); every other image must name its
registry host (a bare `owner/name` means Docker Hub, where nobody publishes this project's images).
GKE/EKS build by default into the registry they create (Artifact Registry / ECR), logged in with the
platform's token, for every architecture of their node pools.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pydantic import BaseModel

from infra.config import Image, StackConfig
from modules.images import ImageBuild, ImageRef, PlatformImages, PlatformImagesArgs, RegistryAuth
from modules.platform.contract import ImageRegistry, Platform

PROJECT = "mlops-stack"
ROOT = Path(__file__).resolve().parents[1]
LOCAL_PREFIX = "mlops-stack/"  # the names `make up` builds into minikube
# The images built from this repository, by name: context, Dockerfile (None: <context>/Dockerfile), target.
# Workload Dockerfiles copy paths relative to the repository root, which is their context.
PROJECT_BUILDS: dict[str, tuple[Path, Path | None, str | None]] = {
    "mlflow-server": (ROOT / "modules/mlflow/image", None, None),
    "mlserver": (ROOT / "modules/serving/mlserver-image", None, None),
    "energy": (ROOT, ROOT / "workloads/energy/Dockerfile", None),
    "neo": (ROOT, ROOT / "workloads/neo/Dockerfile", None),
    "mnist": (ROOT, ROOT / "workloads/mnist/Dockerfile", "train"),
    "evaluation": (ROOT, ROOT / "modules/evaluation/Dockerfile", None),
    "retraining": (ROOT / "modules/retraining/image", None, None),
}
# The config keys whose images are built from this repository, and which image each one is.
PROJECT_SLOTS = {
    "mlflow.image": "mlflow-server",
    "serving.seldon.mlserverImage": "mlserver",
    "workloads.energy.image": "energy",
    "workloads.neo.image": "neo",
    "workloads.mnist.image": "mnist",
    "evaluation.image": "evaluation",
    "workloads.retraining.image": "retraining",
    "monitoring.delivery.image": "evaluation",  # the delivery CronJob runs mlops/delivery.py from it
    "serving.drift.image": "evaluation",  # the drift CronJobs run mlops/drift.py from it
}
# Platforms that create a registry `mode: build` pushes to when images.registry is unset.
PLATFORM_REGISTRY = ("gke", "eks")
# Where every image must be pullable by the cluster (minikube also runs what `make up` loads).
PULL_CHECKED = ("existing", "gke", "eks")
# Compute Engine Arm series (Tau T2A, Axion C4A and N4A); EC2 Graviton is EksNodePool.arm64.
GCE_ARM_SERIES = ("t2a", "c4a", "n4a")
# Registry storage of one build per architecture, GiB (an assumption for `mlops cost`, not measured
# here: the base image's compressed size — ghcr.io/mlflow/mlflow ≈0.35, seldonio/mlserver:*-mlflow
# ≈0.9, python:3.11-slim ≈0.05 — plus the layers each Dockerfile adds: drivers; the workloads'
# pinned scientific stack ≈0.25; mnist's CPU torch ≈0.45).
IMAGE_GIB = {"mlflow-server": 0.4, "mlserver": 1.0, "energy": 0.3, "neo": 0.3, "mnist": 0.5,
             "evaluation": 0.3, "retraining": 0.15}
# content-tagged builds kept per image (immutable tags, no expiry); shared layers make it an upper bound
VERSIONS_KEPT = 3


def _problem(key: str, value: Any, message: str) -> str:
    return f"{PROJECT}:{key}: got {json.dumps(value)}; {message}"


def _in(value: Any, key: str) -> Iterator[tuple[str, Image]]:
    if isinstance(value, Image):
        yield key, value
    elif isinstance(value, BaseModel):
        yield from used_images(value, f"{key}.")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _in(item, f"{key}.{name}")


def used_images(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Image]]:
    """(config key, image) of every image the stack runs; a section with `enabled: false` runs none."""
    if getattr(model, "enabled", True) is False:
        return
    for name, info in type(model).model_fields.items():
        yield from _in(getattr(model, name), prefix + (info.alias or name))


def has_registry_host(repository: str) -> bool:
    """Docker's rule: the first path component is a registry host if it has a dot or a port, or is localhost."""
    first, _, rest = repository.partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def built_slots(config: StackConfig) -> dict[str, str]:
    """Config key → project image name, for the images this stack builds and pushes."""
    if config.images.mode != "build":
        return {}
    return {key: PROJECT_SLOTS[key] for key, image in used_images(config)
            if key in PROJECT_SLOTS and image.repository == LOCAL_PREFIX + PROJECT_SLOTS[key]}


def node_platforms(config: StackConfig) -> tuple[str, ...]:
    """The architectures of the cluster's nodes the stack creates (gke/eks node pools); () where unknown."""
    if config.gcp is not None:
        if config.gcp.autopilot:  # Google's nodes: amd64 unless a pod asks for Arm
            return ("linux/amd64",)
        arm = [p.machine_type.split("-", 1)[0] in GCE_ARM_SERIES for _, p in config.gcp.node_pools]
    elif config.aws is not None:
        arm = [p.arm64 for _, p in config.aws.node_pools]
    else:
        return ()
    return tuple(sorted({"linux/arm64" if a else "linux/amd64" for a in arm}))


def build_platforms(config: StackConfig) -> tuple[str, ...]:
    """What the build targets: images.platforms if set, else every node pool's architecture."""
    if config.images.platforms is not None:
        return tuple(config.images.platforms)
    return node_platforms(config) or ("linux/amd64",)


def registry_gib(config: StackConfig) -> float:
    """Registry storage of the project images the stack runs from its registry (built or pre-built):
    IMAGE_GIB per architecture, VERSIONS_KEPT builds each; 0 where `make up` loads them (local)."""
    if config.images.mode == "local":
        return 0.0
    names = {PROJECT_SLOTS[key] for key, _ in used_images(config) if key in PROJECT_SLOTS}
    return round(sum(IMAGE_GIB[n] for n in names) * len(build_platforms(config)) * VERSIONS_KEPT, 2)


def _platform_problems(config: StackConfig) -> list[str]:
    """A build that leaves out an architecture of the nodes fails only at pull time (exec format error)."""
    if config.images.mode != "build" or config.images.platforms is None:
        return []
    missing = [n for n in node_platforms(config) if n not in config.images.platforms]
    if not missing:
        return []
    return [_problem("images.platforms", config.images.platforms,
                     f"the node pools run {', '.join(node_platforms(config))}: add {', '.join(missing)} (or unset "
                     "images.platforms to build for every node pool's architecture)")]


def _repository_problems(config: StackConfig) -> list[str]:
    """ECR creates no repository on push: each image the stack builds needs one in aws.registryImages."""
    if config.aws is None or config.images.registry is not None:
        return []
    missing = sorted(set(built_slots(config).values()) - set(config.aws.registry_images))
    if not missing:
        return []
    return [_problem("aws.registryImages", config.aws.registry_images,
                     f"the stack builds and pushes {', '.join(missing)}, and ECR creates no repository on push: "
                     "add them")]


def _settings_problems(config: StackConfig) -> list[str]:
    i = config.images
    problems = []
    if i.mode == "build" and i.registry is None and config.platform not in PLATFORM_REGISTRY:
        problems.append(_problem("images.registry", None, "mode build pushes the project's images there: set the "
                                 "registry the cluster pulls from, e.g. registry.example.org/mlops (or use mode "
                                 "prebuilt and name pushed images pinned by digest)"))
    if i.mode != "build" and (i.registry or i.username or i.password):
        problems.append(_problem("images.mode", i.mode, "images.registry, username and password are read only "
                                                        "with mode build: allowed build, or unset them"))
    if (i.username is None) != (i.password is None):
        problems.append(_problem("images.username", i.username, "username and password (a secret) go together; "
                                 "neither = the builder's own docker credentials"))
    if i.mode == "local" and config.platform != "minikube":
        problems.append(_problem("images.mode", "local", f"local images exist only in minikube's node (`make up` "
                                 f"builds them there); on platform {config.platform!r} allowed: build (with "
                                 "images.registry) or prebuilt"))
    return problems


def _image_problem(config: StackConfig, key: str, image: Image) -> str | None:
    where = f"the cluster of platform {config.platform!r} cannot pull it"
    if image.repository.startswith(LOCAL_PREFIX):
        name = image.repository.removeprefix(LOCAL_PREFIX)
        fix = (f"set images.mode build and images.registry (the stack builds {name} and pushes it there), or name "
               f"a pushed image: {{repository: <registry>/{name}, tag: …, digest: sha256:…}}"
               if PROJECT_SLOTS.get(key) == name else
               "push it to a registry the cluster pulls from and name it with that registry's host and a digest")
        return _problem(key, image.ref, f"only `make up` on minikube has this image (built into the node): {where}; "
                                        f"{fix}")
    if not has_registry_host(image.repository):
        return _problem(key, image.ref, f"no registry host, so Docker Hub is assumed; name the registry explicitly "
                                        f"(e.g. docker.io/{image.repository} or the registry CI pushed it to)")
    if key in PROJECT_SLOTS and image.digest is None:
        return _problem(key, image.ref, "a pre-built project image must be pinned by digest: add digest: sha256:… "
                                        "(`docker buildx imagetools inspect <image>`), or let the stack build it "
                                        f"(images.mode build, {key}.repository {LOCAL_PREFIX}{PROJECT_SLOTS[key]})")
    return None


def image_problems(config: StackConfig) -> list[str]:
    """Why an image the stack runs cannot be pulled by its cluster; [] when every one can."""
    problems = _settings_problems(config) + _platform_problems(config) + _repository_problems(config)
    if config.platform not in PULL_CHECKED:
        return problems  # minikube runs local images legitimately
    built = built_slots(config)
    return problems + [p for key, image in used_images(config) if key not in built
                       for p in [_image_problem(config, key, image)] if p is not None]


@dataclass(frozen=True)
class StackImages:
    """The image each config key resolves to: the stack's build where it built one, else the configured one."""

    built: Mapping[str, ImageRef]

    def resolve(self, key: str, configured: Image) -> ImageRef:
        return self.built[key] if key in self.built else ImageRef(configured.repository, configured.version)

    def ref(self, key: str, configured: Image) -> pulumi.Input[str]:
        return self.built[key].ref if key in self.built else configured.ref


def project_build(name: str, version: str) -> ImageBuild:
    context, dockerfile, target = PROJECT_BUILDS[name]
    return ImageBuild(context=context, dockerfile=dockerfile, target=target, version=version)


def push_target(config: StackConfig, platform: Platform) -> ImageRegistry:
    """images.registry with its configured login, else the registry the platform creates (its token)."""
    i = config.images
    if i.registry is None:
        created = platform.registry
        assert created is not None  # image_problems requires images.registry where the platform has none
        return created
    auth = None
    if i.username is not None and i.password is not None:
        auth = RegistryAuth(i.username, pulumi.Output.secret(i.password.get_secret_value()))
    return ImageRegistry(i.registry, auth)


def declare_images(config: StackConfig, platform: Platform,
                   opts: pulumi.ResourceOptions | None = None) -> StackImages:
    """Build and push the project images the stack runs (images.mode build); others resolve as configured."""
    slots = built_slots(config)
    if not slots:
        return StackImages({})
    configured = dict(used_images(config))
    target = push_target(config, platform)
    images = PlatformImages("images", PlatformImagesArgs(
        registry=target.url, auth=target.auth, push_after=target.repositories, platforms=build_platforms(config),
        builds={name: project_build(name, configured[key].tag) for key, name in slots.items()}), opts)
    return StackImages({key: images.images[name] for key, name in slots.items()})


@dataclass(frozen=True)
class LocalBuild:
    """An image `make up` builds inside minikube's node: `ref` from this context and Dockerfile."""

    ref: str
    context: Path
    dockerfile: Path
    target: str | None


def local_builds(config: StackConfig) -> list[LocalBuild]:
    """The project images a `mode: local` stack runs, so `make up` builds exactly those (enabled
    workloads included) and nothing else."""
    if config.images.mode != "local":
        return []
    builds = []
    for key, image in used_images(config):
        name = PROJECT_SLOTS.get(key)
        if name is not None and image.repository == LOCAL_PREFIX + name:
            context, dockerfile, target = PROJECT_BUILDS[name]
            builds.append(LocalBuild(image.ref, context, dockerfile or context / "Dockerfile", target))
    return builds
