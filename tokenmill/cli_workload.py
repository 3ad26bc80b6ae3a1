"""Workload flags of `tokenmill run`, and the `tokenmill workload describe` command.

Flags set fields of the Scenario's [workload] table (see tokenmill.workloads.config), after the
--config file, so they override it. Most map one to one (WORKLOAD_FLAG_FIELDS); a few build a
structure: --workload trace:PATH and --trace set trace.path, --rate-schedule and --diurnal-*
set the rate profile, and each --class adds a request class.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

from .errors import ConfigError
from .workloads.config import ARRIVAL_PROCESSES, LENGTH_KINDS, known_trace_formats

# flag dest -> path of the Scenario field it sets
WORKLOAD_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "arrival_rate": ("workload", "arrival_rate"),
    "arrival_process": ("workload", "arrival_process"),
    "burstiness": ("workload", "burstiness"),
    "duration": ("workload", "duration_s"),
    "num_requests": ("workload", "num_requests"),
    "concurrency": ("workload", "concurrency"),
    "think_time": ("workload", "think_time_s"),
    "trace_format": ("workload", "trace", "format"),
    "trace_start": ("workload", "trace", "start_s"),
    "trace_end": ("workload", "trace", "end_s"),
    "trace_speedup": ("workload", "trace", "speedup"),
    "trace_rate": ("workload", "trace", "rate"),
    "trace_repeat": ("workload", "trace", "repeat"),
    "trace_model": ("workload", "trace", "model"),
    "trace_log_type": ("workload", "trace", "log_type"),
    "skip_bad_rows": ("workload", "trace", "skip_bad_rows"),
}
for _role in ("prompt", "output"):
    WORKLOAD_FLAG_FIELDS.update({
        f"{_role}_dist": ("workload", _role, "kind"),
        f"{_role}_mean": ("workload", _role, "mean"),
        f"{_role}_sigma": ("workload", _role, "sigma"),
        f"{_role}_min": ("workload", _role, "min"),
        f"{_role}_max": ("workload", _role, "max"),
        f"{_role}_source": ("workload", _role, "source"),
        f"{_role}_column": ("workload", _role, "column"),
    })

# keys of a --class spec -> (field path inside the class, parser)
CLASS_KEYS: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "share": (("share",), float), "priority": (("priority",), int),
    "slo-ttft-ms": (("slo_ttft_ms",), float), "slo-tpot-ms": (("slo_tpot_ms",), float),
    "slo-e2e-ms": (("slo_e2e_ms",), float),
}
for _role in ("prompt", "output"):
    CLASS_KEYS.update({
        f"{_role}-dist": ((_role, "kind"), str), f"{_role}-mean": ((_role, "mean"), float),
        f"{_role}-sigma": ((_role, "sigma"), float), f"{_role}-min": ((_role, "min"), int),
        f"{_role}-max": ((_role, "max"), int), f"{_role}-source": ((_role, "source"), str),
        f"{_role}-column": ((_role, "column"), str),
    })


def number_type(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse `type` that names the expected kind of number and refuses NaN."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {what}") from None
        if isinstance(value, float) and math.isnan(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {what}")
        return value
    return parse


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload flag groups (shared by `run` and `workload describe`)."""
    real = number_type(float, "number")
    whole = number_type(int, "whole number")
    g = parser.add_argument_group("workload: arrivals")
    g.add_argument("--workload", metavar="SPEC",
                   help="synthetic (default) or trace:PATH to replay a trace (as the original "
                   "tokenmill)")
    g.add_argument("--arrival-rate", type=real, metavar="R",
                   help="mean arrivals per second (default 10); inf = offline, all at time 0")
    g.add_argument("--arrival-process", choices=ARRIVAL_PROCESSES,
                   help="gaps between arrivals (default poisson)")
    g.add_argument("--burstiness", type=real, metavar="CV",
                   help="gamma arrivals with this coefficient of variation of the gaps (1 = "
                   "Poisson; vLLM's --burstiness k is CV = 1/sqrt(k))")
    g.add_argument("--rate-schedule", metavar="T:F,...",
                   help="piecewise rate: from T seconds the rate is F x the arrival rate, "
                   "e.g. 0:1,300:2.5,600:0.5")
    g.add_argument("--diurnal-amplitude", type=real, metavar="A",
                   help="diurnal rate: rate x (1 + A cos(2 pi (t - peak) / period)), A in [0, 1]")
    g.add_argument("--diurnal-period", type=real, metavar="S", help="diurnal period (default 86400 s)")
    g.add_argument("--diurnal-peak", type=real, metavar="S", help="time of the first peak (default 0 s)")
    g.add_argument("--duration", type=real, metavar="S", help="seconds of arrivals (default 60 "
                   "for open-loop synthetic arrivals without --num-requests)")
    g.add_argument("--num-requests", type=whole, metavar="N", help="stop arrivals after N requests")
    g.add_argument("--concurrency", type=whole, metavar="C",
                   help="closed loop: C clients, each sending its next request when the "
                   "previous one finishes or is rejected")
    g.add_argument("--think-time", type=real, metavar="S",
                   help="closed loop: seconds between a response and the client's next request")
    g.add_argument("--class", dest="request_class", action="append", metavar="NAME:KEY=V,...",
                   help="add a request class, e.g. chat:share=3,priority=0,prompt-mean=512,"
                   "slo-ttft-ms=500 (keys: " + ", ".join(CLASS_KEYS) + ")")
    g = parser.add_argument_group("workload: lengths")
    for role, default in (("prompt", 512), ("output", 128)):
        g.add_argument(f"--{role}-dist", choices=LENGTH_KINDS,
                       help=f"{role} length distribution (default lognormal)")
        g.add_argument(f"--{role}-mean", type=real, metavar="T",
                       help=f"mean {role} tokens (default {default}; exact with fixed)")
        g.add_argument(f"--{role}-sigma", type=real, metavar="S",
                       help="lognormal: sigma of the underlying normal (default 0.5); normal: "
                       "standard deviation in tokens")
        g.add_argument(f"--{role}-min", type=whole, metavar="T",
                       help="uniform low end, normal truncation point, lognormal/empirical cap "
                       "(default 1)")
        g.add_argument(f"--{role}-max", type=whole, metavar="T",
                       help="uniform high end, normal truncation point, lognormal/empirical cap")
        g.add_argument(f"--{role}-source", metavar="PATH",
                       help=f"empirical: file to sample {role} lengths from")
        g.add_argument(f"--{role}-column", metavar="NAME", help="empirical: column of the file")
    g = parser.add_argument_group("workload: trace replay")
    g.add_argument("--trace", metavar="PATH", help="replay this trace file")
    g.add_argument("--trace-format", metavar="FORMAT",
                   help="format of the trace (default: detected); " + ", ".join(known_trace_formats()))
    g.add_argument("--skip-bad-rows", action="store_const", const=True,
                   help="skip malformed trace rows and report how many (default: refuse the file)")
    g.add_argument("--trace-start", type=real, metavar="S", help="window start, seconds after "
                   "the first request")
    g.add_argument("--trace-end", type=real, metavar="S", help="window end (exclusive)")
    g.add_argument("--trace-speedup", type=real, metavar="X", help="divide every gap by X")
    g.add_argument("--trace-rate", type=real, metavar="R",
                   help="rescale time to a mean rate of R req/s (inf: all at time 0)")
    g.add_argument("--trace-repeat", type=whole, metavar="K", help="play the trace K times")
    g.add_argument("--trace-model", metavar="NAME", help="BurstGPT: keep this Model only")
    g.add_argument("--trace-log-type", metavar="TYPE",
                   help="BurstGPT: keep this Log Type only (conversation or api)")


