"""Authentication at the gateway (issue 14 item 3, docs/decisions/0019-endpoint-authentication.md).

No Envoy is installable here (none on Debian, PyPI or npm; getenvoy is gone), so the plan's
RequestAuthentication and AuthorizationPolicy objects are evaluated by `Gateway` below: the subset of
Istio 1.30.3's semantics the stack emits, each step citing where Istio says it. It refuses any field
it does not implement, so a policy the stack starts emitting cannot be judged by a wrong model.
Tokens are real: RS256 JWTs signed with fresh RSA keys (PyJWT), checked against the plan's JWKS.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.crds import validate_custom_resource
from mlops.plan import Plan, run_program, stack_config
from modules.gateway.auth import GATEWAY_SELECTOR, SSO_PROVIDER, JwtPolicy, endpoint_policy, request_authentication
from tests.test_tenants import TEST_STACKS

ISSUER = "https://sso.class.example.org/realms/class"
AUDIENCE = "class-models"
GATEWAY_LABELS = {**GATEWAY_SELECTOR, "app": "istio-ingressgateway"}
CLOCK_SKEW = 60  # Envoy jwt_authn's default clock_skew_seconds; Istio sets none (authn/policy_applier.go)


# ---- keys and tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    issuer: rsa.RSAPrivateKey
    attacker: rsa.RSAPrivateKey  # same kid, not in the JWKS

    def jwks(self) -> str:
        jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(self.issuer.public_key()))
        return json.dumps({"keys": [{**jwk, "kid": "class-1", "use": "sig", "alg": "RS256"}]})

    def token(self, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 600, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return pyjwt.encode(payload, key or self.issuer, algorithm="RS256", headers={"kid": "class-1"})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048))


# ---- the subset of Istio's semantics the stack emits ------------------------------------------


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """Istio's string match (authorization_policy.proto, Rule): exact, `abc*` prefix, `*abc` suffix,
    `*` presence (a non-empty value; matcher.StringMatcherWithPrefix makes it regex `.+`)."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass
class Request:
    host: str
    path: str  # with the query string, as sent
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    status: int  # 401 (RequestAuthentication), 403 (DENY), 200 (passed to the route)
    reason: str
    ext_authz: bool = False  # a CUSTOM policy sent it to the external authorizer (oauth2-proxy)


