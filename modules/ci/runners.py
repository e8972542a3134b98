"""CI inside the cluster: a GitHub Actions runner scale set (actions-runner-controller, pinned).

For clusters GitHub cannot reach (a laptop's minikube, an on-prem cluster behind a firewall): the
runners open outbound connections to GitHub and take jobs, so deployments run from inside with no
inbound access. The registration token is a Pulumi secret stored as a Kubernetes Secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.ci.rbac import ModelDeployerAccess

CHARTS = "oci://ghcr.io/actions/actions-runner-controller-charts"
CONTROLLER_RELEASE = "arc"
CONTROLLER_NAMESPACE = "arc-systems"
RUNNERS_NAMESPACE = "arc-runners"


@dataclass(frozen=True)
class RunnersArgs:
    chart_version: str
    github_config_url: str
    github_token: pulumi.Input[str]  # a secret: PAT or fine-grained token with runner admin rights
    scale_set_name: str
    min_runners: int
    max_runners: int
    runner_image: str
    runner_resources: dict[str, Any]
    controller_resources: dict[str, Any]
    # what jobs may change: "serving" (deploy models into that namespace) or "cluster" (pulumi up)
    deploy_scope: Literal["serving", "cluster"]
    serving_namespace: pulumi.Input[str]


class GithubRunners(pulumi.ComponentResource):
    """The ARC controller plus one autoscaling runner scale set for a repository or organisation."""

    def __init__(self, name: str, args: RunnersArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:ci:GithubRunners", name, None, opts)
        # Pod Security "baseline" enforced (no privileged or host access: runners get no Docker-in-Docker),
        # "restricted" warned: ARC's charts do not set every field the restricted level asks for
        labels = {"app.kubernetes.io/part-of": kube.PART_OF, "pod-security.kubernetes.io/enforce": "baseline",
                  "pod-security.kubernetes.io/warn": "restricted"}
        controller_ns = k8s.core.v1.Namespace(
            f"{name}-controller-namespace", metadata={"name": CONTROLLER_NAMESPACE, "labels": labels},
            opts=kube.child(self))
        runners_ns = k8s.core.v1.Namespace(
            f"{name}-runners-namespace", metadata={"name": RUNNERS_NAMESPACE, "labels": labels},
            opts=kube.child(self))
        controller = k8s.helm.v3.Release(
            f"{name}-controller",
            name=CONTROLLER_RELEASE,
            chart=f"{CHARTS}/gha-runner-scale-set-controller",
            version=args.chart_version,
            namespace=controller_ns.metadata.name,
            atomic=True,
            timeout=600,
            values={"resources": args.controller_resources},
            opts=kube.child(self),
        )
        token = k8s.core.v1.Secret(
            f"{name}-github-config",
            metadata=kube.metadata("github-config", runners_ns.metadata.name, "ci"),
            type="Opaque",
            string_data={"github_token": pulumi.Output.secret(args.github_token)},
            opts=kube.child(self),
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-deployer",
            metadata=kube.metadata("deployer", runners_ns.metadata.name, "ci"),
            opts=kube.child(self),
        )
        self._grant(name, args, account, runners_ns.metadata.name)
        k8s.helm.v3.Release(
            f"{name}-scale-set",
            name=args.scale_set_name,
            chart=f"{CHARTS}/gha-runner-scale-set",
            version=args.chart_version,
            namespace=runners_ns.metadata.name,
            atomic=True,
            timeout=600,
            values={
                "githubConfigUrl": args.github_config_url,
                "githubConfigSecret": token.metadata.name,
                "runnerScaleSetName": args.scale_set_name,
                "minRunners": args.min_runners,
                "maxRunners": args.max_runners,
                "controllerServiceAccount": {"namespace": CONTROLLER_NAMESPACE,
                                             "name": f"{CONTROLLER_RELEASE}-gha-rs-controller"},
                "template": {"spec": {
                    "serviceAccountName": account.metadata.name,
                    "containers": [{"name": "runner", "image": args.runner_image,
                                    "command": ["/home/runner/run.sh"], "resources": args.runner_resources}],
                }},
            },
            opts=kube.child(self, depends_on=[controller]),
        )
        self.register_outputs({"scale_set": args.scale_set_name})

    def _grant(self, name: str, args: RunnersArgs, account: k8s.core.v1.ServiceAccount,
               runners_ns: pulumi.Input[str]) -> None:
        """Jobs act as `deployer`: cluster-admin for infra deploys, or model deployment in serving."""
        subject = {"kind": "ServiceAccount", "name": account.metadata.name, "namespace": runners_ns}
        if args.deploy_scope == "cluster":
            k8s.rbac.v1.ClusterRoleBinding(
                f"{name}-deployer-cluster",
                metadata={"name": f"{args.scale_set_name}-deployer"},
                role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                subjects=[subject],
                opts=kube.child(self),
            )
        else:
            ModelDeployerAccess(f"{args.scale_set_name}-deployer", args.serving_namespace, [subject],
                                opts=kube.child(self))
