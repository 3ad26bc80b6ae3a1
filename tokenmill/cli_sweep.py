"""`tokenmill sweep` and `tokenmill study`: many runs, in parallel, one row per point.

sweep: every `tokenmill run` flag is accepted, and a flag given comma-separated values
(`--arrival-rate 1,2,4,8 --tp 1,2`) is swept; several such flags make a grid (the last varies
fastest). `--set FIELD=V1,V2` sweeps any Scenario field by its dotted path
(`--set scheduler.max_num_seqs=64,128`); values are read as JSON where they parse (numbers,
true, false, null), else as text. Flags whose values contain commas themselves
(--rate-schedule, --class, file paths) are never split.

study: the original tokenmill's matrix mode, models x chips (or systems) x TP x arrival rates:
--study-models, --study-gpus, --study-systems, --study-tps, --study-arrival-rates, with the
other run flags fixed; --json-out and --html write the table's data and a report. Points
that cannot run (a model that does not fit its chips) are rows with their error.

Both print a table; --output json|csv gives every figure of every point instead, and
--output-file, --html write files. --jobs N sets the worker processes (default: CPUs), and a
progress line goes to stderr on a terminal (--progress / --no-progress to choose).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ConfigError
from ._json import json_safe
from .sweep import SweepResult, progress_line, run_points

COMMANDS = ("sweep", "study")
EXIT_BAD_INPUT = 2
NO_SPLIT = {"rate_schedule", "request_class", "config", "workload", "trace", "prompt_source",
            "output_source", "output", "output_file", "html", "requests_file", "json_out"}
STUDY_AXES = ("study_models", "study_gpus", "study_systems", "study_tps", "study_arrival_rates")


def register(sub: Any, run: argparse.ArgumentParser) -> None:
    """List the commands in `tokenmill --help` (main() parses them itself)."""
    sub.add_parser("sweep", help="run a grid of scenarios in parallel (run flags with "
                   "comma-separated values)", add_help=False)
    sub.add_parser("study", help="the original's matrix mode: models x chips x TP x rates",
                   add_help=False)


def _own_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"tokenmill {command}", add_help=True,
        description=(__doc__ or "").split("\n\n")[1 if command == "sweep" else 2],
        epilog="Every `tokenmill run` flag is accepted too (tokenmill run --help lists them).")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: when stderr is a terminal)")
    p.add_argument("--output", choices=("text", "json", "csv"), default="text",
                   help="text: a table (default); json/csv: every figure of every point")
    p.add_argument("--output-file", type=Path, metavar="PATH", help="write the output there")
    p.add_argument("--html", type=Path, metavar="PATH", help="write a self-contained HTML report")
    if command == "sweep":
        p.add_argument("--set", dest="set_fields", action="append", default=[],
                       metavar="FIELD=V1,V2", help="sweep a Scenario field by dotted path")
    else:
        p.add_argument("--json-out", type=Path, metavar="PATH", help="write the JSON too")
        for axis, text in (("models", "model presets"), ("gpus", "chip presets"),
                           ("systems", "system presets (each sets its chip)"),
                           ("tps", "tensor-parallel degrees"), ("arrival-rates", "req/s")):
            p.add_argument(f"--study-{axis}", metavar="A,B,...", help=f"comma-separated {text}")
    return p


def _run_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["run"]
    raise RuntimeError("no run command")  # pragma: no cover


def _split_values(tokens: list[str], run: argparse.ArgumentParser) -> list[tuple[str, list[str], list[list[str]]]]:
    """Run flags in order: (display name, fixed tokens, [alternative value tokens])."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    k = 0
    actions = run._option_string_actions
    while k < len(tokens):
        tok = tokens[k]
        flag, _, inline = tok.partition("=")
        action = actions.get(flag)
        if action is None:
            raise ConfigError(f"unknown flag {tok!r}; tokenmill run --help lists the flags")
        if action.nargs == 0:
            out.append((flag, [tok], []))
            k += 1
            continue
        if inline:
            value = inline
            k += 1
        else:
            if k + 1 >= len(tokens):
                raise ConfigError(f"{flag} needs a value")
            value = tokens[k + 1]
            k += 2
        if "," in value and action.dest not in NO_SPLIT:
            parts = [v.strip() for v in value.split(",")]
            if any(not v for v in parts):
                raise ConfigError(f"{flag} {value!r}: empty value in the list")
            out.append((flag.lstrip("-"), [], [[flag, v] for v in parts]))
        else:
            out.append((flag, [flag, value], []))
    return out


