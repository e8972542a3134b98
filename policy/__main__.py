"""CrossGuard policy pack: `pulumi preview --policy-pack policy` runs `rules.RULES` on every resource."""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

sys.path.insert(0, str(Path(__file__).parent))  # the pack runs as a script: its folder is not a package
from rules import RULES, Rule  # noqa: E402


def _policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args, report_violation) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message, args.urn)

    return ResourceValidationPolicy(name=rule.name, description=rule.description, validate=validate)


PolicyPack(name="mlops-stack", enforcement_level=EnforcementLevel.MANDATORY,
           policies=[_policy(rule) for rule in RULES])
