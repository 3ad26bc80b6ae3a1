"""Public API hygiene: every configuration field is described, the stub matches the module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tokenmill as tm
from tokenmill.errors import ConfigError

MODELS = [tm.Scenario, tm.Workload, tm.LengthDistribution, tm.SchedulerPolicy, tm.Plan,
          tm.Precision, tm.CostModelParams, tm.Hardware, tm.ModelArch, tm.Calibration]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_description(model) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"


def test_models_are_frozen_and_strict() -> None:
    sc = tm.Scenario()
    with pytest.raises(Exception):
        sc.seed = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="extra"):
        tm.Workload(arrival_rate=1.0, burst=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        tm.Workload(arrival_rate="10")  # type: ignore[arg-type]  # no silent string coercion


def test_workload_must_stop() -> None:
    with pytest.raises(ValueError, match="arrivals must stop"):
        tm.Workload(duration_s=None)
    assert tm.Workload(num_requests=5).duration_s is None


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)


def test_compiled_stub_matches_the_module(tmp_path) -> None:
    pytest.importorskip("mypy")
    allowlist = Path(__file__).with_name("stubtest_allowlist.txt")
    # Run away from the repository root, whose source tree would shadow the installed module.
    done = subprocess.run([sys.executable, "-m", "mypy.stubtest", "tokenmill._core",
                           "--allowlist", str(allowlist)], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
