"""Read the stack's Pulumi config into a `StackConfig`, or fail with one readable message.

Runs before any resource is declared, so a bad stack file never leaves a half-declared stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from infra.config import StackConfig
from infra.defaults import deep_merge, with_defaults

PROJECT = "mlops-stack"
IMPLEMENTED_PLATFORMS = ("minikube", "existing")
# Config fields that must be stored encrypted (`pulumi config set --secret`).
SECRET_PATHS = (("mlflow", "adminPassword"), ("monitoring", "grafanaAdminPassword"))


class ConfigError(Exception):
    """Every problem of a stack config, ready to print as one message."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack config ({len(problems)} problem(s)):\n{lines}")


def _decode(value: Any) -> Any:
    """Pulumi hands structured config values over as JSON text."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def raw_from_pulumi_config(
    values: Mapping[str, Any], secret_keys: Iterable[str]
) -> tuple[dict[str, Any], set[str]]:
    """This project's keys (`mlops-stack:<key>`) as a nested dict, and which top keys are secret.

    Keys of other namespaces (e.g. `kubernetes:context`) belong to providers and are ignored.
    """
    raw: dict[str, Any] = {}
    secret_top: set[str] = set()
    prefix = f"{PROJECT}:"
    secrets = set(secret_keys)
    for key, value in values.items():
        if not key.startswith(prefix):
            continue
        path = key[len(prefix) :].split(".")
        decoded = _decode(value)
        existing = raw.get(path[0])
        if len(path) == 1 and isinstance(existing, dict) and isinstance(decoded, dict):
            raw[path[0]] = deep_merge(existing, decoded)
        else:
            _set_path(raw, path, decoded)
        if key in secrets:
            secret_top.add(path[0])
    return raw, secret_top


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at `loc` (the parent of an unknown key)."""
    model: type[BaseModel] | None = StackConfig
    for part in loc:
        if model is None:
            return []
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _is_secret_path(loc: tuple[Any, ...]) -> bool:
    return any(loc[: len(p)] == p for p in SECRET_PATHS)


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(stack)"
    if error["type"] == "missing":
        return f"{PROJECT}:{key}: missing; this key is required"
    given = "[secret]" if _is_secret_path(loc) else json.dumps(error.get("input"), default=str)
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1])) or "none"
        return f"{PROJECT}:{key}: unknown key (value {given}); allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{PROJECT}:{key}: got {given}; {message}"


def _cross_checks(merged: Mapping[str, Any], secret_top: set[str]) -> list[str]:
    """Checks that span keys or depend on how a value was stored."""
    problems = []
    platform = merged.get("platform")
    if platform in ("gke", "eks"):
        problems.append(
            f"{PROJECT}:platform: got {json.dumps(platform)}; the {platform.upper()} platform has its "
            f"place in the schema but is not implemented yet; allowed today: "
            f"{', '.join(IMPLEMENTED_PLATFORMS)}"
        )
    kubernetes = merged.get("kubernetes")
    if platform == "existing" and isinstance(kubernetes, dict) and not kubernetes.get("context"):
        problems.append(
            f"{PROJECT}:kubernetes.context: missing; platform 'existing' needs the kubeconfig "
            "context of the cluster (see `kubectl config get-contexts`)"
        )
    for path in SECRET_PATHS:
        section = merged.get(path[0])
        if isinstance(section, dict) and section.get(path[1]) is not None and path[0] not in secret_top:
            problems.append(
                f"{PROJECT}:{'.'.join(path)}: stored in plain text; allowed: an encrypted value, set "
                f"with `pulumi config set --secret --path '{'.'.join(path)}' <value>`"
            )
    return problems


def parse_stack_config(raw: Mapping[str, Any], secret_top: set[str] | None = None) -> StackConfig:
    """Validate `raw` layered over its defaults; raise ConfigError listing every problem."""
    merged = with_defaults(dict(raw))
    problems = _cross_checks(merged, secret_top or set())
    try:
        config = StackConfig.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_describe(e) for e in exc.errors())
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_stack_config() -> StackConfig:
    """The running stack's config, from the Pulumi engine (or the offline plan's mocks)."""
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | set(
        runtime_config._SECRET_KEYS.get()
    )
    raw, secret_top = raw_from_pulumi_config(values, secret_keys)
    return parse_stack_config(raw, secret_top)