def _node(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = data
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    return node


def apply_workload_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Set the structured workload fields from the flags that build them (after the others)."""
    spec = getattr(args, "workload", None)
    trace = getattr(args, "trace", None)
    if spec is not None:
        if spec.startswith("trace:") and len(spec) > len("trace:"):
            if trace is not None and trace != spec[len("trace:"):]:
                raise ConfigError(f"--workload {spec} and --trace {trace} name different traces")
            trace = spec[len("trace:"):]
        elif spec != "synthetic":
            raise ConfigError(f"--workload {spec!r}: expected synthetic or trace:PATH")
        elif trace is not None:
            raise ConfigError("--workload synthetic contradicts --trace")
    if trace is not None:
        _node(data, ("workload", "trace"))["path"] = trace
    schedule = getattr(args, "rate_schedule", None)
    diurnal = {k: getattr(args, f"diurnal_{k}", None) for k in ("amplitude", "period", "peak")}
    if schedule is not None and any(v is not None for v in diurnal.values()):
        raise ConfigError("--rate-schedule and --diurnal-* are two different rate profiles; "
                          "give one")
    if schedule is not None:
        data.setdefault("workload", {})["rate_profile"] = {
            "kind": "piecewise", "steps": parse_schedule(schedule)}
    elif any(v is not None for v in diurnal.values()):
        profile: dict[str, Any] = {"kind": "diurnal"}
        for key, field in (("amplitude", "amplitude"), ("period", "period_s"), ("peak", "peak_s")):
            if diurnal[key] is not None:
                profile[field] = diurnal[key]
        data.setdefault("workload", {})["rate_profile"] = profile
    specs = getattr(args, "request_class", None)
    if specs:
        data.setdefault("workload", {})["classes"] = [parse_class(s) for s in specs]


def parse_schedule(text: str) -> list[list[float]]:
    """'0:1,300:2.5' -> [[0, 1], [300, 2.5]]."""
    steps = []
    for part in text.split(","):
        start, sep, factor = part.partition(":")
        try:
            if not sep:
                raise ValueError
            steps.append([float(start), float(factor)])
        except ValueError:
            raise ConfigError(f"--rate-schedule {text!r}: expected START:FACTOR pairs separated "
                              f"by commas, e.g. 0:1,300:2.5 (bad part {part!r})") from None
    return steps


def parse_class(text: str) -> dict[str, Any]:
    """'chat:share=3,prompt-mean=512' -> {"name": "chat", "share": 3.0, "prompt": {...}}."""
    name, _, rest = text.partition(":")
    out: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in CLASS_KEYS:
            raise ConfigError(f"--class {text!r}: {part!r} is not KEY=VALUE with a known key; "
                              f"keys: {', '.join(CLASS_KEYS)}")
        path, parse = CLASS_KEYS[key]
        try:
            parsed = parse(value.strip())
        except ValueError:
            raise ConfigError(f"--class {text!r}: {key} = {value!r} is not a valid "
                              f"{'whole number' if parse is int else 'number'}") from None
        _node(out, path[:-1])[path[-1]] = parsed
    return out


def register(subparsers: Any) -> None:
    """Add `tokenmill workload describe`."""
    wl = subparsers.add_parser("workload", help="inspect workloads",
                               description="Inspect workloads without simulating them.")
    wl_sub = wl.add_subparsers(dest="workload_command", metavar="COMMAND")
    d = wl_sub.add_parser("describe", help="summarise a workload: count, rate, burstiness, "
                          "lengths, prefix sharing, classes",
                          description="Summarise the workload the flags (and --config) describe: "
                          "count, mean rate, burstiness (CV of gaps), length percentiles, "
                          "prefix-sharing ratio and class mix, plus every trace row or length "
                          "draw left out or changed.")
    d.add_argument("--config", type=_path, help="TOML file laid out like the Scenario")
    d.add_argument("--seed", type=number_type(int, "whole number"), help="random seed (default 42)")
    add_workload_arguments(d)
    d.add_argument("--output", choices=("text", "json"), default="text", help="format (default text)")
    d.set_defaults(handler=describe_main)
    wl.set_defaults(handler=lambda args: _usage(wl))


def _path(text: str) -> Any:
    from pathlib import Path
    return Path(text)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def describe_main(args: argparse.Namespace) -> int:
    from .cli import EXIT_BAD_INPUT, scenario_from_args  # cli imports this module
    from .workloads.describe import describe_workload

    try:
        scenario = scenario_from_args(args)
        summary = describe_workload(scenario.workload, scenario.seed)
    except ConfigError as err:
        print(f"tokenmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(summary.to_json() + "\n" if args.output == "json" else summary.to_text())
    return 0
