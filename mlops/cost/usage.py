"""The usage file: what a stack file cannot know (traffic, requests, logs, spot share, discounts).

Like Infracost's usage file: every key has a default (`pricing/usage.default.yaml`), a user file
overrides some of them, and the report lists every value used. A bad file fails with the key,
the value given and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from infra.defaults import deep_merge
from mlops.cost.prices import PRICING

DEFAULT_USAGE = PRICING / "usage.default.yaml"
Fraction = Field(ge=0, le=1)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PoolUsage(_Model):
    nodes: float | None = Field(default=None, ge=0, description="average nodes running (total, all zones)")


class NodePoolsUsage(_Model):
    system: PoolUsage = PoolUsage()
    workload: PoolUsage = PoolUsage()


class ObjectStorageUsage(_Model):
    stored_gib: float | None = Field(default=None, ge=0)
    writes_per_month: float = Field(ge=0)
    reads_per_month: float = Field(ge=0)


class NetworkUsage(_Model):
    internet_egress_gib: float = Field(ge=0)
    nat_processed_gib: float = Field(ge=0)
    load_balancer_gib: float = Field(ge=0)


class RegistryUsage(_Model):
    stored_gib: float | None = Field(default=None, ge=0)  # None: the stack's images (infra/images.py registry_gib)


class LogsUsage(_Model):
    ingested_gib: float = Field(ge=0)


class DatabaseUsage(_Model):
    backup_gib: float | None = Field(default=None, ge=0)


class Discounts(_Model):
    compute: float = Fraction
    database: float = Fraction


class Usage(_Model):
    hours_per_month: float = Field(gt=0, le=744)
    node_pools: NodePoolsUsage
    spot_share: float = Fraction
    spot_discount: float | None = Field(default=None, ge=0, le=1)
    object_storage: ObjectStorageUsage
    network: NetworkUsage
    registry: RegistryUsage
    logs: LogsUsage
    database: DatabaseUsage
    discounts: Discounts
    onprem: dict[str, Any] = Field(default_factory=dict, description="overrides of pricing/onprem.yaml")


class UsageError(ValueError):
    """Every problem of a usage file, one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid usage file {source} ({len(problems)} problem(s)):\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    for part in loc:
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())] if field else []
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return "none"
        model = nested
    return ", ".join(f.alias or n for n, f in model.model_fields.items())


def describe_errors(error: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """`key: got value; what is allowed` for each pydantic error."""
    problems = []
    for e in error.errors():
        loc = tuple(e["loc"])
        key = prefix + ".".join(str(p) for p in loc)
        given = json.dumps(e.get("input"), default=str)
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key (value {given}); allowed keys here: {_allowed(model, loc[:-1])}")
        elif e["type"] == "missing":
            problems.append(f"{key}: missing; this key is required")
        else:
            problems.append(f"{key}: got {given}; allowed: {e['msg'].removeprefix('Value error, ')}")
    return problems


def load_usage(path: Path | None = None) -> Usage:
    """The defaults, overridden by `path` if given."""
    raw = yaml.safe_load(DEFAULT_USAGE.read_text())
    source = str(DEFAULT_USAGE)
    if path is not None:
        source = str(path)
        try:
            user = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(source, [f"cannot read it as YAML: {error}"]) from None
        if user is not None and not isinstance(user, dict):
            raise UsageError(source, [f"(file): got {json.dumps(user, default=str)}; allowed: a mapping of keys"])
        raw = deep_merge(raw, user or {})
    try:
        return Usage.model_validate(raw)
    except ValidationError as error:
        raise UsageError(source, describe_errors(error, Usage)) from None
