"""The workload part of a Scenario: arrivals, lengths, request classes and trace replay.

Strict, frozen pydantic models, validated up front: every rule that can be checked without
opening a file is checked here, and every message names the field, the value and what is
valid. Fields that only apply to some choices default to None ("not given"), and giving one
where it does not apply is an error rather than silently ignored. Where a default depends on
the other fields (the arrival rate of a closed loop, the mean of a prompt), a `before`
validator fills it in, so a dumped model validates back to itself.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import (Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_serializer,
                      field_validator, model_validator)

from .._validation import StrictModel

LENGTH_KINDS = ("fixed", "uniform", "normal", "lognormal", "empirical")
ARRIVAL_PROCESSES = ("poisson", "constant", "gamma")
# canonical trace format -> accepted aliases
TRACE_FORMATS: dict[str, tuple[str, ...]] = {
    "azure": ("azure2023", "azure2024", "azure-llm"),
    "tokenmill": ("native",),
    "mooncake": (),
    "burstgpt": (),
}
MAX_TOKENS = 2**30  # per length; prompt + output must fit the kernel's int32 counters

DEFAULT_RATE = 10.0
DEFAULT_DURATION_S = 60.0
DEFAULT_MEANS = {"prompt": 512.0, "output": 128.0}
DEFAULT_LOGNORMAL_SIGMA = 0.5
DEFAULT_DIURNAL_PERIOD_S = 86_400.0
# A truncated normal is drawn by redrawing values outside [min, max]; refuse bounds that keep
# less than this much of the distribution (the redraw loop would be slow and the shape absurd).
MIN_NORMAL_MASS = 1e-3


def _parse_inf(v: object) -> object:
    """Accept "inf"/"infinity" for a rate (TOML has inf; JSON dumps it as the string "inf")."""
    if isinstance(v, str) and v.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    return v


def _tuples(v: object) -> object:
    """Config files hold lists where the models keep immutable tuples."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


