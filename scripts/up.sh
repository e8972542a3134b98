#!/usr/bin/env bash
# `make up`: the default stack from nothing — virtualenv, Pulumi CLI, minikube, the project's images,
# a local state backend (no Pulumi Cloud account), `pulumi up --stack dev`, then a port-forward of
# the gateway so the URLs it prints answer (docs/decisions/0005-gateway-exposure.md).
#
#   scripts/up.sh             bring the stack up (safe to re-run: it converges and restarts the port-forward)
#   scripts/up.sh --forward   only (re)start the gateway port-forward (after a reboot or a minikube restart)
#   scripts/up.sh --destroy   stop the port-forward and tear the stack down
set -euo pipefail
cd "$(dirname "$0")/.."

PULUMI_VERSION=3.272.0          # matches the pulumi SDK pinned in pyproject.toml
MINIKUBE_VERSION=v1.37.0
KUBERNETES_VERSION=v1.34.0      # matches kubernetes.version in the stack config
STACK=${STACK:-dev}
MINIKUBE_CPUS=${MINIKUBE_CPUS:-4}
MINIKUBE_MEMORY=${MINIKUBE_MEMORY:-8192}
STATE_DIR=${PULUMI_STATE_DIR:-$PWD/.state}
FORWARD_PID=$STATE_DIR/gateway-forward.pid
FORWARD_LOG=$STATE_DIR/gateway-forward.log

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mode=${1:-up}
case "$mode" in
  up|--forward|--destroy) ;;
  *) die "usage: scripts/up.sh [--forward|--destroy]" ;;
esac

os=$(uname -s | tr '[:upper:]' '[:lower:]')
arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; esac

install_tools() {
  say "Python virtualenv (.venv) with the project"
  make --no-print-directory venv

  if ! command -v pulumi >/dev/null || [ "$(pulumi version)" != "v$PULUMI_VERSION" ]; then
    say "Installing Pulumi CLI $PULUMI_VERSION into ~/.pulumi/bin"
    curl -fsSL https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" \
      || die "Pulumi CLI install failed; install it by hand: curl -fsSL https://get.pulumi.com | sh -s -- --version $PULUMI_VERSION"
  fi

  if ! command -v minikube >/dev/null; then
    local url="https://storage.googleapis.com/minikube/releases/$MINIKUBE_VERSION/minikube-$os-$arch"
    say "Installing minikube $MINIKUBE_VERSION into ~/.local/bin"
    mkdir -p "$HOME/.local/bin"
    curl -fsSLo "$HOME/.local/bin/minikube" "$url" \
      || die "minikube install failed; install it by hand: curl -Lo ~/.local/bin/minikube $url && chmod +x ~/.local/bin/minikube"
    chmod +x "$HOME/.local/bin/minikube"
  fi
  command -v docker >/dev/null || command -v podman >/dev/null \
    || die "minikube needs a container engine: install Docker (https://docs.docker.com/engine/install/) or Podman"
}

start_minikube() {
  if ! minikube status --format '{{.Host}}' 2>/dev/null | grep -q Running; then
    say "Starting minikube ($MINIKUBE_CPUS CPU, $MINIKUBE_MEMORY MiB, Kubernetes $KUBERNETES_VERSION, Calico for NetworkPolicies)"
    minikube start --cpus "$MINIKUBE_CPUS" --memory "$MINIKUBE_MEMORY" \
      --kubernetes-version "$KUBERNETES_VERSION" --cni calico \
      --addons default-storageclass,storage-provisioner,metrics-server
  fi
  # the project images this stack runs (images.mode local), enabled workloads included
  local ref context dockerfile target
  local -a opts
  mkdir -p "$STATE_DIR"
  .venv/bin/mlops local-images --stack "$STACK" > "$STATE_DIR/local-images.tsv"
  while IFS=$'\t' read -r ref context dockerfile target; do
    opts=(-t "$ref")
    [ "$dockerfile" = - ] || opts+=(-f "$dockerfile")
    [ "$target" = - ] || opts+=(--build-opt "target=$target")
    say "Building $ref inside minikube (from $context)"
    minikube image build "${opts[@]}" "$context"
  done < "$STATE_DIR/local-images.tsv"
}

