"""Alert routing as an AlertmanagerConfig custom resource that the Alertmanager takes as its whole
configuration (`alertmanagerSpec.alertmanagerConfiguration`), with every credential in a Secret the
resource references by name and key (docs/decisions/0012-alert-routing.md).

The operator (prometheus-operator v0.90.1, kube-prometheus-stack 83.6.0) resolves the references when
it writes Alertmanager's config, in the cluster: credentials never reach a Helm value or a plan. For
this global resource it adds no namespace matcher, so the routes and inhibitions below apply to the
alerts of every namespace; it prefixes receiver names with `<namespace>/<resource name>/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

CONFIG_NAME = "mlops-alerting"  # the AlertmanagerConfig in the monitoring namespace
CREDENTIALS_SECRET = "alerting-credentials"  # one key per receiver that has a credential
NULL_RECEIVER = "null"  # no integration: Watchdog, and every alert of a stack without receivers
WATCHDOG_REPEAT = "5m"  # how often a dead man's switch hears from a live Alertmanager

# where each receiver type's credential goes, and its CRD field for the Secret reference
CREDENTIAL_FIELD = {"webhook": "urlSecret", "slack": "apiURL", "email": "authPassword", "pagerduty": "routingKey"}
CONFIGS_FIELD = {"webhook": "webhookConfigs", "slack": "slackConfigs", "email": "emailConfigs",
                 "pagerduty": "pagerdutyConfigs"}


@dataclass(frozen=True)
class Receiver:
    name: str
    type: Literal["webhook", "slack", "email", "pagerduty"]
    settings: Mapping[str, Any]  # plain fields of its CRD config (url, channel, to, from, smarthost, ...)
    credential: pulumi.Input[str] | None = None  # goes into CREDENTIALS_SECRET under the receiver's name


@dataclass(frozen=True)
class Route:
    receiver: str
    match: Mapping[str, str] = field(default_factory=dict)
    match_re: Mapping[str, str] = field(default_factory=dict)
    continue_: bool = False
    group_by: Sequence[str] | None = None
    repeat_interval: str | None = None


@dataclass(frozen=True)
class Inhibition:
    source: Mapping[str, str] = field(default_factory=dict)
    source_re: Mapping[str, str] = field(default_factory=dict)
    target: Mapping[str, str] = field(default_factory=dict)
    target_re: Mapping[str, str] = field(default_factory=dict)
    equal: Sequence[str] = ()


@dataclass(frozen=True)
class AlertingArgs:
    receivers: Sequence[Receiver] = ()
    routes: Sequence[Route] = ()
    default: str | None = None  # None only without receivers: everything goes to NULL_RECEIVER
    watchdog: str | None = None  # dead man's switch receiver; None: Watchdog goes to NULL_RECEIVER
    group_by: Sequence[str] = ("alertname", "namespace")
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    inhibit: Sequence[Inhibition] = ()


def _matchers(equal: Mapping[str, str], regex: Mapping[str, str]) -> list[dict[str, str]]:
    return ([{"name": k, "value": v, "matchType": "="} for k, v in equal.items()]
            + [{"name": k, "value": v, "matchType": "=~"} for k, v in regex.items()])


def _receiver(r: Receiver) -> dict[str, Any]:
    config: dict[str, Any] = {**r.settings, "sendResolved": True}
    if r.credential is not None:
        config[CREDENTIAL_FIELD[r.type]] = {"name": CREDENTIALS_SECRET, "key": r.name}
    return {"name": r.name, CONFIGS_FIELD[r.type]: [config]}


def _route(r: Route) -> dict[str, Any]:
    route: dict[str, Any] = {"receiver": r.receiver, "matchers": _matchers(r.match, r.match_re)}
    if r.continue_:
        route["continue"] = True
    if r.group_by is not None:
        route["groupBy"] = list(r.group_by)
    if r.repeat_interval is not None:
        route["repeatInterval"] = r.repeat_interval
    return route


# kube-prometheus-stack's InfoInhibitor fires while any info alert does, only to mute info alerts
INFO_INHIBITOR = {"receiver": NULL_RECEIVER, "matchers": [{"name": "alertname", "value": "InfoInhibitor",
                                                           "matchType": "="}]}


def config_spec(args: AlertingArgs) -> dict[str, Any]:
    """The AlertmanagerConfig spec: the root route sends what no route takes to the default receiver;
    Watchdog (always firing, by design) goes first to its dead man's switch or to nowhere, and
    InfoInhibitor to nowhere."""
    watchdog = {"receiver": args.watchdog or NULL_RECEIVER,
                "matchers": _matchers({"alertname": "Watchdog"}, {}),
                **({"repeatInterval": WATCHDOG_REPEAT} if args.watchdog else {})}
    return {
        "route": {
            "receiver": args.default or NULL_RECEIVER,
            "groupBy": list(args.group_by),
            "groupWait": args.group_wait,
            "groupInterval": args.group_interval,
            "repeatInterval": args.repeat_interval,
            "routes": [watchdog, INFO_INHIBITOR, *(_route(r) for r in args.routes)],
        },
        "receivers": [{"name": NULL_RECEIVER}, *(_receiver(r) for r in args.receivers)],
        "inhibitRules": [{"sourceMatch": _matchers(i.source, i.source_re),
                          "targetMatch": _matchers(i.target, i.target_re),
                          **({"equal": list(i.equal)} if i.equal else {})} for i in args.inhibit],
    }


def alertmanager_values() -> dict[str, Any]:
    """The chart's `alertmanager.alertmanagerSpec` keys that make the resource the whole config."""
    return {"alertmanagerConfiguration": {"name": CONFIG_NAME}}


def credentials(args: AlertingArgs) -> dict[str, pulumi.Output[str]]:
    """The Secret's data: each credential, kept secret, under its receiver's name."""
    return {r.name: pulumi.Output.secret(r.credential) for r in args.receivers if r.credential is not None}
