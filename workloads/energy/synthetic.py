"""A realistic, seeded generator of hourly per-user electricity consumption and weather.

Demos and CI need data with the structure real smart-meter data has, without shipping personal
data. The model of the data (all times are local wall-clock hours, Málaga-like climate):

Weather. Hourly temperature = annual cycle (mean 18.5 °C, ±6.5 °C, warmest late July)
+ daily cycle (±4.5 °C, warmest at 15:00) + a day-to-day anomaly following an AR(1) process
(φ = 0.75, σ = 1.8 °C: warm and cold spells last a few days) + hourly noise (σ = 0.4 °C).

Calendar. Each archetype has working days (Mon–Fri, or Mon–Sat for the business); weekends and
Spanish national holidays (`calendar.spanish_holidays`) are rest days.

Consumption of user u on day d, hour h (kWh):

    kwh = s_u · [ base + E_d · shape(h) · (1 + 0.3 · dark(h))
                  + presence(h) · (k_heat · max(0, 16 − T) + k_cool · max(0, T − 25)) ] · ε_{d,h}
          + appliance events

- `s_u` household size / floor area, log-normal (σ = 0.25); each user's profile is also shifted by
  −1, 0 or +1 hour (people keep different clocks);
- `base`: always-on load (fridge, standby);
- `shape(h)`: the archetype's activity profile on working or rest days (sum of circular Gaussian
  bumps, normalised to sum 1); `E_d`: the day's activity energy, log-normal day-to-day (σ = 0.12),
  scaled on rest days by the archetype's `rest_energy` (≈0 for a closed business);
- lighting: activity uses 30% more energy in the dark (sunrise/sunset from day length at
  latitude 37° N, solar noon at 13:00 in winter time and 14:00 in summer time);
- heating/cooling degree-hours below 16 °C / above 25 °C, only while occupants are active
  (`presence` = shape scaled to peak 1);
- `ε` hourly multiplicative noise, log-normal (σ = 0.10);
- appliance events (washing machine, oven…): Poisson, one per working day on average (rest days
  scaled like activity), at an hour drawn from the activity profile, 0.5–1.5 kWh each, times `s_u`.

Readings are rounded to 1 Wh (meter resolution). Missing readings are NaN: outages of 1–24 h
(on average one every 20 days per user) plus isolated lost readings (0.3%).

Users cycle through the archetypes in order (user i has archetype i mod 4), so any set of four or
more users covers all of them.

Determinism per day: every random draw comes from a stream keyed by (seed, what, user, date), so a
day's weather and readings depend only on the seed, the user's index and the date, never on the
window generated. The demo's daily ingest (the last three days) therefore writes exactly the values
the training Job's 120-day seed wrote for the same days. The weather anomaly is the AR(1) written
as its moving average over the last `ANOMALY_MEMORY` days' innovations (φ^40 ≈ 1e-5: the rest is
below the 0.1 °C rounding), and an outage starting late on a day continues into the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from workloads.energy.calendar import spanish_holidays

HOURS = np.arange(24)
HEATING_BASE_C = 16.0
COOLING_BASE_C = 25.0
LIGHTING_EXTRA = 0.3
EVENTS_PER_DAY = 1.0  # on a working day; scaled like activity on rest days
MISSING_GAPS_PER_DAY = 1 / 20
MISSING_ISOLATED = 0.003
ANOMALY_PHI, ANOMALY_SIGMA_C, ANOMALY_MEMORY = 0.75, 1.8, 40
# stream kinds: a draw of one kind never shares a generator with another (see `_stream`)
WEATHER_STREAM, USER_STREAM, DAY_STREAM, OUTAGE_STREAM = range(4)


def _shape(bumps: tuple[tuple[float, float, float], ...], floor: float) -> np.ndarray:
    """24 activity weights: `floor` plus Gaussian bumps (centre hour, width h, height) on a circle."""
    weights = np.full(24, floor)
    for centre, width, height in bumps:
        distance = np.abs(HOURS - centre)
        distance = np.minimum(distance, 24 - distance)
        weights += height * np.exp(-0.5 * (distance / width) ** 2)
    return weights / weights.sum()


@dataclass(frozen=True)
class Archetype:
    name: str
    daily_kwh: float  # mean consumption of a working day at mild temperature (s_u = 1)
    base_kwh: float  # always-on load per hour
    workdays: tuple[int, ...]  # weekday numbers (Mon = 0) that are working days
    work_shape: np.ndarray
    rest_shape: np.ndarray
    rest_energy: float  # activity energy of a rest day relative to a working day
    heat_kwh: float  # per degree-hour below HEATING_BASE_C while active
    cool_kwh: float  # per degree-hour above COOLING_BASE_C while active


ARCHETYPES: tuple[Archetype, ...] = (
    # away 9-18 on working days: morning and evening peaks, the evening one largest
    Archetype(
        "working_household", 9.0, 0.12, (0, 1, 2, 3, 4),
        _shape(((7.5, 0.8, 0.8), (14.5, 1.0, 0.3), (21.0, 1.6, 1.6)), 0.05),
        _shape(((10.5, 1.5, 0.9), (14.5, 1.2, 1.1), (21.5, 1.8, 1.4)), 0.10),
        1.2, 0.05, 0.08,
    ),
    # home all day, every day alike: a lunch peak as large as the evening one
    Archetype(
        "retired", 7.5, 0.10, (0, 1, 2, 3, 4, 5, 6),
        _shape(((9.5, 1.5, 0.8), (13.5, 1.3, 1.3), (20.5, 2.0, 1.1)), 0.25),
        _shape(((9.5, 1.5, 0.8), (13.5, 1.3, 1.3), (20.5, 2.0, 1.1)), 0.25),
        1.0, 0.07, 0.09,
    ),
    # works 14-22: late dinner around midnight, up mid-morning, out in the afternoon
    Archetype(
        "night_shift", 8.0, 0.12, (0, 1, 2, 3, 4),
        _shape(((10.0, 1.5, 1.0), (23.5, 1.2, 1.3), (1.5, 1.0, 0.6)), 0.05),
        _shape(((11.0, 1.5, 1.0), (14.5, 1.2, 1.0), (22.5, 1.8, 1.2)), 0.10),
        1.0, 0.05, 0.08,
    ),
    # shop open 9:30-14 and 17-20:30 Mon-Sat, closed Sundays and holidays; fridges always on
    Archetype(
        "small_business", 28.0, 0.35, (0, 1, 2, 3, 4, 5),
        _shape(((10.5, 1.2, 1.0), (12.5, 1.2, 1.0), (18.0, 1.0, 1.0), (19.5, 1.0, 1.0)), 0.02),
        _shape(((12.0, 6.0, 1.0),), 1.0),
        0.03, 0.15, 0.25,
    ),
)


@dataclass(frozen=True)
class SyntheticData:
    consumption: pd.DataFrame  # user_id, timestamp, kwh (NaN = missing reading)
    weather: pd.DataFrame  # timestamp, temperature_c
    users: pd.DataFrame  # user_id, archetype


def _stream(seed: int, kind: int, user: int, day: pd.Timestamp | None = None) -> np.random.Generator:
    """The generator of one (kind, user, day): fixed-length keys, so no two streams collide."""
    return np.random.default_rng([seed, kind, user, 0 if day is None else day.toordinal()])


def _temperature(days: pd.DatetimeIndex, seed: int) -> np.ndarray:
    doy = days.day_of_year.to_numpy()[:, None]
    annual = 18.5 + 6.5 * np.cos(2 * np.pi * (doy - 205) / 365.25)
    daily = 4.5 * np.cos(2 * np.pi * (HOURS[None, :] - 15) / 24)
    # each day's stream draws its AR(1) innovation first, then (for the days shown) its hourly noise
    memory = pd.date_range(days[0] - pd.Timedelta(days=ANOMALY_MEMORY - 1), days[-1], freq="D")
    streams = [_stream(seed, WEATHER_STREAM, 0, day) for day in memory]
    innovations = np.array([rng.normal(0, ANOMALY_SIGMA_C * np.sqrt(1 - ANOMALY_PHI**2)) for rng in streams])
    # anomaly[d] = sum_k phi^k innovation[d - k] (np.convolve reverses the kernel: phi^0 meets day d's own)
    anomaly = np.convolve(innovations, ANOMALY_PHI ** np.arange(ANOMALY_MEMORY), mode="valid")
    noise = np.array([rng.normal(0, 0.4, 24) for rng in streams[ANOMALY_MEMORY - 1:]])
    return annual + daily + anomaly[:, None] + noise


def _dark(days: pd.DatetimeIndex) -> np.ndarray:
    """Hours before sunrise or after sunset, on the local clock (summer time Apr-Oct)."""
    doy = days.day_of_year.to_numpy()
    declination = np.radians(23.44) * np.sin(2 * np.pi * (doy - 81) / 365.25)
    half_day = np.degrees(np.arccos(-np.tan(np.radians(37.0)) * np.tan(declination))) / 15
    noon = np.where((days.month >= 4) & (days.month <= 10), 14.0, 13.0)
    mid_hour = HOURS[None, :] + 0.5
    return (mid_hour < (noon - half_day)[:, None]) | (mid_hour > (noon + half_day)[:, None])


def _user_load(
    kind: Archetype, user: int, days: pd.DatetimeIndex, rest: np.ndarray, temp: np.ndarray, dark: np.ndarray,
    seed: int,
) -> np.ndarray:
    profile = _stream(seed, USER_STREAM, user)
    size = profile.lognormal(0, 0.25)
    shift = int(profile.integers(-1, 2))
    shape = np.where(rest[:, None], np.roll(kind.rest_shape, shift), np.roll(kind.work_shape, shift))
    presence = shape / shape.max(axis=1, keepdims=True)
    hvac = presence * (
        kind.heat_kwh * np.maximum(0, HEATING_BASE_C - temp) + kind.cool_kwh * np.maximum(0, temp - COOLING_BASE_C)
    )
    activity = (kind.daily_kwh - 24 * kind.base_kwh) * np.where(rest, kind.rest_energy, 1.0)
    load = np.empty((len(days), 24))
    for d, day in enumerate(days):
        rng = _stream(seed, DAY_STREAM, user, day)
        energy = activity[d] * rng.lognormal(0, 0.12)
        load[d] = size * (kind.base_kwh + energy * shape[d] * (1 + LIGHTING_EXTRA * dark[d]) + hvac[d])
        load[d] *= rng.lognormal(0, 0.10, 24)
        n_events = rng.poisson(EVENTS_PER_DAY * (kind.rest_energy if rest[d] else 1.0))
        hours = rng.choice(24, size=n_events, p=shape[d] / shape[d].sum())
        np.add.at(load[d], hours, size * rng.uniform(0.5, 1.5, n_events))
    return load


def _knock_out(load: np.ndarray, user: int, days: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """NaN for outages (starting on a day, up to 24 h: the day before's may reach into the first
    day) and isolated lost readings, each day's from its own stream."""
    lost = np.zeros((len(days) + 2) * 24, dtype=bool)  # the day before, the days, the day after
    for d, day in enumerate([days[0] - pd.Timedelta(days=1), *days]):
        rng = _stream(seed, OUTAGE_STREAM, user, day)
        for _ in range(rng.poisson(MISSING_GAPS_PER_DAY)):
            start = d * 24 + int(rng.integers(0, 24))
            lost[start : start + int(rng.integers(1, 25))] = True
        lost[d * 24 : (d + 1) * 24] |= rng.random(24) < MISSING_ISOLATED
    return np.where(lost[24 : 24 * (len(days) + 1)].reshape(load.shape), np.nan, load)


