#!/usr/bin/env bash
# `make up`: the default stack from nothing — virtualenv, Pulumi CLI, minikube, the MLflow image,
# a local state backend (no Pulumi Cloud account) and `pulumi up --stack dev`.
# Re-running it is safe; `scripts/up.sh --destroy` tears the stack down again.
set -euo pipefail
cd "$(dirname "$0")/.."

PULUMI_VERSION=3.272.0          # matches the pulumi SDK pinned in pyproject.toml
MINIKUBE_VERSION=v1.37.0
KUBERNETES_VERSION=v1.34.0      # matches kubernetes.version in the stack config
MLFLOW_IMAGE=mlops-stack/mlflow-server:3.17.2-1
MLSERVER_IMAGE=mlops-stack/mlserver:1.7.1-1
STACK=${STACK:-dev}
MINIKUBE_CPUS=${MINIKUBE_CPUS:-4}
MINIKUBE_MEMORY=${MINIKUBE_MEMORY:-8192}
STATE_DIR=${PULUMI_STATE_DIR:-$PWD/.state}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

os=$(uname -s | tr '[:upper:]' '[:lower:]')
arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; esac

say "Python virtualenv (.venv) with the project"
make --no-print-directory venv

export PATH="$HOME/.pulumi/bin:$HOME/.local/bin:$PATH"
if ! command -v pulumi >/dev/null || [ "$(pulumi version)" != "v$PULUMI_VERSION" ]; then
  say "Installing Pulumi CLI $PULUMI_VERSION into ~/.pulumi/bin"
  curl -fsSL https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" \
    || die "Pulumi CLI install failed; install it by hand: curl -fsSL https://get.pulumi.com | sh -s -- --version $PULUMI_VERSION"
fi

if ! command -v minikube >/dev/null; then
  url="https://storage.googleapis.com/minikube/releases/$MINIKUBE_VERSION/minikube-$os-$arch"
  say "Installing minikube $MINIKUBE_VERSION into ~/.local/bin"
  mkdir -p "$HOME/.local/bin"
  curl -fsSLo "$HOME/.local/bin/minikube" "$url" && chmod +x "$HOME/.local/bin/minikube" \
    || die "minikube install failed; install it by hand: curl -Lo ~/.local/bin/minikube $url && chmod +x ~/.local/bin/minikube"
fi
command -v docker >/dev/null || command -v podman >/dev/null \
  || die "minikube needs a container engine: install Docker (https://docs.docker.com/engine/install/) or Podman"

if [ "${1:-}" != "--destroy" ]; then
  if ! minikube status --format '{{.Host}}' 2>/dev/null | grep -q Running; then
    say "Starting minikube ($MINIKUBE_CPUS CPU, $MINIKUBE_MEMORY MiB, Kubernetes $KUBERNETES_VERSION, Calico for NetworkPolicies)"
    minikube start --cpus "$MINIKUBE_CPUS" --memory "$MINIKUBE_MEMORY" \
      --kubernetes-version "$KUBERNETES_VERSION" --cni calico \
      --addons default-storageclass,storage-provisioner,metrics-server
  fi
  say "Building the MLflow server image inside minikube ($MLFLOW_IMAGE)"
  minikube image build -t "$MLFLOW_IMAGE" modules/mlflow/image
  say "Building the MLServer image for registry models inside minikube ($MLSERVER_IMAGE)"
  minikube image build -t "$MLSERVER_IMAGE" modules/serving/mlserver-image
fi

say "Local Pulumi state in $STATE_DIR (passphrase secrets, no Pulumi Cloud)"
mkdir -p "$STATE_DIR"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  [ -s "$STATE_DIR/passphrase" ] || (umask 077 && head -c 32 /dev/urandom | base64 > "$STATE_DIR/passphrase")
  export PULUMI_CONFIG_PASSPHRASE_FILE="$STATE_DIR/passphrase"
fi
pulumi login "file://$STATE_DIR"
pulumi stack select "$STACK" 2>/dev/null || pulumi stack init "$STACK" --secrets-provider passphrase

if [ "${1:-}" = "--destroy" ]; then
  say "pulumi destroy --stack $STACK"
  exec pulumi destroy --stack "$STACK" --yes
fi
say "pulumi up --stack $STACK"
pulumi up --stack "$STACK" --yes
say "Done. Run \`minikube tunnel\` in another terminal, then open $(pulumi stack output mlflowUrl --stack "$STACK")"
echo "    user: $(pulumi stack output mlflowAdminUsername --stack "$STACK")," \
     "password: pulumi stack output mlflowAdminPassword --show-secrets --stack $STACK"
echo "    Grafana: $(pulumi stack output grafanaUrl --stack "$STACK") (admin / grafanaAdminPassword)"
