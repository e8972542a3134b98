"""The entrypoint of the project's Seldon-protocol images: Seldon Core's Python wrapper
(`seldon-core-microservice` 1.17.1, the same arguments), minus a round trip per request that
changes nothing.

The wrapper hands every answer's custom metrics to `SeldonMetrics.update`, which reads the worker's
entry of a `multiprocessing.Manager` dict and writes it back, each under the Manager's lock: six
calls to another process per request, also when there are no metrics, as with the mnist class
(it returns none). Skipping them took the server's CPU per one-image request from 3.3 to 2.9 ms
(benchmarks/results/serving_overhead_mnist_stock_wrapper.json, then
serving_overhead_mnist_launcher.json).
An update without metrics leaves the shared data as it was (`collect` yields the same series), so
it is skipped; updates with metrics run as before. 1.17.1 is the last Apache-2.0 release and
frozen, so the method this wraps will not move.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def skip_empty_updates(update: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(update)
    def update_with_metrics(self: Any, custom_metrics: list[dict], method: str) -> None:
        if custom_metrics:
            update(self, custom_metrics, method)

    return update_with_metrics


def main() -> None:
    from seldon_core import metrics, microservice

    metrics.SeldonMetrics.update = skip_empty_updates(metrics.SeldonMetrics.update)
    microservice.main()  # reads sys.argv, as the console script does


if __name__ == "__main__":
    main()
