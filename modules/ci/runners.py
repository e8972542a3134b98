"""CI inside the cluster: a GitHub Actions runner scale set (actions-runner-controller, pinned).

For clusters GitHub cannot reach (a laptop's minikube, an on-prem cluster behind a firewall): the
runners open outbound connections to GitHub and take jobs, so deployments run from inside with no
inbound access. The registration token is a Pulumi secret stored as a Kubernetes Secret.

With a builder, a rootless BuildKit daemon in its own namespace builds the jobs' images: the
runners keep Pod Security `baseline` and no Docker daemon; only the builder's namespace allows the
Unconfined seccomp/AppArmor profiles rootless BuildKit needs, and only runner pods may connect
(docs/decisions/0013-in-cluster-image-builds.md).
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
BUILDER_NAMESPACE = "arc-builder"
BUILDER_NAME = "buildkitd"
BUILDER_PORT = 1234
BUILDER_UID = 1000  # the moby/buildkit -rootless image's user; its subordinate IDs start at 100000
# runner pods carry this label (template.metadata.labels); the builder admits no other client
BUILDKIT_CLIENT_LABEL = {"mlops-stack.io/buildkit-client": "true"}
BUILDKIT_STATE = "/home/user/.local/share/buildkit"
# the policy pack's per-object exception (policy/rules.py ESCALATION_EXEMPTION), with its reason
ESCALATION_EXEMPTION = "policy.mlops-stack.io/allow-privilege-escalation"


@dataclass(frozen=True)
class BuilderArgs:
    image: str
    resources: dict[str, Any]
    insecure_registries: tuple[str, ...] = ()


def builder_endpoint() -> str:
    """What the pipeline's `builder` input takes: `docker buildx create --driver remote <endpoint>`."""
    return f"tcp://{BUILDER_NAME}.{BUILDER_NAMESPACE}.svc.cluster.local:{BUILDER_PORT}"


def buildkitd_toml(insecure_registries: tuple[str, ...]) -> str:
    """buildkitd's config: plain-HTTP registries only where named (minikube's registry addon)."""
    return "".join(f'[registry."{host}"]\n  http = true\n' for host in insecure_registries)


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
    builder: BuilderArgs | None = None


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
                "template": {
                    **({"metadata": {"labels": BUILDKIT_CLIENT_LABEL}} if args.builder else {}),
                    "spec": {
                        "serviceAccountName": account.metadata.name,
                        "containers": [{"name": "runner", "image": args.runner_image,
                                        "command": ["/home/runner/run.sh"], "resources": args.runner_resources}],
                    },
                },
            },
            opts=kube.child(self, depends_on=[controller]),
        )
        self.builder_endpoint: str | None = None
        if args.builder is not None:
            BuildkitBuilder(f"{name}-builder", args.builder, opts=kube.child(self))
            self.builder_endpoint = builder_endpoint()
        self.register_outputs({"scale_set": args.scale_set_name, "builder_endpoint": self.builder_endpoint})

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


