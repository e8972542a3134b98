"""GKE and EKS under mocks: private networking, encryption, protection per environment, keyless
workload identity tying the right Kubernetes service account to the right cloud identity, and MLflow
on Cloud SQL/RDS and GCS/S3 through the same contract as on minikube."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from mlops.cli import main
from mlops.plan import SECRET, Plan, _computed, run_program, stack_config, write_plan
from modules.platform.eks.database import _CREATE_DATABASES
from modules.platform.eks.network import subnet_cidrs
from tests.services import free_port
from tests.tools import require_tool

CLOUDS = ["gke", "eks"]
GCP_PROJECT = "my-mlops-project"
CLIENTS = {  # client -> (namespace, Kubernetes service account, buckets, may write)
    "mlflow": ("mlflow", "mlflow", {"artifacts"}, True),
    "model-server": ("serving", "model-server", {"artifacts"}, False),
}
STATIC_KEY_TYPES = {"gcp:serviceaccount/key:Key", "gcp:storage/hmacKey:HmacKey", "aws:iam/accessKey:AccessKey"}
STATIC_KEY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"}


@functools.cache
def variant(name: str, base: str, reveal: bool = False, **overrides: str) -> Plan:
    """The plan of a shipped cloud stack with config keys overridden (dotted keys, as `--path`)."""
    values, secret_keys = stack_config(base)
    values = {**values, **{f"mlops-stack:{key}": value for key, value in overrides.items()}}
    return run_program(name, (values, secret_keys), reveal_secrets=reveal)


def dev(cloud: str) -> Plan:
    return variant(f"{cloud}-dev", cloud, environment="dev")


def revealed(cloud: str) -> Plan:
    return variant(cloud, cloud, reveal=True)


def of(plan: Plan, type_token: str, name: str | None = None) -> list[dict]:
    found = [r for r in plan.of_type(type_token) if name is None or r["name"] == name]
    assert found, f"no {type_token} {name or ''} in the plan of {plan.stack}"
    return found


def only(plan: Plan, type_token: str, name: str | None = None) -> dict:
    [resource] = of(plan, type_token, name)
    return resource


def urn_of(plan: Plan, type_token: str, name: str) -> str:
    return only(plan, type_token, name)["urn"]


def policy(resource: dict, key: str = "policy") -> dict:
    return json.loads(resource["inputs"][key])


# --- both clouds ------------------------------------------------------------------------------

@pytest.mark.parametrize("cloud", CLOUDS)
def test_mlops_validate_passes(cloud, capsys):
    assert main(["validate", "--stack", cloud]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("cloud", CLOUDS)
def test_plan_is_deterministic(cloud, tmp_path):
    write_plan(run_program(cloud), cloud, tmp_path / "a")
    write_plan(run_program(cloud), cloud, tmp_path / "b")
    assert (tmp_path / "a" / "resources.json").read_text() == (tmp_path / "b" / "resources.json").read_text()
    assert (tmp_path / "a" / "outputs.json").read_text() == (tmp_path / "b" / "outputs.json").read_text()


@pytest.mark.parametrize("cloud", CLOUDS)
def test_outputs_name_cluster_kubeconfig_registry_mlflow_and_buckets(cloud, plan_of):
    outputs = plan_of(cloud).outputs
    assert outputs["clusterName"] == f"mlops-{cloud}"
    assert outputs["kubeconfig"] == SECRET
    assert outputs["mlflowUrl"] == "https://mlflow.mlops.example.com"
    # no `backups` bucket on the clouds: the managed databases keep their own backups, nothing writes it;
    # no `datasets` bucket anywhere: data copies live in the artifact store (docs/decisions/0023)
    assert set(outputs["buckets"]) == {"artifacts"}
    registry = {"gke": f"europe-west1-docker.pkg.dev/{GCP_PROJECT}/mlops",
                "eks": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlops"}[cloud]
    assert outputs["registryUrl"] == registry


@pytest.mark.parametrize(("cloud", "command"), [("gke", "gke-gcloud-auth-plugin"), ("eks", "aws")])
def test_kubeconfig_authenticates_through_an_exec_plugin(cloud, command):
    """The provider every Kubernetes object uses is built from the cluster's outputs (the same
    kubeconfig the stack exports, as a secret)."""
    kubeconfig = json.loads(only(revealed(cloud), "pulumi:providers:kubernetes", f"{cloud}-k8s")["inputs"]["kubeconfig"])
    [user] = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == command
    assert set(user["user"]) == {"exec"}  # no token, no client key
    [cluster] = kubeconfig["clusters"]
    assert cluster["name"] == f"mlops-{cloud}" and cluster["cluster"]["server"].startswith("https://")
    if cloud == "eks":
        args = user["user"]["exec"]["args"]
        assert args[args.index("--cluster-name") + 1] == "mlops-eks" and args[args.index("--region") + 1] == "eu-west-1"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_no_static_cloud_credentials_anywhere(cloud):
    # with a model pinned to an artifact URI, so the storage initializer's settings exist (alias models need none)
    serving = {**json.loads(stack_config(cloud)[0].get("mlops-stack:serving", "{}")),
               "models": {"neo": {"source": {"uri": {"gke": "gs", "eks": "s3"}[cloud] + "://artifacts/1/m/artifacts"}}}}
    plan = variant(cloud, cloud, reveal=True, serving=json.dumps(serving))
    assert not STATIC_KEY_TYPES & {r["type"] for r in plan.resources}
    for obj in plan.kubernetes_objects:
        text = json.dumps(obj)
        names = set(re.findall(r'"name": "([A-Z][A-Z0-9_]*)"', text))
        assert not names & STATIC_KEY_ENV, f"{obj['kind']}/{obj['metadata']['name']}"
        assert not re.search(r"AKIA[0-9A-Z]{16}|private_key|ACCESS_KEY_ID|aws-access-key-id", text), obj["metadata"]
    # model servers read the bucket with their workload identity, not with keys
    storage = plan.manifest("Secret", "model-storage")["stringData"]
    assert storage[{"gke": "RCLONE_CONFIG_GS_ENV_AUTH", "eks": "RCLONE_CONFIG_S3_ENV_AUTH"}[cloud]] == "true"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_cloud_resource_goes_through_the_explicit_provider(cloud, plan_of):
    package = {"gke": "gcp", "eks": "aws"}[cloud]
    providers = {r["provider"].rsplit("::", 1)[-1] for r in plan_of(cloud).resources
                 if r["type"].startswith(f"{package}:")}
    assert providers == ({"gcp", "gcp-apis"} if cloud == "gke" else {"aws"})


# --- GKE --------------------------------------------------------------------------------------

def test_gke_declares_the_platform_core(plan_of):
    plan = plan_of("gke")
    for token in ("gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/router:Router",
                  "gcp:compute/routerNat:RouterNat", "gcp:servicenetworking/connection:Connection",
                  "gcp:container/cluster:Cluster", "gcp:sql/databaseInstance:DatabaseInstance", "gcp:sql/user:User",
                  "gcp:artifactregistry/repository:Repository"):
        only(plan, token)
    assert {r["name"] for r in of(plan, "gcp:container/nodePool:NodePool")} == {"gke-system", "gke-workload"}
    assert len(of(plan, "gcp:storage/bucket:Bucket")) == 1  # artifacts: Cloud SQL keeps its own backups
    apis = {r["inputs"]["service"] for r in of(plan, "gcp:projects/service:Service")}
    assert {"container.googleapis.com", "sqladmin.googleapis.com", "servicenetworking.googleapis.com",
            "artifactregistry.googleapis.com", "iamcredentials.googleapis.com"} <= apis
    assert all(r["inputs"]["disableOnDestroy"] is False for r in of(plan, "gcp:projects/service:Service"))
    repository = only(plan, "gcp:artifactregistry/repository:Repository")["inputs"]
    assert repository["format"] == "DOCKER" and repository["dockerConfig"]["immutableTags"] is True


def test_gke_resources_wait_for_the_apis(plan_of):
    plan = plan_of("gke")
    provider = only(plan, "pulumi:providers:gcp", "gcp")
    assert set(provider["depends_on"]) >= {r["urn"] for r in of(plan, "gcp:projects/service:Service")}
    assert {r["provider"].rsplit("::", 1)[-1] for r in of(plan, "gcp:projects/service:Service")} == {"gcp-apis"}


def test_gke_cluster_is_private_with_workload_identity_and_no_default_pool(plan_of):
    plan = plan_of("gke")
    cluster = only(plan, "gcp:container/cluster:Cluster")["inputs"]
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["workloadIdentityConfig"]["workloadPool"] == f"{GCP_PROJECT}.svc.id.goog"
    assert cluster["releaseChannel"]["channel"] == "STABLE" and cluster["minMasterVersion"] == "1.34"
    assert cluster["ipAllocationPolicy"] == {"clusterSecondaryRangeName": "pods", "servicesSecondaryRangeName": "services"}
    subnet = only(plan, "gcp:compute/subnetwork:Subnetwork")["inputs"]
    assert subnet["privateIpGoogleAccess"] is True
    assert {r["rangeName"] for r in subnet["secondaryIpRanges"]} == {"pods", "services"}
    assert only(plan, "gcp:compute/routerNat:RouterNat")["inputs"]["sourceSubnetworkIpRangesToNat"] == \
        "ALL_SUBNETWORKS_ALL_IP_RANGES"
    node_account = only(plan, "gcp:serviceaccount/account:Account", "gke-nodes")["inputs"]["accountId"]
    for pool in of(plan, "gcp:container/nodePool:NodePool"):
        config = pool["inputs"]["nodeConfig"]
        assert config["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
        assert config["serviceAccount"].startswith(f"{node_account}@")  # never the Compute Engine default
        assert pool["inputs"]["autoscaling"]["minNodeCount"] <= pool["inputs"]["autoscaling"]["maxNodeCount"]
    # nobody gets a project-wide data role (the GitHub Actions identities: tests/test_ci_identities.py)
    roles = {r["inputs"]["role"] for r in of(plan, "gcp:projects/iAMMember:IAMMember") if "-ci-" not in r["inputs"]["member"]}
    assert roles == {"roles/container.defaultNodeServiceAccount"}


def test_cloud_sql_has_no_public_ip_and_requires_tls(plan_of):
    plan = plan_of("gke")
    instance = only(plan, "gcp:sql/databaseInstance:DatabaseInstance")
    ip = instance["inputs"]["settings"]["ipConfiguration"]
    cluster = only(plan, "gcp:container/cluster:Cluster")["inputs"]
    assert ip == {"ipv4Enabled": False, "privateNetwork": cluster["network"], "sslMode": "ENCRYPTED_ONLY"}
    assert urn_of(plan, "gcp:servicenetworking/connection:Connection", "network-private-services") in \
        instance["depends_on"]
    assert "authorizedNetworks" not in ip


def test_gcs_buckets_are_private_versioned_and_expire_old_versions(plan_of):
    buckets = of(plan_of("gke"), "gcp:storage/bucket:Bucket")
    assert {b["inputs"]["name"] for b in buckets} == {
        f"{GCP_PROJECT}-mlops-gke-{n}" for n in ("mlflow-artifacts",)}
    for bucket in buckets:
        spec = bucket["inputs"]
        assert spec["uniformBucketLevelAccess"] is True and spec["publicAccessPrevention"] == "enforced"
        assert spec["versioning"] == {"enabled": True}
        assert {"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 90, "withState": "ARCHIVED"}} \
            in spec["lifecycleRules"]


def test_gke_protection_follows_the_environment(plan_of):
    for plan, protected in ((plan_of("gke"), True), (dev("gke"), False)):
        cluster = only(plan, "gcp:container/cluster:Cluster")["inputs"]
        instance = only(plan, "gcp:sql/databaseInstance:DatabaseInstance")
        assert cluster["deletionProtection"] is protected
        assert instance["inputs"]["deletionProtection"] is protected
        assert instance["inputs"]["settings"]["deletionProtectionEnabled"] is protected
        stateful = [instance, *of(plan, "gcp:sql/database:Database"), *of(plan, "gcp:storage/bucket:Bucket"),
                    only(plan, "gcp:artifactregistry/repository:Repository"),
                    only(plan, "random:index/randomPassword:RandomPassword", "database-password")]
        assert {r["protect"] for r in stateful} == {protected}, plan.stack
        assert {b["inputs"]["forceDestroy"] for b in of(plan, "gcp:storage/bucket:Bucket")} == {not protected}


def test_gke_prod_is_regional_and_highly_available_dev_is_zonal_and_small(plan_of):
    prod, small = plan_of("gke"), dev("gke")
    assert only(prod, "gcp:container/cluster:Cluster")["inputs"]["location"] == "europe-west1"
    assert only(small, "gcp:container/cluster:Cluster")["inputs"]["location"] == "europe-west1-b"
    settings = only(prod, "gcp:sql/databaseInstance:DatabaseInstance")["inputs"]["settings"]
    assert settings["availabilityType"] == "REGIONAL" and settings["edition"] == "ENTERPRISE"
    backup = settings["backupConfiguration"]
    assert backup["enabled"] and backup["pointInTimeRecoveryEnabled"] and backup["transactionLogRetentionDays"] == 7
    assert backup["backupRetentionSettings"]["retainedBackups"] == 30
    settings = only(small, "gcp:sql/databaseInstance:DatabaseInstance")["inputs"]["settings"]
    assert settings["availabilityType"] == "ZONAL" and settings["tier"] == "db-f1-micro"
    assert settings["backupConfiguration"]["pointInTimeRecoveryEnabled"] is False
    workload = only(small, "gcp:container/nodePool:NodePool", "gke-workload")["inputs"]
    assert workload["nodeConfig"]["spot"] is True and workload["autoscaling"]["minNodeCount"] == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_gke_workload_identity_ties_the_service_account_to_its_own_google_account(client, plan_of):
    plan = plan_of("gke")
    namespace, ksa, buckets, write = CLIENTS[client]
    email = plan.manifest("ServiceAccount", ksa, namespace)["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    account = only(plan, "gcp:serviceaccount/account:Account", f"identity-{client}")["inputs"]
    assert email == f"{account['accountId']}@{GCP_PROJECT}.iam.gserviceaccount.com"
    [binding] = [b["inputs"] for b in of(plan, "gcp:serviceaccount/iAMMember:IAMMember")
                 if b["inputs"]["serviceAccountId"].endswith(f"/serviceAccounts/{email}")]
    assert binding == {"member": f"serviceAccount:{GCP_PROJECT}.svc.id.goog[{namespace}/{ksa}]",
                       "role": "roles/iam.workloadIdentityUser", "serviceAccountId": binding["serviceAccountId"]}
    names = {b["name"].removeprefix("buckets-"): b["inputs"]["name"] for b in of(plan, "gcp:storage/bucket:Bucket")}
    grants = [g["inputs"] for g in of(plan, "gcp:storage/bucketIAMMember:BucketIAMMember")
              if g["inputs"]["member"] == f"serviceAccount:{email}"]
    assert {g["bucket"] for g in grants} == {names[b] for b in buckets}
    assert {g["role"] for g in grants} == {"roles/storage.objectUser" if write else "roles/storage.objectViewer"}


def test_mlflow_on_gke_uses_cloud_sql_and_gcs():
    plan = revealed("gke")
    instance = only(plan, "gcp:sql/databaseInstance:DatabaseInstance")["inputs"]
    host = _computed("gcp:sql/databaseInstance:DatabaseInstance", instance, "")["privateIpAddress"]
    secret = plan.manifest("Secret", "mlflow-server", "mlflow")["stringData"]
    assert re.fullmatch(rf"postgresql\+psycopg2://mlflow:[^@]+@{re.escape(host)}:5432/mlruns\?sslmode=require",
                        secret["backend-store-uri"])
    assert f"@{host}:5432/mlflow_auth?sslmode=require" in secret["auth.ini"]
    assert not {k for k in secret if k.startswith("aws-")}
    databases = {d["inputs"]["name"]: d["inputs"]["instance"] for d in of(plan, "gcp:sql/database:Database")}
    assert databases == {"mlruns": instance["name"], "mlflow_auth": instance["name"]}
    artifacts = only(plan, "gcp:storage/bucket:Bucket", "buckets-artifacts")["inputs"]["name"]
    server = plan.manifest("Deployment", "mlflow", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert server["args"] == ["--artifacts-destination", f"gs://{artifacts}"]
    assert not any(e["name"] == "MLFLOW_S3_ENDPOINT_URL" for e in server["env"])


def test_gke_autopilot_has_no_node_pools_and_runs_nodes_as_the_platform_account():
    plan = variant("gke-ap", "gke", **{"gcp.autopilot": "true"})
    cluster = only(plan, "gcp:container/cluster:Cluster")["inputs"]
    assert cluster["enableAutopilot"] is True and "removeDefaultNodePool" not in cluster
    assert not plan.of_type("gcp:container/nodePool:NodePool")
    account = only(plan, "gcp:serviceaccount/account:Account", "gke-nodes")["inputs"]["accountId"]
    defaults = cluster["clusterAutoscaling"]["autoProvisioningDefaults"]
    assert defaults["serviceAccount"].startswith(f"{account}@")


# --- EKS --------------------------------------------------------------------------------------

def subnets(plan: Plan, kind: str) -> dict[str, dict]:
    return {r["urn"]: r for r in of(plan, "aws:ec2/subnet:Subnet") if f"-{kind}-" in r["name"]}


def test_eks_declares_the_platform_core(plan_of):
    plan = plan_of("eks")
    for token in ("aws:ec2/vpc:Vpc", "aws:ec2/internetGateway:InternetGateway", "aws:eks/cluster:Cluster",
                  "aws:rds/instance:Instance", "aws:kms/key:Key", "aws:cloudwatch/logGroup:LogGroup"):
        only(plan, token)
    issuers = {r["inputs"]["url"] for r in of(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")}
    # IRSA only: the account's GitHub provider is looked up (tests/test_eks_platform.py)
    assert issuers == {"https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"}
    assert {r["inputs"]["addonName"] for r in of(plan, "aws:eks/addon:Addon")} == {
        "vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "metrics-server"}
    assert len(subnets(plan, "private")) == len(subnets(plan, "public")) == 3
    assert {r["name"] for r in of(plan, "aws:eks/nodeGroup:NodeGroup")} == {"eks-system", "eks-workload"}
    for token in ("aws:s3/bucket:Bucket", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                  "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                  "aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketPolicy:BucketPolicy",
                  "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        assert len(of(plan, token)) == 1, token  # artifacts (no backups bucket on eks)
    repositories = {r["inputs"]["name"]: r["inputs"] for r in of(plan, "aws:ecr/repository:Repository")}
    assert set(repositories) == {f"mlops/{image}" for image in
                                 ("mlflow-server", "mlserver", "energy", "neo", "mnist", "mnist-server")}
    for repository in repositories.values():
        assert repository["imageTagMutability"] == "IMMUTABLE"
        assert repository["imageScanningConfiguration"] == {"scanOnPush": True}


def test_eks_cluster_is_encrypted_logged_and_pinned(plan_of):
    plan = plan_of("eks")
    cluster = only(plan, "aws:eks/cluster:Cluster")
    spec = cluster["inputs"]
    assert spec["version"] == "1.34"
    assert set(spec["enabledClusterLogTypes"]) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    key = only(plan, "aws:kms/key:Key")
    assert key["inputs"]["enableKeyRotation"] is True and key["urn"] in cluster["depends_on"]
    assert spec["encryptionConfig"]["resources"] == ["secrets"]
    log_group = only(plan, "aws:cloudwatch/logGroup:LogGroup")
    assert log_group["inputs"]["name"] == "/aws/eks/mlops-eks/cluster" and log_group["urn"] in cluster["depends_on"]
    assert spec["vpcConfig"]["endpointPrivateAccess"] is True


def test_eks_nodes_and_rds_live_in_private_subnets(plan_of):
    plan = plan_of("eks")
    private, public = subnets(plan, "private"), subnets(plan, "public")
    for subnet in private.values():
        assert subnet["inputs"]["tags"]["kubernetes.io/role/internal-elb"] == "1"
    for subnet in public.values():
        assert subnet["inputs"]["tags"]["kubernetes.io/role/elb"] == "1"
        assert subnet["inputs"]["mapPublicIpOnLaunch"] is False
    in_subnets = [only(plan, "aws:eks/cluster:Cluster"), only(plan, "aws:rds/subnetGroup:SubnetGroup"),
                  *of(plan, "aws:eks/nodeGroup:NodeGroup")]
    for resource in in_subnets:
        used = {d for d in resource["depends_on"] if ":ec2/subnet:Subnet::" in d}
        assert used == set(private), resource["name"]
    for table in of(plan, "aws:ec2/routeTable:RouteTable"):
        [route] = table["inputs"]["routes"]
        assert ("natGatewayId" in route) == ("-private-" in table["name"]), table["name"]
    for template in of(plan, "aws:ec2/launchTemplate:LaunchTemplate"):
        assert template["inputs"]["metadataOptions"]["httpTokens"] == "required"  # IMDSv2 only
        assert template["inputs"]["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"


def test_rds_is_private_encrypted_and_reachable_only_from_the_cluster(plan_of):
    plan = plan_of("eks")
    rds = only(plan, "aws:rds/instance:Instance")["inputs"]
    assert rds["publiclyAccessible"] is False and rds["storageEncrypted"] is True
    assert rds["kmsKeyId"].startswith("arn:aws:kms:eu-west-1:")
    assert rds["engine"] == "postgres" and rds["engineVersion"] == "17" and rds["instanceClass"] == "db.m6g.large"
    [rule] = [r["inputs"] for r in of(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    assert rule["referencedSecurityGroupId"] == "sg-0eks0cluster0" and "cidrIpv4" not in rule
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (5432, 5432, "tcp")
    parameters = only(plan, "aws:rds/parameterGroup:ParameterGroup")["inputs"]
    assert parameters["family"] == "postgres17"
    assert {(p["name"], p["value"]) for p in parameters["parameters"]} == {("rds.force_ssl", "1")}


def test_s3_buckets_block_public_access_encrypt_version_and_require_tls(plan_of):
    plan = plan_of("eks")
    key_arn = only(plan, "aws:rds/instance:Instance")["inputs"]["kmsKeyId"]
    for bucket in of(plan, "aws:s3/bucket:Bucket"):
        def config(token: str) -> dict:
            [found] = [r for r in of(plan, token) if bucket["urn"] in r["depends_on"]]
            return found["inputs"]

        block = config("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        [rule] = config("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")["rules"]
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn}
        assert config("aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
        [lifecycle] = config("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
        assert lifecycle["status"] == "Enabled" and lifecycle["noncurrentVersionExpiration"]["noncurrentDays"] == 90
        [deny] = json.loads(config("aws:s3/bucketPolicy:BucketPolicy")["policy"])["Statement"]
        arn = f"arn:aws:s3:::{_computed('aws:s3/bucket:Bucket', bucket['inputs'], '')['bucket']}"
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"] == [arn, f"{arn}/*"]


def test_eks_addons_come_in_order_with_their_own_roles(plan_of):
    plan = plan_of("eks")
    addons = {r["inputs"]["addonName"]: r for r in of(plan, "aws:eks/addon:Addon")}
    groups = [r["urn"] for r in of(plan, "aws:eks/nodeGroup:NodeGroup")]
    for group in of(plan, "aws:eks/nodeGroup:NodeGroup"):
        assert addons["vpc-cni"]["urn"] in group["depends_on"]  # Pods get IPs from the first node on
    for addon in ("coredns", "aws-ebs-csi-driver"):
        assert set(groups) <= set(addons[addon]["depends_on"])
    roles = {r["inputs"]["name"]: r for r in of(plan, "aws:iam/role:Role")}
    for addon, account in (("vpc-cni", "aws-node"), ("aws-ebs-csi-driver", "ebs-csi-controller-sa")):
        role = roles[addons[addon]["inputs"]["serviceAccountRoleArn"].rsplit("/", 1)[-1]]
        condition = policy(role, "assumeRolePolicy")["Statement"][0]["Condition"]["StringEquals"]
        assert f"system:serviceaccount:kube-system:{account}" in condition.values()
    node_role = roles["mlops-eks-nodes"]
    attached = {r["inputs"]["policyArn"].rsplit("/", 1)[-1] for r in of(plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if node_role["urn"] in r["depends_on"]}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"}  # CNI is IRSA's
    storage_class = plan.manifest("StorageClass", "gp3")
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert storage_class["provisioner"] == "ebs.csi.aws.com" and storage_class["parameters"]["type"] == "gp3"


def test_eks_protection_follows_the_environment(plan_of):
    for plan, protected in ((plan_of("eks"), True), (dev("eks"), False)):
        rds = only(plan, "aws:rds/instance:Instance")
        assert only(plan, "aws:eks/cluster:Cluster")["inputs"]["deletionProtection"] is protected
        assert rds["inputs"]["deletionProtection"] is protected
        assert rds["inputs"]["skipFinalSnapshot"] is (not protected)
        stateful = [rds, *of(plan, "aws:s3/bucket:Bucket"), only(plan, "aws:kms/key:Key"),
                    *of(plan, "aws:ecr/repository:Repository"),
                    only(plan, "random:index/randomPassword:RandomPassword", "database-password")]
        assert {r["protect"] for r in stateful} == {protected}, plan.stack
        assert {b["inputs"]["forceDestroy"] for b in of(plan, "aws:s3/bucket:Bucket")} == {not protected}
        assert {r["inputs"]["forceDelete"] for r in of(plan, "aws:ecr/repository:Repository")} == {not protected}
        assert plan.manifest("StorageClass", "gp3")["reclaimPolicy"] == ("Retain" if protected else "Delete")


def test_eks_prod_is_multi_az_dev_is_small(plan_of):
    prod, small = plan_of("eks"), dev("eks")
    assert only(prod, "aws:rds/instance:Instance")["inputs"]["multiAz"] is True
    assert only(prod, "aws:rds/instance:Instance")["inputs"]["backupRetentionPeriod"] == 30
    assert len(of(prod, "aws:ec2/natGateway:NatGateway")) == 3
    rds = only(small, "aws:rds/instance:Instance")["inputs"]
    assert rds["multiAz"] is False and rds["instanceClass"] == "db.t4g.micro"
    assert rds["backupRetentionPeriod"] == 1  # automated backups stay on, shortest retention
    assert len(of(small, "aws:ec2/natGateway:NatGateway")) == 1 and len(subnets(small, "private")) == 2
    workload = only(small, "aws:eks/nodeGroup:NodeGroup", "eks-workload")["inputs"]
    assert workload["capacityType"] == "SPOT" and workload["amiType"] == "AL2023_x86_64_STANDARD"


@pytest.mark.parametrize("client", CLIENTS)
def test_eks_irsa_ties_the_service_account_to_its_own_role_and_buckets(client, plan_of):
    plan = plan_of("eks")
    namespace, ksa, buckets, write = CLIENTS[client]
    arn = plan.manifest("ServiceAccount", ksa, namespace)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    [role] = [r for r in of(plan, "aws:iam/role:Role") if r["inputs"]["name"] == arn.rsplit("/", 1)[-1]]
    [statement] = policy(role, "assumeRolePolicy")["Statement"]
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{issuer}")
    assert statement["Condition"]["StringEquals"] == {f"{issuer}:sub": f"system:serviceaccount:{namespace}:{ksa}",
                                                      f"{issuer}:aud": "sts.amazonaws.com"}
    [attached] = [p for p in of(plan, "aws:iam/rolePolicy:RolePolicy") if p["inputs"]["role"] == role["inputs"]["name"]]
    statements = {s["Sid"]: s for s in policy(attached)["Statement"]}
    bucket_arns = {f"arn:aws:s3:::{_computed('aws:s3/bucket:Bucket', b['inputs'], '')['bucket']}"
                   for b in of(plan, "aws:s3/bucket:Bucket") if b["name"].removeprefix("buckets-") in buckets}
    assert set(statements["ListBuckets"]["Resource"]) == bucket_arns
    assert set(statements["Objects"]["Resource"]) == {f"{a}/*" for a in bucket_arns}
    assert ("s3:PutObject" in statements["Objects"]["Action"]) is write
    assert "*" not in json.dumps(statements["ListBuckets"])


def test_mlflow_on_eks_uses_rds_and_s3():
    plan = revealed("eks")
    rds = only(plan, "aws:rds/instance:Instance")["inputs"]
    host = _computed("aws:rds/instance:Instance", rds, "eu-west-1")["address"]
    secret = plan.manifest("Secret", "mlflow-server", "mlflow")["stringData"]
    assert re.fullmatch(rf"postgresql\+psycopg2://mlflow:[^@]+@{re.escape(host)}:5432/mlruns\?sslmode=require",
                        secret["backend-store-uri"])
    assert f"@{host}:5432/mlflow_auth?sslmode=require" in secret["auth.ini"]
    # RDS makes `mlruns`; the auth database comes from a Job against the same instance
    job = plan.manifest("Job", "postgres-create-databases", "mlops-platform")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in job["containers"][0]["env"]}
    assert env["PGHOST"] == host and env["EXTRA_DATABASES"] == "mlflow_auth" and env["PGSSLMODE"] == "require"
    assert job["securityContext"]["runAsNonRoot"] is True
    bucket = _computed("aws:s3/bucket:Bucket", only(plan, "aws:s3/bucket:Bucket", "buckets-artifacts")["inputs"], "")
    server = plan.manifest("Deployment", "mlflow", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert server["args"] == ["--artifacts-destination", f"s3://{bucket['bucket']}"]


def test_graviton_node_pools_get_the_arm64_image():
    plan = variant("eks-arm", "eks", **{"aws.nodePools.workload.machineType": "m7g.xlarge"})
    assert only(plan, "aws:eks/nodeGroup:NodeGroup", "eks-workload")["inputs"]["amiType"] == "AL2023_ARM_64_STANDARD"
    assert only(plan, "aws:eks/nodeGroup:NodeGroup", "eks-system")["inputs"]["amiType"] == "AL2023_x86_64_STANDARD"


def test_subnet_ranges_are_disjoint_and_inside_the_vpc():
    import ipaddress

    private, public = subnet_cidrs("10.0.0.0/16", 3)
    assert private == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert public == ["10.0.224.0/22", "10.0.228.0/22", "10.0.232.0/22"]
    networks = [ipaddress.ip_network(n) for n in private + public]
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1:])
    assert all(n.subnet_of(ipaddress.ip_network("10.0.0.0/16")) for n in networks)


def test_rds_database_job_script_creates_databases_idempotently():
    """The Job's shell script, run with the real psql against a real PostgreSQL, twice."""
    psql = require_tool("psql", "PostgreSQL client")
    initdb = require_tool("initdb", "PostgreSQL server binaries")
    pg_ctl = require_tool("pg_ctl", "PostgreSQL server binaries")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="mlops-rds-job-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(root / "data"), "-U", "mlflow", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, pg_ctl, "-D", str(root / "data"), "-l", str(root / "log"), "-w", "start",
                    "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {root}"], check=True, capture_output=True)
    env = {"PATH": f"{Path(psql).parent}:/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "mlflow",
           "PGDATABASE": "postgres", "PGSSLMODE": "disable", "EXTRA_DATABASES": "mlflow_auth other_db"}
    try:
        for _ in range(2):
            run = subprocess.run(["sh", "-c", _CREATE_DATABASES], env=env, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
        listed = subprocess.run([psql, "-tAc", "SELECT datname FROM pg_database ORDER BY 1"], env=env,
                                capture_output=True, text=True, check=True).stdout.split()
        assert {"mlflow_auth", "other_db"} <= set(listed)
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(root / "data"), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_eks_gateway_gets_a_network_load_balancer(plan_of):
    releases = {r["inputs"]["chart"]: r["inputs"] for r in plan_of("eks").of_type("kubernetes:helm.sh/v3:Release")}
    service = releases["gateway"]["values"]["service"]
    assert service["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    gke = {r["inputs"]["chart"]: r["inputs"] for r in plan_of("gke").of_type("kubernetes:helm.sh/v3:Release")}
    assert gke["gateway"]["values"]["service"]["annotations"] == {}  # GKE: a passthrough network LB already
