"""The config reference table of the README, generated from the config model and its defaults.

`mlops config-reference` prints it; a test keeps README.md in step with the model.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from infra.config import StackConfig
from infra.defaults import BASE, ENVIRONMENT, PLATFORM

def _models_in(annotation: Any) -> list[type[BaseModel]]:
    args = typing.get_args(annotation) or (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _allowed(annotation: Any, info: FieldInfo) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_allowed(a, info) for a in args)
    if annotation is SecretStr:
        return "secret string"
    bounds = [f"{k} {getattr(m, n)}" for m in info.metadata for n, k in (("ge", "≥"), ("le", "≤"))
              if hasattr(m, n)]
    name = getattr(annotation, "__name__", str(annotation))
    return name + (f" ({', '.join(bounds)})" if bounds else "")


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any, FieldInfo]]:
    for name, info in model.model_fields.items():
        if info.exclude:  # filled in by the program, never written in a stack file
            continue
        key = f"{prefix}{info.alias or name}"
        if typing.get_origin(info.annotation) is dict:  # a map of named entries, e.g. serving.models
            key += ".<name>"
            nested = _models_in(typing.get_args(info.annotation)[1])
        else:
            nested = _models_in(info.annotation)
        if nested and nested[0].__name__ not in ("Image", "Resources"):
            yield from _walk(nested[0], key + ".")
        else:
            yield key, info.annotation, info


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, dict) and "repository" in value:
        return f"`{value['repository']}:{value['tag']}`"
    if isinstance(value, dict):
        return "`" + ", ".join(f"{k}={v}" for k, v in value.items()) + "`"
    return f"`{json.dumps(value)}`"


def _show_default(info: FieldInfo) -> str:
    """A field's own default; one built by a factory (an empty map or list) is shown as it is built."""
    value = info.default_factory() if info.default_factory is not None else info.default
    return "—" if value is None else _show(value)


def config_reference() -> str:
    layers = {**{f"{e}": ENVIRONMENT[e] for e in ENVIRONMENT}, **{p: PLATFORM[p] for p in PLATFORM}}
    lines = [
        "| key (`mlops-stack:` …) | allowed | default | per environment / platform | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, annotation, info in _walk(StackConfig):
        base = _lookup(BASE, key)
        default = _show(base) if base is not None else (
            "required" if info.is_required() else _show_default(info))
        overrides = "; ".join(f"{name}: {_show(v)}" for name, layer in layers.items()
                              if (v := _lookup(layer, key)) is not None)
        lines.append(f"| `{key}` | {_allowed(annotation, info)} | {default} | {overrides} | "
                     f"{info.description or ''} |")
    return "\n".join(lines)
