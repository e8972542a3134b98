"""Registry → serving: where the files of `models:/<name>@<alias>` lie in the artifact bucket.

Seldon's storage initializer fetches s3:// or gs:// URIs, not registry aliases, so deployments are
declared with the artifact URI of the version an alias points at. With proxied artifacts MLflow
records locations as `mlflow-artifacts:/…`, relative to the server's `--artifacts-destination`.
"""

from __future__ import annotations

PROXY_SCHEME = "mlflow-artifacts:"


def artifact_uri(location: str, artifacts_destination: str) -> str:
    """`mlflow-artifacts:/1/models/m-x/artifacts` + `s3://bucket` → `s3://bucket/1/models/m-x/artifacts`."""
    if location.startswith(PROXY_SCHEME):
        path = location[len(PROXY_SCHEME):].lstrip("/")
        return f"{artifacts_destination.rstrip('/')}/{path}"
    if location.startswith(("s3://", "gs://", "https://")):
        return location
    raise ValueError(f"artifact location {location!r} is neither proxied ({PROXY_SCHEME}) nor a bucket URI")


def resolve(name: str, alias: str, artifacts_destination: str, client=None) -> str:
    """The bucket URI of the model version that `name@alias` points at."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    version = client.get_model_version_by_alias(name, alias)
    if version.model_id:  # MLflow 3: versions point at a logged model with its own location
        location = client.get_logged_model(version.model_id).artifact_location
    else:
        location = client.get_model_version_download_uri(name, version.version)
    return artifact_uri(location, artifacts_destination)
