"""Cloud stack configs: environment defaults, and combinations a cloud would refuse stopped before
anything is declared, with one message naming the key, the value and what is allowed."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.settings import ConfigError, parse_stack_config
from mlops.plan import Plan, run_program, stack_config

GKE = {"platform": "gke", "environment": "dev", "gcp": {"project": "my-mlops-project"}}
EKS = {"platform": "eks", "environment": "dev"}


def with_(base: dict, **sections: dict) -> dict:
    """`base` with sections merged one level deep (as a stack file would override them)."""
    raw = json.loads(json.dumps(base))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


INVALID = [
    (with_(GKE, gcp={"project": "my-mlops-project", "nodePools": {"workload": {"minNodes": 3, "maxNodes": 1}}}),
     ["mlops-stack:gcp.nodePools.workload", "minNodes 3 is above maxNodes 1"]),
    (with_(EKS, aws={"nodePools": {"system": {"minNodes": 4}}}),
     ["mlops-stack:aws.nodePools.system", "minNodes 4 is above maxNodes 2"]),
    (with_(EKS, aws={"database": {"instanceClass": "db.t2.micro"}}),
     ["mlops-stack:aws.database.instanceClass: got \"db.t2.micro\"", "not offered for PostgreSQL", "db.t4g"]),
    (with_(EKS, aws={"database": {"instanceClass": "db.m6g.micro"}}),
     ["mlops-stack:aws.database.instanceClass: got \"db.m6g.micro\"", "sizes large, xlarge"]),
    (with_(EKS, aws={"database": {"instanceClass": "m6g.large"}}),
     ["mlops-stack:aws.database.instanceClass", "'db.t4g.micro'"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "database": {"tier": "db-custom-3-7680"}}),
     ["mlops-stack:gcp.database.tier: got \"db-custom-3-7680\"", "1 or an even number"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "database": {"tier": "db-custom-2-1024"}}),
     ["mlops-stack:gcp.database.tier", "multiple of 256 MiB, at least 3840"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "database": {"tier": "db-n1-standard-2"}}),
     ["mlops-stack:gcp.database.tier", "'db-custom-<vCPUs>-<MiB>'"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "zone": "a"}),
     ["mlops-stack:gcp.zone: got \"a\"", "europe-west1-a does not exist", "allowed in europe-west1: b, c, d"]),
    (with_(EKS, aws={"region": "ca-central-1", "zones": ["a", "c"]}),
     ["mlops-stack:aws.zones: got \"c\"", "ca-central-1c does not exist", "a, b, d"]),
    (with_(EKS, aws={"zones": ["a"]}), ["mlops-stack:aws.zones", "at least two different zone letters"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "autopilot": True}),
     ["mlops-stack:gcp.regional: got false", "Autopilot clusters are regional"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "nodePools": {"system": {"minNodes": 0}}}),
     ["mlops-stack:gcp.nodePools.system.minNodes: got 0", "allowed 1 or more"]),
    (with_(EKS, database={"backup": {"enabled": True, "retentionDays": 60}}),
     ["mlops-stack:database.backup.retentionDays: got 60", "RDS keeps automated backups 1 to 35 days"]),
    (with_(EKS, aws={"database": {"storageGi": 100, "maxStorageGi": 50}}),
     ["mlops-stack:aws.database", "maxStorageGi 50 is below storageGi 100"]),
    (with_(EKS, aws={"database": {"storageGi": 5}}),
     ["mlops-stack:aws.database.storageGi: got 5", "greater than or equal to 20"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "network": {"podsCidr": "10.10.0.0/16"}}),
     ["mlops-stack:gcp.network", "podsCidr 10.10.0.0/16 overlaps subnetCidr 10.10.0.0/20"]),
    (with_(EKS, aws={"vpcCidr": "10.0.0.0/24"}), ["mlops-stack:aws.vpcCidr: got \"10.0.0.0/24\"", "/16 to /20"]),
    (with_(EKS, aws={"vpcCidr": "8.8.0.0/16"}), ["mlops-stack:aws.vpcCidr", "private (RFC 1918)"]),
    (with_(EKS, aws={"privateEndpoint": True, "authorizedNetworks": ["203.0.113.0/24"]}),
     ["mlops-stack:aws.authorizedNetworks", "aws.privateEndpoint true turns off"]),
    (with_(EKS, aws={"logRetentionDays": 10}), ["mlops-stack:aws.logRetentionDays: got 10", "1, 3, 5, 7, 14"]),
    (with_(EKS, aws={"nodePools": {"workload": {"machineType": "large"}}}),
     ["mlops-stack:aws.nodePools.workload.machineType: got \"large\"", "EC2 instance type"]),
    ({"platform": "gke", "environment": "dev"}, ["mlops-stack:gcp.project: missing"]),
    (with_(GKE, gcp={"project": "My_Project"}), ["mlops-stack:gcp.project: got \"My_Project\"", "project id"]),
    (with_(GKE, gcp={"project": "my-mlops-project", "namePrefix": "a-much-too-long-prefix"}),
     ["mlops-stack:gcp.namePrefix", "3-17 lowercase"]),
    ({"platform": "minikube", "environment": "dev", "aws": {"region": "eu-west-1"}},
     ["mlops-stack:aws: set, but platform is \"minikube\"", "only with platform 'eks'"]),
]


@pytest.mark.parametrize(("raw", "fragments"), INVALID, ids=[" ".join(f[:1]) for _, f in INVALID])
def test_invalid_cloud_config_is_rejected_naming_the_key(raw, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message


def test_foreign_cloud_section_is_one_problem_not_one_per_key():
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({"platform": "gke", "environment": "dev", "gcp": {"project": "my-mlops-project"},
                            "aws": {"region": "eu-west-1"}})
    assert len(caught.value.problems) == 1


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_minimal_cloud_stacks_are_valid_in_every_environment(environment):
    closed = ["203.0.113.0/24"]  # prod refuses a control plane open to any address
    gke = parse_stack_config({**GKE, "environment": environment, "gcp": {**GKE["gcp"], "authorizedNetworks": closed}})
    eks = parse_stack_config({**EKS, "environment": environment, "aws": {"authorizedNetworks": closed}})
    assert gke.gcp is not None and gke.aws is None and eks.aws is not None and eks.gcp is None
    prod = environment == "prod"
    assert gke.gcp.regional is prod and gke.gcp.database.high_availability is prod
    assert eks.aws.database.high_availability is prod and eks.aws.nat_gateways == ("perZone" if prod else "single")
    assert len(eks.aws.zones) == (3 if prod else 2)
    assert gke.protected is eks.protected is (environment != "dev")


def test_sizes_stay_in_the_config_for_a_cost_tool():
    """Machine types, bounds and database sizes are plain config values, per environment."""
    dev = parse_stack_config({**EKS, "environment": "dev"})
    prod = parse_stack_config({**EKS, "environment": "prod", "aws": {"privateEndpoint": True}})
    assert dev.aws.node_pools.workload.machine_type == "t3.large" and dev.aws.node_pools.workload.spot
    assert prod.aws.node_pools.workload.max_nodes > dev.aws.node_pools.workload.max_nodes
    assert (dev.aws.database.instance_class, prod.aws.database.instance_class) == ("db.t4g.micro", "db.m6g.large")
    gke = parse_stack_config(GKE)
    assert (gke.gcp.database.tier, gke.gcp.database.edition) == ("db-f1-micro", "ENTERPRISE")
    assert parse_stack_config(with_(GKE, gcp={"project": "my-mlops-project", "database": {
        "tier": "db-perf-optimized-N-4"}})).gcp.database.edition == "ENTERPRISE_PLUS"


def test_derived_name_prefix_must_fit_service_account_ids():
    """The default prefix comes from the stack name; a long stack name stops the program before any
    resource is declared, naming the key to set."""
    values, secret_keys = stack_config("gke")
    plan = Plan(stack="production-europe")
    with pytest.raises(pulumi.RunError, match=r"mlops-stack:gcp.namePrefix: missing; the default 'mlops-production-europe'"):
        run_program("production-europe", (values, secret_keys), plan=plan)
    assert plan.resources == []


def test_gcs_bucket_names_must_fit():
    values, secret_keys = stack_config("gke")
    values = {**values, "mlops-stack:objectStore": json.dumps({"buckets": {"artifacts": "a" * 40}})}
    plan = Plan(stack="gke")
    with pytest.raises(pulumi.RunError, match=r"mlops-stack:objectStore.buckets.artifacts: .* longer than 63"):
        run_program("gke", (values, secret_keys), plan=plan)
    assert plan.resources == []