select_stack() {
  say "Local Pulumi state in $STATE_DIR (passphrase secrets, no Pulumi Cloud)"
  mkdir -p "$STATE_DIR"
  if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    [ -s "$STATE_DIR/passphrase" ] || (umask 077 && head -c 32 /dev/urandom | base64 > "$STATE_DIR/passphrase")
    export PULUMI_CONFIG_PASSPHRASE_FILE="$STATE_DIR/passphrase"
  fi
  pulumi login "file://$STATE_DIR"
  pulumi stack select "$STACK" 2>/dev/null || pulumi stack init "$STACK" --secrets-provider passphrase
}

output() { pulumi stack output "$1" --stack "$STACK" 2>/dev/null || true; }

# The port-forward runs in the background, restarted whenever kubectl exits (a gateway pod that
# restarts ends it); its pid file lets a re-run or --destroy stop exactly the one this script started.
stop_forward() {
  [ -s "$FORWARD_PID" ] || return 0
  local pid; pid=$(cat "$FORWARD_PID")
  if ps -p "$pid" -o args= 2>/dev/null | grep -q port-forward; then
    say "Stopping the gateway port-forward (pid $pid)"
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$FORWARD_PID"
}

start_forward() {
  local command; command=$(output gatewayPortForward)
  stop_forward
  if [ -z "$command" ]; then
    say "The gateway is not a ClusterIP Service (gateway.serviceType): no port-forward needed"
    return 0
  fi
  local -a argv; read -r -a argv <<< "$command"
  [ "${argv[0]}" = kubectl ] || die "unexpected stack output gatewayPortForward: $command"
  local -a kubectl=(kubectl)
  command -v kubectl >/dev/null || kubectl=(minikube kubectl --)
  say "Port-forward of the gateway in the background: ${argv[*]} (log: $FORWARD_LOG)"
  # shellcheck disable=SC2016  # $child and $@ belong to the inner shell
  nohup bash -c 'trap "kill \$child 2>/dev/null; exit 0" TERM INT
                 while true; do "$@" & child=$!; wait "$child" || true; sleep 2; done' \
    gateway-port-forward "${kubectl[@]}" --context minikube "${argv[@]:1}" >"$FORWARD_LOG" 2>&1 &
  echo $! > "$FORWARD_PID"
}

wait_for() {
  local url=$1
  for _ in $(seq 1 30); do
    curl -fsSk -o /dev/null "$url" && return 0
    sleep 2
  done
  return 1
}

print_urls() {
  local mlflow grafana; mlflow=$(output mlflowUrl); grafana=$(output grafanaUrl)
  if ! wait_for "$mlflow/health"; then
    printf 'warning: %s/health does not answer yet; see %s and "kubectl -n istio-system get pods"\n' \
      "$mlflow" "$FORWARD_LOG" >&2
  fi
  say "Done. The platform (*.localtest.me resolves to 127.0.0.1):"
  echo "    MLflow:  $mlflow   user $(output mlflowAdminUsername)," \
       "password: pulumi stack output mlflowAdminPassword --show-secrets --stack $STACK"
  echo "    Grafana: $grafana   user admin, password: pulumi stack output grafanaAdminPassword --show-secrets --stack $STACK"
  echo "    models:  $(output modelsBaseUrl)<model>/…   (pulumi stack output modelUrls --stack $STACK)"
  echo "    check:   .venv/bin/mlops smoke --stack $STACK"
  echo "    after a reboot or a minikube restart: scripts/up.sh --forward"
}

export PATH="$HOME/.pulumi/bin:$HOME/.local/bin:$PATH"
install_tools
case "$mode" in
  --destroy)
    select_stack
    stop_forward
    say "pulumi destroy --stack $STACK"
    pulumi destroy --stack "$STACK" --yes
    ;;
  --forward)
    select_stack
    start_forward
    print_urls
    ;;
  up)
    start_minikube
    select_stack
    say "pulumi up --stack $STACK"
    pulumi up --stack "$STACK" --yes
    start_forward
    print_urls
    ;;
esac
