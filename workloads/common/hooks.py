"""What every workload's pipeline hooks share: their environment, the stack's endpoints, the
deploy-by-alias step, HTTP requests to the served model, and the command dispatcher.

A hook (`workloads/<name>/ci/<step>`) is a two-line shell script running
`python -m workloads.<name>.hooks <step>`; the model pipeline runs it from the repository root
with the environment of README "Models: the pipeline and its contract": WORKLOAD, STACK, GIT_SHA,
IMAGE, MODEL_ROLE, MODEL_VERSION, MLFLOW_TRACKING_URI/USERNAME/PASSWORD, and where the endpoints
are: STACK_OUTPUTS (a JSON file of the stack outputs, as `mlops smoke --outputs` reads) or
MODEL_URLS (the `modelUrls` output itself). Standard library and MLflow only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from workloads.common import promotion
from workloads.common.tracking import CHALLENGER, CHAMPION


class HookError(Exception):
    """A hook's failure, with the reason and the fix: printed as a GitHub error annotation."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "")
    return value if value else default


def number(name: str, default: float) -> float:
    raw = env(name)
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        raise HookError(f"${name}={raw!r}: expected a number") from None


def role() -> str:
    value = env("MODEL_ROLE", CHALLENGER)
    if value not in (CHAMPION, CHALLENGER):
        raise HookError(f"$MODEL_ROLE={value!r}: expected {CHAMPION} or {CHALLENGER}")
    return value


def write_output(key: str, value: str) -> None:
    """A step output (`$GITHUB_OUTPUT`), and the same line on stdout."""
    print(f"{key}={value}")
    path = env("GITHUB_OUTPUT")
    if path:
        with open(path, "a") as out:
            out.write(f"{key}={value}\n")


def model_urls() -> dict[str, str]:
    """`modelUrls` from $MODEL_URLS or the outputs file $STACK_OUTPUTS."""
    if env("MODEL_URLS"):
        return json.loads(os.environ["MODEL_URLS"])
    path = env("STACK_OUTPUTS")
    if path:
        with open(path) as stream:
            return dict(json.load(stream).get("modelUrls") or {})
    raise HookError("no endpoints: set $STACK_OUTPUTS (JSON file of the stack outputs) or $MODEL_URLS")


def model_url(serving_name: str) -> str:
    urls = model_urls()
    if serving_name not in urls:
        raise HookError(f"stack output modelUrls has no {serving_name!r} (has {sorted(urls)}): serve it with "
                        f"serving.models.{serving_name} in the stack config, or set $SERVING_NAME")
    return urls[serving_name]


def expected_version(client: MlflowClient, model: str, alias: str) -> str:
    version = promotion.version_of(client, model, alias)
    if version is None:
        raise HookError(f"{model}@{alias} does not exist: run ci/register (and ci/promote for {CHAMPION})")
    return version.version


def served_version(client: MlflowClient, model: str, role: str, version: str) -> str | None:
    """The version the endpoint answers with: the champion (a shadow's answers are not returned);
    None when no champion serves yet (the first model: only its in-process check applies)."""
    if role == CHAMPION:
        return version
    champion = promotion.version_of(client, model, CHAMPION)
    if champion is None:
        print(f"note {model} has no {CHAMPION} yet: nothing is served, the endpoint is not called")
        return None
    return champion.version


def deploy_challenger(client: MlflowClient, model: str) -> str:
    """Point `challenger` at $MODEL_VERSION (the version ci/register made; default: where it points).

    With registry-alias serving (`serving.models.<name>.candidate: {alias: challenger}`) the shadow
    predictor follows the alias: setting it IS the deployment, and the champion keeps serving."""
    wanted = env("MODEL_VERSION") or expected_version(client, model, CHALLENGER)
    champion = promotion.version_of(client, model, CHAMPION)
    if champion is not None and champion.version == wanted:
        raise HookError(f"{model} v{wanted} is the champion already: nothing to shadow")
    client.get_model_version(model, wanted)  # fails naming the version when it does not exist
    client.set_registered_model_alias(model, CHALLENGER, wanted)
    print(f"{model}@{CHALLENGER} → v{wanted}, beside @{CHAMPION} "
          f"({'v' + champion.version if champion else 'none yet'}): the candidate predictor follows the alias")
    return wanted


