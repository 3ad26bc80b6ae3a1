"""Calibration: the least-squares fit, closed-form schedules, calibration files and their use."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import tokenmill as tm
from tokenmill.calibrate import calibrate, fit_stage, op_problem, step_problem, transferred
from tokenmill.calibration import Calibration, load_calibration, shipped_calibrations
from tokenmill.catalogue import find_gpu, find_model
from tokenmill.costmodel import coefficients
from tokenmill.costparams import CostModelParams
from tokenmill.errors import ConfigError
from tokenmill.fitting import Bound, least_squares
from tokenmill.measurements import load_measurements, parse_measurements
from tokenmill.precision import Precision
from tokenmill.schedule import batch_plan
from tokenmill.steptimes import step_seconds_array
from tokenmill.workload import WorkloadArrays

DATA = Path(__file__).resolve().parent.parent / "validation" / "data"


def test_least_squares_recovers_known_parameters_within_bounds() -> None:
    x = np.linspace(1, 50, 40)
    truth = (0.62, 17.0)
    y = truth[0] * x / (x + truth[1])

    def residuals(p: np.ndarray) -> np.ndarray:
        return np.log(p[0] * x / (x + p[1]) / y)

    out = least_squares(residuals, [0.9, 2.0], [Bound(0.1, 1.0), Bound(0.0, 100.0)])
    assert out.x == pytest.approx(truth, rel=1e-6)
    assert out.cost_after < 1e-12 < out.cost_before
    # a start on a bound still moves
    out = least_squares(residuals, [1.0, 0.0], [Bound(0.1, 1.0), Bound(0.0, 100.0)])
    assert out.x == pytest.approx(truth, rel=1e-5)


@pytest.mark.parametrize("batch, prompt, output, policy, budget, seqs", [
    (1, 128, 16, "orca", 8192, 256), (64, 512, 8, "orca", 8192, 256), (48, 300, 20, "orca", 4096, 16),
    (7, 100, 1, "orca", 8192, 256), (40, 64, 12, "static", 1024, 8), (33, 2048, 5, "orca", 2048, 256),
])
def test_closed_form_schedule_is_what_the_simulator_runs(batch, prompt, output, policy, budget, seqs) -> None:
    sc = tm.Scenario(scheduler=tm.SchedulerPolicy(name=policy, max_batch_tokens=budget, max_num_seqs=seqs))
    wl = WorkloadArrays(np.zeros(batch), np.full(batch, prompt, np.int32), np.full(batch, output, np.int32))
    r = tm.simulate(sc, workload=wl)
    plan = batch_plan(batch, prompt, output, policy=policy, max_batch_tokens=budget, max_num_seqs=seqs)
    c = coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, sc.cost)
    got = plan.metrics(step_seconds_array(c, plan.shapes))
    assert r.steps == len(plan.shapes) and r.preemptions == 0
    assert got["batch_latency_ms"] == pytest.approx(float(np.nanmax(r.requests.completion_s)) * 1e3, rel=1e-12)
    assert got["ttft_mean_ms"] == pytest.approx(r.ttft_ms.mean, rel=1e-12)


def _synthetic_rows(params: CostModelParams) -> str:
    """Static batches priced by the model itself with known parameters."""
    lines = ["point_id,source_id,measurement_class,hardware,model,precision_weights,precision_kv,"
             "tp,framework,framework_version,dataset,isl,osl,batch_size,e2e_mean_ms,notes"]
    k = 0
    for tp in (1, 2):
        c = coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), tp, params)
        for batch in (1, 8, 32):
            for length in (128, 512, 1024):
                plan = batch_plan(batch, length, length, policy="orca", max_batch_tokens=8192, max_num_seqs=256)
                ms = plan.metrics(step_seconds_array(c, plan.shapes))["batch_latency_ms"]
                k += 1
                lines.append(f"T{k:03d},SYN,static_batch,H100-SXM-80GB,Meta-Llama-3-8B,FP16,FP16,{tp},"
                             f"vLLM,0.5,fixed,{length},{length},{batch},{ms},synthetic")
    return "\n".join(lines) + "\n"


def test_fit_recovers_the_overheads_that_generated_the_data() -> None:
    truth = CostModelParams(decode_step_overhead_ms=2.5, prefill_step_overhead_ms=2.5,
                            per_sequence_overhead_us=40.0, kv_read_efficiency=0.6,
                            per_sequence_per_rank_us=15.0)
    rows = parse_measurements(_synthetic_rows(truth), "synthetic.csv")
    problem = step_problem(rows, "h100", "vllm")
    assert len(problem.ids) == 18
    free = ("decode_step_overhead_ms", "per_sequence_overhead_us", "kv_read_efficiency",
            "per_sequence_per_rank_us")
    fitted, report = fit_stage("steps", problem, CostModelParams(), free)
    assert fitted.decode_step_overhead_ms == pytest.approx(2.5, rel=0.01)
    assert fitted.prefill_step_overhead_ms == fitted.decode_step_overhead_ms  # tied
    assert fitted.per_sequence_overhead_us == pytest.approx(40.0, rel=0.03)
    assert fitted.per_sequence_per_rank_us == pytest.approx(15.0, rel=0.05)
    assert fitted.kv_read_efficiency == pytest.approx(0.6, rel=0.03)  # the weak prior pulls a little
    assert report.residuals.mape_after < 0.2 < report.residuals.mape_before
    # the whole command fits every identifiable parameter and records the rows it used
    run = calibrate(rows, chip="h100", engine="vllm")
    assert run.stages[-1].residuals.mape_after < 1.0
    assert set(run.calibration.fitted_rows) == {m.id for m in rows}
    assert run.calibration.fitted_sources == ("SYN",)


def test_calibration_reduces_error_on_real_operator_profiles() -> None:
    rows = load_measurements(DATA / "vidur_gemm_ops.csv")
    problem = op_problem(rows, "h100")
    assert len(problem.ids) > 500
    fitted, report = fit_stage("gemm", problem, CostModelParams(),
                               ("compute_efficiency", "gemm_half_rows", "memory_efficiency",
                                "kernel_floor_us", "elementwise_efficiency"))
    assert report.residuals.mape_after < report.residuals.mape_before
    assert 0.6 < fitted.compute_efficiency < 0.95 and 0.6 < fitted.memory_efficiency <= 1.0


def test_calibration_reduces_error_on_its_static_batch_fit_set() -> None:
    rows = [m for m in load_measurements(DATA / "argonne_static_batch.csv")
            if m.model == "meta-llama/Meta-Llama-3-8B" and m.hardware.startswith("H100")
            and m.framework == "vLLM" and m.tp == 1]
    problem = step_problem(rows, "h100", "vllm")
    before = np.mean(np.abs(problem.predict(CostModelParams()) / problem.measured - 1))
    run = calibrate(rows, chip="h100", engine="vllm")
    after = np.mean(np.abs(problem.predict(run.calibration.params) / problem.measured - 1))
    assert after < before and after < 0.10


def test_calibration_files_round_trip_and_are_validated(tmp_path: Path) -> None:
    cal = load_calibration("h100-vllm")
    path = tmp_path / "c.json"
    cal.save(path)
    assert load_calibration(str(path)) == cal
    data = json.loads(path.read_text())
    data["params"]["memory_efficiency"] = 1.7
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="params.memory_efficiency"):
        load_calibration(str(path))
    data["params"]["memory_efficiency"] = 0.8
    data["params"]["warp_speed"] = 9
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="warp_speed: unknown key"):
        load_calibration(str(path))
    with pytest.raises(ConfigError, match="shipped: .*h100-vllm"):
        load_calibration("h900-vllm")


def test_shipped_calibrations_name_their_data_and_cover_the_goal_chips() -> None:
    shipped = shipped_calibrations()
    for chip in ("h100", "h200", "a100", "a100-40gb"):
        for engine in ("vllm", "trtllm"):
            assert f"{chip}-{engine}" in shipped
    for name, cal in shipped.items():
        assert cal.name == name and cal.stages or (cal.notes or "").startswith("transferred")
        if not (cal.notes or "").startswith("transferred"):
            assert cal.fitted_sources and cal.fitted_rows
            # the fit minimises squared log error, so MAPE may tick up by a hair on a stage
            # already near its optimum; the engine stage always improves
            assert all(s.residuals.mape_after <= s.residuals.mape_before + 1.0 for s in cal.stages)
            assert cal.stages[-1].residuals.mape_after < cal.stages[-1].residuals.mape_before
    h200 = shipped["h200-vllm"]
    assert h200.params == shipped["h100-vllm"].params and h200.fitted_rows == ()


def test_transfer_keeps_parameters_and_holds_every_row_out() -> None:
    base = load_calibration("h100-trtllm")
    moved = transferred(base, "h200", name="h200-x", why="test")
    assert moved.params == base.params and moved.fitted_rows == () and "transferred" in (moved.notes or "")


def test_scenario_applies_a_calibration_and_explicit_fields_win() -> None:
    cal = load_calibration("a100-vllm")
    sc = tm.Scenario(gpu="a100", calibration="a100-vllm")
    assert sc.cost == cal.params
    sc2 = tm.Scenario(gpu="a100", calibration="a100-vllm", cost={"memory_efficiency": 0.5})
    assert sc2.cost.memory_efficiency == 0.5 and sc2.cost.kv_read_efficiency == cal.params.kv_read_efficiency
    sc3 = tm.Scenario(gpu="a100", calibration="a100-vllm", cost={"step_overhead_ms": 4.0})
    assert sc3.cost.prefill_step_overhead_ms == sc3.cost.decode_step_overhead_ms == 4.0
    rebuilt = tm.Scenario.model_validate(json.loads(tm.simulate(
        sc.model_copy(update={"workload": tm.Workload(num_requests=5)})).to_json())["scenario"])
    assert rebuilt.cost == sc.cost
    with pytest.raises(ValueError, match="calibration"):
        tm.Scenario(calibration="no-such-calibration")


def test_calibrate_refuses_when_no_row_describes_the_pair() -> None:
    rows = load_measurements(DATA / "splitwise_profile.csv")
    with pytest.raises(ConfigError, match="no measurements of chip 'b200'"):
        calibrate(rows, chip="b200", engine="vllm")


def test_calibration_model_is_strict() -> None:
    with pytest.raises(ValueError):
        Calibration(name="x", chip="h100", engine="e", params=CostModelParams(), extra=1)  # type: ignore[call-arg]
    assert math.isfinite(load_calibration("h100-vllm").params.collective_base_us)
