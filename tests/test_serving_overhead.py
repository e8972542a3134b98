"""Serving overhead (issue 15): MLServer runs without inference worker processes wherever the stack
serves a registry model, and the runtime's one-array numeric decoding builds exactly the DataFrame
MLServer's `pd` codec builds, or leaves the request to that codec (whose errors callers get as 400).
Figures: benchmarks/serving_overhead.py."""

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
# project's runtime, by its one-array path alone, and by the stock codec path
CHECK = r"""
import asyncio, json, sys
import numpy as np
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest
from mlserver_mlflow import MLflowRuntime as Stock
from mlops_mlserver import MLflowRuntime

rt = MLflowRuntime(ModelSettings(name="m", implementation=MLflowRuntime, parameters=ModelParameters(uri=sys.argv[1])))
asyncio.run(rt.load())
def attempt(decode, body):
    try:
        return decode(InferenceRequest.model_validate(body)), None
    except Exception as err:
        return None, f"{type(err).__name__}: {err}"
out = {}
for case, body in json.load(sys.stdin).items():
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
    out[case] = {"fast": fast is not None, "same": None if same is None else bool(same),
                 "stock_error": stock_error, "ours_error": ours_error}
print(json.dumps(out))
"""

COLUMNS = ("a", "b", "c")


def column(name: str, data: list, datatype: str = "FP64", shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def v2(*inputs: dict, content_type: str | None = "pd") -> dict:
    return {"inputs": list(inputs), **({"parameters": {"content_type": content_type}} if content_type else {})}


# case -> (body, takes the one-array path)
CASES = {
    "one row": (v2(*(column(n, [0.5 + i]) for i, n in enumerate(COLUMNS))), True),
    "three rows, shape [n, 1]": (v2(*(column(n, [1.0, -2.5, 3e9], shape=[3, 1]) for n in COLUMNS)), True),
    "ints in an FP64 tensor": (v2(*(column(n, [1, 2]) for n in COLUMNS)), True),
    "null becomes NaN": (v2(column("a", [None]), column("b", [1.0]), column("c", [2.0])), True),
    "columns in another order": (v2(*(column(n, [1.0]) for n in reversed(COLUMNS))), True),
    "model's content type": (v2(*(column(n, [1.0]) for n in COLUMNS), content_type=None), True),
    "a string where a number goes": (v2(column("a", ["far"]), column("b", [1.0]), column("c", [2.0])), False),
    "BYTES tensor": (v2(column("a", ["far"], "BYTES"), column("b", [1.0]), column("c", [2.0])), False),
    "mixed datatypes": (v2(column("a", [1], "INT64"), column("b", [1.0]), column("c", [2.0])), False),
    "ragged lengths": (v2(column("a", [1.0, 2.0]), column("b", [1.0]), column("c", [2.0])), False),
    "shape and data disagree": (v2(column("a", [1.0], shape=[2]), column("b", [1.0]), column("c", [2.0])), False),
    "nested data": (v2(*(column(n, [[1.0], [2.0]], shape=[2, 1]) for n in COLUMNS)), False),
    "a column missing": (v2(column("a", [1.0]), column("b", [1.0])), True),
    "a column not in the signature": (v2(*(column(n, [1.0]) for n in (*COLUMNS, "z"))), False),
    "a per-input content type": (v2({**column("a", [1.0]), "parameters": {"content_type": "np"}},
                                    column("b", [1.0]), column("c", [2.0])), False),
    "numpy request content type": (v2(*(column(n, [1.0]) for n in COLUMNS), content_type="np"), False),
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> dict:
    python = tool_script("mlserver", "python", "MLServer's interpreter, for its codecs")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=list(COLUMNS))
    fitted = LogisticRegression().fit(X, (X["a"] + X["b"] > 0).astype(int))
    path = tmp_path_factory.mktemp("decode") / "model"
    mlflow.sklearn.save_model(fitted, path, signature=infer_signature(X, fitted.predict(X)))
    run = subprocess.run([python, "-c", CHECK, str(path)], input=json.dumps({k: b for k, (b, _) in CASES.items()}),
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(MLSERVER_IMAGE), **SINGLE_THREAD})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_numeric_decoding_is_the_stock_codec_or_leaves_it_the_request(decoded, case):
    result, fast = decoded[case], CASES[case][1]
    assert result["fast"] is fast, result
    if result["stock_error"] is None:  # the same frame, the same predictions
        assert result["same"] is True, result
    else:  # what the stock codec raises reaches the caller (as a 400: tests/workloads/test_serving_runtimes.py)
        assert result["ours_error"] is not None and result["stock_error"].split(": ", 1)[1] in result["ours_error"], result
