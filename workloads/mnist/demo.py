"""The MNIST drawing page (the source thesis's web portal), served beside the model through the
platform gateway at `models.<domain>/demo/mnist/`.

The page (`demo/index.html`: canvas, Predict/Clear, the answer and a bar chart of the ten
probabilities; no CDN, no build step) POSTs the drawing as a PNG, `{"binData": "<base64>"}`, to the
model's Seldon route on the same host, so no CORS is involved. Seldon's Python wrapper serves no
static files, so a small static server does: nginx (unprivileged image, non-root, read-only root
filesystem) with the page and its config from a ConfigMap; the model's path is written into the
page at deploy time. The page's Content-Security-Policy allows exactly its own inline script and
style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

PAGE = Path(__file__).with_name("demo") / "index.html"
PLACEHOLDER = "{{PREDICTIONS_PATH}}"
PATH_PREFIX = "/demo/mnist/"
NAME = "mnist-demo"
COMPONENT = "demo"
# nginx's unprivileged build: listens on 8080, runs as uid 101, writes only under /tmp
SERVER_IMAGE = "docker.io/nginxinc/nginx-unprivileged:1.29.8-alpine"
UID = 101
PORT = 8080
HTML_ROOT = "/usr/share/nginx/html"
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def predictions_path(namespace: str, model: str, engine: str = "seldon") -> str:
    """The Seldon protocol route of a served model on the gateway: the engine's prefix (Seldon's
    VirtualService, or kserve.py's route for a `protocol: seldon` image), then the wrapper's path."""
    return f"/{engine}/{namespace}/{model}/api/v1.0/predictions"


def render_page(predictions: str) -> str:
    """The page with the model's route written in (a same-origin absolute path)."""
    if not _SAFE_PATH.match(predictions):
        raise ValueError(f"mnist demo: predictions path {predictions!r} must be an absolute URL path "
                         "(letters, digits, ._~/-), e.g. /seldon/serving/mnist/api/v1.0/predictions")
    html = PAGE.read_text(encoding="utf-8")
    if html.count(PLACEHOLDER) != 1:
        raise ValueError(f"{PAGE}: expected {PLACEHOLDER} exactly once (the meta tag mnist-predictions)")
    return html.replace(PLACEHOLDER, predictions)


def _hashes(page: str, tag: str) -> str:
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
    if not bodies:
        raise ValueError(f"{PAGE}: no inline <{tag}> to allow")
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)


def content_security_policy(page: str) -> str:
    """Only the page's own inline script and style run; it may call nothing but its own origin."""
    return ("default-src 'none'; "
            f"script-src {_hashes(page, 'script')}; style-src {_hashes(page, 'style')}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def nginx_conf(csp: str, listen: str = str(PORT), root: str = HTML_ROOT) -> str:
    """The one server block: the page at `/`, a health path, 404 for anything else."""
    return f"""server {{
    listen {listen};
    server_name _;
    root {root};
    server_tokens off;
    charset utf-8;
    location = /healthz {{ access_log off; default_type text/plain; return 200 "ok\\n"; }}
    location = / {{
        add_header Content-Security-Policy "{csp}" always;
        add_header X-Content-Type-Options nosniff always;
        add_header Cache-Control no-cache always;
        try_files /index.html =404;
    }}
    location / {{ return 404; }}
}}
"""


@dataclass(frozen=True)
class MnistDemoArgs:
    namespace: pulumi.Input[str]
    predictions_path: pulumi.Input[str]  # see predictions_path()
    gateway: str  # "<namespace>/<name>" of the Istio Gateway
    host: str  # the models host, e.g. models.localtest.me
    https_only: bool  # the gateway terminates TLS: route port 443 (port 80 redirects to it)
    image: str = SERVER_IMAGE
    # nginx with one worker serving one small file: a few MiB
    resources: Mapping[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}})


