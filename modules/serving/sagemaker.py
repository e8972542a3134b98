"""SageMaker real-time endpoints as the serving engine of the eks stack (docs/decisions/0021-sagemaker-engine.md).

One endpoint per model, next to the cluster rather than in it: a SageMaker Model per version (the
project's MLServer image from the stack's ECR, the version's S3 prefix as uncompressed model data),
an EndpointConfiguration with the main version and its candidate, the Endpoint, Application Auto
Scaling on invocations per instance, and an execution role that reads exactly those S3 prefixes and
pulls exactly that repository.

- Model data: SageMaker downloads the registry version's S3 prefix (MLflow's own artifacts in the
  stack's bucket; no copy) to /opt/ml/model with the execution role. The container runs with
  network isolation, so it reaches nothing: no MLflow, no bucket, no VPC of ours (hence no VPC
  config and no ENI permissions). A moved alias is served after the next deploy pins its prefix.
- Container contract: SageMaker runs `docker run <image> serve` and calls GET /ping and POST
  /invocations on port 8080. The image's `serve` (modules/serving/mlserver-image/serve) starts
  MLServer on the env below; the MLflow runtime answers /ping and /invocations (MLflow's scoring
  protocol: `{"inputs": ...}`, `{"dataframe_split": ...}`).
- Candidates: a canary is a second production variant with `canaryPercent` of the weight; a
  shadow is SageMaker's shadow variant (at most one per endpoint, next to one production variant),
  weighted like the main one so it receives a copy of every request; its answers are dropped.
- SageMaker Models and EndpointConfigurations cannot be changed in place: their names carry a hash
  of their arguments, so a new version creates new ones and the Endpoint switches over (SageMaker's
  blue/green update) before Pulumi deletes the old ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from modules.serving.contract import DeployedModel, ModelDeploymentArgs, ModelSource, ServingEngine
from modules.serving.managed import CANDIDATE, MAIN, artifact_location, image_uri, instance_bounds

MODEL_DIR = "/opt/ml/model"  # where SageMaker puts the model data
PORT = 8080  # SageMaker's hosting contract
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
RUNTIME_URL = "https://runtime.sagemaker.{region}.amazonaws.com/endpoints/"  # + <endpoint>/invocations
LOG_PREFIX = "/aws/sagemaker/Endpoints/"  # SageMaker's log group of an endpoint: <prefix><endpoint name>
METRICS_NAMESPACE = "/aws/sagemaker/Endpoints"  # instance metrics (CPU, memory, disk) the role publishes
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's EndpointName / ModelName rule
TargetTracking = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs
PredefinedMetric = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs
# instance families with local NVMe storage: SageMaker refuses a volume KMS key for them (the
# instance store is encrypted by the hardware)
INSTANCE_STORE = re.compile(r"^ml\.[a-z]+[0-9]+[a-z]*d[n]?\.")


@dataclass(frozen=True)
class SageMakerArgs:
    prefix: str  # of physical names (the eks platform's)
    region: str
    image: pulumi.Input[str]  # the MLServer image in ECR: <repository>:<tag>[@<digest>]
    repository_arn: pulumi.Input[str]  # its ECR repository, the only one the role may pull from
    key_arn: pulumi.Input[str]  # the platform's KMS key: model data is SSE-KMS, the volumes use it too
    mlflow_runtime: str  # MLServer class that loads the MLflow model (mlops_mlserver.MLflowRuntime)
    instance_type: str
    invocations_per_instance: int
    scale_in_cooldown: int
    scale_out_cooldown: int
    startup_timeout: int  # seconds for the model download and the first /ping
    log_retention_days: int


class SageMaker(pulumi.ComponentResource, ServingEngine):
    """Nothing runs until a model is deployed: SageMaker has no controller of ours to install."""

    name = "sagemaker"

    def __init__(self, name: str, args: SageMakerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:SageMaker", name, None, opts)
        self._args = args
        self.register_outputs({})

    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        return SageMakerEndpoint(name, args, self._args, pulumi.ResourceOptions.merge(
            pulumi.ResourceOptions(parent=self), opts))


def s3_location(source: ModelSource) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of a version pinned to an S3 prefix."""
    return artifact_location(source, "s3", "sagemaker")


