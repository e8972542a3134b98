"""MLServer's MLflow runtime, answering requests the model rejects with 400 instead of 500.

The stock `mlserver_mlflow.MLflowRuntime` (1.7.1) lets decoding errors and MLflow's schema
enforcement errors escape its V2 `predict`, so a request with a missing column or a string where
the signature wants a number comes back as a 500: the client is told the server broke, and the
5xx-ratio alert pages someone for a caller's mistake. Its own `/invocations` handler already maps
schema errors to a 400; this does the same for V2. Selected with MLSERVER_MODEL_IMPLEMENTATION
(the stack sets it on every registry model served from the project's MLServer image).
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode, INVALID_PARAMETER_VALUE
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime as StockMLflowRuntime

CLIENT_ERRORS = {ErrorCode.Name(INVALID_PARAMETER_VALUE)}


class MLflowRuntime(StockMLflowRuntime):
    def decode_request(self, inference_request: InferenceRequest, default_codec: Any = None) -> Any:
        try:
            return super().decode_request(inference_request, default_codec)
        except (ValueError, TypeError) as err:  # e.g. "could not convert string to float: 'far'"
            raise InferenceError(f"the request does not decode into the model's inputs: {err}") from None

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            return await super().predict(payload)
        except MlflowException as err:
            if err.error_code in CLIENT_ERRORS:  # the input does not match the model's signature
                raise InferenceError(err.message) from None
            raise
