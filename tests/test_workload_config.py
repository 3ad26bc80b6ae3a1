"""The Workload model: defaults that depend on other fields, refusals, round trips, TOML."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

import tokenmill as tm
from tokenmill.catalogue import tomllib
from tokenmill.workloads.config import LengthDistribution, RateProfile, TraceSource, Workload


def test_defaults_keep_the_original_tokenmill_workload() -> None:
    w = Workload()
    assert (w.arrival_rate, w.arrival_process, w.duration_s, w.num_requests) == (10.0, "poisson", 60.0, None)
    assert w.prompt == LengthDistribution(kind="lognormal", mean=512.0, sigma=0.5)
    assert w.output == LengthDistribution(kind="lognormal", mean=128.0, sigma=0.5)
    assert not w.is_closed_loop and not w.is_trace and not w.is_offline


def test_closed_loop_and_trace_defaults() -> None:
    closed = Workload(concurrency=8, num_requests=100)
    assert closed.arrival_rate == math.inf and closed.duration_s is None and closed.is_closed_loop
    capped = Workload(concurrency=8, arrival_rate=5.0)  # vLLM --request-rate with --max-concurrency
    assert capped.arrival_rate == 5.0 and capped.duration_s == 60.0
    replay = Workload(trace=TraceSource(path="x.csv"))
    assert replay.arrival_rate is None and replay.prompt is None and replay.duration_s is None
    assert Workload(burstiness=2.0).arrival_process == "gamma"
    assert Workload(prompt={"kind": "fixed"}).prompt.mean == 512.0  # role default fills the mean
    assert Workload(output={"sigma": 1.0}).output == LengthDistribution(mean=128.0, sigma=1.0)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(arrival_rate=math.inf), "needs num_requests"),
    (dict(arrival_rate=-1.0), "greater than 0"),
    (dict(arrival_rate=math.nan), "greater than 0"),
    (dict(arrival_process="gamma"), "needs burstiness"),
    (dict(arrival_process="bursty"), "'poisson', 'constant' or 'gamma'"),
    (dict(arrival_process="constant", burstiness=2.0), "only applies to arrival_process = 'gamma'"),
    (dict(arrival_rate=math.inf, num_requests=5, arrival_process="constant"), "do not apply"),
    (dict(think_time_s=1.0), "needs concurrency"),
    (dict(concurrency=0, num_requests=5), "greater than 0"),
    (dict(prompt={"kind": "fixed", "mean": 10.5}), "whole number of tokens"),
    (dict(prompt={"kind": "fixed", "mean": 10, "sigma": 1.0}), "sigma does not apply to fixed"),
    (dict(prompt={"kind": "uniform", "min": 10}), "uniform lengths need max"),
    (dict(prompt={"kind": "uniform", "min": 10, "max": 5}), "min (10) must be <= max (5)"),
    (dict(prompt={"kind": "uniform", "min": 1, "max": 5, "mean": 3}), "mean does not apply to uniform"),
    (dict(prompt={"kind": "normal", "mean": 100}), "normal lengths need sigma"),
    (dict(prompt={"kind": "normal", "mean": 100, "sigma": 5, "min": 500}), "of its mass in [500, inf]"),
    (dict(prompt={"kind": "empirical"}), "empirical lengths need source"),
    (dict(prompt={"kind": "lognormal", "mean": 100, "sigma": 5}), "sigma must be <= 4"),
    (dict(prompt={"kind": "gaussian", "mean": 1}), "'fixed', 'uniform', 'normal', 'lognormal' or 'empirical'"),
    (dict(trace={"path": "t.csv"}, arrival_rate=2.0), "rescale time with trace.rate"),
    (dict(trace={"path": "t.csv"}, prompt={"mean": 5}), "prompt does not apply to trace replay"),
    (dict(trace={"path": "t.csv", "format": "parquet"}), "known: azure (also azure2023, azure2024, azure-llm), tokenmill (also native), mooncake, burstgpt"),
    (dict(trace={"path": "t.csv", "speedup": 2.0, "rate": 3.0}), "speedup or rate, not both"),
    (dict(trace={"path": "t.csv", "start_s": 10.0, "end_s": 5.0}), "must be after start_s"),
    (dict(rate_profile={"kind": "piecewise"}), "needs steps"),
    (dict(rate_profile={"kind": "piecewise", "steps": [[5, 1.0]]}), "first step must start at 0"),
    (dict(rate_profile={"kind": "piecewise", "steps": [[0, 1.0], [0, 2.0]]}), "starts must increase"),
    (dict(rate_profile={"kind": "piecewise", "steps": [[0, 0.0]]}), "not all 0"),
    (dict(rate_profile={"kind": "piecewise", "steps": [[0, 1.0], [9, 0.0]]}, num_requests=5), "give duration_s"),
    (dict(rate_profile={"kind": "diurnal"}), "needs amplitude"),
    (dict(rate_profile={"kind": "diurnal", "amplitude": 1.5}), "between 0 and 1"),
    (dict(rate_profile={"kind": "constant", "amplitude": 0.5}), "amplitude does not apply"),
    (dict(classes=[{"name": "a"}, {"name": "a"}]), "class names must be unique"),
    (dict(classes=[{"name": "a", "share": 0.0}]), "greater than 0"),
])
def test_bad_workloads_are_refused_with_the_reason(kwargs, needle) -> None:
    with pytest.raises(ValidationError) as info:
        Workload(**kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize("workload", [
    Workload(),
    Workload(concurrency=4, num_requests=10, think_time_s=0.5),
    Workload(arrival_rate=math.inf, num_requests=10),
    Workload(burstiness=3.0, rate_profile=RateProfile(kind="diurnal", amplitude=0.5, period_s=60)),
    Workload(rate_profile={"kind": "piecewise", "steps": [[0, 1], [10, 2.5]]}),
    Workload(prompt={"kind": "normal", "mean": 300, "sigma": 50, "min": 10, "max": 600},
             output={"kind": "uniform", "min": 1, "max": 9},
             classes=[{"name": "chat", "share": 3, "slo_ttft_ms": 200},
                      {"name": "batch", "priority": 1, "prompt": {"kind": "fixed", "mean": 2048}}]),
    Workload(trace={"path": "x.jsonl", "rate": math.inf, "repeat": 2}, concurrency=3),
], ids=range(7))
def test_dumped_workloads_validate_back_to_themselves(workload: Workload) -> None:
    assert Workload.model_validate(workload.model_dump()) == workload
    text = json.dumps(workload.model_dump(mode="json"))  # inf is written as "inf", valid JSON
    assert Workload.model_validate(json.loads(text)) == workload


def test_a_strict_model_still_refuses_strings_for_numbers() -> None:
    with pytest.raises(ValidationError):
        Workload(arrival_rate="10")  # type: ignore[arg-type]
    assert Workload(arrival_rate="inf", num_requests=3).is_offline  # type: ignore[arg-type]


def test_toml_layout_from_the_readme() -> None:
    text = """
