"""Trace formats: which reader handles a file, named or detected from its first line."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..config import TraceSource, known_trace_formats
from ..errors import WorkloadError
from . import azure, burstgpt, mooncake, native
from .csvread import read_header
from .table import TraceTable

READERS: dict[str, ModuleType] = {
    azure.NAME: azure, native.NAME: native, mooncake.NAME: mooncake, burstgpt.NAME: burstgpt,
}
SIGNATURES = {
    "azure": "CSV with TIMESTAMP, ContextTokens, GeneratedTokens",
    "tokenmill": "CSV with timestamp_ms, prompt_tokens, output_tokens",
    "mooncake": "JSONL with timestamp, input_length, output_length, hash_ids",
    "burstgpt": "CSV with Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type",
}


def _first_line(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except OSError as err:
        raise WorkloadError(f"{path}: cannot read it ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise WorkloadError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return ""


def detect_format(path: Path) -> str:
    """The format whose header (or first JSON line) the file has."""
    first = _first_line(path)
    if first.startswith("{"):
        if mooncake.matches_line(first):
            return mooncake.NAME
    else:
        header = read_header(path)
        for name in ("azure", "tokenmill", "burstgpt"):
            if READERS[name].matches(header):
                return name
    known = "; ".join(f"{name} ({sig})" for name, sig in SIGNATURES.items())
    raise WorkloadError(f"{path}: unknown trace format (first line {first[:80]!r}); known "
                        f"formats: {known}. Name one with --trace-format (trace.format): "
                        f"{', '.join(known_trace_formats())}")


def read_trace(source: TraceSource) -> TraceTable:
    """Read the rows of `source` with its named or detected format (filters applied)."""
    path = Path(source.path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such trace file")
    fmt = source.format or detect_format(path)
    if fmt != burstgpt.NAME and (source.model is not None or source.log_type is not None):
        raise WorkloadError(f"{path}: trace.model and trace.log_type filter BurstGPT traces; "
                            f"this one is {fmt}")
    return READERS[fmt].read(path, source)