class LengthDistribution(StrictModel):
    """Token counts of prompts or outputs: how they are drawn, and their caps.

    * fixed: every request has exactly `mean` tokens (a whole number).
    * uniform: whole numbers drawn uniformly from [min, max], both included.
    * normal: a normal with `mean` and standard deviation `sigma` (tokens), rounded and
      truncated to [min, max] (min defaults to 1) by redrawing values outside: the result is
      the truncated normal, never a pile-up at a bound. Redraws are counted and reported.
    * lognormal: log-normal with the given `mean` and log-space `sigma` (default 0.5, the
      original tokenmill's), rounded.
    * empirical: sampled with replacement from a column of a file (`source`, `column`).

    For lognormal and empirical, `min` and `max` are caps: draws below min (default 1) are
    raised to it and draws above max lowered to it, and the number of draws each cap changed
    is reported with the result.
    """

    kind: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = Field(
        default="lognormal", description="Distribution family: fixed, uniform, normal, "
        "lognormal or empirical.")
    mean: Optional[PositiveFloat] = Field(
        default=None, description="Mean token count (fixed, normal, lognormal). A Workload "
        "fills in 512 for prompts and 128 for outputs when it is not given.")
    sigma: Optional[NonNegativeFloat] = Field(
        default=None, description="lognormal: standard deviation of the underlying normal "
        "(default 0.5; 0 = fixed). normal: standard deviation in tokens (required).")
    min: Optional[PositiveInt] = Field(
        default=None, description="Lower bound in tokens: the low end of a uniform, the "
        "truncation point of a normal, a cap for lognormal and empirical (default 1).")
    max: Optional[PositiveInt] = Field(
        default=None, description="Upper bound in tokens: the high end of a uniform, the "
        "truncation point of a normal, a cap for lognormal and empirical (default none).")
    source: Optional[str] = Field(
        default=None, description="empirical: file to sample from (a trace in a known format, "
        "or a CSV with a header such as Vidur's num_prefill_tokens,num_decode_tokens).")
    column: Optional[str] = Field(
        default=None, description="empirical: column of `source` to sample (default: the "
        "file's prompt or output column, by role).")

    @model_validator(mode="before")
    @classmethod
    def _lognormal_sigma(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind", "lognormal") == "lognormal" \
                and data.get("sigma") is None:
            return {**data, "sigma": DEFAULT_LOGNORMAL_SIGMA}
        return data

    @model_validator(mode="after")
    def _check(self) -> "LengthDistribution":
        kind = self.kind
        given = {name for name in ("mean", "sigma", "min", "max", "source", "column")
                 if getattr(self, name) is not None}
        allowed = {
            "fixed": {"mean"},
            "uniform": {"min", "max"},
            "normal": {"mean", "sigma", "min", "max"},
            "lognormal": {"mean", "sigma", "min", "max"},
            "empirical": {"source", "column", "min", "max"},
        }[kind]
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{', '.join(extra)} does not apply to {kind} lengths "
                             f"(a {kind} distribution takes {', '.join(sorted(allowed))})")
        required = {"fixed": ("mean",), "uniform": ("min", "max"), "normal": ("mean", "sigma"),
                    "lognormal": ("mean",), "empirical": ("source",)}[kind]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{kind} lengths need {' and '.join(missing)}")
        if kind == "fixed" and not float(self.mean).is_integer():  # type: ignore[arg-type]
            raise ValueError(f"fixed lengths need a whole number of tokens; got mean = {self.mean}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        for name in ("mean", "max"):
            value = getattr(self, name)
            if value is not None and value > MAX_TOKENS:
                raise ValueError(f"{name} = {value} exceeds {MAX_TOKENS} tokens")
        if kind == "lognormal" and self.sigma is not None and self.sigma > 4.0:
            raise ValueError(f"lognormal sigma must be <= 4; got {self.sigma}")
        if kind == "normal":
            mass = self.normal_mass()
            if mass < MIN_NORMAL_MASS:
                raise ValueError(f"normal(mean {self.mean:g}, sigma {self.sigma:g}) has only "
                                 f"{mass:.2g} of its mass in [{self.low}, {self.max or 'inf'}]; "
                                 "widen the bounds or move the mean")
        return self

    @property
    def low(self) -> int:
        """The lower bound or cap in tokens (1 unless given)."""
        return self.min if self.min is not None else 1

    def normal_mass(self) -> float:
        """Probability that a rounded normal draw lands in [min, max] (1 when sigma is 0)."""
        assert self.mean is not None and self.sigma is not None
        lo = self.low - 0.5
        hi = self.max + 0.5 if self.max is not None else math.inf
        if self.sigma == 0:
            return 1.0 if lo <= self.mean < hi else 0.0

        def cdf(x: float) -> float:
            return 0.5 * (1.0 + math.erf((x - self.mean) / (self.sigma * math.sqrt(2.0))))  # type: ignore[operator]
        return cdf(hi) - cdf(lo)

    def label(self) -> str:
        """A short human description, e.g. "lognormal mean 512 (sigma 0.5)"."""
        caps = ""
        if self.kind not in ("uniform",) and (self.min is not None or self.max is not None):
            caps = f" in [{self.low}, {self.max if self.max is not None else 'inf'}]"
        if self.kind == "fixed":
            return f"fixed {self.mean:g}"
        if self.kind == "uniform":
            return f"uniform [{self.min}, {self.max}]"
        if self.kind == "normal":
            return f"normal mean {self.mean:g} (sigma {self.sigma:g}){caps}"
        if self.kind == "lognormal":
            return f"lognormal mean {self.mean:g} (sigma {self.sigma:g}){caps}"
        col = f" column {self.column}" if self.column else ""
        return f"empirical from {self.source}{col}{caps}"


class RateProfile(StrictModel):
    """How the arrival rate varies over time, as factors of Workload.arrival_rate.

    * constant: the rate is arrival_rate throughout.
    * piecewise: `steps` lists (start_s, factor) pairs; from each start the rate is
      factor x arrival_rate until the next start (the last one holds forever).
    * diurnal: rate(t) = arrival_rate x (1 + amplitude x cos(2 pi (t - peak_s) / period_s)),
      so arrival_rate is the mean over a period.

    The arrival process (Poisson, constant, gamma) runs in "operational time" and is mapped
    through the inverse of the cumulative rate, so its shape is kept while its rate follows
    the profile (for Poisson this is the exact non-homogeneous Poisson process).
    """

    kind: Literal["constant", "piecewise", "diurnal"] = Field(
        default="constant", description="Shape of the rate over time: constant, piecewise or "
        "diurnal.")
    steps: Optional[tuple[tuple[float, float], ...]] = Field(
        default=None, description="piecewise: (start_s, factor) pairs; the first start is 0, "
        "starts increase, factors are >= 0 (0 = no arrivals).")
    amplitude: Optional[float] = Field(
        default=None, description="diurnal: relative swing of the rate, between 0 and 1.")
    period_s: Optional[PositiveFloat] = Field(
        default=None, description="diurnal: length of one cycle in seconds (default 86400).")
    peak_s: Optional[NonNegativeFloat] = Field(
        default=None, description="diurnal: time of the first peak in seconds (default 0).")

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_tuples(cls, v: object) -> object:
        return _tuples(v)

    @model_validator(mode="before")
    @classmethod
    def _diurnal_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "diurnal":
            data = dict(data)
            if data.get("period_s") is None:
                data["period_s"] = DEFAULT_DIURNAL_PERIOD_S
            if data.get("peak_s") is None:
                data["peak_s"] = 0.0
        return data

    @model_validator(mode="after")
    def _check(self) -> "RateProfile":
        given = {n for n in ("steps", "amplitude", "period_s", "peak_s") if getattr(self, n) is not None}
        allowed = {"constant": set(), "piecewise": {"steps"},
                   "diurnal": {"amplitude", "period_s", "peak_s"}}[self.kind]
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{', '.join(extra)} does not apply to a {self.kind} rate profile")
        if self.kind == "piecewise":
            if not self.steps:
                raise ValueError("a piecewise rate profile needs steps: (start_s, factor) pairs")
            starts = [s for s, _ in self.steps]
            factors = [f for _, f in self.steps]
            if starts[0] != 0.0:
                raise ValueError(f"the first step must start at 0 s; got {starts[0]}")
            if any(not math.isfinite(x) for x in starts + factors):
                raise ValueError("steps must be finite numbers")
            if any(b <= a for a, b in zip(starts, starts[1:])):
                raise ValueError(f"step starts must increase; got {starts}")
            if any(f < 0 for f in factors) or not any(f > 0 for f in factors):
                raise ValueError(f"step factors must be >= 0 and not all 0; got {factors}")
        if self.kind == "diurnal":
            if self.amplitude is None:
                raise ValueError("a diurnal rate profile needs amplitude (between 0 and 1)")
            if not 0.0 <= self.amplitude <= 1.0:
                raise ValueError(f"amplitude must be between 0 and 1; got {self.amplitude}")
        return self

    def label(self) -> str:
        if self.kind == "piecewise":
            assert self.steps is not None
            return "piecewise x(" + ", ".join(f"{f:g} from {s:g} s" for s, f in self.steps) + ")"
        if self.kind == "diurnal":
            return (f"diurnal (amplitude {self.amplitude:g}, period {self.period_s:g} s, "
                    f"peak at {self.peak_s:g} s)")
        return "constant"


class RequestClass(StrictModel):
    """One kind of request in a mixed workload: its share of traffic, lengths, priority, SLOs."""

    name: str = Field(min_length=1, description="Name shown in reports (unique in a workload).")
    share: PositiveFloat = Field(
        default=1.0, description="Relative share of requests (shares are normalised).")
    priority: int = Field(
        default=0, description="Scheduling priority; lower is served first (vLLM's convention).")
    prompt: Optional[LengthDistribution] = Field(
        default=None, description="Prompt lengths of this class (None: the workload's).")
    output: Optional[LengthDistribution] = Field(
        default=None, description="Output lengths of this class (None: the workload's).")
    slo_ttft_ms: Optional[PositiveFloat] = Field(
        default=None, description="Time-to-first-token objective in ms (reported as attainment).")
    slo_tpot_ms: Optional[PositiveFloat] = Field(
        default=None, description="Time-per-output-token objective in ms.")
    slo_e2e_ms: Optional[PositiveFloat] = Field(
        default=None, description="End-to-end latency objective in ms.")


class TraceSource(StrictModel):
    """A request log to replay: arrival times and lengths come from the file.

    Rows are read, filtered (BurstGPT model and log type; failed and zero-length requests are
    excluded and counted), cut to the time window, time-scaled, repeated, and finally limited
    by Workload.duration_s and num_requests. Every row left out is counted in the report.
    """

    path: str = Field(min_length=1, description="File to replay (relative to the working "
                      "directory).")
    format: Optional[str] = Field(
        default=None, description="azure (2023 and 2024), tokenmill (native CSV), mooncake "
        "(JSONL) or burstgpt; None: detected from the header.")
    skip_bad_rows: bool = Field(
        default=False, description="Skip malformed rows (and report how many) instead of "
        "refusing the file.")
    start_s: Optional[NonNegativeFloat] = Field(
        default=None, description="Window start, seconds after the trace's first request.")
    end_s: Optional[PositiveFloat] = Field(
        default=None, description="Window end (exclusive), seconds after the first request.")
    speedup: Optional[PositiveFloat] = Field(
        default=None, description="Divide every gap by this factor (2 = twice the rate).")
    rate: Optional[PositiveFloat] = Field(
        default=None, description="Rescale time so the mean rate is this many requests per "
        "second (inf: every request at time 0, for closed-loop replay).")
    repeat: PositiveInt = Field(
        default=1, description="Play the (windowed) trace this many times back to back; "
        "prefix ids of each copy are renumbered so copies share no cache.")
    model: Optional[str] = Field(
        default=None, description="burstgpt: keep rows of this Model (e.g. ChatGPT, GPT-4).")
    log_type: Optional[str] = Field(
        default=None, description="burstgpt: keep rows of this Log Type (e.g. 'Conversation "
        "log', 'API log'; 'conversation' and 'api' also match).")

    @field_validator("format", mode="before")
    @classmethod
    def _canonical_format(cls, v: object) -> object:
        if v is None or not isinstance(v, str):
            return v
        name = v.strip().lower()
        for canonical, aliases in TRACE_FORMATS.items():
            if name == canonical or name in aliases:
                return canonical
        raise ValueError(f"unknown trace format {v!r}; known: {', '.join(known_trace_formats())}")

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_inf(cls, v: object) -> object:
        return _parse_inf(v)

    @field_serializer("rate", when_used="json")
    def _rate_json(self, v: Optional[float]) -> object:
        return "inf" if v is not None and math.isinf(v) else v

    @model_validator(mode="after")
    def _check(self) -> "TraceSource":
        if self.rate is not None and self.speedup is not None:
            raise ValueError("give speedup or rate, not both")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self


def known_trace_formats() -> list[str]:
    return [f"{name} (also {', '.join(al)})" if al else name for name, al in TRACE_FORMATS.items()]


class Workload(StrictModel):
    """The requests to serve: synthetic arrivals and lengths, or a replayed trace.

    Open loop: arrivals follow `arrival_process` at `arrival_rate` (shaped by `rate_profile`);
    `arrival_rate = inf` sends every request at time 0 (offline). Closed loop: with
    `concurrency` C, at most C requests are outstanding; a request that ends (finishes or is
    rejected) lets the next one be sent `think_time_s` later. With no arrival_rate that is a
    pure closed loop (vLLM `bench serve --max-concurrency` at rate inf, GenAI-Perf); with one,
    the scheduled arrivals are held back until a client is free (vLLM with both flags).
    Arrivals stop after `duration_s` or `num_requests`, whichever comes first.
    """

    arrival_rate: Optional[PositiveFloat] = Field(
        default=None, description="Mean arrivals per second; inf = offline (all at time 0). "
        "Default 10 for open-loop synthetic arrivals, inf with concurrency; not used (None) "
        "with a trace.")
    arrival_process: Optional[Literal["poisson", "constant", "gamma"]] = Field(
        default=None, description="Gaps between arrivals: poisson (exponential, the default), "
        "constant, or gamma with coefficient of variation `burstiness`.")
    burstiness: Optional[PositiveFloat] = Field(
        default=None, description="gamma: coefficient of variation of the gaps (1 = Poisson, "
        ">1 burstier, <1 smoother). Giving it selects gamma. vLLM's --burstiness is the gamma "
        "shape k instead: CV = 1/sqrt(k).")
    rate_profile: RateProfile = Field(
        default=RateProfile(), description="How the rate varies over time (constant, "
        "piecewise, diurnal).")
    duration_s: Optional[PositiveFloat] = Field(
        default=None, description="Arrivals stop after this many seconds (default 60 for "
        "open-loop synthetic arrivals without num_requests; None: no time limit).")
    num_requests: Optional[PositiveInt] = Field(
        default=None, description="Arrivals stop after this many requests (None: no count limit).")
    concurrency: Optional[PositiveInt] = Field(
        default=None, description="Closed loop: number of clients, each with one request "
        "outstanding at a time (None: open loop).")
    think_time_s: NonNegativeFloat = Field(
        default=0.0, description="Closed loop: seconds a client waits after a response before "
        "sending its next request.")
    prompt: Optional[LengthDistribution] = Field(
        default=None, description="Prompt lengths in tokens (default lognormal mean 512, "
        "sigma 0.5; None with a trace, whose lengths are used).")
    output: Optional[LengthDistribution] = Field(
        default=None, description="Output lengths in tokens (default lognormal mean 128, "
        "sigma 0.5; None with a trace).")
    classes: tuple[RequestClass, ...] = Field(
        default=(), description="Request classes mixed in one workload; empty: one class.")
    trace: Optional[TraceSource] = Field(
        default=None, description="Replay this trace instead of drawing arrivals and lengths.")

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v

    @field_validator("arrival_rate", mode="before")
    @classmethod
    def _rate_inf(cls, v: object) -> object:
        return _parse_inf(v)

    @field_serializer("arrival_rate", when_used="json")
    def _rate_json(self, v: Optional[float]) -> object:
        return "inf" if v is not None and math.isinf(v) else v

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Fill the defaults that depend on the other fields (see the field descriptions)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        replay = data.get("trace") is not None
        closed = data.get("concurrency") is not None
        if data.get("arrival_rate") is None and not replay:
            data["arrival_rate"] = math.inf if closed else DEFAULT_RATE
        if not replay:
            if data.get("arrival_process") is None:
                data["arrival_process"] = "gamma" if data.get("burstiness") is not None else "poisson"
            for role in ("prompt", "output"):
                dist = data.get(role)
                if dist is None:
                    data[role] = {"mean": DEFAULT_MEANS[role]}
                elif isinstance(dist, dict) and dist.get("mean") is None \
                        and dist.get("kind", "lognormal") in ("fixed", "normal", "lognormal"):
                    data[role] = {**dist, "mean": DEFAULT_MEANS[role]}
        if "duration_s" not in data:
            rate = _parse_inf(data.get("arrival_rate"))
            open_synthetic = not replay and isinstance(rate, (int, float)) and math.isfinite(rate)
            data["duration_s"] = (DEFAULT_DURATION_S if open_synthetic
                                  and data.get("num_requests") is None else None)
        return data

    @model_validator(mode="after")
    def _check(self) -> "Workload":
        rate = self.arrival_rate
        if self.trace is not None:
            for name in ("arrival_rate", "arrival_process", "burstiness", "prompt", "output"):
                if getattr(self, name) is not None:
                    hint = ("; rescale time with trace.rate or trace.speedup"
                            if name == "arrival_rate" else "")
                    raise ValueError(f"{name} does not apply to trace replay (the trace gives "
                                     f"arrival times and lengths){hint}")
            if self.classes:
                raise ValueError("classes do not apply to trace replay")
            if self.rate_profile.kind != "constant":
                raise ValueError("rate_profile does not apply to trace replay")
        else:
            assert rate is not None
            if math.isinf(rate):
                if self.num_requests is None:
                    raise ValueError("arrival_rate = inf (all requests at time 0) needs "
                                     "num_requests")
                if self.arrival_process != "poisson" or self.burstiness is not None:
                    raise ValueError("arrival_process and burstiness do not apply when "
                                     "arrival_rate = inf (every request arrives at time 0)")
                if self.rate_profile.kind != "constant":
                    raise ValueError("rate_profile does not apply when arrival_rate = inf")
            if self.arrival_process == "gamma" and self.burstiness is None:
                raise ValueError("arrival_process = 'gamma' needs burstiness (the coefficient "
                                 "of variation of the gaps; 1 = Poisson)")
            if self.arrival_process != "gamma" and self.burstiness is not None:
                raise ValueError(f"burstiness only applies to arrival_process = 'gamma'; got "
                                 f"{self.arrival_process!r}")
            if self.duration_s is None and self.num_requests is None:
                raise ValueError("give duration_s or num_requests (or both): arrivals must stop")
            steps = self.rate_profile.steps
            if steps and steps[-1][1] == 0 and self.duration_s is None:
                raise ValueError("the last rate_profile step has factor 0, so arrivals would "
                                 "stop before num_requests; give duration_s")
        if self.duration_s is not None and not math.isfinite(self.duration_s):
            raise ValueError("duration_s must be finite")
        if self.think_time_s > 0 and self.concurrency is None:
            raise ValueError("think_time_s needs concurrency (a closed loop of clients)")
        if not math.isfinite(self.think_time_s):
            raise ValueError("think_time_s must be finite")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique; got {names}")
        return self

    @property
    def is_trace(self) -> bool:
        return self.trace is not None

    @property
    def is_closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def is_offline(self) -> bool:
        return self.arrival_rate is not None and math.isinf(self.arrival_rate)
