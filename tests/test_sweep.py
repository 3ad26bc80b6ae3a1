"""Sweeps and studies: grids over flags and fields, parallel and in order, tables, JSON, CSV."""

from __future__ import annotations

import csv
import io
import json

import pytest

import tokenmill as tm
from tokenmill.cli import main
from tokenmill.errors import ConfigError

SMALL = ["--num-requests", "150"]


def test_grid_of_flags_in_order_and_the_same_for_any_job_count(capsys) -> None:
    argv = ["sweep", "--arrival-rate", "5,10,20", "--tp", "1,2", *SMALL, "--output", "json"]
    assert main([*argv, "--jobs", "1"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert main([*argv, "--jobs", "2"]) == 0
    parallel = json.loads(capsys.readouterr().out)
    params = [p["parameters"] for p in serial["points"]]
    assert params == [{"arrival-rate": r, "tp": t} for r in (5, 10, 20) for t in (1, 2)]
    for a, b in zip(serial["points"], parallel["points"]):
        assert a["parameters"] == b["parameters"] and a["scenario"] == b["scenario"]
        a["summary"].pop("simulation"), b["summary"].pop("simulation")  # wall times differ
        assert a["summary"] == b["summary"]
    assert serial["tokenmill_version"] == tm.__version__
    assert serial["points"][3]["scenario"]["plan"]["tp"] == 2
    assert serial["points"][3]["scenario"]["workload"]["arrival_rate"] == 10.0


def test_set_sweeps_any_field_and_csv_has_one_row_per_point(capsys) -> None:
    assert main(["sweep", "--set", "scheduler.max_num_seqs=8,64", "--set", "cost.step_overhead_ms=0.5,2",
                 *SMALL, "--output", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4
    assert [(r["scheduler.max_num_seqs"], r["cost.step_overhead_ms"]) for r in rows] == [
        ("8", "0.5"), ("8", "2"), ("64", "0.5"), ("64", "2")]
    assert all(float(r["latency_ms_ttft_p50"]) > 0 for r in rows)


def test_table_and_progress_line(capsys) -> None:
    assert main(["sweep", "--arrival-rate", "5,10", *SMALL, "--progress", "--slo-ttft-ms", "100"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:4] == ["arrival-rate", "req/s", "tok/s", "TTFT"]
    assert "goodput" in lines[0] and len(lines) == 4 and lines[-1].startswith("2 points")
    assert "2/2 points" in captured.err


def test_python_sweep_api_and_error_points() -> None:
    s = tm.sweep(tm.Scenario(workload=tm.Workload(num_requests=100, arrival_rate=5.0)),
                 {"model": ["llama-3.1-8b", "llama-3.1-70b"]}, jobs=1)
    ok, too_big = s.points
    assert ok.error is None and ok.summary["requests"]["finished"] == 100
    assert too_big.error is not None and "does not fit" in too_big.error and too_big.summary is None
    assert [r["model"] for r in s.rows()] == ["llama-3.1-8b", "llama-3.1-70b"]
    with pytest.raises(ConfigError, match="no values"):
        tm.sweep(tm.Scenario(), {"plan.tp": []})


def test_study_matrix_with_json_out(tmp_path, capsys) -> None:
    out = tmp_path / "study.json"
    assert main(["study", "--study-models", "llama-3.1-8b,llama-3.1-70b", "--study-gpus", "h100",
                 "--study-systems", "dgx-h200", "--study-tps", "1,8", "--study-arrival-rates", "2",
                 "--num-requests", "40", "--json-out", str(out)]) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert len(data["points"]) == 2 * 2 * 2
    first = data["points"][0]["parameters"]
    assert first == {"model": "llama-3.1-8b", "chip": "h100", "tp": 1, "arrival_rate": 2}
    errors = [p for p in data["points"] if p["error"]]
    assert errors and all("llama-3.1-70b" in p["parameters"]["model"] for p in errors)
    assert "does not fit" in table and table.splitlines()[-1].startswith("8 points")


@pytest.mark.parametrize("argv,needle", [
    (["sweep", *SMALL], "at least one flag with comma-separated values"),
    (["sweep", "--arrival-rate", "5,-1", *SMALL], "workload.arrival_rate"),
    (["sweep", "--no-such-flag", "1,2"], "unknown flag '--no-such-flag'"),
    (["sweep", "--set", "plan.tp"], "expected FIELD=V1,V2"),
    (["sweep", "--set", "plan.nonsense=1,2", *SMALL], "plan.nonsense"),
    (["study", *SMALL], "give at least one of --study-models"),
])
def test_bad_sweeps_exit_2(argv, needle, capsys) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_sweep_help_lists_its_options(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--help"])
    assert exc.value.code == 0
    assert "--jobs" in capsys.readouterr().out
