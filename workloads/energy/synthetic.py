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
more users covers all of them. Same arguments and seed → identical output.
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


def _temperature(days: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    doy = days.day_of_year.to_numpy()[:, None]
    annual = 18.5 + 6.5 * np.cos(2 * np.pi * (doy - 205) / 365.25)
    daily = 4.5 * np.cos(2 * np.pi * (HOURS[None, :] - 15) / 24)
    anomaly = np.empty(len(days))
    anomaly[0] = rng.normal(0, 1.8)
    for i in range(1, len(days)):
        anomaly[i] = 0.75 * anomaly[i - 1] + rng.normal(0, 1.8 * np.sqrt(1 - 0.75**2))
    return annual + daily + anomaly[:, None] + rng.normal(0, 0.4, (len(days), 24))


def _dark(days: pd.DatetimeIndex) -> np.ndarray:
    """Hours before sunrise or after sunset, on the local clock (summer time Apr-Oct)."""
    doy = days.day_of_year.to_numpy()
    declination = np.radians(23.44) * np.sin(2 * np.pi * (doy - 81) / 365.25)
    half_day = np.degrees(np.arccos(-np.tan(np.radians(37.0)) * np.tan(declination))) / 15
    noon = np.where((days.month >= 4) & (days.month <= 10), 14.0, 13.0)
    mid_hour = HOURS[None, :] + 0.5
    return (mid_hour < (noon - half_day)[:, None]) | (mid_hour > (noon + half_day)[:, None])


def _user_load(
    kind: Archetype, days: pd.DatetimeIndex, rest: np.ndarray, temp: np.ndarray, dark: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    size = rng.lognormal(0, 0.25)
    shift = int(rng.integers(-1, 2))
    shape = np.where(rest[:, None], np.roll(kind.rest_shape, shift), np.roll(kind.work_shape, shift))
    activity_kwh = kind.daily_kwh - 24 * kind.base_kwh
    energy = activity_kwh * np.where(rest, kind.rest_energy, 1.0) * rng.lognormal(0, 0.12, len(days))
    presence = shape / shape.max(axis=1, keepdims=True)
    hvac = presence * (
        kind.heat_kwh * np.maximum(0, HEATING_BASE_C - temp) + kind.cool_kwh * np.maximum(0, temp - COOLING_BASE_C)
    )
    load = kind.base_kwh + energy[:, None] * shape * (1 + LIGHTING_EXTRA * dark) + hvac
    load = size * load * rng.lognormal(0, 0.10, load.shape)
    for day, n_events in enumerate(rng.poisson(EVENTS_PER_DAY * np.where(rest, kind.rest_energy, 1.0))):
        hours = rng.choice(24, size=n_events, p=shape[day] / shape[day].sum())
        np.add.at(load[day], hours, size * rng.uniform(0.5, 1.5, n_events))
    return load


def _knock_out(load: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = load.reshape(-1).copy()
    for _ in range(rng.poisson(MISSING_GAPS_PER_DAY * load.shape[0])):
        start = int(rng.integers(0, flat.size))
        flat[start : start + int(rng.integers(1, 25))] = np.nan
    flat[rng.random(flat.size) < MISSING_ISOLATED] = np.nan
    return flat.reshape(load.shape)


def generate(n_users: int = 20, days: int = 120, start: str = "2024-01-01", seed: int = 0) -> SyntheticData:
    """`n_users` users × `days` days of hourly readings from `start`, and the weather they saw."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D")
    holidays = spanish_holidays(range(dates[0].year, dates[-1].year + 1))
    is_holiday = np.isin(dates.date, list(holidays))
    temp = _temperature(dates, rng)
    dark = _dark(dates)
    timestamps = (dates.to_numpy()[:, None] + HOURS[None, :] * np.timedelta64(1, "h")).reshape(-1)
    frames, users = [], []
    for i in range(n_users):
        kind = ARCHETYPES[i % len(ARCHETYPES)]
        rest = ~np.isin(dates.day_of_week, kind.workdays) | is_holiday
        load = _knock_out(_user_load(kind, dates, rest, temp, dark, rng), rng)
        user_id = f"u{i:03d}"
        frames.append(pd.DataFrame({"user_id": user_id, "timestamp": timestamps, "kwh": load.reshape(-1).round(3)}))
        users.append((user_id, kind.name))
    return SyntheticData(
        consumption=pd.concat(frames, ignore_index=True),
        weather=pd.DataFrame({"timestamp": timestamps, "temperature_c": temp.reshape(-1).round(1)}),
        users=pd.DataFrame(users, columns=["user_id", "archetype"]),
    )