def _parse_set(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    out = []
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not path or not values:
            raise ConfigError(f"--set {item!r}: expected FIELD=V1,V2 (a dotted Scenario path)")
        out.append((path.strip(), [_value(v.strip()) for v in values.split(",")]))
    return out


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _points(run: argparse.ArgumentParser, flags: list, sets: list) -> list[tuple[dict, Any]]:
    from .cli import scenario_from_args

    fixed = [t for _, toks, alts in flags if not alts for t in toks]
    swept = [(name, alts) for name, _, alts in flags if alts]
    axes = [alts for _, alts in swept] + [[(path, v) for v in values] for path, values in sets]
    names = [name for name, _ in swept] + [path for path, _ in sets]
    if not axes:
        raise ConfigError("sweep: give at least one flag with comma-separated values "
                          "(e.g. --arrival-rate 1,2,4) or --set FIELD=V1,V2")
    points = []
    for combo in itertools.product(*axes):
        argv = list(fixed)
        overrides: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for name, choice in zip(names, combo):
            if isinstance(choice, tuple):
                overrides[choice[0]] = choice[1]
                params[name] = choice[1]
            else:
                argv.extend(choice)
                params[name] = _value(choice[1])
        try:
            args = run.parse_args(argv)
        except SystemExit:
            raise ConfigError(f"sweep point {params}: the flags above were refused") from None
        points.append((params, scenario_from_args(args, overrides)))
    return points


def _study_points(run: argparse.ArgumentParser, own: argparse.Namespace,
                  flags: list) -> list[tuple[dict, Any]]:
    from .cli import scenario_from_args

    fixed = [t for _, toks, alts in flags if not alts for t in toks]
    if any(alts for _, _, alts in flags):
        raise ConfigError("study: sweep axes are the --study-* flags; give other flags one value")
    lists = {a: [v.strip() for v in getattr(own, a).split(",")] if getattr(own, a) else []
             for a in STUDY_AXES}
    chips: list[Any] = ([("gpu", g) for g in lists["study_gpus"]]
                        + [("system", s) for s in lists["study_systems"]])
    axes: list[list[Any]] = [lists["study_models"] or [None], chips or [None],
                             lists["study_tps"] or [None], lists["study_arrival_rates"] or [None]]
    if all(a == [None] for a in axes):
        raise ConfigError("study: give at least one of --study-models, --study-gpus, "
                          "--study-systems, --study-tps, --study-arrival-rates")
    points: list[tuple[dict, Any]] = []
    for model, chip, tp, rate in itertools.product(*axes):
        argv = list(fixed)
        params: dict[str, Any] = {}
        if model is not None:
            argv += ["--model", model]
            params["model"] = model
        if chip is not None:
            argv += [f"--{chip[0]}", chip[1]]
            params["chip"] = chip[1]
        if tp is not None:
            argv += ["--tp", tp]
            params["tp"] = _value(tp)
        if rate is not None:
            argv += ["--arrival-rate", rate]
            params["arrival_rate"] = _value(rate)
        try:
            args = run.parse_args(argv)
        except SystemExit:
            raise ConfigError(f"study point {params}: the flags above were refused") from None
        try:
            points.append((params, scenario_from_args(args)))
        except ConfigError as err:  # e.g. tp beyond the chip's domain: a row, not a stop
            points.append((params, err))
    return points


def main(argv: list[str], parser: argparse.ArgumentParser) -> int:
    command = argv[0]
    own = _own_parser(command)
    ns, rest = own.parse_known_args(argv[1:])
    run = _run_parser(parser)
    try:
        flags = _split_values(rest, run)
        if command == "sweep":
            points = _points(run, flags, _parse_set(ns.set_fields))
        else:
            points = _study_points(run, ns, flags)
        show = ns.progress if ns.progress is not None else sys.stderr.isatty()
        result = _run(points, ns.jobs, progress_line() if show else None)
        text = render(result, ns.output)
        if command == "study" and ns.json_out is not None:
            _write(render(result, "json"), ns.json_out)
        if ns.html is not None:
            from .html_report import sweep_report

            _write(sweep_report(result, title=f"tokenmill {command}"), ns.html)
        _write(text, ns.output_file)
    except ConfigError as err:
        print(f"tokenmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _run(points: list, jobs: Optional[int], progress: Any) -> SweepResult:
    """Run the points that validated; the others become error rows in their place."""
    from .sweep import SweepPoint

    good = [(k, p) for k, p in enumerate(points) if not isinstance(p[1], Exception)]
    ran = run_points([p for _, p in good], jobs=jobs, progress=progress) if good else None
    out: list[SweepPoint] = []
    results = iter(ran.points) if ran is not None else iter(())
    for params, sc in points:
        if isinstance(sc, Exception):
            out.append(SweepPoint(params, {}, None, {}, error=str(sc)))
        else:
            out.append(next(results))
    names: list[str] = []
    for params, _ in points:
        names.extend(k for k in params if k not in names)
    return SweepResult(tuple(names), tuple(out), ran.wall_time_s if ran else 0.0)


def _write(text: str, path: Optional[Path]) -> None:
    from .cli_results import write_text

    write_text(text, path)


TABLE = (("req/s", "throughput_requests_per_s", ".2f"), ("tok/s", "throughput_output_tokens_per_s", ",.0f"),
         ("TTFT p50", "latency_ms_ttft_p50", ",.1f"), ("TTFT p99", "latency_ms_ttft_p99", ",.1f"),
         ("TPOT p50", "latency_ms_tpot_p50", ",.2f"), ("TPOT p99", "latency_ms_tpot_p99", ",.2f"),
         ("E2E p99", "latency_ms_e2e_p99", ",.0f"), ("goodput", "goodput_goodput_rps", ".2f"),
         ("kW", "energy_mean_power_kw", ".2f"), ("J/tok", "energy_joules_per_output_token", ".3f"),
         ("$/Mtok", "cost_usd_per_million_output_tokens", ".3f"),
         ("unfinished", "requests_unfinished", ",d"))


def render(result: SweepResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(json_safe(result.to_dict()), indent=2) + "\n"
    rows = result.rows()
    if fmt == "csv":
        names: list[str] = []
        for row in rows:
            names.extend(k for k in row if k not in names)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n", restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in row.items()})
        return buf.getvalue()
    return _table(result)


def _table(result: SweepResult) -> str:
    params = list(result.parameters)
    shown = [c for c in TABLE if c[0] != "goodput" or any(
        p.flat.get("goodput_goodput_rps") is not None for p in result.points)]
    header = params + [c[0] for c in shown]
    body = []
    for p in result.points:
        cells = [_cell(p.parameters.get(k)) for k in params]
        if p.error:
            cells.append("error: " + p.error.splitlines()[0])
        else:
            cells += [_fmt(p.flat.get(key), spec) for _, key, spec in shown]
        body.append(cells)
    widths = [len(h) for h in header]
    for cells in body:
        if len(cells) == len(header):  # error rows do not widen the figures' columns
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        else:
            widths[:len(params)] = [max(w, len(c)) for w, c in zip(widths, cells[:len(params)])]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    for cells in body:
        if len(cells) == len(header):
            lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
        else:
            lead = "  ".join(c.rjust(w) for c, w in zip(cells[:len(params)], widths))
            lines.append(f"{lead}  {cells[-1]}")
    lines.append(f"{len(result.points)} points in {result.wall_time_s:,.1f} s")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)