class Gateway:
    """The ingress gateway's request authentication and authorization, from the plan's objects."""

    def __init__(self, objects: Sequence[Mapping[str, Any]], labels: Mapping[str, str]):
        def applies(o: Mapping[str, Any]) -> bool:
            selector = (o["spec"].get("selector") or {}).get("matchLabels") or {}
            # a policy in the root namespace applies to every workload its selector matches
            # (request_authentication.proto); the gateway runs in istio-system, the root namespace
            return o["metadata"].get("namespace") == "istio-system" and all(
                labels.get(k) == v for k, v in selector.items())

        security = [o for o in objects if o.get("apiVersion") == "security.istio.io/v1" and applies(o)]
        self.jwt_rules = [r for o in security if o["kind"] == "RequestAuthentication" for r in o["spec"]["jwtRules"]]
        self.policies = [o["spec"] for o in security if o["kind"] == "AuthorizationPolicy"]

    # RequestAuthentication → Envoy jwt_authn, requires_any {provider, allow_missing} per rule
    # (pilot/pkg/security/authn/policy_applier.go convertToEnvoyJwtConfig)
    def authenticate(self, request: Request) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """(principal `iss/sub`, claims, failure): no token → no identity, accepted
        (request_authentication.proto: "A request that does not contain any authentication
        credentials will be accepted but will not have any authenticated identity")."""
        if not self.jwt_rules:
            return None, None, None
        for rule in self.jwt_rules:
            assert set(rule) <= {"issuer", "audiences", "jwksUri", "jwks", "forwardOriginalToken"}, rule
        token = self._token(request)
        if token is None:
            return None, None, None
        try:
            head, body, signature = token.split(".")
            header, claims = json.loads(_b64(head)), json.loads(_b64(body))
        except ValueError:
            return None, None, "Jwt is not in the form of Header.Payload.Signature"
        rule = next((r for r in self.jwt_rules if r["issuer"] == claims.get("iss")), None)
        if rule is None:  # JWTRule.issuer: "A JWT with different `iss` claim will be rejected."
            return None, None, "Jwt issuer is not configured"
        if not self._signed(rule, header, f"{head}.{body}".encode(), _b64(signature)):
            return None, None, "Jwt verification fails"
        now = time.time()
        if "exp" in claims and now > claims["exp"] + CLOCK_SKEW:
            return None, None, "Jwt is expired"
        if "nbf" in claims and now < claims["nbf"] - CLOCK_SKEW:
            return None, None, "Jwt not yet valid"
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if rule.get("audiences") and not set(audiences) & set(rule["audiences"]):
            return None, None, "Audiences in Jwt are not allowed"
        return f"{claims['iss']}/{claims.get('sub', '')}", claims, None

    @staticmethod
    def _token(request: Request) -> str | None:
        """The default locations (JWTRule): `Authorization: Bearer <token>`, then `access_token`."""
        value = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
        tokens = parse_qs(urlsplit(request.path).query).get("access_token")
        return tokens[0] if tokens else None

    @staticmethod
    def _signed(rule: Mapping[str, Any], header: Mapping[str, Any], signed: bytes, signature: bytes) -> bool:
        assert "jwks" in rule, "the test stack inlines its key set (JWTRule.jwks)"
        if header.get("alg") != "RS256":
            return False
        for jwk in json.loads(rule["jwks"])["keys"]:
            if jwk.get("kty") != "RSA" or ("kid" in header and jwk.get("kid") != header["kid"]):
                continue
            public = rsa.RSAPublicNumbers(int.from_bytes(_b64(jwk["e"]), "big"),
                                          int.from_bytes(_b64(jwk["n"]), "big")).public_key()
            try:
                public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                return True
            except InvalidSignature:
                continue
        return False

    # AuthorizationPolicy: CUSTOM, then DENY, then ALLOW (authorization_policy.proto, top comment)
    def handle(self, request: Request) -> Decision:
        principal, claims, failure = self.authenticate(request)
        if failure:
            return Decision(401, failure)
        attributes = _Attributes(request, principal, claims or {})
        custom = [p for p in self.policies if p.get("action") == "CUSTOM" and self._matches(p, attributes)]
        for policy in (p for p in self.policies if p.get("action") == "DENY"):
            if self._matches(policy, attributes):
                return Decision(403, "RBAC: access denied", bool(custom))
        allow = [p for p in self.policies if p.get("action", "ALLOW") == "ALLOW"]
        if allow and not any(self._matches(p, attributes) for p in allow):
            return Decision(403, "RBAC: access denied (no ALLOW policy matched)", bool(custom))
        return Decision(200, "allowed", bool(custom))

    def _matches(self, policy: Mapping[str, Any], a: _Attributes) -> bool:
        """A policy matches if any rule matches; a rule "when at least one source, one operation
        and all conditions" match (Rule); an empty field matches anything."""
        assert set(policy) <= {"selector", "action", "rules", "provider"}, policy
        if policy.get("action") == "CUSTOM":
            assert policy["provider"]["name"] == SSO_PROVIDER
        return any(self._rule(rule, a) for rule in policy.get("rules") or [])

    def _rule(self, rule: Mapping[str, Any], a: _Attributes) -> bool:
        assert set(rule) <= {"from", "to", "when"}, rule
        sources = [f["source"] for f in rule.get("from") or []]
        operations = [t["operation"] for t in rule.get("to") or []]
        return ((not sources or any(a.source(s) for s in sources))
                and (not operations or any(a.operation(o) for o in operations))
                and all(a.condition(c) for c in rule.get("when") or []))


