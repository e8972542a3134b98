"""Building blocks of every config section: the camelCase base model, resources, images."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


Platform = Literal["minikube", "existing", "gke", "eks"]


Environment = Literal["dev", "staging", "prod"]


_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")


_MEMORY = re.compile(r"^\d+(Ki|Mi|Gi|Ti)$")


CRON = re.compile(r"^(\S+\s+){4}\S+$")


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Model(BaseModel):
    """Base for every section: camelCase keys as in Pulumi stack files, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def cpu_millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def memory_mib(quantity: str) -> int:
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[quantity[-2:]]
    return int(int(quantity[:-2]) * factor)


class Resources(Model):
    """Container requests and limits as Kubernetes quantities ("250m", "512Mi")."""

    cpu: str = Field(description="CPU request")
    memory: str = Field(description="memory request")
    cpu_limit: str | None = Field(default=None, description="CPU limit; unset = no CPU throttling")
    memory_limit: str = Field(description="memory limit")

    @field_validator("cpu", "cpu_limit")
    @classmethod
    def _cpu(cls, v: str | None) -> str | None:
        if v is not None and not _CPU.match(v):
            raise ValueError("a CPU quantity such as '250m' or '1' is allowed")
        return v

    @field_validator("memory", "memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not _MEMORY.match(v):
            raise ValueError("a memory quantity such as '256Mi' or '1Gi' is allowed")
        return v

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        if memory_mib(self.memory_limit) < memory_mib(self.memory):
            raise ValueError(f"memoryLimit {self.memory_limit} is below memory {self.memory}")
        if self.cpu_limit and cpu_millicores(self.cpu_limit) < cpu_millicores(self.cpu):
            raise ValueError(f"cpuLimit {self.cpu_limit} is below cpu {self.cpu}")
        return self

    def to_k8s(self) -> dict:
        limits = {"memory": self.memory_limit}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits}


class Image(Model):
    """A container image pinned by tag (never `latest`), optionally by digest too."""

    repository: str
    tag: str
    digest: str | None = None

    @field_validator("tag")
    @classmethod
    def _not_latest(cls, v: str) -> str:
        if v in ("", "latest") or not re.match(r"^[\w][\w.\-]{0,127}$", v):
            raise ValueError("a pinned version tag is allowed (not 'latest')")
        return v

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^sha256:[0-9a-f]{64}$", v):
            raise ValueError("'sha256:' followed by 64 hex digits is allowed")
        return v

    @property
    def version(self) -> str:
        """What follows `repository:` in a reference: the tag, and the digest when pinned."""
        return f"{self.tag}@{self.digest}" if self.digest else self.tag

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.version}"


def cron_expression(v: str) -> str:
    if not CRON.match(v):
        raise ValueError("a cron expression with 5 fields such as '0 11 * * *' is allowed")
    return v
