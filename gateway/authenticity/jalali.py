"""Gregorian → Jalali (Solar Hijri) dates, and the Persian way of writing one.

The arithmetic is the one of the `jalaali-js` library (Borkowski's leap-year breaks,
valid for Jalali years -61..3177): Farvardin 1st is found from the count of leap years
of both calendars; months 1-6 have 31 days, 7-11 have 30, Esfand 29 or 30. Days are
Tehran's (UTC+03:30; Iran has kept no daylight saving time since 2022).
"""

from datetime import date, datetime, timedelta, timezone

TEHRAN = timezone(timedelta(hours=3, minutes=30))
MONTHS = ("فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور", "مهر", "آبان", "آذر",
          "دی", "بهمن", "اسفند")
_BREAKS = (-61, 9, 38, 199, 426, 686, 756, 818, 1111, 1181, 1210, 1635, 2060, 2097, 2192,
           2262, 2324, 2394, 2456, 3178)
_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def _div(a, b):
    return int(a / b)          # the algorithm's truncating division


def _mod(a, b):
    return a - _div(a, b) * b


def farvardin_first(jalali_year):
    """The Gregorian date of 1 Farvardin of `jalali_year`."""
    if not _BREAKS[0] <= jalali_year < _BREAKS[-1]:
        raise ValueError(f"Jalali year {jalali_year} is outside {_BREAKS[0]}..{_BREAKS[-1] - 1}")
    gregorian_year = jalali_year + 621
    leap_j, jp, jump = -14, _BREAKS[0], 0
    for jm in _BREAKS[1:]:
        jump = jm - jp
        if jalali_year < jm:
            break
        leap_j += _div(jump, 33) * 8 + _div(_mod(jump, 33), 4)
        jp = jm
    n = jalali_year - jp
    leap_j += _div(n, 33) * 8 + _div(_mod(n, 33) + 3, 4)
    if _mod(jump, 33) == 4 and jump - n == 4:
        leap_j += 1
    leap_g = _div(gregorian_year, 4) - _div((_div(gregorian_year, 100) + 1) * 3, 4) - 150
    return date(gregorian_year, 3, 1) + timedelta(days=19 + leap_j - leap_g)


def to_jalali(day):
    """(year, month, day) in the Jalali calendar of the Gregorian `day` (a date)."""
    year = day.year - 621
    start = farvardin_first(year)
    if day < start:
        year -= 1
        start = farvardin_first(year)
    k = (day - start).days
    if k <= 185:
        return year, 1 + k // 31, k % 31 + 1
    k -= 186
    return year, 7 + k // 30, k % 30 + 1


def persian_date(timestamp):
    """The Tehran day of a Unix time as Persians write it: "۱۱ آذر ۱۴۰۵"."""
    year, month, day = to_jalali(datetime.fromtimestamp(timestamp, TEHRAN).date())
    return f"{day} {MONTHS[month - 1]} {year}".translate(_PERSIAN_DIGITS)


def persian_digits(number):
    return str(number).translate(_PERSIAN_DIGITS)
