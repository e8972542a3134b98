"""Read the stack's Pulumi config into a `StackConfig`, or fail with one readable message.

Runs before any resource is declared, so a bad stack file never leaves a half-declared stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from infra.config import StackConfig
from infra.defaults import CLOUD_SECTION, deep_merge, with_defaults
from infra.config.gateway import auth_problems
from infra.config.serving import managed_engine_problems
from infra.images import build_platforms, built_slots, image_problems

PROJECT = "mlops-stack"
# Config fields that must be stored encrypted (`pulumi config set --secret`).
SECRET_PATHS = (("mlflow", "adminPassword"), ("monitoring", "grafanaAdminPassword"),
                ("ci", "runners", "githubToken"), ("images", "password"), ("database", "external", "password"),
                ("monitoring", "alerting", "receivers", "*", "credential"),  # "*": any key
                ("database", "backup", "offsite", "accessKeyId"), ("database", "backup", "offsite", "secretAccessKey"),
                ("gateway", "auth", "sso", "clientSecret"))


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


def _matches(loc: tuple[Any, ...], path: tuple[str, ...]) -> bool:
    return len(loc) >= len(path) and all(p in ("*", part) for part, p in zip(loc, path))


def _is_secret_path(loc: tuple[Any, ...]) -> bool:
    return any(_matches(loc, p) for p in SECRET_PATHS)


def _redacted(loc: tuple[Any, ...], value: Any) -> Any:
    """`value` as given at `loc`, with every secret inside it (a whole section that failed
    validation carries its tokens and passwords) shown as [secret]."""
    if _is_secret_path(loc):
        return "[secret]"
    if isinstance(value, Mapping):
        return {k: _redacted((*loc, k), v) for k, v in value.items()}
    return value


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(stack)"
    if error["type"] == "missing":
        return f"{PROJECT}:{key}: missing; this key is required"
    given = json.dumps(_redacted(loc, error.get("input")), default=str)
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1])) or "none"
        return f"{PROJECT}:{key}: unknown key (value {given}); allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{PROJECT}:{key}: got {given}; {message}"


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path`, or None where any part is missing."""
    node: Any = tree
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _concrete(tree: Mapping[str, Any], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The paths of `tree` that `path` (with "*" for any key) names and that hold a value."""
    if "*" not in path:
        return [path] if _lookup(tree, path) is not None else []
    at = path.index("*")
    node = _lookup(tree, path[:at])
    if not isinstance(node, Mapping):
        return []
    return [c for key in node for c in _concrete(tree, (*path[:at], str(key), *path[at + 1:]))]


def _cross_checks(merged: Mapping[str, Any], secret_top: set[str]) -> list[str]:
    """Checks that span keys or depend on how a value was stored."""
    problems = []
    platform = merged.get("platform")
    for cloud_platform, section in CLOUD_SECTION.items():
        if section in merged and platform != cloud_platform:
            problems.append(
                f"{PROJECT}:{section}: set, but platform is {json.dumps(platform)}; this section is read "
                f"only with platform '{cloud_platform}'"
            )
    kubernetes = merged.get("kubernetes")
    if platform == "existing" and isinstance(kubernetes, dict) and not kubernetes.get("context"):
        problems.append(
            f"{PROJECT}:kubernetes.context: missing; platform 'existing' needs the kubeconfig "
            "context of the cluster (see `kubectl config get-contexts`)"
        )
    ci = merged.get("ci")
    if isinstance(ci, dict) and ci.get("github") is not None and platform not in CLOUD_SECTION:
        problems.append(
            f"{PROJECT}:ci.github: set, but platform is {json.dumps(platform)}; keyless cloud identities "
            "exist only on gke and eks: allowed unset here (use ci.runners for in-cluster runners)"
        )
    for path in (c for p in SECRET_PATHS for c in _concrete(merged, p)):
        if path[0] not in secret_top:
            problems.append(
                f"{PROJECT}:{'.'.join(path)}: stored in plain text; allowed: an encrypted value, set "
                f"with `pulumi config set --secret --path '{'.'.join(path)}' <value>`"
            )
    return problems


# Zone letters per region, for regions whose zones are public and stable; other regions are taken as
# written and checked by the cloud at `pulumi up`.
GCP_ZONES = {
    "europe-west1": "bcd", "europe-west2": "abc", "europe-west3": "abc", "europe-west4": "abc",
    "europe-southwest1": "abc", "us-central1": "abcf", "us-east1": "bcd", "us-east4": "abc",
    "us-west1": "abc", "asia-east1": "abc", "asia-northeast1": "abc",
}
AWS_ZONES = {
    "us-east-1": "abcdef", "us-east-2": "abc", "us-west-2": "abcd", "eu-west-1": "abc", "eu-west-2": "abc",
    "eu-west-3": "abc", "eu-central-1": "abc", "eu-north-1": "abc", "ca-central-1": "abd",
    "ap-northeast-1": "acd", "ap-southeast-1": "abc",
}
CLOUD_SQL_MAX_BACKUPS = 365
RDS_MAX_BACKUP_DAYS = 35
MAX_NAME_PREFIX = 17  # Google service account ids ("<prefix>-model-server") have at most 30 characters
MAX_GCS_BUCKET = 63
MAX_S3_BUCKET_PREFIX = 37  # the AWS provider appends a 26-character unique suffix


def _problem(key: str, value: Any, message: str) -> str:
    return f"{PROJECT}:{key}: got {json.dumps(value)}; {message}"


def name_prefix(configured: str | None, stack: str) -> str:
    """Physical cloud names start with this: the configured `namePrefix`, else `mlops-<stack>`."""
    return configured or "mlops-" + re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")


def bucket_names(config: StackConfig, stack: str) -> dict[str, str]:
    """Bucket names by purpose, unique worldwide: GCS `<project>-<prefix>-<name>`; on S3 the prefix of
    `<prefix>-<name>-<unique suffix>` (the provider adds the suffix)."""
    if config.gcp is not None:
        prefix = name_prefix(config.gcp.name_prefix, stack)
        return {purpose: f"{config.gcp.project}-{prefix}-{name}" for purpose, name in config.object_store.buckets}
    assert config.aws is not None
    prefix = name_prefix(config.aws.name_prefix, stack)
    return {purpose: f"{prefix}-{name}-" for purpose, name in config.object_store.buckets}


def _name_checks(config: StackConfig, stack: str) -> list[str]:
    """Names derived from the stack name, which only the running program knows."""
    section = CLOUD_SECTION.get(config.platform)
    cloud = getattr(config, section) if section else None
    if cloud is None:
        return []
    prefix = name_prefix(cloud.name_prefix, stack)
    if len(prefix) > MAX_NAME_PREFIX:
        return [f"{PROJECT}:{section}.namePrefix: missing; the default {prefix!r} (mlops-<stack>) is longer than "
                f"{MAX_NAME_PREFIX} characters: set a shorter prefix"]
    limit, shape = (MAX_GCS_BUCKET, "<project>-<namePrefix>-<name>") if section == "gcp" else (
        MAX_S3_BUCKET_PREFIX, "<namePrefix>-<name>-")
    names = dict(config.object_store.buckets)
    return [_problem(f"objectStore.buckets.{purpose}", names[purpose],
                     f"the bucket name {bucket!r} ({shape}) is longer than {limit} characters")
            for purpose, bucket in bucket_names(config, stack).items() if len(bucket) > limit]


def _zone_problems(key: str, region: str, letters: list[str], known: Mapping[str, str], sep: str) -> list[str]:
    allowed = known.get(region)
    if allowed is None:
        return []
    return [_problem(key, letter, f"zone {region}{sep}{letter} does not exist; allowed in {region}: "
                                  f"{', '.join(allowed)}") for letter in letters if letter not in allowed]


def _cloud_checks(config: StackConfig) -> list[str]:
    """Combinations a cloud refuses, found before anything is declared (typed values, after parsing)."""
    problems: list[str] = []
    backup = config.database.backup
    if config.platform == "gke" and config.gcp is not None:
        g = config.gcp
        problems += _zone_problems("gcp.zone", g.region, [g.zone], GCP_ZONES, "-")
        if g.autopilot and not g.regional:
            problems.append(_problem("gcp.regional", False, "Autopilot clusters are regional: allowed true "
                                                            "with gcp.autopilot true"))
        if not g.autopilot and g.node_pools.system.min_nodes < 1:
            problems.append(_problem("gcp.nodePools.system.minNodes", 0, "the system pool runs kube-system and "
                                                                        "MLflow: allowed 1 or more"))
        if config.environment == "prod" and _open_control_plane(config, "gcp"):
            problems.append(_problem("gcp.authorizedNetworks", [], "a prod control plane must not be open to "
                                     "the whole internet: allowed a non-empty list of CIDRs (office, VPN, CI "
                                     "egress), or gcp.privateEndpoint true"))
        if backup.enabled and backup.retention_days > CLOUD_SQL_MAX_BACKUPS:
            problems.append(_problem("database.backup.retentionDays", backup.retention_days,
                                     f"Cloud SQL keeps 1 to {CLOUD_SQL_MAX_BACKUPS} automated backups"))
    if config.platform == "eks" and config.aws is not None:
        a = config.aws
        problems += _zone_problems("aws.zones", a.region, a.zones, AWS_ZONES, "")
        if a.node_pools.system.min_nodes < 1:
            problems.append(_problem("aws.nodePools.system.minNodes", 0, "the system pool runs CoreDNS and "
                                                                        "MLflow: allowed 1 or more"))
        if a.private_endpoint and a.authorized_networks:
            problems.append(_problem("aws.authorizedNetworks", a.authorized_networks,
                                     "these restrict the public endpoint, which aws.privateEndpoint true "
                                     "turns off: allowed [] with a private endpoint"))
        if config.environment == "prod" and _open_control_plane(config, "aws"):
            problems.append(_problem("aws.authorizedNetworks", [], "a prod control plane must not be open to "
                                     "the whole internet: allowed a non-empty list of CIDRs (office, VPN, CI "
                                     "egress), or aws.privateEndpoint true"))
        problems += _eks_version_problems(config.kubernetes.version)
        dns = config.gateway.dns
        if dns is not None and not re.fullmatch(r"Z[A-Z0-9]{1,31}", dns.zone):
            problems.append(_problem("gateway.dns.zone", dns.zone, "on eks the Route 53 hosted-zone id of "
                                     "gateway.domain is allowed, such as 'Z0123456789ABCDEFGHIJ' "
                                     "(`aws route53 list-hosted-zones-by-name`)"))
        if dns is not None and dns.project is not None:
            problems.append(_problem("gateway.dns.project", dns.project, "a Cloud DNS project means nothing on "
                                     "eks: allowed unset"))
        if backup.enabled and backup.retention_days > RDS_MAX_BACKUP_DAYS:
            problems.append(_problem("database.backup.retentionDays", backup.retention_days,
                                     f"RDS keeps automated backups 1 to {RDS_MAX_BACKUP_DAYS} days"))
    return problems


def _eks_version_problems(version: str) -> list[str]:
    """The Cluster Autoscaler is pinned per Kubernetes minor (its simulation is that minor's scheduler)."""
    from modules.platform.eks.autoscaler import IMAGE_TAGS

    if version in IMAGE_TAGS:
        return []
    return [_problem("kubernetes.version", version, "on eks the Cluster Autoscaler is pinned for "
                     f"{', '.join(IMAGE_TAGS)} only: allowed one of these (or add its release to IMAGE_TAGS in "
                     "modules/platform/eks/autoscaler.py)")]


def _open_control_plane(config: StackConfig, section: str) -> bool:
    """The cluster's API endpoint is public and admits any address."""
    cloud = getattr(config, section)
    return cloud is not None and not cloud.private_endpoint and not cloud.authorized_networks


def config_warnings(config: StackConfig) -> list[str]:
    """Settings allowed outside prod that a reviewer should see (the program logs them with
    `pulumi.log.warn`; the offline plan's summary lists them)."""
    section = CLOUD_SECTION.get(config.platform)
    alerting = config.monitoring.alerting.warnings()
    if section is not None and _open_control_plane(config, section):
        return [f"{PROJECT}:{section}.authorizedNetworks: [] with a public endpoint: the Kubernetes API of this "
                f"{config.environment} cluster accepts connections from any address (allowed outside prod; "
                f"set CIDRs or {section}.privateEndpoint true to close it)", *alerting]
    return database_warnings(config) + alerting


def _database_checks(config: StackConfig) -> list[str]:
    """In-cluster database settings CloudNativePG or the target cannot honour."""
    db, problems = config.database, []
    if config.platform in CLOUD_SECTION:
        if db.external is not None:
            problems.append(_problem("database.external", {"host": db.external.host}, "the clouds run a managed "
                                     "database: allowed on minikube and existing only"))
        return problems
    if db.external is None and db.backup.enabled and db.backup.time_zone not in ("Etc/UTC", "UTC"):
        problems.append(_problem("database.backup.timeZone", db.backup.time_zone,
                                 "CloudNativePG 1.30's ScheduledBackup has no time zone (it runs in UTC): allowed "
                                 "Etc/UTC, with database.backup.schedule written in UTC"))
    if config.platform == "minikube" and db.external is None and db.instances > 1 and db.anti_affinity == "required":
        problems.append(_problem("database.antiAffinity", db.anti_affinity,
                                 f"minikube has one node, so {db.instances - 1} of {db.instances} instances would "
                                 "never schedule: allowed preferred, or database.instances 1"))
    return problems


def database_warnings(config: StackConfig) -> list[str]:
    """Database settings that work but do not give what they suggest."""
    db = config.database
    if config.platform in CLOUD_SECTION:
        return []
    if db.external is not None:
        return [f"{PROJECT}:database.external: backups of {db.external.host} are the server's own; the stack "
                "archives nothing of it (database.backup, database.instances are not used)"] if db.backup.enabled else []
    if config.platform == "minikube" and db.instances > 1:
        return [f"{PROJECT}:database.instances: {db.instances} instances on minikube's one node: a node failure "
                "takes every instance (no failover across nodes; allowed for trying CloudNativePG out)"]
    return []


def _gateway_checks(config: StackConfig) -> list[str]:
    """Gateway exposures the cluster cannot serve (docs/decisions/0005-gateway-exposure.md)."""
    g, problems = config.gateway, []
    if g.service_type == "LoadBalancer" and not config.kubernetes.load_balancers:
        problems.append(_problem("gateway.serviceType", g.service_type,
                                 "this cluster hands out no LoadBalancer addresses (kubernetes.loadBalancers is "
                                 "false), so Helm would wait for one until the release rolls back: allowed "
                                 "ClusterIP or NodePort, or set kubernetes.loadBalancers true if a provisioner "
                                 "(MetalLB, kube-vip, a running `minikube tunnel`) gives addresses"))
    if g.dns is not None and (config.platform not in CLOUD_SECTION or g.service_type != "LoadBalancer"):
        problems.append(_problem("gateway.dns", g.dns.model_dump(by_alias=True),
                                 "records point at the gateway's cloud load balancer: allowed on gke and eks "
                                 "with gateway.serviceType LoadBalancer"))
    if g.tls.enabled and g.tls.issuer == "letsencrypt" and g.service_type != "LoadBalancer" and g.dns is None:
        problems.append(_problem("gateway.tls.issuer", g.tls.issuer,
                                 f"Let's Encrypt checks each name over HTTP-01 on port 80, which a {g.service_type} "
                                 "gateway does not listen on: allowed with gateway.serviceType LoadBalancer"))
    return problems


def parse_stack_config(raw: Mapping[str, Any], secret_top: set[str] | None = None,
                       stack: str | None = None) -> StackConfig:
    """Validate `raw` layered over its defaults; raise ConfigError listing every problem.

    With `stack`, names derived from the stack name are checked too, and that a prod stack decided
    gateway.auth (the program passes it; config fragments in tests do not)."""
    merged = with_defaults(dict(raw))
    problems = _cross_checks(merged, secret_top or set())
    # a cloud section on another platform is reported once above, not field by field
    foreign = set(CLOUD_SECTION.values()) - {CLOUD_SECTION.get(str(merged.get("platform")))}
    try:
        config = StackConfig.model_validate({k: v for k, v in merged.items() if k not in foreign})
    except ValidationError as exc:
        problems.extend(_describe(e) for e in exc.errors())
        raise ConfigError(problems) from None
    problems += _cloud_checks(config) + _gateway_checks(config) + _database_checks(config) + (
        _name_checks(config, stack) if stack is not None else [])
    problems += image_problems(config)
    problems += [_problem(*p) for p in auth_problems(config.gateway.auth, config.environment, config.tenants,
                                                     config.namespaces.serving, deployed=stack is not None)]
    # the stack's own registry: ECR (eks) or Artifact Registry (gke)
    in_registry = config.images.registry is None and "serving.seldon.mlserverImage" in built_slots(config)
    problems += [_problem(*p) for p in managed_engine_problems(config.platform, config.serving, in_registry,
                                                               build_platforms(config))]
    if problems:
        raise ConfigError(problems)
    return config


def load_stack_config() -> StackConfig:
    """The running stack's config, from the Pulumi engine (or the offline plan's mocks)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | set(
        runtime_config._SECRET_KEYS.get()
    )
    raw, secret_top = raw_from_pulumi_config(values, secret_keys)
    return parse_stack_config(raw, secret_top, stack=pulumi.get_stack())
