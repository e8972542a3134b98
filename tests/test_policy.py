"""The policy pack: each rule flags its bad case and passes its good one; every shipped stack's plan
passes all rules; and the pack itself answers the engine's analyzer protocol as CrossGuard calls it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from mlops.paths import ROOT, stack_names
from policy.rules import RULES, violations

POD = {"securityContext": {"runAsNonRoot": True}, "containers": [{
    "name": "app", "image": "ghcr.io/acme/app:1.2.3",
    "securityContext": {"allowPrivilegeEscalation": False},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
}]}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "x"},
              "spec": {"template": {"spec": POD}}}
CRONJOB = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "job", "namespace": "x"},
           "spec": {"jobTemplate": {"spec": {"template": {"spec": POD}}}}}


def changed(obj: dict, path: str, value) -> dict:
    """A copy of `obj` with the dotted `path` (list indices as numbers) set to `value`."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return out


TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
    "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com"},
    "Condition": {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                                   "token.actions.githubusercontent.com:sub": ["repo:o/r:ref:refs/heads/main"]}}}]}
LOOSE_TRUST = changed(TRUST, "Statement.0.Condition", {
    "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
    "StringLike": {"token.actions.githubusercontent.com:sub": "repo:o/*"}})

K8S = "kubernetes:apps/v1:Deployment"
CASES = [  # rule, type, good properties, bad properties
    ("pinned-images", K8S, DEPLOYMENT, changed(DEPLOYMENT, "spec.template.spec.containers.0.image", "nginx")),
    ("pinned-images", K8S, DEPLOYMENT, changed(DEPLOYMENT, "spec.template.spec.containers.0.image", "nginx:latest")),
    ("pinned-images", "kubernetes:batch/v1:CronJob", CRONJOB,
     changed(CRONJOB, "spec.jobTemplate.spec.template.spec.containers.0.image", "localhost:5000/app")),
    ("resources-set", K8S, DEPLOYMENT, changed(DEPLOYMENT, "spec.template.spec.containers.0.resources", {})),
    ("non-root", K8S, DEPLOYMENT, changed(DEPLOYMENT, "spec.template.spec.securityContext", {})),
    ("non-root", K8S, DEPLOYMENT,
     changed(DEPLOYMENT, "spec.template.spec.containers.0.securityContext", {"allowPrivilegeEscalation": True})),
    ("no-static-cloud-keys", "aws:iam/accessKey:AccessKey", None, {"user": "ci"}),
    ("private-buckets", "gcp:storage/bucket:Bucket",
     {"name": "b", "publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True},
     {"name": "b", "publicAccessPrevention": "inherited", "uniformBucketLevelAccess": True}),
    ("private-buckets", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
     {"bucket": "b", "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
      "restrictPublicBuckets": True},
     {"bucket": "b", "blockPublicAcls": True, "blockPublicPolicy": False, "ignorePublicAcls": True,
      "restrictPublicBuckets": True}),
    ("private-databases", "gcp:sql/databaseInstance:DatabaseInstance",
     {"name": "db", "settings": {"ipConfiguration": {"ipv4Enabled": False}}},
     {"name": "db", "settings": {"ipConfiguration": {}}}),
    ("private-databases", "aws:rds/instance:Instance",
     {"identifier": "db", "publiclyAccessible": False, "storageEncrypted": True},
     {"identifier": "db", "publiclyAccessible": True, "storageEncrypted": True}),
    ("imds-v2", "aws:ec2/launchTemplate:LaunchTemplate",
     {"metadataOptions": {"httpTokens": "required"}}, {"metadataOptions": {"httpTokens": "optional"}}),
    ("pinned-github-trust", "aws:iam/role:Role",
     {"name": "ci", "assumeRolePolicy": json.dumps(TRUST)}, {"name": "ci", "assumeRolePolicy": json.dumps(LOOSE_TRUST)}),
    ("pinned-github-trust", "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider",
     {"oidc": {"issuerUri": "https://token.actions.githubusercontent.com"},
      "attributeCondition": "assertion.repository == 'o/r'"},
     {"oidc": {"issuerUri": "https://token.actions.githubusercontent.com"}}),
    ("eks-network-policy", "aws:eks/addon:Addon",
     {"addonName": "vpc-cni", "configurationValues": '{"enableNetworkPolicy": "true"}'}, {"addonName": "vpc-cni"}),
    ("eks-network-policy", "aws:eks/addon:Addon",  # the schema's type is a string: a JSON true is refused
     {"addonName": "vpc-cni", "configurationValues": '{"enableNetworkPolicy": "true"}'},
     {"addonName": "vpc-cni", "configurationValues": '{"enableNetworkPolicy": true}'}),
    ("rds-final-snapshot", "aws:rds/instance:Instance",
     {"identifier": "db", "publiclyAccessible": False, "storageEncrypted": True, "deletionProtection": True,
      "skipFinalSnapshot": False, "finalSnapshotIdentifier": "db-final-0a1b2c3d"},
     {"identifier": "db", "publiclyAccessible": False, "storageEncrypted": True, "deletionProtection": True,
      "skipFinalSnapshot": True}),
    ("gke-control-plane-closed", "gcp:container/cluster:Cluster",
     {"name": "c", "deletionProtection": True, "masterAuthorizedNetworksConfig": {
         "cidrBlocks": [{"cidrBlock": "203.0.113.0/24"}]}},
     {"name": "c", "deletionProtection": True, "privateClusterConfig": {"enablePrivateNodes": True}}),
    ("gke-control-plane-closed", "gcp:container/cluster:Cluster",
     {"name": "c", "deletionProtection": True, "privateClusterConfig": {"enablePrivateEndpoint": True}},
     {"name": "c", "deletionProtection": True, "masterAuthorizedNetworksConfig": {"cidrBlocks": []}}),
    ("service-networking-destroyable", "gcp:servicenetworking/connection:Connection",
     {"network": "vpc", "deletionPolicy": "REMOVE_PEERING"}, {"network": "vpc"}),
    ("pushed-image-tags", "docker-build:index:Image",
     {"push": True, "tags": ["r.example.com/mlops/mlserver:1.7.1-1-0123456789ab"]},
     {"push": True, "tags": ["r.example.com/mlops/mlserver:latest"]}),
    ("pushed-image-tags", "docker-build:index:Image",
     {"push": False}, {"push": True, "tags": ["localhost:5000/mlops/mlserver"]}),
]


@pytest.mark.parametrize(("rule", "type_", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_flags_the_bad_case_and_passes_the_good_one(rule, type_, good, bad):
    if good is not None:
        assert violations(type_, good) == []
    assert {name for name, _ in violations(type_, bad)} == {rule}


def test_every_rule_has_a_case():
    assert {rule.name for rule in RULES} == {case[0] for case in CASES}


@pytest.mark.parametrize("stack", stack_names())
def test_shipped_stacks_pass_every_rule(stack, plan_of):
    plan = plan_of(stack)
    found = [(r["name"], v) for r in plan.resources for v in violations(r["type"], r.get("manifest") or r["inputs"])]
    assert found == []
    workloads = [o for o in plan.kubernetes_objects if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]
    assert workloads  # the rules had something to look at


def _struct(value: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def test_the_pack_answers_the_engine_like_crossguard():
    """Start the real pack (`policy/__main__.py`) and call it over the analyzer gRPC protocol."""
    pack = subprocess.Popen([sys.executable, str(ROOT / "policy" / "__main__.py")], stdout=subprocess.PIPE, text=True)
    try:
        port = int(pack.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            analyzer = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
            assert {p.name for p in info.policies} == {rule.name for rule in RULES}
            urn = "urn:pulumi:s::p::kubernetes:apps/v1:Deployment::app"
            bad = changed(DEPLOYMENT, "spec.template.spec.containers.0.image", "nginx:latest")
            answer = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(type=K8S, properties=_struct(bad), urn=urn, name="app"))
            assert [d.policyName for d in answer.diagnostics] == ["pinned-images"]
            assert answer.diagnostics[0].enforcementLevel == analyzer_pb2.MANDATORY
            good = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(type=K8S, properties=_struct(DEPLOYMENT), urn=urn,
                                                                name="app"))
            assert list(good.diagnostics) == []
    finally:
        pack.kill()
        pack.wait()
