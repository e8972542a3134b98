"""NASA NEO close-approach table → numeric feature matrix.

The published table (40 columns) repeats quantities in several units and carries identifiers and
constant columns that carry no signal. Preprocessing, as in the source thesis:

- identifiers dropped: `Neo Reference ID`, `Name` (equal to the reference id), `Orbit ID`
  (a solution counter of the orbit fit, not a property of the object);
- duplicate units dropped, one unit kept per quantity (`DUPLICATE_UNITS`): diameter in km
  (not m/miles/feet), relative velocity in km/s (not km/h, mph), miss distance in km
  (not AU/lunar/miles);
- dates turned into numbers: `Close Approach Date` → Julian date (the unit of the other epochs in
  the table, `Epoch Osculation` and `Perihelion Time`); `Orbit Determination Date` → days from the
  orbit determination to the close approach; `Epoch Date Close Approach` dropped, being the same
  instant as `Close Approach Date` rounded to three significant digits of milliseconds (±58 days);
- constant columns dropped, detected from the data (on the published table: `Orbiting Body`,
  `Equinox`);
- target `Hazardous` as int (1 = potentially hazardous).

On the published table (4,687 rows) this leaves 22 numeric features, the count the source reports
(it kept `Orbit ID` and the rounded epoch instead of the two date features). Column names become
snake_case so that serving payloads need no quoting.

`python -m workloads.neo.data check --url <receiver>/trigger --model NEOs` is the retraining's
new-data check (docs/decisions/0016-retraining-trigger.md): it asks for a `newData` retraining when
the table at $NEO_DATA is not the one the champion was trained on (its digest, as training logs it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

TARGET = "Hazardous"
IDENTIFIERS = ("Neo Reference ID", "Name", "Orbit ID")
# kept column → the same quantity in other units (dropped)
DUPLICATE_UNITS: dict[str, tuple[str, ...]] = {
    "Est Dia in KM(min)": ("Est Dia in M(min)", "Est Dia in Miles(min)", "Est Dia in Feet(min)"),
    "Est Dia in KM(max)": ("Est Dia in M(max)", "Est Dia in Miles(max)", "Est Dia in Feet(max)"),
    "Relative Velocity km per sec": ("Relative Velocity km per hr", "Miles per hour"),
    "Miss Dist.(kilometers)": ("Miss Dist.(Astronomical)", "Miss Dist.(lunar)", "Miss Dist.(miles)"),
}
CLOSE_APPROACH = "Close Approach Date"
CLOSE_APPROACH_EPOCH = "Epoch Date Close Approach"
ORBIT_DETERMINATION = "Orbit Determination Date"
DATE_FORMATS = {CLOSE_APPROACH: "%d-%m-%Y", ORBIT_DETERMINATION: "%d-%m-%Y %H:%M"}
_JD_UNIX_EPOCH = 2440587.5  # Julian date of 1970-01-01T00:00 UTC
# A checkout keeps the shared data beside the repository: <root>/../shared/data/neo/nasa.csv
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = _REPO_ROOT.parent / "shared" / "data" / "neo" / "nasa.csv"
ENV_VAR = "NEO_DATA"
DATASET = "nasa"  # the name train.py logs the table under: its run's tag lineage.dataset.nasa.digest


def default_source() -> str:
    """$NEO_DATA (a path or URL: what the training Job sets), else the checkout's shared copy."""
    return os.environ.get(ENV_VAR) or str(DEFAULT_PATH)


@dataclass(frozen=True)
class Prepared:
    """Features, target, asteroid ids (one asteroid has several close approaches: rows sharing an
    id must not straddle folds when estimating performance on unseen objects), and why each raw
    column left (so a run can log what it trained on)."""

    X: pd.DataFrame
    y: pd.Series
    groups: pd.Series | None = None
    dropped: dict[str, list[str]] = field(default_factory=dict)


def load(source: str) -> pd.DataFrame:
    """Read the raw table from a path or URL; fail early, naming the columns preprocessing needs."""
    raw = pd.read_csv(source)
    required = [TARGET, CLOSE_APPROACH, ORBIT_DETERMINATION]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected the NASA NEO table")
    return raw


