"""The validation harness: what it simulates, what it skips and why, fit vs held-out rows, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenmill.calibrate import calibrate
from tokenmill.cli import main
from tokenmill.measurements import parse_measurements
from tokenmill.replay import Resolved, resolve, workload
from tokenmill.engine import simulate
from tokenmill.validate import render, to_json, validate

HEADER = ("point_id,source_id,measurement_class,hardware,model,precision_weights,precision_kv,tp,"
          "framework,framework_version,dataset,isl,osl,num_requests,concurrency,request_rate_rps,"
          "batch_size,ttft_median_ms,tpot_median_ms,e2e_mean_ms,output_tok_s,req_s,notes")
ROWS = [
    # simulated: a static batch on H100 (vLLM) and a Poisson run on H200 (SGLang)
    "P1,SX,static_batch,H100-SXM-80GB,Meta-Llama-3-8B,BF16,BF16,1,vLLM,0.5,fixed,128,128,,,,16,,,1100,,,",
    "P2,SX,latency_at_fixed_rate_poisson,H200-SXM-141GB,Llama-3.1-8B-Instruct,BF16,BF16,1,SGLang,0.4,"
    "random (nominal in 512 / out 256 range_ratio 0),512,256,200,,2,,40,8,,900,2.0,",
    # the same point again (from another file): dropped as a duplicate
    "P3,SX,static_batch,H100-SXM-80GB,Meta-Llama-3-8B,BF16,BF16,1,vLLM,0.5,fixed,128,128,,,,16,,,1100,,,",
    # a closed loop of 8 clients (simulated as one)
    "P6,SX,latency_at_fixed_concurrency,H100-SXM-80GB,Llama-3.1-8B,BF16,BF16,1,vLLM,0.6,fixed,128,128,"
    "100,8,,,30,9,,,,",
    # skipped, each for its own reason
    "P4,SX,static_batch,GH200 (CG1),Llama-3.1-8B,BF16,BF16,1,vLLM,0.5,fixed,128,128,,,,16,,,900,,,",
    "P5,SX,static_batch,H100-SXM-80GB,Llama-3.1-8B,BF16,BF16,1,llama.cpp,b1,fixed,128,128,,,,16,,,900,,,",
    "P7,SX,static_batch,H100-SXM-80GB,OPT-66B,BF16,BF16,1,vLLM,0.5,fixed,128,128,,,,16,,,900,,,",
    # faster than reading 16 GB of weights 127 times at 3.35 TB/s allows: stopped early
    "P8,SX,static_batch,H100-SXM-80GB,Llama-3.1-8B,BF16,BF16,1,vLLM,0.5,fixed,128,128,,,,1,,,40,,,",
]


def _rows():
    return parse_measurements("\n".join([HEADER] + ROWS) + "\n", "small.csv")


def test_rows_are_simulated_skipped_or_deduplicated_with_reasons() -> None:
    report = validate(_rows())
    assert report.rows == 7 and report.duplicates == 1
    simulated = {c.measurement.id for c in report.comparisons}
    assert simulated == {"P1", "P2", "P6"}
    reasons = " | ".join(report.skipped)
    assert "GH200" in reasons and "llama.cpp" in reasons
    assert "no model preset for 'OPT-66B'" in reasons and "stopped before its output length" in reasons
    assert sum(report.skipped.values()) == 4
    metrics = {(c.measurement.id, c.metric) for c in report.comparisons}
    assert ("P1", "batch_latency_ms") in metrics
    assert {("P2", "ttft_median_ms"), ("P2", "tpot_median_ms")} <= metrics
    # an unsaturated fixed-rate run's throughput is its offered load: compared never
    assert ("P2", "req_s") not in metrics
    assert sum(report.skipped_metrics.values()) == 2
    assert all(c.held_out for c in report.comparisons)
    sglang = next(c for c in report.comparisons if c.measurement.id == "P2")
    assert sglang.calibration == "h200-vllm (for sglang)"


def test_rows_a_calibration_was_fitted_on_are_reported_apart(tmp_path: Path) -> None:
    rows = _rows()
    cal = calibrate([m for m in rows if m.id == "P1"] * 1 + _static_family(), chip="h100",
                    engine="vllm").calibration
    path = tmp_path / "cal.json"
    cal.save(path)
    report = validate(rows, calibration=str(path))
    p1 = [c for c in report.comparisons if c.measurement.id == "P1"]
    assert p1 and not p1[0].held_out          # fitted on P1 (and on P3, its duplicate)
    assert all(c.held_out for c in report.comparisons if c.measurement.id == "P2")
    s = report.summary()
    assert s["fit_batch"]["n"] == 1 and s["held_out_serving"]["n"] >= 2


def _static_family():
    lines = [HEADER] + [
        f"Q{k},SY,static_batch,H100-SXM-80GB,Meta-Llama-3-8B,BF16,BF16,1,vLLM,0.5,fixed,{L},{L},,,,{b},,,"
        f"{ms},,," for k, (b, L, ms) in enumerate([(1, 256, 2000), (32, 256, 2700), (8, 512, 4300),
                                                     (64, 128, 1700), (16, 1024, 11000)])]
    return parse_measurements("\n".join(lines) + "\n", "family.csv")


def test_replay_builds_the_run_the_measurement_describes() -> None:
    rows = {m.id: m for m in _rows()}
    r = resolve(rows["P2"])
    assert isinstance(r, Resolved) and r.chip == "h200" and r.engine.engine == "sglang"
    wl = workload(rows["P2"])
    assert len(wl) == 200 and wl.prompt_tokens.max() <= 512 and wl.output_tokens.min() >= 1
    assert 1.5 < 200 / wl.arrival_s[-1] < 2.6   # Poisson at 2 req/s
    closed = resolve(rows["P6"])
    assert isinstance(closed, Resolved)
    scenario = closed.scenario()
    assert scenario.workload.concurrency == 8 and scenario.workload.num_requests == 100
    result = simulate(scenario, workload=workload(rows["P6"]))
    assert result.num_finished == 100
    # never more than 8 requests outstanding: the 9th is sent when the first one finishes
    req = result.requests
    order = np.argsort(req.arrival_s, kind="stable")
    assert np.all(req.arrival_s[order][8:] >= np.sort(req.completion_s)[:92] - 1e-12)


def test_the_measured_plan_is_replayed_as_given() -> None:
    row = ("P9,SX,latency_at_fixed_rate_poisson,H100-SXM-80GB,Llama-3.1-70B-Instruct,BF16,BF16,4,"
           "vLLM,0.6,fixed,512,128,200,,2,,80,20,,,,")
    header = HEADER.replace(",tp,", ",tp,pp,dp_or_replicas,")
    cells = row.split(",")
    cells[7:8] = ["4", "2", "2"]
    m = parse_measurements(header + "\n" + ",".join(cells) + "\n", "plan.csv")[0]
    r = resolve(m)
    assert isinstance(r, Resolved) and (r.tp, r.pp, r.replicas) == (4, 2, 2)
    plan = r.scenario().plan
    assert (plan.tp, plan.pp, plan.replicas) == (4, 2, 2)


def test_render_and_json() -> None:
    report = validate(_rows())
    text = render(report)
    assert "Held-out rows: MAPE by chip, model and metric" in text and "Skipped rows" in text
    md = render(report, markdown=True)
    assert "| chip | model | metric |" in md
    data = json.loads(to_json(report))
    assert data["duplicates"] == 1 and len(data["comparisons"]) == len(report.comparisons)


def test_cli_validate_and_calibrate(tmp_path: Path, capsys) -> None:
    small = tmp_path / "small.csv"
    small.write_text("\n".join([HEADER] + ROWS) + "\n")
    assert main(["validate", "--measurements", str(small), "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 7
    family = tmp_path / "family.csv"
    family.write_text("\n".join([HEADER] + [ROWS[0]] + [
        f"Q{k},SY,static_batch,H100-SXM-80GB,Meta-Llama-3-8B,BF16,BF16,1,vLLM,0.5,fixed,{L},{L},,,,{b},,,{ms},,,"
        for k, (b, L, ms) in enumerate([(1, 256, 2000), (32, 256, 2700), (8, 512, 4300), (64, 128, 1700)])]) + "\n")
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--measurements", str(family), "--chip", "h100", "--engine", "vllm",
                 "--out", str(out)]) == 0
    assert "MAPE" in capsys.readouterr().out
    assert main(["run", "--num-requests", "5", "--calibration", str(out), "--output", "json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert ran["scenario"]["calibration"] == str(out)
    assert main(["run", "--num-requests", "5", "--calibration", "h100-vllm"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--list"]) == 0
    assert "h200-vllm" in capsys.readouterr().out
    assert main(["calibrate", "--measurements", str(family), "--chip", "b200", "--engine", "vllm"]) == 2
    assert "no measurements of chip 'b200'" in capsys.readouterr().err
    assert main(["calibrate", "--chip", "h100"]) == 2
    assert main(["run", "--calibration", "nope"]) == 2
    assert "shipped" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["validate", "--measurements", str(bad)]) == 2
    assert "unrecognised measurement format" in capsys.readouterr().err


def test_transfer_command_writes_a_held_out_calibration(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    assert main(["calibrate", "--transfer-from", "h100-vllm", "--chip", "h200", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["chip"] == "h200" and data["fitted_rows"] == [] and data["notes"].startswith("transferred")


@pytest.mark.slow
def test_shipped_calibrations_meet_the_batch_goal_on_their_fit_rows() -> None:
    from tokenmill.measurements import load_measurements

    data = Path(__file__).resolve().parent.parent / "validation" / "data"
    rows = [m for m in load_measurements(data / "argonne_static_batch.csv")
            if m.hardware.startswith("H100") and "Llama-3-8B" in m.model]
    report = validate(rows)
    fit = report.summary()["fit_batch"]
    assert fit["n"] > 50 and fit["mape"] < 10.0
