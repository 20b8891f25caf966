"""Two real functions that near-duplicate each other in one file: both stay (tests/test_data_neardup.py).

From CPython 3.11: datetime.py and zoneinfo/_zoneinfo.py.
"""


def _days_before_year(year):
    "year -> number of days before January 1st of year."
    y = year - 1
    return y*365 + y//4 - y//100 + y//400


def _post_epoch_days_before_year(year):
    """Get the number of days between 1970-01-01 and YEAR-01-01"""
    y = year - 1
    return y * 365 + y // 4 - y // 100 + y // 400 - EPOCHORDINAL