@dataclass(frozen=True)
class _Attributes:
    request: Request
    principal: str | None
    claims: Mapping[str, Any]

    @staticmethod
    def _field(values: Sequence[str] | None, negated: Sequence[str] | None, actual: Any,
               match: Any = _match) -> bool:
        """`values`: any matches; `notValues`-style negation: none matches (model.go: principalNot /
        permissionNot of the OR). A missing attribute matches no value, so its negation holds."""
        ok = True
        if values is not None:
            ok = actual is not None and any(match(v, actual) for v in values)
        if negated is not None:
            ok = ok and not (actual is not None and any(match(v, actual) for v in negated))
        return ok

    def source(self, s: Mapping[str, Any]) -> bool:
        assert set(s) <= {"requestPrincipals", "notRequestPrincipals"}, s
        return self._field(s.get("requestPrincipals"), s.get("notRequestPrincipals"), self.principal)

    def operation(self, o: Mapping[str, Any]) -> bool:
        """`paths`: the URL path without the query (Envoy rbac `url_path`, permission.go), case
        sensitive; `hosts`: the Host header, case-insensitive (matcher.HostMatcher)."""
        assert set(o) <= {"paths", "notPaths", "hosts", "notHosts"}, o
        path = urlsplit(self.request.path).path
        host_match = lambda p, v: _match(p, v, ignore_case=True)  # noqa: E731
        return (self._field(o.get("paths"), o.get("notPaths"), path)
                and self._field(o.get("hosts"), o.get("notHosts"), self.request.host, host_match))

    def condition(self, c: Mapping[str, Any]) -> bool:
        """`request.auth.claims[name]`: a list claim matches if one element does (ListMatcher oneOf,
        matcher.MetadataListValueMatcher, OR-ed with the plain value); `request.headers[name]`."""
        key = c["key"]
        if key.startswith("request.auth.claims[") and key.endswith("]"):
            claim = self.claims.get(key[len("request.auth.claims["):-1])
            elements = claim if isinstance(claim, list) else [claim] if claim is not None else []
            elements = [e for e in elements if isinstance(e, str)]
            found = lambda p, _: any(_match(p, e) for e in elements)  # noqa: E731
            return self._field(c.get("values"), c.get("notValues"), elements or None, found)
        if key.startswith("request.headers[") and key.endswith("]"):
            name = key[len("request.headers["):-1].lower()
            value = {k.lower(): v for k, v in self.request.headers.items()}.get(name)
            return self._field(c.get("values"), c.get("notValues"), value)
        raise AssertionError(f"condition {key} is not modelled here")


# ---- the plan -----------------------------------------------------------------------------------

AUTH = {"mode": "jwt", "issuer": ISSUER, "audiences": [AUDIENCE], "adminValues": ["professor"],
        "anonymous": ["student-03"]}


def _values(stack: str, gateway: Mapping[str, Any]) -> tuple[dict[str, str], list]:
    values, secret_keys = stack_config(stack, TEST_STACKS)
    raw = json.loads(values.get("mlops-stack:gateway", "{}"))
    return {**values, "mlops-stack:gateway": json.dumps({**raw, **gateway})}, list(secret_keys)


@pytest.fixture(scope="module")
def class_plan(keys) -> Plan:
    """The 60-student class stack with tokens on the endpoints."""
    return run_program("class", _values("class", {"auth": {**AUTH, "jwks": keys.jwks()}}))


@pytest.fixture(scope="module")
def gateway(class_plan) -> Gateway:
    return Gateway(class_plan.kubernetes_objects, GATEWAY_LABELS)


def model(tenant: str, name: str = "m1") -> str:
    return f"/seldon/{tenant}/{name}/v2/models/{name}/infer"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_policies_are_valid_against_istios_crds(class_plan):
    objects = [o for o in class_plan.kubernetes_objects if o["apiVersion"] == "security.istio.io/v1"]
    assert sorted(o["kind"] for o in objects) == ["AuthorizationPolicy", "RequestAuthentication"]
    for obj in objects:
        assert validate_custom_resource(obj) == [], obj["kind"]


