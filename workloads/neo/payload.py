"""Request bodies for the served `NEOs` model, built from rows of the table (so no data is copied
into the repository and the columns always match the model's signature).

    python -m workloads.neo.payload [--data PATH_OR_URL] [--rows N] [--format v2|invocations]

- `invocations`: MLflow's scoring protocol (`mlflow models serve`, `POST /invocations`), a
  `dataframe_split` with the 22 feature columns;
- `v2`: the V2 inference protocol of MLServer's MLflow runtime (what Seldon serves from the
  registry, `POST /v2/models/<name>/infer`): one FP64 input per column and the request-level
  content type `pd`, which MLServer decodes into the DataFrame the signature describes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from workloads.neo import data


def invocations(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}


def v2(rows: pd.DataFrame) -> dict[str, Any]:
    inputs = [
        {"name": column, "shape": [len(rows)], "datatype": "FP64", "data": rows[column].astype(float).tolist()}
        for column in rows.columns
    ]
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def v2_to_frame(body: dict[str, Any]) -> pd.DataFrame:
    """The DataFrame a `v2` body stands for (what MLServer's pandas codec hands the model)."""
    return pd.DataFrame({i["name"]: pd.Series(i["data"], dtype="float64") for i in body["inputs"]})


FORMATS = {"invocations": invocations, "v2": v2}


def feature_rows(source: str, n: int) -> pd.DataFrame:
    return data.preprocess(data.load(source)).X.head(n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=data.default_source(), help="CSV path or URL")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--format", choices=sorted(FORMATS), default="v2")
    args = parser.parse_args(argv)
    print(json.dumps(FORMATS[args.format](feature_rows(args.data, args.rows))))


if __name__ == "__main__":
    main()
