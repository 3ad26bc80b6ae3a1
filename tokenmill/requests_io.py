"""The per-request table on disk: Parquet (with pyarrow, the optional 'parquet' extra) or CSV
(numpy only). Times are seconds from the start of the run; NaN where an event never happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .result import STATUS_NAMES


def write_requests_table(records: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise ConfigError(f"--requests-file {path}: Parquet needs pyarrow; install it with "
                              "pip install 'tokenmill[parquet]', or write .csv") from None
        try:
            pq.write_table(records.to_arrow(), path)
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err}") from err
        return
    if suffix != ".csv":
        raise ConfigError(f"--requests-file {path}: unknown suffix {suffix!r}; valid: .parquet, .csv")
    cols = records.columns()
    names = list(cols)
    status = [STATUS_NAMES[int(k)] for k in records.status]
    try:
        with path.open("w", encoding="utf-8") as fh:
            fh.write(",".join(names) + "\n")
            data = [status if n == "status" else _cells(cols[n]) for n in names]
            for row in zip(*data):
                fh.write(",".join(row) + "\n")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from err


def _cells(values: np.ndarray) -> list[str]:
    if np.issubdtype(values.dtype, np.floating):
        return ["" if np.isnan(v) else repr(float(v)) for v in values]
    return [str(int(v)) for v in values]