def test_each_tenant_has_a_rule_except_the_anonymous_one(class_plan, gateway):
    config = parse_stack_config(*raw_from_pulumi_config(*_values("class", {"auth": AUTH})))
    (policy,) = gateway.policies
    *named, rest_by_path, rest_by_header = policy["rules"]
    paths = [r["to"][0]["operation"]["paths"][0] for r in named if "to" in r]
    namespaces = [c["values"][0] for r in named if "to" not in r for c in r["when"]
                  if c["key"] == "request.headers[namespace]"]
    protected = [t for t in config.tenants if t != "student-03"] + ["serving"]
    assert sorted(paths) == sorted(f"/seldon/{n}/*" for n in protected)
    assert sorted(namespaces) == sorted(protected)
    assert sorted(rest_by_path["to"][0]["operation"]["notPaths"]) == sorted([*paths, "/seldon/student-03/*"])
    assert sorted(rest_by_header["when"][1]["notValues"]) == sorted([*protected, "student-03"])


def test_seldons_grpc_route_by_headers_is_guarded_too(keys, gateway):
    """Seldon's second route picks the model by the `seldon` and `namespace` headers, on any path
    matching `.*inference.*`: the tenant rule covers it, not only `/seldon/<tenant>/`."""
    path = "/inference.GRPCInferenceService/ModelInfer"
    own, other = keys.token(tenant="student-01"), keys.token(tenant="student-02")
    to_01 = {"seldon": "m1", "namespace": "student-01", "content-type": "application/grpc"}
    assert gateway.handle(Request("models.localtest.me", path, {**to_01, **bearer(own)})).status == 200
    assert gateway.handle(Request("models.localtest.me", path, {**to_01, **bearer(other)})).status == 403
    assert gateway.handle(Request("models.localtest.me", path, to_01)).status == 403
    assert gateway.handle(Request("models.localtest.me", path, {**to_01, "namespace": "serving"})).status == 403
    assert gateway.handle(Request("models.localtest.me", path, {**to_01, "namespace": "kube-system",
                                                                **bearer(own)})).status == 403
    assert gateway.handle(Request("models.localtest.me", path, {**to_01, "namespace": "student-03"})).status == 200


def test_models_in_namespaces_the_config_does_not_name_are_closed(keys, gateway):
    professor = keys.token(tenant="professor")
    for path in (model("kube-system"), model("student-010"), "/kserve/serving/m/v2/models/m/infer"):
        assert gateway.handle(Request("m", path, bearer(professor))).status == 403, path


def test_a_tenants_token_calls_its_own_models(keys, gateway):
    token = keys.token(tenant="student-01")
    assert gateway.handle(Request("models.localtest.me", model("student-01"), bearer(token))).status == 200
    assert gateway.handle(Request("models.localtest.me", model("student-01", "m3") + "?x=1",
                                  bearer(token))).status == 200


def test_a_tenants_token_cannot_call_another_tenants_models(keys, gateway):
    token = keys.token(tenant="student-01")
    for path in (model("student-02"), model("student-010"), "/seldon/student-02/m1/api/v1.0/predictions"):
        assert gateway.handle(Request("models.localtest.me", path, bearer(token))) == Decision(
            403, "RBAC: access denied"), path


def test_a_tenant_listed_in_a_groups_claim_is_admitted(keys):
    policy = JwtPolicy(issuer=ISSUER, audiences=(AUDIENCE,), tenant_claim="groups", tenant_value="students/{tenant}",
                       jwks=keys.jwks(), tenants=("student-07", "student-08"))
    gw = Gateway([{"apiVersion": "security.istio.io/v1", "kind": kind, "metadata": {"namespace": "istio-system"},
                   "spec": spec} for kind, spec in (("RequestAuthentication", request_authentication(policy)),
                                                    ("AuthorizationPolicy", endpoint_policy(policy)))], GATEWAY_LABELS)
    token = keys.token(groups=["staff", "students/student-07"])
    assert gw.handle(Request("m", model("student-07"), bearer(token))).status == 200
    assert gw.handle(Request("m", model("student-08"), bearer(token))).status == 403
    assert gw.handle(Request("m", model("student-07"), bearer(keys.token(groups="student-07")))).status == 403