def generate(n_users: int = 20, days: int = 120, start: str = "2024-01-01", seed: int = 0) -> SyntheticData:
    """`n_users` users × `days` days of hourly readings from `start`, and the weather they saw."""
    dates = pd.date_range(start, periods=days, freq="D")
    holidays = spanish_holidays(range(dates[0].year, dates[-1].year + 1))
    is_holiday = np.isin(dates.date, list(holidays))
    temp = _temperature(dates, seed)
    dark = _dark(dates)
    timestamps = (dates.to_numpy()[:, None] + HOURS[None, :] * np.timedelta64(1, "h")).reshape(-1)
    frames, users = [], []
    for i in range(n_users):
        kind = ARCHETYPES[i % len(ARCHETYPES)]
        rest = ~np.isin(dates.day_of_week, kind.workdays) | is_holiday
        load = _knock_out(_user_load(kind, i, dates, rest, temp, dark, seed), i, dates, seed)
        user_id = f"u{i:03d}"
        frames.append(pd.DataFrame({"user_id": user_id, "timestamp": timestamps, "kwh": load.reshape(-1).round(3)}))
        users.append((user_id, kind.name))
    return SyntheticData(
        consumption=pd.concat(frames, ignore_index=True),
        weather=pd.DataFrame({"timestamp": timestamps, "temperature_c": temp.reshape(-1).round(1)}),
        users=pd.DataFrame(users, columns=["user_id", "archetype"]),
    )
