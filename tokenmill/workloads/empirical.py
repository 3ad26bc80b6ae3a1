"""Length pools for empirical distributions: a column of a trace or of a plain CSV file.

A known trace format (detected from the header) gives its prompt or output column, with the
format's own exclusions (e.g. BurstGPT's failed requests). Any other CSV with a header gives
the named `column`, or by default a column with a well-known name for the role (Vidur's
num_prefill_tokens / num_decode_tokens, prompt_tokens / output_tokens, ...). Zero values are
left out of the pool and counted. Prompt and output lengths are sampled independently, so a
correlation between them in the file is not kept; replay the trace to keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import LengthDistribution, TraceSource
from .errors import WorkloadError
from .traces import registry
from .traces.csvread import Column, read_columns, read_header

DEFAULT_COLUMNS = {
    "prompt": ("num_prefill_tokens", "prompt_tokens", "input_tokens", "prompt_len",
               "input_length", "ContextTokens", "Request tokens"),
    "output": ("num_decode_tokens", "output_tokens", "output_len", "output_length",
               "GeneratedTokens", "Response tokens"),
}
# the column names of each trace format, by role
TRACE_COLUMNS = {
    "azure": {"prompt": "ContextTokens", "output": "GeneratedTokens"},
    "tokenmill": {"prompt": "prompt_tokens", "output": "output_tokens"},
    "mooncake": {"prompt": "input_length", "output": "output_length"},
    "burstgpt": {"prompt": "Request tokens", "output": "Response tokens"},
}


@dataclass(frozen=True)
class Pool:
    values: np.ndarray   # int64 token counts >= 1
    source: str          # "file, column"
    zeros_left_out: int


def load_pool(dist: LengthDistribution, role: str) -> Pool:
    """The values an empirical distribution samples from."""
    assert dist.source is not None
    path = Path(dist.source)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file (empirical {role} lengths)")
    try:
        fmt = registry.detect_format(path)
    except WorkloadError:
        fmt = None
    if fmt is not None:
        names = TRACE_COLUMNS[fmt]
        if dist.column is not None and dist.column not in names.values():
            raise WorkloadError(f"{path}: column {dist.column!r} is not a length column of this "
                                f"{fmt} trace; use {' or '.join(map(repr, names.values()))}")
        which = role if dist.column is None else \
            next(r for r, c in names.items() if c == dist.column)
        table = registry.read_trace(TraceSource(path=str(path), format=fmt))
        raw = table.prompt if which == "prompt" else table.output
        label = f"{path} ({fmt}), column {names[which]!r}"
    else:
        header = read_header(path)
        name = dist.column
        if name is None:
            name = next((c for c in DEFAULT_COLUMNS[role] if c in header), None)
            if name is None:
                raise WorkloadError(f"{path}: no {role}-length column found (looked for "
                                    f"{', '.join(DEFAULT_COLUMNS[role])}; header: "
                                    f"{', '.join(header)}); name one with column")
        raw = read_columns(path, [Column(name, "count", "v")], skip_bad_rows=False,
                           what="length file").values["v"]
        label = f"{path}, column {name!r}"
    values = raw[raw > 0]
    if values.size == 0:
        raise WorkloadError(f"{label}: no lengths >= 1 to sample {role} lengths from")
    return Pool(values.astype(np.int64), label, int(raw.size - values.size))
