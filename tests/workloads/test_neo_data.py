"""NEO preprocessing on the published table: what is dropped and why, dates as numbers, the target,
loading by path and by URL, and clear errors for a table that is not the NASA one."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

from tests.tools import IN_CI
from workloads.neo import data


def nasa_csv() -> Path:
    """The shared table; absent on a laptop without `../shared` (skip), a failure under CI=true."""
    path = Path(data.default_source())
    if not path.exists():
        message = f"{path} not found (the NEO table, see ../shared/data/neo/README.md); set $NEO_DATA"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return data.load(str(nasa_csv()))


@pytest.fixture(scope="module")
def prepared(raw):
    return data.preprocess(raw)


def test_leaves_22_numeric_features_without_ids_duplicate_units_or_constants(prepared):
    X = prepared.X
    assert X.shape == (4687, 22)
    assert all(pd.api.types.is_float_dtype(X[c]) for c in X.columns) and not X.isna().any().any()
    assert prepared.dropped["constant"] == ["Orbiting Body", "Equinox"]
    assert set(prepared.dropped["identifier"]) == {"Neo Reference ID", "Name", "Orbit ID"}
    assert not {"est_dia_in_m_min", "miles_per_hour", "miss_dist_astronomical", "neo_reference_id"} & set(X.columns)
    assert {"est_dia_in_km_min", "relative_velocity_km_per_sec", "miss_dist_kilometers"} <= set(X.columns)


def test_dates_become_julian_date_and_days_since_orbit_determination(raw, prepared):
    X = prepared.X
    # 01-01-1995 is JD 2449718.5; the orbit of the first row was determined on 06-04-2017 08:36
    assert raw.loc[0, "Close Approach Date"] == "01-01-1995"
    assert X.loc[0, "close_approach_jd"] == pytest.approx(2449718.5)
    expected = (pd.Timestamp("1995-01-01") - pd.Timestamp("2017-04-06 08:36")) / pd.Timedelta(days=1)
    assert X.loc[0, "days_determination_to_approach"] == pytest.approx(expected)


def test_target_counts_match_the_published_table(prepared):
    assert prepared.y.value_counts().to_dict() == {0: 3932, 1: 755}
    assert prepared.groups.nunique() < len(prepared.groups)  # asteroids recur: several approaches each


def test_one_raw_row_gets_the_same_features_as_in_training(raw, prepared):
    row = data.features(raw.drop(columns=prepared.dropped["constant"]).iloc[[7]])
    pd.testing.assert_frame_equal(row.astype("float64"), prepared.X.iloc[[7]])


def test_loads_from_a_url(tmp_path):
    path = nasa_csv()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        frame = data.load(f"http://127.0.0.1:{server.server_port}/{path.name}")
    finally:
        server.shutdown()
    assert frame.shape == (4687, 40)


def test_default_source_is_overridable_by_env(monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, "https://example.org/nasa.csv")
    assert data.default_source() == "https://example.org/nasa.csv"
    monkeypatch.delenv(data.ENV_VAR)
    assert data.default_source().endswith("shared/data/neo/nasa.csv")


def test_rejects_a_table_that_is_not_the_nasa_one(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Hazardous'"):
        data.load(str(other))


def test_rejects_bad_dates_and_labels(raw):
    bad_date = raw.head(20).copy()
    bad_date.loc[3, "Close Approach Date"] = "1995/01/01"
    with pytest.raises(ValueError, match="Close Approach Date"):
        data.preprocess(bad_date)
    bad_label = raw.head(20).astype({"Hazardous": object}).copy()
    bad_label.loc[2, "Hazardous"] = "maybe"
    with pytest.raises(ValueError, match="expected true/false, got 'maybe'"):
        data.preprocess(bad_label)
