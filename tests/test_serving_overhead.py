"""Serving overhead (issue 15): MLServer runs without inference worker processes wherever the stack
serves a registry model, the runtime's one-array numeric decoding builds exactly the DataFrame
MLServer's `pd` codec builds, or leaves the request to that codec (whose errors callers get as 400),
and its direct predict (no MLflow schema enforcement where it would pass the frame through as it is)
answers what MLflow's pyfunc predict answers, or leaves the request to it. Figures: benchmarks/serving_overhead.py."""

from __future__ import annotations

import json
import subprocess

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from mlops.plan import run_program, stack_config
from modules.serving.seldon import NO_WORKERS
from tests.runtimes import MLSERVER_IMAGE, SINGLE_THREAD, tool_script

PINNED = {"neo": {"source": {"uri": "s3://mlflow-artifacts/1/models/m-0/artifacts"}}}


def test_kserve_pinned_model_runs_without_inference_workers():
    values, secrets = stack_config("dev")
    values["mlops-stack:serving"] = json.dumps({"engine": "kserve", "models": PINNED})
    plan = run_program("dev", (values, secrets))
    env = plan.manifest("InferenceService", "neo", "serving")["spec"]["predictor"]["model"]["env"]
    assert NO_WORKERS in env, env


# run by MLServer's own interpreter (its pins clash with the project's): each body decoded by the
# project's runtime, by its one-array path alone, and by the stock codec path; then answered by the
# project's runtime and by the stock predict (the same decoding, then MLflow's pyfunc predict, which
# enforces the signature) on the same runtime
CHECK = r"""
import asyncio, json, sys
import numpy as np
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest
from mlserver_mlflow import MLflowRuntime as Stock
from mlops_mlserver import MLflowRuntime

def runtime(uri):
    rt = MLflowRuntime(ModelSettings(name="m", implementation=MLflowRuntime, parameters=ModelParameters(uri=uri)))
    asyncio.run(rt.load())
    return rt
def attempt(decode, body):
    try:
        return decode(InferenceRequest.model_validate(body)), None
    except Exception as err:
        return None, f"{type(err).__name__}: {err}"
def params(body):  # what the stock predict passes pyfunc
    parameters = InferenceRequest.model_validate(body).parameters
    return parameters.model_extra if parameters and parameters.model_extra else None
def answer(response):
    return None if response is None else [o.model_dump() for o in response.outputs]
given = json.load(sys.stdin)
runtimes = {key: runtime(uri) for key, uri in given["models"].items()}
out = {}
for case, (key, body) in given["cases"].items():
    rt = runtimes[key]
    fast = rt._numeric_frame(InferenceRequest.model_validate(body))
    stock, stock_error = attempt(lambda r: Stock.decode_request(rt, r), body)
    ours, ours_error = attempt(rt.decode_request, body)
    same = None
    if stock is not None and ours is not None:
        if hasattr(stock, "columns"):
            same = type(ours) is type(stock) and ours.equals(stock) and list(ours.columns) == list(stock.columns) \
                and bool((ours.dtypes == stock.dtypes).all()) and ours.index.equals(stock.index)
        else:
            same = type(ours) is type(stock) and bool(np.array_equal(ours, stock))
        predicted = [attempt(lambda r, x=x: rt._model.predict(x), body) for x in (ours, stock)]  # errors alike too
        same = same and (predicted[0][1] == predicted[1][1]) and (predicted[0][1] is not None
                                                                  or bool(np.array_equal(predicted[0][0], predicted[1][0])))
    served, served_error = attempt(lambda r: asyncio.run(rt.predict(r)), body)
    pyfunc, pyfunc_error = attempt(lambda r: asyncio.run(Stock.predict(rt, r)), body)
    out[case] = {"fast": fast is not None, "same": None if same is None else bool(same),
                 "stock_error": stock_error, "ours_error": ours_error,
                 "direct": ours is not None and rt.direct_predict(ours, params(body)) is not None,
                 "served": answer(served), "served_error": served_error,
                 "pyfunc": answer(pyfunc), "pyfunc_error": pyfunc_error}
print(json.dumps(out))
"""

COLUMNS = ("a", "b", "c")


