"""Absolute timestamps ("2023-11-16 18:17:03.9799600", optionally "T", "Z" or "+01:00") to ns.

Two parsers with the same answers: a vectorised one for whole columns (numpy's datetime64
after stripping any UTC offset) and a per-value one that says what is wrong with a value, used
to point at the bad line when the vectorised one refuses a column.
"""

from __future__ import annotations

import calendar
import re
import warnings
from typing import Optional

import numpy as np

_PATTERN = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:\d{2})?$")


def parse_datetime_ns(text: str) -> int:
    """Nanoseconds since 1970-01-01 UTC; ValueError says what is wrong."""
    m = _PATTERN.match(text.strip())
    if m is None:
        raise ValueError("not a date and time like 2023-11-16 18:17:03.9799600")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 60):
        raise ValueError("not a valid date and time")
    frac = m.group(7) or ""
    ns = calendar.timegm((year, month, day, hour, minute, second)) * 1_000_000_000
    ns += int(frac.ljust(9, "0")) if frac else 0
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        ns -= sign * (int(tz[1:3]) * 60 + int(tz[4:6])) * 60 * 1_000_000_000
    return ns


def parse_datetimes_ns(values: np.ndarray) -> Optional[np.ndarray]:
    """int64 ns of a column of strings, or None if any value is not a plain timestamp."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    text = np.ascontiguousarray(values)
    if text.dtype.kind != "U":
        text = text.astype(str)
    width = text.dtype.itemsize // 4
    codes = text.view(np.uint32).reshape(n, width).copy()
    lens = np.count_nonzero(codes, axis=1)
    if lens.min() < 19:  # shorter than YYYY-MM-DD HH:MM:SS
        return None
    rows = np.arange(n)
    offset_min = np.zeros(n, dtype=np.int64)
    zulu = codes[rows, lens - 1] == ord("Z")
    sign_ch = codes[rows, lens - 6]
    has_offset = ((sign_ch == ord("+")) | (sign_ch == ord("-"))) & (codes[rows, lens - 3] == ord(":"))
    if zulu.any():
        codes[rows[zulu], lens[zulu] - 1] = 0
    if has_offset.any():
        r = rows[has_offset]
        tail = lens[has_offset, None] - 6 + np.arange(6)
        digits = codes[r[:, None], tail].astype(np.int64) - ord("0")
        if ((digits[:, [1, 2, 4, 5]] < 0) | (digits[:, [1, 2, 4, 5]] > 9)).any():
            return None
        sign = np.where(sign_ch[has_offset] == ord("+"), 1, -1)
        offset_min[has_offset] = sign * ((digits[:, 1] * 10 + digits[:, 2]) * 60
                                         + digits[:, 4] * 10 + digits[:, 5])
        codes[r[:, None], tail] = 0
    plain = codes.view(f"<U{width}").reshape(n)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stamps = plain.astype("datetime64[ns]")
    except (ValueError, Warning):
        return None
    if np.isnat(stamps).any():
        return None
    return stamps.astype(np.int64) - offset_min * 60_000_000_000