def test_requests_without_a_token_are_denied_on_protected_endpoints_only(gateway):
    assert gateway.handle(Request("models.localtest.me", model("student-01"))).status == 403
    assert gateway.handle(Request("models.localtest.me", "/seldon/serving/energy/api/v1.0/predictions")).status == 403
    # the anonymous tenant, other paths and the platform's hosts stay open to the gateway's routes
    assert gateway.handle(Request("models.localtest.me", model("student-03"))).status == 200
    assert gateway.handle(Request("mlflow.localtest.me:8080", "/api/2.0/mlflow/experiments/search")).status == 200
    assert gateway.handle(Request("x", "/.well-known/acme-challenge/abc")).status == 200


def test_invalid_tokens_are_rejected_everywhere(keys, gateway):
    now = int(time.time())
    cases = {
        "expired": keys.token(tenant="student-01", exp=now - CLOCK_SKEW - 5),
        "not yet valid": keys.token(tenant="student-01", nbf=now + CLOCK_SKEW + 60),
        "wrong issuer": keys.token(tenant="student-01", iss="https://evil.example.org"),
        "wrong audience": keys.token(tenant="student-01", aud="another-app"),
        "no audience": keys.token(tenant="student-01", aud=None),
        "foreign key": keys.token(keys.attacker, tenant="student-01"),
        "garbage": "not-a-jwt",
    }
    for case, token in cases.items():
        for request in (Request("m", model("student-01"), bearer(token)), Request("m", model("student-03"), bearer(token)),
                        Request("m", f"{model('student-01')}?access_token={token}")):
            assert gateway.handle(request).status == 401, (case, request.path)


def test_an_expiry_within_envoys_clock_skew_is_still_accepted(keys, gateway):
    token = keys.token(tenant="student-01", exp=int(time.time()) - 10)
    assert gateway.handle(Request("m", model("student-01"), bearer(token))).status == 200


def test_the_professor_calls_every_tenant_and_any_subject_the_platforms_models(keys, gateway):
    professor = keys.token(tenant="professor", sub="prof")
    assert all(gateway.handle(Request("m", model(f"student-{i:02d}"), bearer(professor))).status == 200
               for i in (0, 1, 59))
    no_tenant = keys.token(sub="service-x")
    assert gateway.handle(Request("m", "/seldon/serving/energy/api/v1.0/predictions", bearer(no_tenant))).status == 200
    assert gateway.handle(Request("m", model("student-01"), bearer(no_tenant))).status == 403


