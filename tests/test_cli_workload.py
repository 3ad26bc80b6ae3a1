"""Workload flags of `tokenmill run` and the `tokenmill workload describe` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tokenmill.cli import main

DATA = Path(__file__).with_name("data")
AZURE = str(DATA / "azure2023_code_head300.csv")
MOONCAKE = str(DATA / "mooncake_conversation_head300.jsonl")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "run", *argv, "--output", "json")
    assert code == 0, err
    return json.loads(out)


def test_arrival_and_length_flags_set_the_scenario(capsys) -> None:
    d = run_json(capsys, "--arrival-rate", "8", "--burstiness", "2.5", "--duration", "5",
                 "--prompt-dist", "normal", "--prompt-mean", "300", "--prompt-sigma", "80",
                 "--prompt-min", "16", "--prompt-max", "600", "--output-dist", "uniform",
                 "--output-min", "4", "--output-max", "40")
    w = d["scenario"]["workload"]
    assert w["arrival_process"] == "gamma" and w["burstiness"] == 2.5
    assert w["prompt"] == {"kind": "normal", "mean": 300.0, "sigma": 80.0, "min": 16, "max": 600,
                           "source": None, "column": None}
    assert w["output"]["kind"] == "uniform" and (w["output"]["min"], w["output"]["max"]) == (4, 40)


def test_fixed_prompt_is_exact(capsys) -> None:
    d = run_json(capsys, "--prompt-dist", "fixed", "--prompt-mean", "1000", "--num-requests", "20")
    assert d["scenario"]["workload"]["prompt"]["mean"] == 1000.0
    assert d["throughput"]["total_tokens_per_s"] * d["throughput"]["duration_s"] == pytest.approx(
        20 * 1000 + d["throughput"]["output_tokens_per_s"] * d["throughput"]["duration_s"])


def test_offline_and_closed_loop_flags(capsys) -> None:
    d = run_json(capsys, "--arrival-rate", "inf", "--num-requests", "40")
    assert d["scenario"]["workload"]["arrival_rate"] == "inf"
    assert d["requests"]["finished"] == 40
    d = run_json(capsys, "--concurrency", "4", "--num-requests", "30", "--think-time", "0.5")
    w = d["scenario"]["workload"]
    assert (w["concurrency"], w["think_time_s"], w["arrival_rate"]) == (4, 0.5, "inf")
    assert d["requests"]["finished"] == 30
    # 30 requests, 4 clients, 0.5 s think each time: at least 6 think gaps in a row
    assert d["throughput"]["duration_s"] > 6 * 0.5


def test_trace_flags(capsys) -> None:
    a = run_json(capsys, "--workload", f"trace:{AZURE}")
    b = run_json(capsys, "--trace", AZURE, "--trace-format", "azure2023")
    assert a["requests"] == b["requests"] and a["latency_ms"] == b["latency_ms"]
    assert a["requests"]["total"] == 300
    assert a["scenario"]["workload"]["trace"]["path"] == AZURE
    assert b["scenario"]["workload"]["trace"]["format"] == "azure"
    c = run_json(capsys, "--trace", MOONCAKE, "--trace-end", "30", "--trace-speedup", "2",
                 "--trace-repeat", "2", "--num-requests", "150", "--max-batch-tokens", "131072")
    t = c["scenario"]["workload"]["trace"]
    assert (t["end_s"], t["speedup"], t["repeat"]) == (30.0, 2.0, 2)
    assert c["requests"]["total"] == 150
    assert c["workload"]["counts"]["over_limit"] > 0
    d = run_json(capsys, "--trace", AZURE, "--trace-rate", "inf", "--concurrency", "16")
    assert d["requests"]["finished"] == 300


def test_rate_profiles_and_classes_from_flags(capsys) -> None:
    d = run_json(capsys, "--rate-schedule", "0:1,5:3", "--duration", "10", "--class",
                 "chat:share=3,slo-ttft-ms=100", "--class",
                 "batch:share=1,priority=1,prompt-dist=fixed,prompt-mean=2000")
    w = d["scenario"]["workload"]
    assert w["rate_profile"]["steps"] == [[0.0, 1.0], [5.0, 3.0]]
    assert w["classes"][1]["prompt"]["mean"] == 2000.0 and w["classes"][1]["priority"] == 1
    assert [c["name"] for c in d["classes"]] == ["chat", "batch"]
    d = run_json(capsys, "--diurnal-amplitude", "0.5", "--diurnal-period", "10", "--duration", "10")
    assert d["scenario"]["workload"]["rate_profile"] == {
        "kind": "diurnal", "steps": None, "amplitude": 0.5, "period_s": 10.0, "peak_s": 0.0}


@pytest.mark.parametrize("argv, needle", [
    (["--arrival-process", "gamma"], "needs burstiness"),
    (["--arrival-rate", "inf"], "needs num_requests"),
    (["--think-time", "1"], "needs concurrency"),
    (["--prompt-dist", "fixed", "--prompt-mean", "10.5"], "whole number of tokens"),
    (["--prompt-dist", "uniform"], "uniform lengths need min and max"),
    (["--prompt-dist", "gaussian"], "invalid choice: 'gaussian'"),
    (["--workload", "poisson"], "expected synthetic or trace:PATH"),
    (["--trace", "/nonexistent/trace.csv"], "no such trace file"),
    (["--trace", AZURE, "--trace-format", "parquet"], "unknown trace format 'parquet'; known: azure"),
    (["--trace", AZURE, "--arrival-rate", "5"], "rescale time with trace.rate"),
    (["--rate-schedule", "0-1"], "expected START:FACTOR pairs"),
    (["--rate-schedule", "0:1", "--diurnal-amplitude", "0.3"], "give one"),
    (["--class", "chat:speed=3"], "keys: share, priority"),
    (["--class", "chat:priority=high"], "priority = 'high' is not a valid whole number"),
    (["--trace-speedup", "2"], "workload.trace.path: required but missing"),
])
def test_bad_workload_flags_exit_2_with_a_clear_message(capsys, argv, needle) -> None:
    code, out, err = run_cli(capsys, "run", *argv)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err and out == ""


def test_malformed_trace_on_the_command_line(tmp_path, capsys) -> None:
    lines = Path(AZURE).read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:5] + ["2023-11-16 18:17:05.0,12"] + lines[5:]) + "\n")
    code, _, err = run_cli(capsys, "run", "--trace", str(bad))
    assert code == 2 and f"{bad}, line 6: has 2 fields; the header has 3" in err
    code, out, _ = run_cli(capsys, "run", "--trace", str(bad), "--skip-bad-rows")
    assert code == 0 and "note: skipped 1 malformed rows" in out


def test_describe_text_and_json(capsys) -> None:
    code, out, _ = run_cli(capsys, "workload", "describe", "--trace", MOONCAKE)
    assert code == 0
    for needle in ("300 over", "mean rate", "burstiness (CV of gaps)", "prompt", "output", "p99",
                   "sharing ratio", "read 300 rows"):
        assert needle in out, needle
    code, out, _ = run_cli(capsys, "workload", "describe", "--num-requests", "1000",
                           "--arrival-rate", "20", "--class", "a:share=1", "--class",
                           "b:share=3,priority=2", "--seed", "3", "--output", "json")
    d = json.loads(out)
    assert d["requests"] == 1000
    assert d["arrivals"]["mean_rate_per_s"] == pytest.approx(20.0, rel=0.1)
    assert d["arrivals"]["burstiness_cv"] == pytest.approx(1.0, abs=0.1)
    assert [c["name"] for c in d["classes"]] == ["a", "b"] and d["classes"][1]["priority"] == 2
    assert d["classes"][1]["fraction"] == pytest.approx(0.75, abs=0.04)
    assert d["prompt_tokens"]["p50"] > 0 and d["prefix_sharing"] is None
    code, out, _ = run_cli(capsys, "workload", "describe", "--concurrency", "8",
                           "--num-requests", "10", "--output", "json")
    d = json.loads(out)
    assert d["arrivals"]["closed_loop"] == {"concurrency": 8, "think_time_s": 0.0}
    assert d["arrivals"]["mean_rate_per_s"] is None


def test_describe_errors_and_usage(tmp_path, capsys) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("when,in,out\n1,2,3\n")
    code, out, err = run_cli(capsys, "workload", "describe", "--trace", str(odd))
    assert code == 2 and "unknown trace format" in err and "mooncake" in err and out == ""
    code, out, _ = run_cli(capsys, "workload")
    assert code == 2 and "describe" in out


def test_config_file_workload_with_flag_override(tmp_path, capsys) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[workload]\nconcurrency = 2\nnum_requests = 12\n'
                   '[workload.prompt]\nkind = "fixed"\nmean = 128\n')
    d = run_json(capsys, "--config", str(cfg), "--concurrency", "3")
    w = d["scenario"]["workload"]
    assert w["concurrency"] == 3 and w["prompt"]["kind"] == "fixed"
    assert d["requests"]["finished"] == 12
    assert math.isinf(float(w["arrival_rate"]))
