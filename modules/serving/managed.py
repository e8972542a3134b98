"""What the managed engines (SageMaker, Vertex AI: endpoints beside the cluster) share: a model's
versions as artifact prefixes the service downloads, its variants and their instance bounds."""

from __future__ import annotations

from urllib.parse import urlparse

from modules.serving.contract import ModelDeploymentArgs, ModelSource, RegistryModel

MAIN, CANDIDATE = "main", "candidate"


def artifact_location(source: ModelSource, scheme: str, engine: str) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of a version pinned to `<scheme>://` prefix."""
    uri = source.uri if isinstance(source, RegistryModel) else ""
    parsed = urlparse(uri)
    if parsed.scheme != scheme or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"engine {engine} serves a model version's {scheme.upper()} prefix ({scheme}://<bucket>/"
                         f"<prefix>); got {source!r} (infra/config/serving.py managed_engine_problems)")
    return parsed.netloc, parsed.path.strip("/")


def image_uri(image: str) -> str:
    """Managed services take `<repository>:<tag>` or `<repository>@<digest>`: the digest wins when known."""
    name, _, digest = image.partition("@")
    return f"{name.rpartition(':')[0]}@{digest}" if digest else name


def instance_bounds(args: ModelDeploymentArgs) -> tuple[int, int]:
    """The main variant's (min, max) instances: the model's autoscaling bounds, else its replicas."""
    return (args.autoscaling.min_replicas, args.autoscaling.max_replicas) if args.autoscaling \
        else (args.replicas, args.replicas)
