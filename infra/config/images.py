"""`images`: where the images built from this repository come from (a section of `StackConfig`).

Checks across keys and platforms are in `infra/images.py` (`image_problems`), with messages that
never echo the password.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

# "<host>[:port][/<path>]" with a host Docker recognises as a registry (a dot, a port, or localhost)
_REGISTRY = re.compile(r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9-]+(\.[a-z0-9-]+)*:[0-9]+)(:[0-9]+)?"
                       r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


class ImagesConfig(BaseModel):
    """The project's images (mlflow-server, mlserver, and the enabled workloads' images)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    mode: Literal["local", "build", "prebuilt"] = Field(
        description="local: `make up` builds them into minikube's node (minikube only); build: `pulumi up` "
                    "builds them and pushes them to `registry`, pods use their digests; prebuilt: the image "
                    "keys name pushed images (pinned by digest)")
    registry: str | None = Field(
        default=None, description="<host>[:port]/<path> the stack pushes to (mode build); the cluster's nodes "
                                  "must be able to pull from it")
    username: str | None = Field(default=None, description="registry user the build pushes as; unset = "
                                                           "the builder's own docker credentials")
    password: SecretStr | None = Field(default=None, description="secret; password or token of `username`")
    platforms: list[Literal["linux/amd64", "linux/arm64"]] | None = Field(
        default=None, min_length=1,
        description="architectures to build for: every node's; unset = the node pools' on gke/eks (arm64 for "
                    "Graviton and Tau T2A/Axion pools, both when mixed), linux/amd64 elsewhere")

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is not None and not _REGISTRY.match(v):
            raise ValueError("a registry host with an optional port and path, such as 'registry.example.org/mlops' "
                             "or 'localhost:5000', is allowed (lowercase, no scheme, no tag)")
        return v
