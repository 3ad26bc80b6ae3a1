"""Shared fixtures: the default model and chip, and a tiny cost model for hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill.catalogue import find_gpu, find_model
from tokenmill.costmodel import CostCoefficients, coefficients
from tokenmill.scenario import CostModelParams, Precision


@pytest.fixture(scope="session")
def h100_llama8b_cost() -> CostCoefficients:
    return coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1,
                        CostModelParams())


def unit_step_cost() -> CostCoefficients:
    """Every step takes exactly one second, whatever it holds: times become step counts."""
    return CostCoefficients.fixed(1.0)


def requests(arrival: list[float], prompt: list[int], output: list[int]):
    return (np.array(arrival, dtype=np.float64), np.array(prompt, dtype=np.int32),
            np.array(output, dtype=np.int32))


def run_kwargs(**overrides) -> dict:
    kw = dict(num_replicas=1, max_batch_tokens=8192, max_num_seqs=256, block_size=16,
              kv_capacity_blocks=10_000, stop_time_s=math.inf)
    kw.update(overrides)
    return kw


def assert_same_outputs(got: dict, want: dict, path: str = "") -> None:
    """Every output `want` has, equal in `got` bit for bit (nested dicts recursively; NaN equals
    NaN): how the kernel is held to its Python reference."""
    for key, expected in want.items():
        actual = got[key]
        if isinstance(expected, dict):
            assert_same_outputs(actual, expected, f"{path}{key}.")
        elif isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(actual, expected, err_msg=path + key)
        elif isinstance(expected, float) and math.isnan(expected):
            assert isinstance(actual, float) and math.isnan(actual), path + key
        else:
            assert actual == expected, path + key
