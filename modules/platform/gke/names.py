"""Physical names Google keeps reserved after a delete, made unique per creation.

A deleted Workload Identity pool or provider keeps its ID for ~30 days (soft delete), and a deleted
Cloud SQL instance's name cannot be reused for up to a week, so `pulumi destroy` then `pulumi up`
with fixed names fails. The suffix is random once and then kept in the stack state: updates keep
the name; only a destroy (or a replacement of the named resource) draws a new one.
"""

from __future__ import annotations

import pulumi
import pulumi_random as random

SUFFIX_LENGTH = 4  # 36^4 names; collisions only matter between the same stack's own creations


def unique_name(name: str, base: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """`<base>-<suffix>`: lowercase letters and digits, as pool, provider and instance IDs allow."""
    suffix = random.RandomString(f"{name}-suffix", length=SUFFIX_LENGTH, special=False, upper=False,
                                 keepers={"base": base}, opts=opts)
    return pulumi.Output.concat(base, "-", suffix.result)