seed = 7
[workload]
arrival_rate = 20
arrival_process = "gamma"
burstiness = 2.5
duration_s = 30
[workload.rate_profile]
kind = "piecewise"
steps = [[0, 1.0], [10, 3.0]]
[workload.prompt]
kind = "normal"
mean = 700
sigma = 200
max = 2048
[[workload.classes]]
name = "interactive"
share = 0.8
slo_ttft_ms = 300
[[workload.classes]]
name = "batch"
share = 0.2
priority = 1
[workload.classes.output]
kind = "fixed"
mean = 512
"""
    sc = tm.Scenario.model_validate(tomllib.loads(text))
    w = sc.workload
    assert w.burstiness == 2.5 and w.rate_profile.steps == ((0.0, 1.0), (10.0, 3.0))
    assert w.prompt.kind == "normal" and w.prompt.max == 2048
    assert [c.name for c in w.classes] == ["interactive", "batch"]
    assert w.classes[1].output.mean == 512.0 and w.classes[1].priority == 1
    offline = tm.Scenario.model_validate(tomllib.loads("[workload]\narrival_rate = inf\nnum_requests = 5\n"))
    assert offline.workload.is_offline


@pytest.mark.parametrize("model", [Workload, LengthDistribution, RateProfile, TraceSource,
                                   tm.RequestClass], ids=lambda m: m.__name__)
def test_every_workload_field_is_described_and_the_models_are_frozen(model) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
    assert model.model_config["frozen"] and model.model_config["extra"] == "forbid"


def test_public_names() -> None:
    assert tm.describe_workload(tm.Workload(num_requests=10)).requests == 10
    assert tm.TraceSource(path="x").repeat == 1 and tm.RateProfile().kind == "constant"
