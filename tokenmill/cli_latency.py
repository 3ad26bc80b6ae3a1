"""`tokenmill calibrate` and `tokenmill validate`, and the latency flags `tokenmill run` gains.

Kept apart from cli.py so the latency model's commands can grow without touching the run
command: cli.py only registers them. Bad input exits with status 2 and a message naming the
field, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from .calibrate import calibrate, describe, transferred
from .calibration import load_calibration, shipped_calibrations
from .errors import ConfigError
from .measurements import Measurement, load_measurements
from .validate import render, to_json, validate

# run-flag dest -> Scenario field path, merged into cli.FLAG_FIELDS.
LATENCY_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "calibration": ("calibration",),
    "kernel_table": ("kernel_table",),
}
ENGINES = ("vllm", "trtllm", "sglang", "splitwise")


def add_run_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--calibration", help="shipped calibration (e.g. h100-vllm; "
                       "`tokenmill calibrate --list`) or a calibration file from `tokenmill calibrate`")
    group.add_argument("--kernel-table", help="CSV of measured times (gpu, model, op, batch_size, "
                       "seq_len, latency_ms) that override the cost model where they apply")


def add_commands(sub: Any, real: Callable[[str], Any]) -> None:
    cal = sub.add_parser("calibrate", help="fit the cost model's efficiencies and overheads to measurements",
                         description="Fit the efficiencies and overheads of one chip with one "
                         "engine to measurements, print the fit's residuals and write a "
                         "calibration file (see docs/validation.md).")
    cal.add_argument("--measurements", nargs="+", type=Path, default=[], metavar="FILE.csv",
                     help="measurement files: serving/static-batch measurements, Splitwise "
                     "profiles, kernel tables, all-reduce profiles")
    cal.add_argument("--chip", help="chip preset to calibrate (e.g. h100)")
    cal.add_argument("--engine", choices=ENGINES, help="engine whose rows to fit")
    cal.add_argument("--models", help="regular expression: fit only these models' step and batch "
                     "rows (the others stay held out)")
    cal.add_argument("--operator-chip", help="take operator and all-reduce profiles from this chip "
                     "of the same silicon (e.g. a100 for a100-40gb)")
    cal.add_argument("--base", help="calibration to start from (name or file; default: the defaults)")
    cal.add_argument("--name", help="name of the calibration (default CHIP-ENGINE)")
    cal.add_argument("--engine-label", help="engine and version the data describe, for the file")
    cal.add_argument("--note", help="caveats recorded in the file")
    cal.add_argument("--transfer-from", metavar="NAME", help="write the parameters of this "
                     "calibration for --chip instead of fitting (same silicon, other memory)")
    cal.add_argument("--out", type=Path, help="where to write the calibration (default: print it)")
    cal.add_argument("--list", action="store_true", help="list the shipped calibrations and exit")
    val = sub.add_parser("validate", help="predict measured runs and report the error per chip, model and metric",
                         description="Replay every measurement tokenmill can simulate, with the "
                         "calibration of its chip and engine, and report MAPE per chip, model and "
                         "metric (held-out rows apart from fitted ones), the worst rows, and the "
                         "rows skipped with their reasons.")
    val.add_argument("--measurements", nargs="+", type=Path, required=True, metavar="FILE.csv")
    val.add_argument("--calibration", help="use this calibration for every row (default: the "
                     "shipped one of each row's chip and engine)")
    val.add_argument("--chips", help="comma-separated chip presets to keep (default: all)")
    val.add_argument("--sources", help="comma-separated source ids to keep (default: all)")
    val.add_argument("--models", help="regular expression on the model preset to keep (default: all)")
    val.add_argument("--worst", type=int, default=10, help="worst held-out values to list (default 10)")
    val.add_argument("--output", choices=["text", "markdown", "json"], default="text")


def _load(paths: list[Path]) -> list[Measurement]:
    rows: list[Measurement] = []
    for p in paths:
        rows += load_measurements(p)
    return rows


def run_command(args: argparse.Namespace) -> Optional[int]:
    """Run calibrate or validate if that is the command; None otherwise."""
    if args.command not in ("calibrate", "validate"):
        return None
    try:
        if args.command == "calibrate":
            return _calibrate(args)
        return _validate(args)
    except ConfigError as err:
        print(f"tokenmill: error: {err}", file=sys.stderr)
        return 2


def _calibrate(args: argparse.Namespace) -> int:
    if args.list:
        for name, cal in shipped_calibrations().items():
            origin = cal.notes.split(";")[0] if cal.notes and cal.notes.startswith("transferred") else \
                f"fitted on {', '.join(cal.fitted_sources) or 'no data'}"
            print(f"{name:22s} {cal.chip:12s} {cal.engine:40.40s} {origin}")
        return 0
    if not args.chip:
        raise ConfigError("calibrate needs --chip (the chip preset to calibrate)")
    if args.transfer_from:
        cal = transferred(load_calibration(args.transfer_from), args.chip,
                          name=args.name or args.chip + "-" + args.transfer_from.split("-")[-1],
                          why=args.note or "same silicon")
        return _write(cal.to_json(), args.out)
    if not args.engine:
        raise ConfigError(f"calibrate needs --engine; valid: {', '.join(ENGINES)}")
    if not args.measurements:
        raise ConfigError("calibrate needs --measurements FILE.csv (or --transfer-from NAME)")
    base = load_calibration(args.base).params if args.base else None
    run = calibrate(_load(args.measurements), chip=args.chip, engine=args.engine, base=base,
                    name=args.name, engine_label=args.engine_label,
                    data_names=tuple(p.name for p in args.measurements), notes=args.note,
                    operator_chip=args.operator_chip, models=args.models)
    sys.stdout.write(describe(run))
    if args.out is None:
        sys.stdout.write(run.calibration.to_json())
        return 0
    return _write(run.calibration.to_json(), args.out)


def _write(text: str, out: Optional[Path]) -> int:
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.write_text(text)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write it ({err.strerror})") from err
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    chips = [c.strip() for c in args.chips.split(",")] if args.chips else None
    sources = [s.strip() for s in args.sources.split(",")] if args.sources else None
    report = validate(_load(args.measurements), calibration=args.calibration, chips=chips,
                      sources=sources, models=args.models)
    if args.output == "json":
        sys.stdout.write(to_json(report))
    else:
        sys.stdout.write(render(report, worst=args.worst, markdown=args.output == "markdown"))
    return 0
