"""`monitoring.alerting`: who Alertmanager notifies, how alerts are grouped and which ones inhibit
which (docs/decisions/0012-alert-routing.md).

Every credential (a Slack or webhook URL that carries a token, an SMTP password, a PagerDuty routing
key) is a `secure:` value; the program puts it into a Kubernetes Secret that the AlertmanagerConfig
references by name and key, so no plan and no Helm release holds it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from infra.config.base import Model
from modules.monitoring.alerting import NULL_RECEIVER, AlertingArgs, Inhibition, Receiver, Route

RECEIVER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # also a Secret key
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
HOST_PORT = re.compile(r"^\S+:[0-9]{1,5}$")
HTTP_URL = re.compile(r"^https?://\S+$")


def _duration(v: str) -> str:
    if not DURATION.match(v):
        raise ValueError("a duration such as '30s', '5m' or '4h' is allowed")
    return v


def _labels(v: dict[str, str]) -> dict[str, str]:
    bad = [k for k in v if not LABEL_NAME.match(k)]
    if bad:
        raise ValueError(f"label names such as 'severity' or 'alertname' are allowed, not {bad}")
    return v


Duration = Annotated[str, AfterValidator(_duration)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]


ReceiverType = Literal["webhook", "slack", "email", "pagerduty"]
# per type: the fields it requires and the ones it accepts besides `type` (one flat model, so that an
# error's location is always `receivers.<name>.<field>` and the config redaction finds `credential`)
REQUIRED: dict[str, set[str]] = {"webhook": set(), "slack": {"credential"}, "email": {"to", "sender", "smarthost"},
                                 "pagerduty": {"credential"}}
ALLOWED: dict[str, set[str]] = {"webhook": {"url", "credential", "max_alerts"}, "slack": {"credential", "channel"},
                                "email": {"to", "sender", "smarthost", "username", "credential", "require_tls"},
                                "pagerduty": {"credential", "url"}}
CREDENTIAL = {"webhook": "the endpoint URL when it carries a token (instead of url)",
              "slack": "the Slack incoming-webhook URL", "email": "the SMTP password of username",
              "pagerduty": "the Events API v2 routing (integration) key"}


class ReceiverConfig(Model):
    type: ReceiverType
    credential: SecretStr | None = Field(default=None, description="secret; per type: " + "; ".join(
        f"{t}: {d}" for t, d in CREDENTIAL.items()))
    url: str | None = Field(default=None, pattern=HTTP_URL.pattern,
                            description="webhook: the endpoint in plain text (e.g. an in-cluster receiver); "
                                        "pagerduty: the Events API endpoint, unset = PagerDuty's")
    max_alerts: int | None = Field(default=None, ge=1, description="webhook: alerts per message; unset = all")
    channel: str | None = Field(default=None, description="slack: e.g. '#mlops-alerts'; unset = the webhook's")
    to: str | None = Field(default=None, min_length=3, description="email: recipient(s), comma-separated")
    sender: str | None = Field(default=None, alias="from", min_length=3, description="email: sender address")
    smarthost: str | None = Field(default=None, pattern=HOST_PORT.pattern, description="email: SMTP host:port")
    username: str | None = Field(default=None, description="email: SMTP user; unset = no SMTP auth")
    require_tls: bool | None = Field(default=None, description="email: STARTTLS required; unset = true")

    @model_validator(mode="after")
    def _fields_of_type(self) -> ReceiverConfig:
        given = {n for n in type(self).model_fields if n != "type" and getattr(self, n) is not None}
        alias = {n: f.alias or n for n, f in type(self).model_fields.items()}
        extra, missing = given - ALLOWED[self.type], REQUIRED[self.type] - given
        if extra:
            raise ValueError(f"{sorted(alias[n] for n in extra)} mean nothing for type {self.type}: allowed "
                             f"{sorted(alias[n] for n in ALLOWED[self.type])}")
        if missing:
            raise ValueError(f"type {self.type} needs {sorted(alias[n] for n in missing)}")
        if self.type == "webhook" and (self.url is None) == (self.credential is None):
            raise ValueError("a webhook receiver needs exactly one of url (plain) or credential (secret URL)")
        if self.type == "email" and (self.username is None) != (self.credential is None):
            raise ValueError("username and credential (the SMTP password) are set together or not at all")
        return self

    def settings(self) -> dict[str, object]:
        """The plain (non-secret) fields, as the AlertmanagerConfig CRD names them."""
        crd = {"url": "url", "max_alerts": "maxAlerts", "channel": "channel", "to": "to", "sender": "from",
               "smarthost": "smarthost", "username": "authUsername", "require_tls": "requireTLS"}
        values = {crd[n]: getattr(self, n) for n in crd if getattr(self, n) is not None}
        if self.type == "email":
            values.setdefault("requireTLS", True)
        return values


class RouteConfig(Model):
    match: Labels = Field(default={}, description="label: value, all must be equal")
    match_re: Labels = Field(default={}, description="label: regex, all must match")
    receiver: str
    continue_: bool = Field(default=False, alias="continue",
                            description="also try the next routes after this one (the default takes only alerts no route took)")
    group_by: list[str] | None = Field(default=None, description="unset = the alerting groupBy")
    repeat_interval: Duration | None = None

    @model_validator(mode="after")
    def _matches(self) -> RouteConfig:
        if not self.match and not self.match_re:
            raise ValueError("a route needs match or matchRe (the default receiver takes everything else)")
        return self


class InhibitConfig(Model):
    source: Labels = Field(default={}, description="label: value of the inhibiting alert")
    source_re: Labels = Field(default={})
    target: Labels = Field(default={}, description="label: value of the muted alerts")
    target_re: Labels = Field(default={})
    equal: list[str] = Field(default=[], description="labels both must share")

    @model_validator(mode="after")
    def _target(self) -> InhibitConfig:
        if not self.target and not self.target_re:
            raise ValueError("an inhibition needs target or targetRe (or it mutes every alert)")
        return self


# The platform's rules (modules/monitoring/rules) and kube-prometheus-stack's: a critical alert mutes
# the warning of the same alert and namespace (PersistentVolumeAlmostFull has both), and a component
# that is down mutes the symptoms it causes elsewhere (no `equal`: one MLflow, one object store).
DEFAULT_INHIBIT: list[dict] = [
    {"source": {"severity": "critical"}, "targetRe": {"severity": "warning|info"}, "equal": ["namespace", "alertname"]},
    {"source": {"severity": "warning"}, "target": {"severity": "info"}, "equal": ["namespace", "alertname"]},
    {"source": {"alertname": "InfoInhibitor"}, "target": {"severity": "info"}, "equal": ["namespace"]},
    {"source": {"alertname": "MLflowDown"},
     "targetRe": {"alertname": "MLflowErrorRateHigh|ModelVersionLoadFailed|ModelQualityStale"}},
    {"source": {"alertname": "PostgresDown"}, "target": {"alertname": "MLflowErrorRateHigh"}},
    {"source": {"alertname": "ObjectStoreDown"},
     "targetRe": {"alertname": "ObjectStoreErrorRateHigh|ModelVersionLoadFailed"}},
]


class AlertingConfig(Model):
    receivers: dict[str, ReceiverConfig] = Field(
        default={}, description="by name; none = alerts show in the Alertmanager UI only (warned)")
    routes: list[RouteConfig] = Field(default=[], description="tried in order before the default")
    default: str | None = Field(default=None, description="the receiver of every alert no route takes; "
                                                          "required with receivers")
    watchdog: str | None = Field(default=None, description="a dead man's switch receiver for the always-firing "
                                                           "Watchdog alert; unset = Watchdog is dropped")
    group_by: list[str] = Field(default=["alertname", "namespace"], description="labels that make one notification")
    group_wait: Duration = Field(default="30s", description="wait for more alerts of a new group before sending")
    group_interval: Duration = Field(default="5m", description="wait before sending a group's new alerts")
    repeat_interval: Duration = Field(default="4h", description="resend a group that still fires")
    inhibit: list[InhibitConfig] = Field(
        default=[InhibitConfig.model_validate(r) for r in DEFAULT_INHIBIT],
        description="replaces the platform's defaults when set")

    @field_validator("receivers")
    @classmethod
    def _names(cls, v: dict[str, ReceiverConfig]) -> dict[str, ReceiverConfig]:
        bad = [n for n in v if not RECEIVER_NAME.match(n) or n == NULL_RECEIVER]
        if bad:
            raise ValueError(f"receiver names are lowercase DNS labels other than {NULL_RECEIVER!r}, not {bad}")
        return v

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = sorted(self.receivers)
        if names and self.default is None:
            raise ValueError(f"default is missing: name the receiver of every alert no route takes, one of {names}")
        if not names and (self.default or self.routes or self.watchdog):
            raise ValueError("default, routes and watchdog name receivers, and receivers is empty")
        used = [("default", self.default), ("watchdog", self.watchdog),
                *((f"routes[{i}].receiver", r.receiver) for i, r in enumerate(self.routes))]
        for key, name in used:
            if name is not None and name not in self.receivers:
                raise ValueError(f"{key} is {name!r}, which is not a receiver: allowed {names}")
        return self

    def args(self) -> AlertingArgs:
        """What the monitoring component needs: settings in plain text, credentials as secrets."""
        return AlertingArgs(
            receivers=[_receiver(name, r) for name, r in self.receivers.items()],
            routes=[Route(match=r.match, match_re=r.match_re, receiver=r.receiver, continue_=r.continue_,
                          group_by=r.group_by, repeat_interval=r.repeat_interval) for r in self.routes],
            default=self.default,
            watchdog=self.watchdog,
            group_by=self.group_by,
            group_wait=self.group_wait,
            group_interval=self.group_interval,
            repeat_interval=self.repeat_interval,
            inhibit=[Inhibition(source=i.source, source_re=i.source_re, target=i.target, target_re=i.target_re,
                                equal=i.equal) for i in self.inhibit],
        )

    def warnings(self) -> list[str]:
        if self.receivers:
            return []
        return ["mlops-stack:monitoring.alerting.receivers: none, so alerts notify nobody: they show only in the "
                "Alertmanager UI and Grafana; add a receiver (webhook, slack, email or pagerduty) and "
                "monitoring.alerting.default (docs/decisions/0012-alert-routing.md)"]


def _receiver(name: str, r: ReceiverConfig) -> Receiver:
    credential = r.credential.get_secret_value() if r.credential is not None else None
    return Receiver(name=name, type=r.type, settings=r.settings(), credential=credential)