def post_json(url: str, body: Mapping[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the stack's endpoint
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise HookError(f"POST {url}: HTTP {error.code}: {error.read()[:300]!r}") from None
    except (OSError, ValueError) as error:
        raise HookError(f"POST {url}: {error}") from None


def check_accuracy(what: str, predicted: list[int], expected: list[int], minimum: float) -> float:
    if len(predicted) != len(expected):
        raise HookError(f"{what}: {len(predicted)} answers for {len(expected)} requests")
    accuracy = sum(int(p) == int(e) for p, e in zip(predicted, expected, strict=True)) / len(expected)
    if accuracy < minimum:
        raise HookError(f"{what}: {accuracy:.2f} of the known answers right, at least {minimum:.2f} required "
                        f"($SMOKE_MIN_ACCURACY)")
    print(f"ok   {what}: {accuracy:.2f} of {len(expected)} known answers right")
    return accuracy


def served_answers(url: str, body: Mapping[str, Any], parse: Callable[[dict[str, Any]], list[int]],
                   version: str) -> list[int]:
    """The endpoint's answers once it serves `version`, where it reports one (V2 `model_version`,
    Seldon `meta.tags.model_version`): the serving layer follows an alias moments after it moves,
    so wait up to $SMOKE_TIMEOUT s."""
    deadline = time.monotonic() + number("SMOKE_TIMEOUT", 300)
    while True:
        reply = post_json(url, body)
        served = reply.get("model_version") or (reply.get("meta") or {}).get("tags", {}).get("model_version")
        if served in (None, "", version):
            if served is None:
                print(f"note {url} does not report the version it serves; answers checked only")
            return parse(reply)
        if time.monotonic() > deadline:
            raise HookError(f"{url} still serves version {served}, expected {version}: is the serving layer "
                            "following the alias (serving.models.<name>.source.alias)?")
        time.sleep(5)


def main(model: str, register: Callable[[], None], deploy: Callable[[], None], smoke: Callable[[], None],
         promote: Callable[[], None], argv: list[str] | None = None) -> int:
    """A model's hook steps (`python -m <workload>.hooks <step>`), `rollback` the same for every model."""
    return run(model, {"register": register, "deploy": deploy, "smoke": smoke, "promote": promote,
                       "rollback": lambda: rollback(MlflowClient(), model)}, argv)


def run(model: str, commands: Mapping[str, Callable[[], None]], argv: list[str] | None = None) -> int:
    """Run one step of `model`'s; a HookError fails it with its reason (a failed smoke is recorded)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in commands:
        print(f"usage: python -m <workload>.hooks {{{','.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        commands[args[0]]()
    except (HookError, LookupError) as error:
        print(f"::error::{args[0]}: {error}")
        if args[0] == "smoke":
            record_smoke_failure(model)
        return 1
    return 0


def record_smoke_failure(model: str) -> None:
    """Tag the version under test `smoke_failed_at` (a change failure once it is champion: the
    delivery metrics count it): $MODEL_VERSION, else $MODEL_ROLE's alias. Best effort: the smoke
    step has failed either way."""
    try:
        client = MlflowClient()
        version = env("MODEL_VERSION") or expected_version(client, model, role())
        promotion.record_smoke_failure(client, model, version)
        print(f"note {model} v{version}: tagged {promotion.SMOKE_FAILED_TAG}")
    except (HookError, MlflowException, OSError) as error:
        print(f"note smoke failure not recorded in MLflow: {error}")


def metric_promote(model: str, metric: str) -> Callable[[], None]:
    """The promote step of a model judged by one held-out metric (higher is better): `champion`
    moves only if the challenger's beats it by $PROMOTE_MARGIN (default 0: at least as good)."""
    def promote() -> None:
        client = MlflowClient()
        promote_or_fail(client, promotion.gate(client, model, metric, higher_is_better=True,
                                               margin=number("PROMOTE_MARGIN", 0.0)))
    return promote


def check_served(client: MlflowClient, model: str, role: str, version: str, serving_name: str,
                 request: Callable[[str], Mapping[str, Any]], parse: Callable[[dict[str, Any]], list[int]],
                 expected: list[int], minimum: float) -> None:
    """Known requests (`request(url)`: the body for that endpoint's protocol) through the gateway's
    endpoint of `serving_name`, once it serves the version `role` expects. The challenger's stage
    checks the champion still answers every request (the challenger's own accuracy is checked
    in-process: the shadow's answers are hidden); the champion's stage checks its accuracy."""
    served = served_version(client, model, role, version)
    if served is None:
        return
    url = model_url(serving_name)
    answers = served_answers(url, request(url), parse, served)
    check_accuracy(f"{url} (champion v{served})", answers, expected, minimum if role != CHALLENGER else 0.0)


def promote_or_fail(client: MlflowClient, decision: promotion.Decision) -> None:
    """Move `champion` on a passing decision; otherwise fail the job, the champion untouched."""
    print(decision.render())
    if not decision.promote:
        raise HookError(f"not promoted, {decision.model}@{CHAMPION} stays "
                        f"{'v' + decision.champion if decision.champion else 'unset'}: {decision.reason}")
    wanted = env("MODEL_VERSION")
    if wanted and wanted != decision.challenger:
        raise HookError(f"{decision.model}@{CHALLENGER} is v{decision.challenger}, but this pipeline registered "
                        f"v{wanted}: another run moved it; not promoting someone else's model")
    replaced = promotion.promote(client, decision.model, decision.challenger)
    print(f"{decision.model}@{CHAMPION} → v{decision.challenger} (was {'v' + replaced if replaced else 'unset'})")
    write_output("model-version", decision.challenger)


def rollback(client: MlflowClient, model: str) -> None:
    old, new = promotion.rollback(client, model)
    print(f"{model}@{CHAMPION}: v{old} → v{new} (rolled back)")
    write_output("model-version", new)