def test_the_evaluator_refuses_what_it_does_not_model(gateway):
    spec = {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
    with pytest.raises(AssertionError):
        Gateway._matches(gateway, spec, _Attributes(Request("h", "/"), None, {}))


# ---- dev, prod and config errors ------------------------------------------------------------------


def test_dev_is_anonymous_by_default():
    plan = run_program("class", stack_config("class", TEST_STACKS))
    gw = Gateway(plan.kubernetes_objects, GATEWAY_LABELS)
    assert not gw.jwt_rules and not gw.policies
    assert gw.handle(Request("m", model("student-01"))).status == 200


def _problems(values: tuple[dict[str, str], list], stack: str | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(*raw_from_pulumi_config(*values), stack=stack)
    return "\n".join(error.value.problems)


def test_a_prod_stack_must_decide():
    values, secret_keys = _values("full-eks", {})
    assert values["mlops-stack:environment"] == "prod"
    undecided = {k: v for k, v in json.loads(values["mlops-stack:gateway"]).items() if k != "auth"}
    problems = _problems(({**values, "mlops-stack:gateway": json.dumps(undecided)}, secret_keys), "full-eks")
    assert "gateway.auth.mode: got null; required on prod stacks" in problems
    config = parse_stack_config(*raw_from_pulumi_config(values, secret_keys), stack="full-eks")
    assert config.gateway.auth.mode == "anonymous"


def test_config_errors_name_the_key():
    assert "issuer: required" in _problems(_values("class", {"auth": {"mode": "jwt", "audiences": ["a"]}}))
    assert "audiences: at least one" in _problems(_values("class", {"auth": {"mode": "jwt", "issuer": ISSUER}}))
    assert 'gateway.auth.anonymous: got ["student-99"]; not a tenant' in _problems(
        _values("class", {"auth": {**AUTH, "anonymous": ["student-99"]}}))
    assert "gateway.auth.jwks" in _problems(_values("class", {"auth": {**AUTH, "jwks": "{}"}}))
    assert "gateway.auth.jwksUri" in _problems(_values("class", {"auth": {**AUTH, "jwksUri": "file:///keys"}}))
    assert "gateway.auth.tenantValue" in _problems(_values("class", {"auth": {**AUTH, "tenantValue": "x"}}))
    plain = {"auth": {**AUTH, "sso": {"clientId": "c", "clientSecret": "s"}}}
    assert "gateway.auth.sso.clientSecret: stored in plain text" in _problems(_values("class", plain))


# ---- sign-in for MLflow and Grafana -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_plan() -> Plan:
    return run_program("full", stack_config("full", TEST_STACKS))


def test_browser_requests_to_mlflow_and_grafana_go_to_oauth2_proxy(full_plan):
    gw = Gateway(full_plan.kubernetes_objects, GATEWAY_LABELS)
    for host in ("mlflow.mlops.example.org", "GRAFANA.mlops.example.org:8443"):
        assert gw.handle(Request(host, "/", {"Cookie": "x=1"})).ext_authz, host
        # MLflow's clients and the CI keep their basic-auth login to MLflow itself
        assert not gw.handle(Request(host, "/api/2.0/mlflow/experiments/search",
                                     {"Authorization": "Basic YTpi"})).ext_authz, host
    assert not gw.handle(Request("models.mlops.example.org", "/seldon/serving/x/")).ext_authz


def test_oauth2_proxy_is_wired_to_the_mesh_and_keeps_its_secrets_in_a_secret(full_plan):
    istiod = next(r for r in full_plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == "istiod")
    (provider,) = istiod["inputs"]["values"]["meshConfig"]["extensionProviders"]
    assert provider["name"] == SSO_PROVIDER
    deployment = next(o for o in full_plan.kubernetes_objects
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == "oauth2-proxy")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert provider["envoyExtAuthzHttp"]["service"] == "oauth2-proxy.istio-system.svc.cluster.local"
    assert provider["envoyExtAuthzHttp"]["port"] == container["ports"][0]["containerPort"]
    assert container["image"] == "quay.io/oauth2-proxy/oauth2-proxy:v7.15.3"
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]} == {
        "OAUTH2_PROXY_CLIENT_ID": "client-id", "OAUTH2_PROXY_CLIENT_SECRET": "client-secret",
        "OAUTH2_PROXY_COOKIE_SECRET": "cookie-secret"}
    assert not any("secret" in a for a in container["args"])
    assert "--cookie-secure=true" in container["args"]  # the full stack serves HTTPS
    assert "--oidc-issuer-url=https://sso.mlops.example.org/realms/mlops" in container["args"]
    assert "--cookie-domain=.mlops.example.org" in container["args"]
    (policy,) = [o for o in full_plan.kubernetes_objects if o["kind"] == "NetworkPolicy"
                 and o["metadata"]["name"] == "oauth2-proxy-ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": GATEWAY_SELECTOR}}],
                                          "ports": [{"port": 4180, "protocol": "TCP"}]}]
