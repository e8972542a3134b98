"""`mlops models`: the catalog of served models for their consumers.

For every model endpoint a stack exports (`modelUrls`, flat; `tenantModelUrls`, tenant -> model ->
URL) it asks the endpoint itself what it serves, so the catalog is what answers, not what was
declared: the served version, the inputs and outputs, and where the API is described.

- V2 (MLServer, `…/v2/models/<name>/infer`): `GET …/v2/models/<name>` is the model metadata of the
  Open Inference Protocol; the project's alias runtime adds the registry model, alias and version
  in `parameters` (modules/serving/mlserver-image/mlops_mlserver.py). MLServer itself also serves
  the model's OpenAPI at `…/v2/models/<name>/docs/dataplane.json`, recorded when it answers (Seldon's
  executor does not route it, so through the gateway only the metadata is there).
- Seldon protocol (`…/api/v1.0/predictions`): `GET …/api/v1.0/metadata`: the graph metadata through
  Seldon's executor (`models.<node>`, `graphinputs`, `graphoutputs`), the model metadata when it is
  the Python wrapper itself (seldon-core 1.17.1 `seldon_core/wrapper.py`, `init_metadata`).

Standard library only, like `mlops smoke`, so it also runs in the evaluation image.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PLATFORM_TENANT = "platform"  # the tenant label of the platform's own models (`modelUrls`)
V2_INFER = "/v2/models/"
SELDON_PREDICT = "/api/v1.0/predictions"


@dataclass(frozen=True)
class Endpoint:
    tenant: str
    model: str
    url: str  # predictions endpoint

    @property
    def protocol(self) -> str:
        """`v2` or `seldon`, read from the URL the engine exported; `unknown` for anything else."""
        if V2_INFER in self.url and self.url.endswith("/infer"):
            return "v2"
        if self.url.endswith(SELDON_PREDICT):
            return "seldon"
        return "unknown"

    @property
    def metadata_url(self) -> str:
        if self.protocol == "v2":
            return self.url.removesuffix("/infer")
        return self.url.removesuffix(SELDON_PREDICT) + "/api/v1.0/metadata"


def endpoints(outputs: Mapping[str, Any], tenants: Iterable[str] | None = None) -> list[Endpoint]:
    """The endpoints of stack outputs (`modelUrls` + `tenantModelUrls`), or of a bare map of them:
    `{tenant: {model: url}}` or `{model: url}` (the platform's models), as the evaluation's
    ConfigMap holds. `tenants` keeps only those tenants (`platform` names the platform's models)."""
    if "modelUrls" in outputs or "tenantModelUrls" in outputs:
        found = _flat(outputs.get("modelUrls") or {}) + _nested(outputs.get("tenantModelUrls") or {})
    else:
        flat = {k: v for k, v in outputs.items() if isinstance(v, str)}
        found = _flat(flat) + _nested({k: v for k, v in outputs.items() if isinstance(v, Mapping)})
    wanted = set(tenants) if tenants is not None else None
    if wanted is not None:
        unknown = sorted(wanted - {e.tenant for e in found})
        if unknown:
            raise ValueError(f"tenant(s) {unknown} have no model URL in the outputs; known: "
                             f"{sorted({e.tenant for e in found})}")
    return sorted((e for e in found if wanted is None or e.tenant in wanted), key=lambda e: (e.tenant, e.model))


def _flat(urls: Mapping[str, Any]) -> list[Endpoint]:
    return [Endpoint(PLATFORM_TENANT, model, str(url)) for model, url in urls.items()]


def _nested(urls: Mapping[str, Any]) -> list[Endpoint]:
    return [Endpoint(tenant, model, str(url)) for tenant, models in urls.items() for model, url in models.items()]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


Get = Callable[[str], Reply]


def http_get(timeout: float, verify_tls: bool = True, headers: Mapping[str, str] | None = None) -> Get:
    """A GET that returns any HTTP status as a Reply and raises OSError for refused/DNS/timeout/TLS."""
    context = None if verify_tls else ssl._create_unverified_context()  # self-signed dev certificates

    def get(url: str) -> Reply:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return Reply(response.status, response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read())

    return get


@dataclass(frozen=True)
class Entry:
    """One model as its endpoint describes itself; `status` is `ok` or why it could not say."""

    tenant: str
    model: str
    protocol: str
    url: str
    status: str
    version: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metadata_url: str = ""
    openapi_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the endpoint's answer, as it is


def _tensors(items: Any) -> list[dict[str, Any]]:
    """name/datatype/shape of V2 tensors or Seldon metadata tensors (which say `messagetype`)."""
    if not isinstance(items, list):
        return []
    keep = ("name", "datatype", "shape", "messagetype", "schema")
    return [{k: item[k] for k in keep if k in item} for item in items if isinstance(item, dict)]


def served_version(metadata: Mapping[str, Any]) -> str | None:
    """The alias runtime's `parameters.version`, else the first of `versions` (V2 and Seldon models)."""
    parameters = metadata.get("parameters")
    if isinstance(parameters, Mapping) and parameters.get("version") is not None:
        return str(parameters["version"])
    listed = metadata.get("versions")
    versions = [str(v) for v in listed if v not in (None, "")] if isinstance(listed, list) else []
    return versions[0] if versions else None


def _seldon_model(metadata: dict[str, Any]) -> dict[str, Any]:
    """The model's own metadata: the wrapper's answer, or the single node of the executor's graph."""
    models = metadata.get("models")
    if isinstance(models, dict) and models:
        node = next(iter(models.values()))
        return {**node, "inputs": metadata.get("graphinputs", node.get("inputs")),
                "outputs": metadata.get("graphoutputs", node.get("outputs"))}
    return metadata


def describe(endpoint: Endpoint, get: Get) -> Entry:
    """Ask one endpoint for its metadata; never raises for what the endpoint does."""
    base = Entry(endpoint.tenant, endpoint.model, endpoint.protocol, endpoint.url, "unknown protocol",
                 metadata_url=endpoint.metadata_url)
    if endpoint.protocol == "unknown":
        return base
    try:
        reply = get(endpoint.metadata_url)
    except OSError as error:
        return _replace(base, status=f"unreachable: {getattr(error, 'reason', error)}")
    if reply.status != 200:
        return _replace(base, status=f"HTTP {reply.status}: {reply.body[:200].decode(errors='replace')}")
    try:
        metadata = json.loads(reply.body)
    except ValueError:
        return _replace(base, status="malformed metadata (not JSON)")
    if not isinstance(metadata, dict):
        return _replace(base, status="malformed metadata (not a JSON object)")
    model = metadata if endpoint.protocol == "v2" else _seldon_model(metadata)
    return _replace(base, status="ok", version=served_version(model), inputs=_tensors(model.get("inputs")),
                    outputs=_tensors(model.get("outputs")), metadata=metadata,
                    openapi_url=_openapi(endpoint, get))


def _openapi(endpoint: Endpoint, get: Get) -> str | None:
    """MLServer's per-model OpenAPI document, where the path reaches MLServer itself."""
    if endpoint.protocol != "v2":
        return None
    url = endpoint.metadata_url + "/docs/dataplane.json"
    try:
        reply = get(url)
        return url if reply.status == 200 and "openapi" in json.loads(reply.body) else None
    except (OSError, ValueError, TypeError):
        return None


def _replace(entry: Entry, **changes: Any) -> Entry:
    return Entry(**{**asdict(entry), **changes})


def catalog(items: Iterable[Endpoint], get: Get) -> list[Entry]:
    return [describe(e, get) for e in items]


def _signature(tensors: list[dict[str, Any]]) -> str:
    if not tensors:
        return "-"
    shown = [f"{t.get('name', '?')}:{t.get('datatype') or t.get('messagetype') or '?'}" for t in tensors[:4]]
    return ", ".join(shown) + (f" (+{len(tensors) - 4})" if len(tensors) > 4 else "")


def render_table(entries: list[Entry]) -> str:
    header = ("TENANT", "MODEL", "PROTOCOL", "VERSION", "STATUS", "INPUTS", "OUTPUTS", "URL")
    rows = [(e.tenant, e.model, e.protocol, e.version or "-", e.status if e.status == "ok" else e.status[:60],
             _signature(e.inputs), _signature(e.outputs), e.url) for e in entries]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    live = sum(e.status == "ok" for e in entries)
    return "\n".join([*lines, f"{live}/{len(entries)} endpoints described themselves"])


def render_json(entries: list[Entry]) -> str:
    return json.dumps([asdict(e) for e in entries], indent=2, sort_keys=True)
