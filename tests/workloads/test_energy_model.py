"""Energy model: MAPE's zero handling, no look-ahead in features, and the forecaster beating
seasonal-naive (same hour last week) on the generator's held-out week by the issue's margin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workloads.energy import model, synthetic


def test_mape_skips_standby_and_missing_actuals():
    actual = [1.0, 2.0, 0.0, 0.01, np.nan]
    predicted = [1.1, 1.5, 0.3, 0.5, 9.0]
    # only the first two hours count: (10% + 25%) / 2
    assert model.mape(actual, predicted) == pytest.approx(17.5)
    assert model.mape([0.04, 0.2], [1.0, 0.1]) == pytest.approx(50.0)  # 0.04 < 50 Wh floor


def test_mape_refuses_to_score_nothing_or_missing_predictions():
    with pytest.raises(ValueError, match="no actual reading >= 0.05 kWh"):
        model.mape([0.0, 0.01], [0.1, 0.1])
    with pytest.raises(ValueError, match="1 prediction"):
        model.mape([1.0, 2.0], [1.0, np.nan])


@pytest.fixture(scope="module")
def held_out():
    generated = synthetic.generate(n_users=12, days=70, start="2024-02-01", seed=1)
    forecaster, evaluation = model.evaluate(generated.consumption, generated.weather, test_days=7, n_estimators=60)
    return generated, forecaster, evaluation


def test_model_beats_seasonal_naive_by_at_least_15_percent(held_out):
    _, _, evaluation = held_out
    assert evaluation.hours > 12 * 7 * 24 * 0.8  # nearly every held-out hour is scored
    assert evaluation.model_mape < 0.85 * evaluation.naive_mape, evaluation
    assert evaluation.model_mape < 25


def test_forecast_gives_24_hours_per_user_from_past_readings_only(held_out):
    generated, forecaster, _ = held_out
    day = pd.Timestamp("2024-04-05")
    consumption = generated.consumption
    forecast = forecaster.forecast(consumption, generated.weather, day)
    assert len(forecast) == 12 * 24 and set(forecast.groupby("user_id").size()) == {24}
    assert forecast["timestamp"].dt.normalize().eq(day).all()
    assert forecast["kwh"].notna().all() and (forecast["kwh"] > 0).all()
    # readings of the forecast day itself (or later) cannot change it
    tampered = consumption.assign(kwh=consumption["kwh"].where(consumption["timestamp"] < day, 1000.0))
    again = forecaster.forecast(tampered, generated.weather, day)
    np.testing.assert_allclose(again["kwh"], forecast["kwh"])


def test_a_user_without_last_week_gets_no_forecast(held_out):
    generated, forecaster, _ = held_out
    day = pd.Timestamp("2024-04-05")
    consumption = generated.consumption
    silent = (consumption["user_id"] == "u000") & (consumption["timestamp"] >= day - pd.Timedelta(days=7))
    forecast = forecaster.forecast(consumption[~silent], generated.weather, day)
    assert forecast.loc[forecast["user_id"] == "u000", "kwh"].isna().all()
    assert forecast.loc[forecast["user_id"] != "u000", "kwh"].notna().all()
