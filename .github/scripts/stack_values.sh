#!/usr/bin/env bash
# The values the model pipeline needs from its stack (MLflow URL and the pipeline's own MLflow login,
# model URLs, kubeconfig, registry), read from the cloud secret the stack keeps for the `models` identity
# (output ciIdentities.modelsStackValues): that identity has no access to the Pulumi state
# (docs/decisions/0010-ci-stack-outputs.md). Writes them as step outputs, the password masked.
#   STACK_VALUES  projects/<project>/secrets/<id> (Secret Manager) or a Secrets Manager ARN
set -euo pipefail
case "$STACK_VALUES" in
  projects/*/secrets/*) json=$(gcloud secrets versions access "$STACK_VALUES/versions/latest") ;;
  arn:aws:secretsmanager:*)
    json=$(aws secretsmanager get-secret-value --secret-id "$STACK_VALUES" --query SecretString --output text) ;;
  *)
    echo "::error::stack-values must be projects/<project>/secrets/<id> or a Secrets Manager ARN (output ciIdentities.modelsStackValues), got '$STACK_VALUES'"
    exit 1 ;;
esac
value() { jq -r --arg key "$1" '.[$key] // "" | if type == "string" then . else tojson end' <<< "$json"; }
password=$(value mlflowPassword)
[ -z "$password" ] || echo "::add-mask::$password"
delimiter="EOF_$(openssl rand -hex 16)"
{
  echo "mlflowUrl=$(value mlflowUrl)"
  echo "mlflowUsername=$(value mlflowUsername)"
  echo "mlflowPassword=$password"
  echo "registryUrl=$(value registryUrl)"
  echo "modelUrls=$(value modelUrls)"
  echo "kubeconfig<<$delimiter"
  value kubeconfig
  echo "$delimiter"
} >> "$GITHUB_OUTPUT"
