"""Custom resources against the CRD schemas of the pinned operators, as the API server sees them.

A CRD's schema is structural: the API server *prunes* every field the schema does not define
(outside `x-kubernetes-preserve-unknown-fields`) before it validates and stores the object, so a
misplaced field is silently lost and the operator never sees it. Here a pruned field is an error
naming the object, the JSON path and the fields allowed there; the pruned object is then checked
for types, enums, patterns and `required` (jsonschema, OpenAPI v3 = draft 4 plus `nullable`),
int-or-string, list-type uniqueness, embedded resources and the CRD's CEL rules
(`x-kubernetes-validations`, with cel-python).

The schemas are data (this folder, one JSON file per CRD, descriptions stripped), extracted from
the CRD each pinned chart installs at its pinned tag; each file records its source. The
`cloudcoil-models-*` packages were not used: no release matches the pinned versions and their
pydantic models ignore unknown fields (docs/decisions/0004-custom-resource-schemas.md).
Not checked: `format` values, and CEL transition rules (they use `oldSelf`, so updates only).

Add or refresh a CRD:
  python -m mlops.crds FILE --repository OWNER/NAME --tag TAG --path PATH_IN_REPO --chart NAME@VERSION
                           [--kind K ...] [--version V ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

DATA = Path(__file__).parent
PRESERVE = "x-kubernetes-preserve-unknown-fields"
EMBEDDED = "x-kubernetes-embedded-resource"
INT_OR_STRING = "x-kubernetes-int-or-string"
RULES = "x-kubernetes-validations"
# metav1.ObjectMeta: the fields the API server keeps in a root or embedded resource's metadata
OBJECT_META = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
})


@dataclass(frozen=True)
class Crd:
    group: str
    kind: str
    scope: str
    served: tuple[str, ...]  # versions the CRD serves
    schemas: Mapping[str, Any]  # openAPIV3Schema by version, for the versions kept here
    source: str  # "<repository>@<tag>:<path>"
    chart: tuple[str, str]  # the Helm chart (name, version) that installs this CRD


@functools.cache
def crds() -> dict[tuple[str, str], Crd]:
    """The stored CRDs by (group, kind)."""
    found: dict[tuple[str, str], Crd] = {}
    for path in sorted(DATA.glob("*.json")):
        d = json.loads(path.read_text())
        s = d["source"]
        found[(d["group"], d["kind"])] = Crd(d["group"], d["kind"], d["scope"], tuple(d["served"]),
                                             d["versions"], f"{s['repository']}@{s['tag']}:{s['path']}",
                                             (s["chart"], s["chartVersion"]))
    return found


def _group(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", "")).rpartition("/")[0]


def is_custom(obj: Mapping[str, Any]) -> bool:
    """Whether the object's group is one a stored CRD defines (so the core schemas cannot know it)."""
    return any(g == _group(obj) for g, _ in crds())


def crd_of(obj: Mapping[str, Any]) -> Crd | None:
    return crds().get((_group(obj), str(obj.get("kind", ""))))


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(root)"


def _allowed(schema: Mapping[str, Any], embedded: bool) -> list[str]:
    names = set(schema.get("properties", {}))
    return sorted(names | {"apiVersion", "kind", "metadata"} if embedded else names)


def _meta_problems(meta: Any, where: tuple[str | int, ...]) -> Iterator[str]:
    if isinstance(meta, Mapping):
        for key in sorted(set(meta) - OBJECT_META):
            yield (f"{_path((*where, key))}: not an ObjectMeta field, the API server drops it; "
                   f"allowed: {', '.join(sorted(OBJECT_META))}")


def _unique(items: list[Any], schema: Mapping[str, Any], where: tuple[str | int, ...]) -> Iterator[str]:
    kind = schema.get("x-kubernetes-list-type")
    if kind == "set":
        keys = [json.dumps(i, sort_keys=True) for i in items]
        what = "a set"
    elif kind == "map":
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [json.dumps([i.get(n) for n in names]) if isinstance(i, Mapping) else "" for i in items]
        what = f"a map keyed by {', '.join(names)}"
    else:
        return
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        yield f"{_path(where)}: list is {what} but repeats {', '.join(dupes)}"


def prune(value: Any, schema: Mapping[str, Any], where: tuple[str | int, ...] = (),
          root: bool = True) -> tuple[Any, list[str]]:
    """The value as the API server stores it, one problem per field it drops, and the CEL rules
    (evaluated on the pruned value, as the API server does) that it fails."""
    kept, problems = _prune(value, schema, where, root)
    return kept, problems + list(_rules(kept, schema, where))


def _rules(value: Any, schema: Mapping[str, Any], where: tuple[str | int, ...]) -> Iterator[str]:
    for rule in schema.get(RULES, ()):
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: the API server checks it on updates only
        try:
            passed, why = _cel(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}), ""
        except celpy.CELEvalError as error:  # the API server rejects an object its rule cannot evaluate
            passed, why = False, f", evaluation error: {error.args[0]}"
        if not passed:
            field = rule.get("fieldPath", "").strip(".")
            path = _path((*where, *field.split("."))) if field else _path(where)
            yield f"{path}: {rule.get('message') or 'fails'} (CEL rule: {rule['rule']}{why})"