class MnistDemo(pulumi.ComponentResource):
    """ConfigMap (page + nginx config), the static server, its Service, NetworkPolicy and route."""

    def __init__(self, name: str, args: MnistDemoArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:MnistDemo", name, None, opts)
        page = pulumi.Output.from_input(args.predictions_path).apply(render_page)
        conf = page.apply(lambda p: nginx_conf(content_security_policy(p)))
        config = k8s.core.v1.ConfigMap(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            data={"index.html": page, "default.conf": conf}, opts=kube.child(self))
        # nginx reads its config once: a changed ConfigMap rolls the pod
        checksum = pulumi.Output.all(page, conf).apply(
            lambda parts: hashlib.sha256("".join(parts).encode()).hexdigest())
        self._deployment(name, args, config.metadata.name, checksum)
        k8s.core.v1.Service(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={"selector": kube.selector(NAME), "ports": [{"name": "http", "port": 80, "target_port": "http"}]},
            opts=kube.child(self))
        gateway_namespace = args.gateway.split("/", 1)[0]
        kube.ingress_policy(name, args.namespace, COMPONENT, NAME, [{
            "from_": [{"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": gateway_namespace}}}],
            "ports": [{"port": PORT, "protocol": "TCP"}],
        }], kube.child(self))
        self._route(name, args)
        self.register_outputs({})

    def _deployment(self, name: str, args: MnistDemoArgs, config: pulumi.Input[str],
                    checksum: pulumi.Input[str]) -> None:
        items = {"page": [{"key": "index.html", "path": "index.html"}],
                 "conf": [{"key": "default.conf", "path": "default.conf"}]}
        k8s.apps.v1.Deployment(
            name, metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={
                "replicas": 1,
                "selector": {"match_labels": kube.selector(NAME)},
                "template": {
                    "metadata": {"labels": kube.labels(NAME, COMPONENT),
                                 "annotations": {"checksum/config": checksum}},
                    "spec": {
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(UID),
                        "containers": [{
                            "name": "nginx",
                            "image": args.image,
                            "ports": [{"name": "http", "container_port": PORT}],
                            "resources": dict(args.resources),
                            "security_context": kube.CONTAINER_SECURITY,
                            "volume_mounts": [{"name": "page", "mount_path": HTML_ROOT, "read_only": True},
                                              {"name": "conf", "mount_path": "/etc/nginx/conf.d", "read_only": True},
                                              {"name": "tmp", "mount_path": "/tmp"}],
                            "readiness_probe": kube.http_probe("/healthz", "http"),
                            "liveness_probe": kube.http_probe("/healthz", "http", period=30),
                        }],
                        "volumes": [
                            *({"name": v, "config_map": {"name": config, "items": i}} for v, i in items.items()),
                            {"name": "tmp", "empty_dir": {"size_limit": "16Mi"}}],
                    },
                },
            },
            opts=kube.child(self))

    def _route(self, name: str, args: MnistDemoArgs) -> None:
        """`/demo/mnist/` → the server's `/` (and `/demo/mnist` → `/demo/mnist/`), on the models host."""
        port = {"port": 443} if args.https_only else {}
        destination = {"host": pulumi.Output.concat(NAME, ".", args.namespace, ".svc.cluster.local"),
                       "port": {"number": 80}}
        k8s.apiextensions.CustomResource(
            f"{name}-route", api_version="networking.istio.io/v1", kind="VirtualService",
            metadata=kube.metadata(NAME, args.namespace, COMPONENT),
            spec={"hosts": [args.host], "gateways": [args.gateway], "http": [
                {"name": "mnist-demo-slash", "match": [{**port, "uri": {"exact": PATH_PREFIX.rstrip("/")}}],
                 "redirect": {"uri": PATH_PREFIX}},
                {"name": "mnist-demo", "match": [{**port, "uri": {"prefix": PATH_PREFIX}}], "rewrite": {"uri": "/"},
                 "route": [{"destination": destination}]},
            ]},
            opts=kube.child(self))
