"""Validation of a plan: its Kubernetes objects against the stack's Kubernetes version, and every
resource against the policy pack's rules (`policy/rules.py`, the same rules CrossGuard enforces).

Uses kubernetes-validate's OpenAPI schemas in strict mode, so a misspelt field fails like an
unknown field would on `kubectl apply --validate=strict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kubernetes_validate

from mlops.plan import Plan
from modules.serving.seldon import validate_seldon_deployment
from policy.rules import violations

# Custom resources have no core OpenAPI schema; these kinds get our own checks instead.
CUSTOM_CHECKS = {"SeldonDeployment": validate_seldon_deployment}


@dataclass
class ValidationReport:
    version: str
    checked: int = 0
    errors: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # custom resources without a core schema
    policy: list[str] = field(default_factory=list)  # "[rule] message"

    @property
    def ok(self) -> bool:
        return not self.errors and not self.policy

    def render(self) -> str:
        lines = [f"Kubernetes {self.version}: {self.checked} object(s) schema-checked, "
                 f"{len(self.errors)} error(s)"]
        lines += [f"  ERROR {e}" for e in self.errors]
        lines.append(f"Policy pack: {len(self.policy)} violation(s)")
        lines += [f"  POLICY {v}" for v in self.policy]
        lines += [f"  not schema-checked (custom resource): {u}" for u in self.unchecked]
        return "\n".join(lines)


def _label(obj: dict) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def validate_plan(plan: Plan, version: str) -> ValidationReport:
    report = ValidationReport(version=version)
    for resource in plan.resources:
        props = resource.get("manifest") or resource.get("inputs") or {}
        report.policy += [f"[{rule}] {message}" for rule, message in violations(resource["type"], props)]
    for obj in plan.kubernetes_objects:
        check = CUSTOM_CHECKS.get(obj.get("kind", ""))
        if check is not None:
            report.checked += 1
            report.errors += [f"{_label(obj)}: {problem}" for problem in check(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            report.checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            report.unchecked.append(f"{obj.get('apiVersion')} {_label(obj)}")
        except kubernetes_validate.ValidationError as error:
            report.checked += 1
            path = ".".join(str(p) for p in error.path) or "(root)"
            report.errors.append(f"{_label(obj)}: {path}: {error.message}")
    return report