class BuildkitBuilder(pulumi.ComponentResource):
    """`buildkitd` (rootless, UID 1000) behind a ClusterIP Service that only runner pods reach.

    Its namespace enforces Pod Security `privileged` because rootless BuildKit needs the Unconfined
    seccomp and AppArmor profiles (unshare/mount for its user namespace and snapshotter), which
    `baseline` forbids; the pod is still non-root, not privileged, with no host namespaces or paths.
    The cache lives in an emptyDir: lost on restart, never shared with another namespace. Pushes use
    the credentials each build's client forwards (docker/login-action on the runner): none stored here.
    """

    def __init__(self, name: str, args: BuilderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:ci:BuildkitBuilder", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": BUILDER_NAMESPACE, "labels": {
                "app.kubernetes.io/part-of": kube.PART_OF,
                "pod-security.kubernetes.io/enforce": "privileged",
                # the exception stays visible: every apply warns what `baseline` would refuse
                "pod-security.kubernetes.io/warn": "baseline",
                "pod-security.kubernetes.io/audit": "baseline",
            }},
            opts=kube.child(self))
        ns = namespace.metadata.name
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=kube.metadata(f"{BUILDER_NAME}-config", ns, "ci"),
            data={"buildkitd.toml": buildkitd_toml(args.insecure_registries)},
            opts=kube.child(self))
        self._deployment(name, args, ns, config.metadata.name)
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=kube.metadata(BUILDER_NAME, ns, "ci"),
            spec={"selector": kube.selector(BUILDER_NAME),
                  "ports": [{"name": "buildkit", "port": BUILDER_PORT, "target_port": "buildkit"}]},
            opts=kube.child(self))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kube.metadata(f"{BUILDER_NAME}-ingress", ns, "ci"),
            spec={
                "pod_selector": {"match_labels": kube.selector(BUILDER_NAME)},
                "policy_types": ["Ingress"],
                "ingress": [{
                    "from_": [{
                        "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": RUNNERS_NAMESPACE}},
                        "pod_selector": {"match_labels": BUILDKIT_CLIENT_LABEL},
                    }],
                    "ports": [{"port": BUILDER_PORT, "protocol": "TCP"}],
                }],
            },
            opts=kube.child(self))
        self.endpoint = builder_endpoint()
        self.register_outputs({"endpoint": self.endpoint})

    def _deployment(self, name: str, args: BuilderArgs, ns: pulumi.Input[str], config: pulumi.Input[str]) -> None:
        probe = kube.exec_probe(["buildctl", "debug", "workers"], period=30)
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=kube.metadata(BUILDER_NAME, ns, "ci", annotations={
                ESCALATION_EXEMPTION: "rootlesskit maps the build's user namespace with the setuid newuidmap/newgidmap "
                                      "(moby/buildkit#1671); the pod stays non-root and unprivileged",
                # checkov: the exceptions rootless BuildKit needs, each stated on the object
                "checkov.io/skip1": "CKV_K8S_31=rootless BuildKit needs seccomp Unconfined (unshare, mount)",
                "checkov.io/skip2": "CKV_K8S_20=rootlesskit maps its user namespace with setuid newuidmap",
                "checkov.io/skip3": "CKV_K8S_22=buildkitd writes its state and runtime directories",
                "checkov.io/skip4": "CKV_K8S_28=the builder keeps the default capabilities its user namespace needs",
                "checkov.io/skip5": "CKV_K8S_37=the builder keeps the default capabilities its user namespace needs",
            }),
            spec={
                "replicas": 1,
                "selector": {"match_labels": kube.selector(BUILDER_NAME)},
                "template": {
                    "metadata": {"labels": kube.labels(BUILDER_NAME, "ci")},
                    "spec": {
                        "automount_service_account_token": False,
                        "security_context": {"run_as_non_root": True, "run_as_user": BUILDER_UID,
                                             "run_as_group": BUILDER_UID, "fs_group": BUILDER_UID},
                        "containers": [{
                            "name": BUILDER_NAME,
                            "image": args.image,
                            "args": ["--addr", f"unix:///run/user/{BUILDER_UID}/buildkit/buildkitd.sock",
                                     "--addr", f"tcp://0.0.0.0:{BUILDER_PORT}",
                                     "--config", "/etc/buildkit/buildkitd.toml",
                                     # Kubernetes has no systempaths=unconfined (buildkit docs/rootless.md)
                                     "--oci-worker-no-process-sandbox"],
                            "ports": [{"name": "buildkit", "container_port": BUILDER_PORT}],
                            "readiness_probe": probe,
                            "liveness_probe": probe,
                            "resources": args.resources,
                            "security_context": {
                                "seccomp_profile": {"type": "Unconfined"},
                                "app_armor_profile": {"type": "Unconfined"},
                                "privileged": False,
                                "allow_privilege_escalation": True,  # setuid newuidmap, see the annotation
                            },
                            "volume_mounts": [
                                {"name": "config", "mount_path": "/etc/buildkit", "read_only": True},
                                {"name": "state", "mount_path": BUILDKIT_STATE},
                            ],
                        }],
                        "volumes": [{"name": "config", "config_map": {"name": config}},
                                    {"name": "state", "empty_dir": {}}],
                    },
                },
            },
            opts=kube.child(self))
