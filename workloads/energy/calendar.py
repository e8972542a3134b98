"""Spanish national public holidays: rest days shape household and business load.

Regional and local holidays differ by municipality; callers with real data pass their own set.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

# (month, day) of the national holidays with a fixed date
_FIXED = ((1, 1), (1, 6), (5, 1), (8, 15), (10, 12), (11, 1), (12, 6), (12, 8), (12, 25))


def easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def spanish_holidays(years: Iterable[int]) -> frozenset[date]:
    """National fixed-date holidays plus Good Friday."""
    days: set[date] = set()
    for year in years:
        days.update(date(year, m, d) for m, d in _FIXED)
        days.add(easter(year) - timedelta(days=2))
    return frozenset(days)
