"""The tokenmill command: formats, config files, flag overrides, and clean errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

import tokenmill as tm
from tokenmill.cli import main

QUICK = ["--duration", "5", "--arrival-rate", "4"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits for --version and its own errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_text_summary_has_every_headline_figure(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", *QUICK)
    assert code == 0
    for needle in ("arrived", "finished", "unfinished", "TTFT", "TPOT", "ITL", "E2E", "p99",
                   "req/s", "output tok/s", "KV cache", "peak", "preemptions", "events",
                   "wall time", "llama-3.1-8b", "h100"):
        assert needle in out, needle


def test_json_output_is_valid_and_complete(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", *QUICK, "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["tokenmill_version"] == tm.__version__
    assert data["scenario"]["workload"]["duration_s"] == 5.0
    assert set(data["latency_ms"]) == {"ttft", "tpot", "itl", "e2e"}
    assert data["requests"]["arrived"] == data["requests"]["finished"]


def test_csv_output_is_one_header_and_one_row(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", *QUICK, "--output", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert float(rows[0]["latency_ms_ttft_p99"]) > 0
    assert rows[0]["resolved_model"] == "llama-3.1-8b"


def test_original_flag_names_set_the_scenario(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", "--model", "llama-8b", "--gpu", "h100", "--scheduler",
                           "continuous-batch", "--arrival-rate", "3", "--duration", "4",
                           "--prompt-mean", "256", "--output-mean", "64", "--tp", "2",
                           "--seed", "7", "--kv-block-size", "32", "--max-batch-tokens", "4096",
                           "--output", "json")
    assert code == 0
    sc = json.loads(out)["scenario"]
    assert sc["plan"]["tp"] == 2 and sc["seed"] == 7
    assert sc["scheduler"] == {**sc["scheduler"], "name": "orca", "kv_block_size": 32,
                               "max_batch_tokens": 4096}
    assert sc["workload"]["prompt"]["mean"] == 256.0 and sc["workload"]["output"]["mean"] == 64.0


def test_num_requests_stops_arrivals(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", "--num-requests", "25", "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["requests"]["total"] == 25
    assert data["scenario"]["workload"]["duration_s"] is None


def test_config_file_with_flag_override(tmp_path, capsys) -> None:
    cfg = tmp_path / "scenario.toml"
    cfg.write_text('seed = 5\n[workload]\narrival_rate = 2.0\nduration_s = 3.0\n'
                   '[workload.prompt]\nmean = 100.0\n[scheduler]\nmax_num_seqs = 64\n')
    code, out, _ = run_cli(capsys, "run", "--config", str(cfg), "--arrival-rate", "6",
                           "--output", "json")
    assert code == 0
    sc = json.loads(out)["scenario"]
    assert sc["seed"] == 5 and sc["scheduler"]["max_num_seqs"] == 64
    assert sc["workload"]["arrival_rate"] == 6.0  # the flag wins
    assert sc["workload"]["duration_s"] == 3.0 and sc["workload"]["prompt"]["mean"] == 100.0


@pytest.mark.parametrize("argv, needle", [
    (["--model", "gpt-17"], "unknown model 'gpt-17'; known models: "),
    (["--gpu", "h900"], "unknown gpu 'h900'; known gpus: "),
    (["--arrival-rate", "-1"], "workload.arrival_rate: Input should be greater than 0"),
    (["--duration", "0"], "workload.duration_s: Input should be greater than 0"),
    (["--tp", "3"], "plan.tp = 3 does not divide"),
    (["--scheduler", "fifo"], "unknown scheduler 'fifo'"),
    (["--kv-block-size", "0"], "scheduler.kv_block_size"),
    (["--gpu-memory-utilization", "0.1"], "does not fit on 1 x h100"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, needle) -> None:
    code, out, err = run_cli(capsys, "run", *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and out == ""


def test_config_with_unknown_key_is_refused(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.toml"
    # (burstiness became a real key with issue 5; burst_factor is not one)
    cfg.write_text("[workload]\narrival_rate = 2.0\nburst_factor = 3\n")
    code, _, err = run_cli(capsys, "run", "--config", str(cfg))
    assert code == 2
    assert f"scenario from {cfg}" in err and "workload.burst_factor: unknown key" in err


def test_unreadable_or_malformed_config(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "run", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read it" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[workload\n")
    code, _, err = run_cli(capsys, "run", "--config", str(broken))
    assert code == 2 and "not valid TOML" in err


def test_non_numeric_flag_is_an_argparse_error(capsys) -> None:
    code, _, err = run_cli(capsys, "run", "--arrival-rate", "fast")
    assert code == 2 and "'fast' is not a valid number" in err


def test_version(capsys) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"tokenmill {tm.__version__}"


def test_installed_entry_point_runs() -> None:
    exe = shutil.which("tokenmill")
    cmd = [exe] if exe else [sys.executable, "-m", "tokenmill.cli"]
    done = subprocess.run([*cmd, "run", *QUICK, "--output", "json"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requests"]["finished"] > 0
    bad = subprocess.run([*cmd, "run", "--model", "nope"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
