"""Bad stack configs stop before any resource is declared, with one message naming every key."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.settings import ConfigError, parse_stack_config
from mlops.cli import main
from mlops.plan import Plan, run_program

# (config as written in a stack file, fragments the single message must contain)
INVALID = [
    ({"environment": "dev"}, ["mlops-stack:platform: missing"]),
    ({"platform": "kind", "environment": "dev"},
     ["mlops-stack:platform: got \"kind\"", "'minikube', 'existing', 'gke' or 'eks'"]),
    ({"platform": "minikube", "environment": "production"},
     ["mlops-stack:environment: got \"production\"", "'dev', 'staging' or 'prod'"]),
    ({"platform": "existing", "environment": "prod"}, ["mlops-stack:kubernetes.context: missing"]),
    ({"platform": "minikube", "environment": "dev", "workloads": {"neo": {"enabled": True}}},
     ["mlops-stack:workloads.neo", "dataUrl is required when enabled"]),
    ({"platform": "minikube", "environment": "dev", "workloads": {"mnist": {"epochs": 0}}},
     ["mlops-stack:workloads.mnist.epochs: got 0"]),
    ({"platform": "minikube", "environment": "dev", "mlflow": {"replicas": 0}},
     ["mlops-stack:mlflow.replicas: got 0", "greater than or equal to 1"]),
    ({"platform": "minikube", "environment": "dev", "mlflow": {"replcas": 2}},
     ["mlops-stack:mlflow.replcas: unknown key", "allowed keys here:", "replicas"]),
    ({"platform": "minikube", "environment": "dev", "mlflw": {}},
     ["mlops-stack:mlflw: unknown key", "mlflow", "objectStore"]),
    ({"platform": "minikube", "environment": "dev", "database": {"image": {"tag": "latest"}}},
     ["mlops-stack:database.image.tag: got \"latest\"", "pinned version tag"]),
    ({"platform": "minikube", "environment": "dev", "mlflow": {"resources": {"cpu": "lots"}}},
     ["mlops-stack:mlflow.resources.cpu: got \"lots\"", "'250m'"]),
    ({"platform": "minikube", "environment": "dev",
      "database": {"resources": {"cpu": "1", "memory": "2Gi", "memoryLimit": "1Gi"}}},
     ["mlops-stack:database.resources", "memoryLimit 1Gi is below memory 2Gi"]),
    ({"platform": "minikube", "environment": "dev", "database": {"backup": {"schedule": "daily"}}},
     ["mlops-stack:database.backup.schedule: got \"daily\"", "cron"]),
    ({"platform": "minikube", "environment": "dev", "objectStore": {"buckets": {"artifacts": "My_Bucket"}}},
     ["mlops-stack:objectStore.buckets.artifacts: got \"My_Bucket\"", "S3 bucket name"]),
    ({"platform": "minikube", "environment": "dev", "objectStore": {"buckets": {"datasets": "ml-data"}}},
     ["mlops-stack:objectStore.buckets", "datasets 'ml-data'", "0023-dataset-copies", "allowed: artifacts, backups"]),
    ({"platform": "minikube", "environment": "dev", "serving": {"models": {"mnist": {
        "source": {"image": {"repository": "r/mnist-server", "tag": "0.1.0"}, "model": "mnist", "alias": "champion"},
        "candidate": {"alias": "challenger"}}}}},
     ["mlops-stack:serving.models.mnist", "candidate speaks 'v2' and source 'seldon'"]),
    ({"platform": "minikube", "environment": "dev", "serving": {"models": {"mnist": {
        "source": {"image": {"repository": "r/mnist-server", "tag": "0.1.0"}, "model": "mnist"}}}}},
     ["mlops-stack:serving.models.mnist.source", "model 'mnist' is given without alias"]),
    ({"platform": "minikube", "environment": "dev", "kubernetes": {"version": "1.19"}},
     ["mlops-stack:kubernetes.version: got \"1.19\"", "'1.25' to '1.37'"]),
    ({"platform": "minikube", "environment": "dev", "namespaces": {"mlflow": "MLflow"}},
     ["mlops-stack:namespaces.mlflow: got \"MLflow\"", "DNS label"]),
    ({"platform": "minikube", "environment": "dev",
      "serving": {"models": {"neo": {"source": {"uri": "s3://mlflow-artifacts/1/m", "runtime": "sklearn"}}}}},
     ["mlops-stack:serving.models.neo.source.runtime: got \"sklearn\"", "skops", "use 'mlflow'"]),
    ({"platform": "existing", "environment": "prod", "kubernetes": {"context": "lab", "loadBalancers": "maybe"}},
     ["mlops-stack:kubernetes.loadBalancers: got \"maybe\""]),
    ({"platform": "minikube", "environment": "dev", "mlflow": {"adminPassword": "hunter2"}},
     ["mlops-stack:mlflow.adminPassword: stored in plain text", "pulumi config set --secret"]),
]


@pytest.mark.parametrize(("raw", "fragments"), INVALID, ids=[json.dumps(r)[:60] for r, _ in INVALID])
def test_invalid_config_is_rejected_naming_the_key(raw, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "hunter2" not in message


def test_all_problems_come_in_one_message():
    raw = {"platform": "minikube", "environment": "qa", "mlflow": {"replicas": 99, "workers": 0}}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    assert len(caught.value.problems) == 3
    assert str(caught.value).startswith("invalid stack config (3 problem(s)):")


def test_a_secret_inside_a_rejected_section_is_never_printed():
    raw = {"platform": "minikube", "environment": "dev",
           "ci": {"runners": {"enabled": True, "githubToken": "ghp_decrypted-token-value"}}}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, {"ci"})
    message = str(caught.value)
    assert "mlops-stack:ci.runners" in message and "githubConfigUrl" in message
    assert "ghp_decrypted-token-value" not in message and '"githubToken": "[secret]"' in message


def test_secret_config_is_accepted_when_encrypted():
    config = parse_stack_config({"platform": "minikube", "environment": "dev",
                                 "mlflow": {"adminPassword": "s3cret"}}, secret_top={"mlflow"})
    assert config.mlflow.admin_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_program_declares_nothing_on_bad_config():
    values = {"mlops-stack:platform": "minikube", "mlops-stack:environment": "dev",
              "mlops-stack:mlflow": json.dumps({"replicas": -1})}
    plan = Plan(stack="bad")
    with pytest.raises(pulumi.RunError, match="mlops-stack:mlflow.replicas"):
        run_program("bad", (values, []), plan=plan)
    assert plan.resources == []


def test_cli_prints_one_message_without_traceback(tmp_path, capsys):
    (tmp_path / "Pulumi.bad.yaml").write_text(
        "config:\n  mlops-stack:platform: minikub\n  mlops-stack:environment: dev\n"
        "  mlops-stack:mlflow:\n    replicas: zero\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--stack", "bad", "--stacks-dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "mlops-stack:platform: got \"minikub\"" in err
    assert "mlops-stack:mlflow.replicas: got \"zero\"" in err


def test_shipped_stacks_are_minimal():
    """Defaults carry the weight: the dev stack file states only platform and environment."""
    from mlops.paths import STACKS
    import yaml

    dev = yaml.safe_load((STACKS / "Pulumi.dev.yaml").read_text())["config"]
    assert set(dev) == {"mlops-stack:platform", "mlops-stack:environment"}
