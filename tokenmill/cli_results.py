"""`tokenmill run` flags for what a run reports and where it goes: SLOs (goodput), the
steady-state window, the time-series resolution, power and price overrides, and the outputs
(--output text|json|csv|vllm-bench, --output-file, --requests-file, --html).

Kept apart from cli.py, which only registers these flags and calls `emit` after a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .report import RENDERERS

# flag dest -> path of the Scenario field it sets
RESULTS_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "slo_ttft_ms": ("metrics", "slo_ttft_ms"),
    "slo_tpot_ms": ("metrics", "slo_tpot_ms"),
    "slo_e2e_ms": ("metrics", "slo_e2e_ms"),
    "warmup": ("metrics", "warmup_s"),
    "cooldown": ("metrics", "cooldown_s"),
    "timeseries_resolution": ("metrics", "timeseries_resolution_s"),
    "price_per_hour": ("pricing", "price_per_hour_usd"),
    "prefill_price_per_hour": ("pricing", "prefill_price_per_hour_usd"),
    "decode_price_per_hour": ("pricing", "decode_price_per_hour_usd"),
    "pue": ("power", "pue"),
}


def add_metric_arguments(parser: argparse.ArgumentParser, real: Callable[[str], Any]) -> None:
    """SLO, window, resolution, power and price flags (run, sweep and study share them)."""
    g = parser.add_argument_group("metrics, energy and cost")
    g.add_argument("--slo-ttft-ms", type=real, help="TTFT objective for goodput, ms")
    g.add_argument("--slo-tpot-ms", type=real, help="TPOT objective for goodput, ms")
    g.add_argument("--slo-e2e-ms", type=real, help="end-to-end latency objective for goodput, ms")
    g.add_argument("--warmup", type=real, help="leave requests arriving in the first S seconds "
                   "out of the steady-state figures")
    g.add_argument("--cooldown", type=real, help="leave requests arriving in the last S seconds "
                   "of the arrivals out of the steady-state figures")
    g.add_argument("--timeseries-resolution", type=real, metavar="S",
                   help="time-series bucket in seconds (default: automatic, ~500 buckets over "
                   "the arrivals; 0 turns the series off)")
    g.add_argument("--price-per-hour", type=real, help="USD per chip-hour for every pool "
                   "(default: the chip preset's)")
    g.add_argument("--prefill-price-per-hour", type=real, help="USD per prefill-pool chip-hour")
    g.add_argument("--decode-price-per-hour", type=real, help="USD per decode-pool chip-hour")
    g.add_argument("--pue", type=real, help="facility power usage effectiveness (default 1.0)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument("--output", choices=sorted(RENDERERS), default="text",
                   help="format: text (default), json, csv or vllm-bench (the keys of "
                   "vLLM's bench serve result JSON)")
    g.add_argument("--output-file", type=Path, metavar="PATH",
                   help="write the output there instead of standard output")
    g.add_argument("--requests-file", type=Path, metavar="PATH",
                   help="write the per-request table: .parquet (needs pyarrow: "
                   "pip install 'tokenmill[parquet]') or .csv")
    g.add_argument("--timeseries", action="store_true",
                   help="json output: include the per-replica time series")
    g.add_argument("--html", type=Path, metavar="PATH", help="write a self-contained HTML report "
                   "(needs matplotlib: pip install 'tokenmill[report]')")


def write_text(text: str, path: Path | None) -> None:
    """To the file if given (its folder must exist), else to standard output."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from err


def emit(result: Any, args: argparse.Namespace) -> None:
    """Everything `tokenmill run` was asked to write."""
    if args.output == "json" and getattr(args, "timeseries", False):
        text = result.to_json(include_timeseries=True) + "\n"
    else:
        text = RENDERERS[args.output](result)
    if args.requests_file is not None:
        write_requests(result, args.requests_file)
    if args.html is not None:
        from .html_report import run_report

        write_text(run_report(result), args.html)
    write_text(text, args.output_file)


def write_requests(result: Any, path: Path) -> None:
    from .requests_io import write_requests_table

    write_requests_table(result.requests, path)
