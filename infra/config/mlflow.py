"""`mlflow`: the tracking server and registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from infra.config.base import Image, Model, Resources


class MlflowConfig(Model):
    image: Image
    replicas: int = Field(ge=1, le=20)
    workers: int = Field(ge=1, le=16, description="uvicorn workers per pod")
    resources: Resources
    admin_username: str = "admin"
    admin_password: SecretStr | None = Field(
        default=None, description="secret; generated (and exported as a secret) when unset"
    )
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "READ"
