"""Outputs: text, JSON, CSV and vllm-bench, files, the per-request table, and bad output flags."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

import tokenmill as tm
from tokenmill.cli import main
from tokenmill.vllm_bench import peak_concurrency, peak_tokens_per_s, vllm_bench_dict

SMALL = ["--num-requests", "200", "--arrival-rate", "20"]

# The keys `vllm bench serve --save-result` writes (vllm/benchmarks/serve.py at 009e6d4a),
# without the date and the per-request lists, with p90/p95/p99 and e2el percentiles.
VLLM_KEYS = {
    "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
    "burstiness", "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx",
} | {f"{s}_{m}_ms" for s in ("mean", "median", "std", "p90", "p95", "p99")
      for m in ("ttft", "tpot", "itl", "e2el")}


def test_vllm_bench_output_has_vllms_keys_and_definitions(capsys) -> None:
    assert main(["run", *SMALL, "--slo-ttft-ms", "30", "--output", "vllm-bench"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert VLLM_KEYS <= set(data) and set(data) - VLLM_KEYS == {"tokenmill"}
    assert data["tokenmill"]["version"] == tm.__version__
    assert data["tokenmill"]["scenario"]["metrics"]["slo_ttft_ms"] == 30.0
    r = tm.simulate(tm.Scenario(workload=tm.Workload(num_requests=200, arrival_rate=20.0)))
    rec = r.requests
    done = rec.finished
    ttft = (rec.ttft_s[done]) * 1e3
    assert data["completed"] == r.num_finished and data["failed"] == 0
    assert math.isclose(data["mean_ttft_ms"], float(ttft.mean()))
    assert math.isclose(data["median_ttft_ms"], float(np.median(ttft)))
    assert math.isclose(data["std_ttft_ms"], float(ttft.std()))
    assert math.isclose(data["p99_ttft_ms"], float(np.percentile(ttft, 99)))
    assert math.isclose(data["mean_itl_ms"], r.itl_ms.mean)
    assert math.isclose(data["request_throughput"], r.num_finished / r.duration_s)
    assert data["request_goodput"] == pytest.approx(int((ttft <= 30).sum()) / r.duration_s)
    assert data["request_rate"] == 20.0 and data["burstiness"] == 1.0
    assert vllm_bench_dict(r)["request_goodput"] is None  # no SLO: null, as vLLM without --goodput


def test_peak_tokens_and_concurrency_known_answers() -> None:
    # two requests: A arrives at 0, first token 0.5, completes 2.5 with 5 tokens (4 after the
    # first, spread over [0.5, 2.5]: 1 in [0.5, 1.5) ... ); B one token at 0.2
    first = np.array([0.5, 0.2])
    done = np.array([2.5, 0.2])
    out = np.array([5, 1])
    # buckets of 1 s from t0 = 0.2: [0.2,1.2) holds B's token, A's first, and 0.7 s x 2 tok/s
    assert peak_tokens_per_s(first, done, out) == pytest.approx(1 + 1 + 1.4)
    assert peak_concurrency(np.array([0.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 2


def test_json_records_scenario_version_energy_and_cost(capsys) -> None:
    assert main(["run", *SMALL, "--output", "json", "--timeseries"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokenmill_version"] == tm.__version__
    assert data["scenario"]["workload"]["arrival_rate"] == 20.0
    for key in ("energy", "cost", "load", "ttft_breakdown_ms"):
        assert data[key] is not None, key
    assert data["energy"]["energy_kj"] > 0 and data["cost"]["cost_usd"] > 0
    assert len(data["timeseries"]["power_w"]) == len(data["timeseries"]["start_s"])
    assert {"std", "p90", "p95"} <= set(data["latency_ms"]["ttft"])


def test_csv_is_one_flat_row(capsys) -> None:
    assert main(["run", *SMALL, "--output", "csv", "--price-per-hour", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    row = rows[0]
    assert float(row["energy_energy_kj"]) > 0 and float(row["cost_cost_usd"]) > 0
    assert row["tokenmill_version"] == tm.__version__


def test_text_shows_energy_cost_goodput_and_steady_state(capsys) -> None:
    assert main(["run", "--arrival-rate", "20", "--duration", "30", "--slo-ttft-ms", "40",
                 "--slo-tpot-ms", "20", "--warmup", "5", "--cooldown", "5"]) == 0
    out = capsys.readouterr().out
    for needle in ("energy ", " kJ, mean power", "cost       $", "per million output tokens",
                   "goodput ", "TTFT <= 40 ms, TPOT <= 20 ms", "steady state: requests arriving in [5, ",
                   "TTFT parts (mean ms)", "load       time-weighted"):
        assert needle in out, needle


def test_output_file_and_request_tables(tmp_path, capsys) -> None:
    summary = tmp_path / "out.json"
    table = tmp_path / "requests.csv"
    assert main(["run", *SMALL, "--output", "json", "--output-file", str(summary),
                 "--requests-file", str(table)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(summary.read_text())["requests"]["total"] == 200
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(rows) == 200 and rows[0]["status"] == "finished"
    assert {"arrival_s", "ttft_queue_s", "ttft_prefill_s", "ttft_other_s", "replica"} <= set(rows[0])


def test_parquet_and_arrow_when_pyarrow_is_installed(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "requests.parquet"
    assert main(["run", *SMALL, "--requests-file", str(path)]) == 0
    table = pq.read_table(path)
    assert table.num_rows == 200 and "ttft_kv_transfer_s" in table.column_names
    r = tm.simulate(tm.Scenario(workload=tm.Workload(num_requests=200, arrival_rate=20.0)))
    np.testing.assert_array_equal(table.column("first_token_s").to_numpy(), r.requests.first_token_s)


def test_pandas_when_installed() -> None:
    pytest.importorskip("pandas")
    r = tm.simulate(tm.Scenario(workload=tm.Workload(num_requests=50, arrival_rate=20.0)))
    df = r.requests.to_pandas()
    assert len(df) == 50 and (df["status"] == "finished").all()
    np.testing.assert_array_equal(df["ttft_s"].to_numpy(), r.requests.ttft_s)


@pytest.mark.parametrize("argv,needle", [
    (["--requests-file", "x.xlsx"], "valid: .parquet, .csv"),
    (["--warmup", "1000"], "metrics.warmup_s"),
    (["--slo-ttft-ms", "-5"], "metrics.slo_ttft_ms"),
    (["--price-per-hour", "1", "--decode-price-per-hour", "2"], "not both"),
    (["--pue", "0.5"], "power.pue"),
    (["--output-file", "/nonexistent-dir/out.txt"], "cannot write"),
])
def test_bad_result_flags_exit_2_naming_the_field(argv, needle, capsys) -> None:
    assert main(["run", *SMALL, *argv]) == 2
    assert needle in capsys.readouterr().err