def snake(name: str) -> str:
    """`Miss Dist.(kilometers)` → `miss_dist_kilometers`."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _parse_dates(raw: pd.DataFrame, column: str) -> pd.Series:
    try:
        return pd.to_datetime(raw[column], format=DATE_FORMATS[column])
    except (ValueError, TypeError) as err:
        raise ValueError(f"column {column!r}: expected {DATE_FORMATS[column]!r} dates ({err})") from err


def features(raw: pd.DataFrame) -> pd.DataFrame:
    """Row-wise transforms (ids, units, dates) — no statistics, so one raw row can be served."""
    approach = _parse_dates(raw, CLOSE_APPROACH)
    determined = _parse_dates(raw, ORBIT_DETERMINATION)
    duplicates = [c for cols in DUPLICATE_UNITS.values() for c in cols]
    gone = [*IDENTIFIERS, *duplicates, CLOSE_APPROACH, CLOSE_APPROACH_EPOCH, ORBIT_DETERMINATION, TARGET]
    out = raw.drop(columns=[c for c in gone if c in raw.columns])
    unix_days = (approach - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    out["close_approach_jd"] = unix_days + _JD_UNIX_EPOCH
    out["days_determination_to_approach"] = (approach - determined) / pd.Timedelta(days=1)
    return out.rename(columns=snake)


def constant_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if frame[c].nunique(dropna=False) <= 1]


def preprocess(raw: pd.DataFrame) -> Prepared:
    """Training-time preprocessing: row transforms, then drop the columns constant in this data."""
    constants = constant_columns(raw.drop(columns=[TARGET, CLOSE_APPROACH, ORBIT_DETERMINATION]))
    X = features(raw.drop(columns=constants))
    non_numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if non_numeric:
        raise ValueError(f"non-numeric feature column(s) {non_numeric}: not in the NASA NEO schema")
    with_nan = [c for c in X.columns if X[c].isna().any()]
    if with_nan:
        raise ValueError(f"feature column(s) {with_nan} have missing values")
    y = _target(raw[TARGET])
    dropped = {
        "identifier": [c for c in IDENTIFIERS if c in raw.columns],
        "duplicate_unit": [c for cols in DUPLICATE_UNITS.values() for c in cols if c in raw.columns],
        "date_as_number": [CLOSE_APPROACH, ORBIT_DETERMINATION],
        "lower_precision_duplicate": [c for c in [CLOSE_APPROACH_EPOCH] if c in raw.columns],
        "constant": constants,
    }
    groups = raw[IDENTIFIERS[0]] if IDENTIFIERS[0] in raw.columns else None
    return Prepared(X=X.astype("float64"), y=y, groups=groups, dropped=dropped)


def _target(column: pd.Series) -> pd.Series:
    """`Hazardous` arrives as bool from pandas, or as TRUE/False text from other exports."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(int).rename("hazardous")
    text = column.astype(str).str.strip().str.lower()
    bad = text[~text.isin(["true", "false"])]
    if not bad.empty:
        raise ValueError(f"column {TARGET!r}: expected true/false, got {column[bad.index[0]]!r}")
    return (text == "true").astype(int).rename("hazardous")


def digest(source: str) -> str:
    """SHA-256 of the table at `source` as a training run logs it (workloads/common/lineage.py)."""
    from workloads.common import lineage

    return hashlib.sha256(lineage._table_bytes(load(source))).hexdigest()


def champion_digest(model: str) -> tuple[str, str | None] | None:
    """(champion version, the digest of the table its run trained on), None without a champion."""
    from mlflow import MlflowClient

    from workloads.common import promotion
    from workloads.common.tracking import CHAMPION

    client = MlflowClient()
    champion = promotion.version_of(client, model, CHAMPION)
    if champion is None:
        return None
    return champion.version, client.get_run(champion.run_id).data.tags.get(f"lineage.dataset.{DATASET}.digest")


def check(source: str, url: str, model: str) -> int:
    """POST a newData trigger to `url` when the table at `source` is not the champion's; 1 if that failed."""
    from workloads.common import hooks

    trained = champion_digest(model)
    if trained is None:
        print(f"{model} has no champion yet: its first training is the Job's, not a retraining")
        return 0
    version, old = trained
    new = digest(source)
    if new == old:
        print(f"{source}: digest {new[:12]}, the table champion v{version} was trained on: no new data")
        return 0
    reason = f"{source}: digest {new[:12]}, champion v{version} was trained on {(old or 'an unrecorded table')[:12]}"
    try:
        print(hooks.post_json(url, {"model": model, "trigger": "newData", "reason": reason}))
    except hooks.HookError as error:  # the receiver down or refusing: the CronJob's pod fails and is retried
        print(error, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.neo.data")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("check", help="ask the retraining receiver for newData when $NEO_DATA changed")
    c.add_argument("--url", required=True, help="the retraining receiver's /trigger")
    c.add_argument("--model", required=True, help="the registered model (NEOs)")
    args = parser.parse_args(argv)
    return check(default_source(), args.url, args.model)


if __name__ == "__main__":
    sys.exit(main())