@functools.cache
def _cel(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _prune(value: Any, schema: Mapping[str, Any], where: tuple[str | int, ...],
           root: bool) -> tuple[Any, list[str]]:
    problems: list[str] = []
    embedded = root or bool(schema.get(EMBEDDED))
    if isinstance(value, list):
        problems += _unique(value, schema, where)
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return value, problems
        kept = []
        for i, item in enumerate(value):
            child, found = prune(item, items, (*where, i), root=False)
            kept.append(child)
            problems += found
        return kept, problems
    if not isinstance(value, Mapping) or schema.get(INT_OR_STRING) or schema.get("type") not in (None, "object"):
        return value, problems
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    kept_obj: dict[str, Any] = {}
    for key, child in value.items():
        if embedded and key in ("apiVersion", "kind"):
            kept_obj[key] = child
        elif embedded and key == "metadata":
            problems += _meta_problems(child, (*where, key))
            kept_obj[key] = child
        elif key in properties:
            kept_obj[key], found = prune(child, properties[key], (*where, key), root=False)
            problems += found
        elif isinstance(extra, Mapping):
            kept_obj[key], found = prune(child, extra, (*where, key), root=False)
            problems += found
        elif schema.get(PRESERVE) or extra is True:
            kept_obj[key] = child
        else:
            allowed = _allowed(schema, embedded)
            problems.append(f"{_path((*where, key))}: field not in the CRD schema, the API server drops it; "
                            f"allowed here: {', '.join(allowed) if allowed else '(none: an empty object)'}")
    if embedded and not root:
        problems += [f"{_path((*where, k))}: an embedded resource needs {k}"
                     for k in ("apiVersion", "kind") if not kept_obj.get(k)]
    return kept_obj, problems


def _as_jsonschema(schema: Any) -> Any:
    """A Kubernetes structural schema as draft-4 JSON Schema: `nullable` and int-or-string spelt out."""
    if isinstance(schema, list):
        return [_as_jsonschema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {k: _as_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get(INT_OR_STRING) and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out


@functools.cache
def _validator(group: str, kind: str, version: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_as_jsonschema(crds()[(group, kind)].schemas[version]))


def validate_custom_resource(obj: Mapping[str, Any]) -> list[str]:
    """Problems the API server would report (or silently cause, by pruning) when applying `obj`."""
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    kind = str(obj.get("kind", ""))
    crd = crd_of(obj)
    if crd is None:
        known = ", ".join(sorted(f"{g}/{k}" for g, k in crds()))
        return [f"no CRD schema stored for {kind} in group {group!r} (known: {known}); add the CRD of the "
                f"pinned operator to mlops/crds (python -m mlops.crds --help)"]
    if version not in crd.served:
        return [f"apiVersion {obj.get('apiVersion')}: {crd.source} serves {', '.join(crd.served)}"]
    if version not in crd.schemas:
        return [f"apiVersion {obj.get('apiVersion')}: no schema of {version} stored from {crd.source}; "
                f"extract it with --version {version} (python -m mlops.crds --help)"]
    schema = crd.schemas[version]
    pruned, problems = prune(obj, schema)
    if crd.scope == "Cluster" and (obj.get("metadata") or {}).get("namespace"):
        problems.append(f"metadata.namespace: {kind} is cluster-scoped ({crd.source}); drop the namespace")
    for error in sorted(_validator(group, kind, version).iter_errors(pruned), key=lambda e: list(e.path)):
        problems.append(f"{_path(tuple(error.path))}: {error.message}")
    return problems


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare `=` (an enum value in prometheus-operator's CRDs) as a `value` tag."""


_Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_scalar)


def _documents(text: str) -> Iterator[dict[str, Any]]:
    """CRD documents of a plain or Helm-templated YAML file (template actions removed)."""
    plain = re.sub(r"\{\{.*?\}\}", "", text)
    yield from (d for d in yaml.load_all(plain, Loader=_Loader) if isinstance(d, dict)
                and d.get("kind") == "CustomResourceDefinition")


def extract(text: str, source: Mapping[str, str], versions: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stored form of each CRD in `text`: kind, scope, served versions, schemas without descriptions."""
    for crd in _documents(text):
        spec = crd["spec"]
        served = [v for v in spec["versions"] if v.get("served")]
        keep = [v for v in served if (v["name"] in versions if versions else v.get("storage"))]
        yield {"source": dict(source), "name": crd["metadata"]["name"], "group": spec["group"],
               "kind": spec["names"]["kind"], "scope": spec["scope"], "served": [v["name"] for v in served],
               "versions": {v["name"]: _strip(v["schema"]["openAPIV3Schema"]) for v in keep}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlops.crds", description="Store CRD schemas as data.")
    parser.add_argument("file", type=Path, help="CRD YAML (plain or a chart template) read at the pinned tag")
    parser.add_argument("--repository", required=True, help="upstream repository, owner/name")
    parser.add_argument("--tag", required=True, help="the pinned tag the file was read at")
    parser.add_argument("--path", required=True, help="the file's path in the repository")
    parser.add_argument("--chart", required=True, help="the chart that installs the CRD, NAME@VERSION")
    parser.add_argument("--kind", action="append", help="keep only these kinds (default: all in the file)")
    parser.add_argument("--version", action="append", help="versions to keep (default: the storage version)")
    args = parser.parse_args(argv)
    chart, _, chart_version = args.chart.partition("@")
    source = {"repository": args.repository, "tag": args.tag, "path": args.path,
              "chart": chart, "chartVersion": chart_version}
    for stored in extract(args.file.read_text(), source, set(args.version or ())):
        if args.kind and stored["kind"] not in args.kind:
            continue
        out = DATA / f"{stored.pop('name')}.json"
        out.write_text(json.dumps(stored, sort_keys=True, separators=(",", ":")) + "\n")
        print(f"{out}: {stored['kind']} {', '.join(stored['versions'])} ({out.stat().st_size} bytes)")