def column(name: str, data: list, datatype: str = "FP64", shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def v2(*inputs: dict, content_type: str | None = "pd", **parameters) -> dict:
    parameters = {**({"content_type": content_type} if content_type else {}), **parameters}
    return {"inputs": list(inputs), **({"parameters": parameters} if parameters else {})}


# the models, each a LogisticRegression on columns a, b, c: `m` with double columns, `long` with
# long (int64) ones, `params` like `m` with a params schema in its signature
MODELS = ("m", "long", "params")

# case -> (model, body, takes the one-array path, takes the direct predict: any decoded frame that
# MLflow's enforcement would pass through as it is, whichever path decoded it)
CASES = {
    "one row": ("m", v2(*(column(n, [0.5 + i]) for i, n in enumerate(COLUMNS))), True, True),
    "three rows, shape [n, 1]": ("m", v2(*(column(n, [1.0, -2.5, 3e9], shape=[3, 1]) for n in COLUMNS)), True, True),
    "ints in an FP64 tensor": ("m", v2(*(column(n, [1, 2]) for n in COLUMNS)), True, True),
    "null becomes NaN": ("m", v2(column("a", [None]), column("b", [1.0]), column("c", [2.0])), True, True),
    "columns in another order": ("m", v2(*(column(n, [1.0]) for n in reversed(COLUMNS))), True, False),
    "model's content type": ("m", v2(*(column(n, [1.0]) for n in COLUMNS), content_type=None), True, True),
    "request parameters": ("m", v2(*(column(n, [1.0]) for n in COLUMNS), threshold=0.3), True, False),
    "a string where a number goes": ("m", v2(column("a", ["far"]), column("b", [1.0]), column("c", [2.0])), False, False),
    "BYTES tensor": ("m", v2(column("a", ["far"], "BYTES"), column("b", [1.0]), column("c", [2.0])), False, False),
    "mixed datatypes": ("m", v2(column("a", [1], "INT64"), column("b", [1.0]), column("c", [2.0])), False, False),
    "INT64 tensors for double columns": ("m", v2(*(column(n, [1, 2], "INT64") for n in COLUMNS)), True, False),
    "FP32 tensors for double columns": ("m", v2(*(column(n, [0.5, 2.0], "FP32") for n in COLUMNS)), True, False),
    "ragged lengths": ("m", v2(column("a", [1.0, 2.0]), column("b", [1.0]), column("c", [2.0])), False, True),
    "shape and data disagree": ("m", v2(column("a", [1.0], shape=[2]), column("b", [1.0]), column("c", [2.0])), False, False),
    "nested data": ("m", v2(*(column(n, [[1.0], [2.0]], shape=[2, 1]) for n in COLUMNS)), False, True),
    "a column missing": ("m", v2(column("a", [1.0]), column("b", [1.0])), True, False),
    "a column not in the signature": ("m", v2(*(column(n, [1.0]) for n in (*COLUMNS, "z"))), False, False),
    "a per-input content type": ("m", v2({**column("a", [1.0]), "parameters": {"content_type": "np"}},
                                         column("b", [1.0]), column("c", [2.0])), False, True),
    "numpy request content type": ("m", v2(*(column(n, [1.0]) for n in COLUMNS), content_type="np"), False, False),
    "long columns, INT64 tensors": ("long", v2(*(column(n, [3, -1], "INT64") for n in COLUMNS)), True, True),
    "long columns, FP64 tensors": ("long", v2(*(column(n, [3.0, -1.5]) for n in COLUMNS)), True, False),
    "long columns, a column missing": ("long", v2(*(column(n, [3], "INT64") for n in COLUMNS[1:])), True, False),
    "a params schema": ("params", v2(*(column(n, [0.5 + i]) for i, n in enumerate(COLUMNS))), True, False),
}


def _save(path, X: pd.DataFrame, params: dict | None = None) -> str:
    fitted = LogisticRegression().fit(X, (X["a"] + X["b"] > 0).astype(int))
    mlflow.sklearn.save_model(fitted, path, signature=infer_signature(X, fitted.predict(X), params=params))
    return str(path)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> dict:
    python = tool_script("mlserver", "python", "MLServer's interpreter, for its codecs")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=list(COLUMNS))
    tmp = tmp_path_factory.mktemp("decode")
    models = {"m": _save(tmp / "m", X), "long": _save(tmp / "long", (X * 10).round().astype("int64")),
              "params": _save(tmp / "params", X, params={"threshold": 0.5})}
    given = {"models": models, "cases": {case: [key, body] for case, (key, body, _, _) in CASES.items()}}
    run = subprocess.run([python, "-c", CHECK], input=json.dumps(given), capture_output=True, text=True, timeout=180,
                         env={"PYTHONPATH": str(MLSERVER_IMAGE), **SINGLE_THREAD})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_numeric_decoding_is_the_stock_codec_or_leaves_it_the_request(decoded, case):
    result, fast = decoded[case], CASES[case][2]
    assert result["fast"] is fast, result
    if result["stock_error"] is None:  # the same frame, the same predictions
        assert result["same"] is True, result
    else:  # what the stock codec raises reaches the caller (as a 400: tests/workloads/test_serving_runtimes.py)
        assert result["ours_error"] is not None and result["stock_error"].split(": ", 1)[1] in result["ours_error"], result


@pytest.mark.parametrize("case", CASES)
def test_direct_predict_answers_as_mlflow_enforcing_the_signature(decoded, case):
    """Where the runtime skips MLflow's schema enforcement the answer is the one MLflow's pyfunc
    predict gives; every other request goes through that predict, and its errors still reach the
    caller as the runtime's 400 (InferenceError) with MLflow's reason."""
    result = decoded[case]
    assert result["direct"] is CASES[case][3], result
    assert result["served"] == result["pyfunc"], result
    if result["pyfunc_error"] is None:
        assert result["served_error"] is None and result["served"], result
    else:
        reason = result["pyfunc_error"].split(": ", 1)[1]
        assert result["served_error"] is not None and reason in result["served_error"], result
        if result["pyfunc_error"].startswith("MlflowException"):  # the input does not match the signature
            assert result["served_error"].startswith("InferenceError"), result