def container_environment(model_name: str, mlflow_runtime: str) -> dict[str, str]:
    """MLServer configured by environment alone, as in a Seldon or KServe pod: the model SageMaker
    downloaded, under the name clients see in responses, on the port SageMaker calls, and no
    inference worker process (a second copy of the model behind a multiprocessing hop on the same
    CPUs: benchmarks/serving_overhead.py)."""
    return {"MLSERVER_MODEL_NAME": model_name, "MLSERVER_MODEL_IMPLEMENTATION": mlflow_runtime,
            "MLSERVER_MODEL_URI": MODEL_DIR, "MLSERVER_HTTP_PORT": str(PORT), "MLSERVER_HOST": "0.0.0.0",
            "MLSERVER_PARALLEL_WORKERS": "0"}


def trust_policy(account: str) -> str:
    """Only SageMaker, acting for this account (the confused-deputy guard), assumes the role."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
    }]})


def execution_policy(locations: Sequence[tuple[str, str]], repository_arn: str, key_arn: str, log_group_arn: str,
                     region: str) -> str:
    """What SageMaker needs to start this endpoint's containers, and nothing else: pull one
    repository, read the versions' prefixes (and decrypt them through S3 only), write the
    endpoint's logs and instance metrics. No VPC: the containers run with network isolation."""
    buckets = sorted({bucket for bucket, _ in locations})
    statements: list[dict[str, Any]] = [
        {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullImage", "Effect": "Allow", "Resource": repository_arn,
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]},
        {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": sorted({f"arn:aws:s3:::{bucket}/{prefix}/*" for bucket, prefix in locations})},
    ]
    for i, bucket in enumerate(buckets):  # listing the prefixes (S3Prefix model data), not the bucket
        prefixes = {p for b, p in locations if b == bucket}
        statements.append({"Sid": f"ListModels{i}", "Effect": "Allow", "Action": "s3:ListBucket",
                           "Resource": f"arn:aws:s3:::{bucket}",
                           "Condition": {"StringLike": {"s3:prefix": sorted(prefixes | {f"{p}/*" for p in prefixes})}}})
    statements += [
        {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        {"Sid": "Logs", "Effect": "Allow", "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]},
        {"Sid": "InstanceMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}}},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _hashed(prefix: str, body: Any) -> str:
    """A name that changes with what it names (resources SageMaker cannot update in place)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{prefix[:63 - 11]}-{digest}"


class SageMakerEndpoint(DeployedModel):
    """One model's endpoint, its variants' Models, autoscaling, role and log group."""

    def __init__(self, name: str, args: ModelDeploymentArgs, engine: SageMakerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:serving:SageMakerEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        model_name = args.object_name or name
        endpoint_name, role_name = f"{engine.prefix}-{model_name}", f"{engine.prefix}-{model_name}-sagemaker"
        if not NAME.match(endpoint_name) or len(role_name) > 64:  # IAM role names: at most 64 characters
            raise ValueError(f"SageMaker endpoint name {endpoint_name!r} and role {role_name!r}: at most 63 and 64 "
                             "letters, digits and '-' (shorten aws.namePrefix or the model name)")
        sources = {MAIN: args.source, **({CANDIDATE: args.candidate} if args.candidate is not None else {})}
        locations = {variant: s3_location(source) for variant, source in sources.items()}
        account = pulumi.Output.from_input(engine.repository_arn).apply(lambda arn: arn.split(":")[4])

        log_group = aws.cloudwatch.LogGroup(name, name=LOG_PREFIX + endpoint_name,
                                            retention_in_days=engine.log_retention_days, opts=child)
        log_group_arn = pulumi.Output.concat("arn:aws:logs:", engine.region, ":", account, ":log-group:",
                                             LOG_PREFIX, endpoint_name)
        role = aws.iam.Role(name, name=role_name, assume_role_policy=account.apply(trust_policy),
                            description=f"SageMaker endpoint {endpoint_name}: pulls the MLServer image, reads its "
                                        "model versions", opts=child)
        policy = aws.iam.RolePolicy(name, role=role.name, name="endpoint", policy=pulumi.Output.all(
            engine.repository_arn, engine.key_arn, log_group_arn).apply(
                lambda v: execution_policy(list(locations.values()), v[0], v[1], v[2], engine.region)), opts=child)

        image = pulumi.Output.from_input(engine.image).apply(image_uri)
        env = container_environment(model_name, engine.mlflow_runtime)
        models = {}
        for variant, (bucket, prefix) in locations.items():
            s3_uri = f"s3://{bucket}/{prefix}/"
            models[variant] = aws.sagemaker.Model(
                f"{name}-{variant}",
                name=image.apply(lambda ref, v=variant, u=s3_uri: _hashed(f"{endpoint_name}-{v}", [ref, u, env])),
                execution_role_arn=role.arn,
                enable_network_isolation=True,
                primary_container=aws.sagemaker.ModelPrimaryContainerArgs(
                    image=image, environment=env,
                    model_data_source=aws.sagemaker.ModelPrimaryContainerModelDataSourceArgs(s3_data_sources=[
                        aws.sagemaker.ModelPrimaryContainerModelDataSourceS3DataSourceArgs(
                            s3_uri=s3_uri, s3_data_type="S3Prefix", compression_type="None")])),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))

        low, high = instance_bounds(args)
        canary = args.candidate is not None and args.candidate_mode == "canary"
        weights = {MAIN: 100 - args.canary_percent, CANDIDATE: args.canary_percent} if canary else {MAIN: 100}

        def variant(v: str, model_name_: pulumi.Input[str], weight: int) -> dict[str, Any]:
            return {"variant_name": v, "model_name": model_name_, "instance_type": engine.instance_type,
                    "initial_instance_count": low if v == MAIN else 1, "initial_variant_weight": float(weight),
                    "container_startup_health_check_timeout_in_seconds": engine.startup_timeout,
                    "model_data_download_timeout_in_seconds": engine.startup_timeout}

        production = [variant(v, models[v].name, w) for v, w in weights.items()]
        # a shadow is weighted like the main variant: SageMaker copies it every request
        shadow = [variant(CANDIDATE, models[CANDIDATE].name, 100) | {"initial_instance_count": low}] \
            if args.candidate is not None and not canary else []
        volume_key = None if INSTANCE_STORE.match(engine.instance_type) else engine.key_arn
        body = pulumi.Output.all(production, shadow, volume_key)
        config = aws.sagemaker.EndpointConfiguration(
            name,
            name=body.apply(lambda b: _hashed(endpoint_name, b)),
            production_variants=[aws.sagemaker.EndpointConfigurationProductionVariantArgs(**v) for v in production],
            shadow_production_variants=[aws.sagemaker.EndpointConfigurationShadowProductionVariantArgs(**v)
                                        for v in shadow] or None,
            kms_key_arn=volume_key,
            opts=child)
        endpoint = aws.sagemaker.Endpoint(name, name=endpoint_name, endpoint_config_name=config.name,
                                          opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]))
        if args.autoscaling is not None:
            for v in weights:
                self._autoscale(f"{name}-{v}", endpoint, v, low if v == MAIN else 1, high, engine)
        self.url = pulumi.Output.concat(RUNTIME_URL.format(region=engine.region), endpoint.name, "/invocations")
        self.register_outputs({"url": self.url, "role": role.arn})

    def _autoscale(self, name: str, endpoint: aws.sagemaker.Endpoint, variant: str, low: int, high: int,
                   engine: SageMakerArgs) -> None:
        """Target tracking on invocations per instance (SageMaker's own metric; CPU is not exported
        per variant for target tracking), within the model's replica bounds."""
        child = pulumi.ResourceOptions(parent=self)
        target = aws.appautoscaling.Target(
            name, service_namespace="sagemaker", scalable_dimension=SCALABLE_DIMENSION,
            resource_id=pulumi.Output.concat("endpoint/", endpoint.name, f"/variant/{variant}"),
            min_capacity=low, max_capacity=high, opts=child)
        aws.appautoscaling.Policy(
            name, name=f"{variant}-invocations", policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace, scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration=TargetTracking(
                target_value=float(engine.invocations_per_instance),
                predefined_metric_specification=PredefinedMetric(predefined_metric_type=METRIC),
                scale_in_cooldown=engine.scale_in_cooldown, scale_out_cooldown=engine.scale_out_cooldown),
            opts=child)

