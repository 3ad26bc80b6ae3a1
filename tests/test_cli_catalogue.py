"""`tokenmill info`, `tokenmill list` and the catalogue flags of `tokenmill run`."""

from __future__ import annotations

import json

import pytest

from tokenmill.catalogue import fabric_presets, find_model, gpu_presets, model_presets, system_presets
from tokenmill.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_has_counts_bytes_and_verdict(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--model", "deepseek-v3", "--gpu", "h200", "--tp", "8",
                           "--weights", "fp8", "--output", "json")
    assert code == 0
    card = json.loads(out)
    assert card["params"]["total"] == find_model("deepseek-v3").total_params()
    assert abs(card["params"]["total"] / 671e9 - 1) < 0.001
    assert abs(card["params"]["active"] / 36.6e9 - 1) < 0.01
    assert card["kv_bytes_per_token"] == 70_272
    assert card["weight_bytes"] > 6e11 and card["memory"]["verdict"] == "fits"
    assert card["memory"]["kv_capacity_tokens"] == 16 * card["memory"]["kv_capacity_blocks"] > 0
    assert card["params"]["published"]["total_agrees"] and card["params"]["published"]["active_agrees"]
    assert card["precision"]["weights"] == "fp8" and card["plan"]["chips"] == 8


def test_info_text_and_a_plan_that_does_not_fit(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--model", "llama-3.1-70b", "--gpu", "h100")
    assert code == 0
    assert "DOES NOT FIT" in out and "smallest tensor-parallel degree that fits is tp = 4" in out
    code, out, _ = run_cli(capsys, "info", "--model", "llama-3.1-405b", "--gpu", "h100", "--tp", "8",
                           "--pp", "2", "--output", "json")
    card = json.loads(out)
    assert code == 0 and card["memory"]["fits"] and card["plan"]["chips"] == 16


def test_info_resolves_quantised_names_systems_and_files(capsys, tmp_path) -> None:
    code, out, _ = run_cli(capsys, "info", "--model", "llama-70b-w4a8kv4", "--output", "json")
    card = json.loads(out)
    assert code == 0 and card["model"]["name"] == "llama-3.1-70b"
    assert (card["precision"]["weights"], card["precision"]["activations"],
            card["precision"]["kv_cache"]) == ("int4", "fp8", "fp4")
    code, out, _ = run_cli(capsys, "info", "--model", "llama-3.1-405b", "--system", "gb200-nvl72",
                           "--tp", "16", "--output", "json")
    card = json.loads(out)
    assert code == 0 and card["gpu"]["name"] == "gb200" and card["gpu"]["scale_up_domain"] == 72
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 4,
                               "num_attention_heads": 8, "num_key_value_heads": 2,
                               "intermediate_size": 4096, "vocab_size": 1000}))
    code, out, _ = run_cli(capsys, "info", "--model", str(cfg), "--output", "json")
    card = json.loads(out)
    assert code == 0 and card["kv_bytes_per_token"] == 4 * 2 * 2 * 128 * 2


@pytest.mark.parametrize("argv, needle", [
    (["--model", "gpt-17"], "unknown model 'gpt-17'"),
    (["--model", "llama4-behemoth"], "only announced"),
    (["--gpu", "h100", "--tp", "3"], "plan.tp = 3 does not divide"),
    (["--weights", "fp2"], "weights: Input should be"),
    (["--model", "llama-70b-nvfp4-sparse", "--gpu", "h100"], "needs tensor cores h100 lacks"),
    (["--gpu", "gaudi3", "--sparsity", "2:4"], "gaudi3's tensor cores do not accelerate 2:4"),
    (["--system", "dgx-h100", "--gpu", "b200"], "built from h100, not b200"),
    (["--model", "mixtral-8x7b", "--ep", "4"], "plan.ep = 4 must divide plan.tp = 1"),
    (["--context", "0"], "--context must be >= 1"),
])
def test_info_bad_input_exits_2(capsys, argv, needle) -> None:
    code, out, err = run_cli(capsys, "info", *argv)
    assert code == 2 and needle in err and out == "" and "Traceback" not in err


@pytest.mark.parametrize("what, presets", [("gpus", gpu_presets), ("models", model_presets),
                                           ("systems", system_presets), ("fabrics", fabric_presets)])
def test_list_text_and_json(capsys, what, presets) -> None:
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0
    for name in presets():
        assert name in out
    code, out, _ = run_cli(capsys, "list", what, "--output", "json")
    rows = json.loads(out)
    assert code == 0 and {r["name"] for r in rows} >= set(presets())
    if what == "models":
        behemoth = [r for r in rows if r["name"] == "llama4-behemoth"]
        assert behemoth and behemoth[0]["status"] == "announced"
        ds = [r for r in rows if r["name"] == "deepseek-v3"][0]
        assert ds["total_params"] > 6.7e11 and ds["active_params"] < 4e10
    if what == "gpus":
        h100 = [r for r in rows if r["name"] == "h100"][0]
        assert h100["bf16_tflops"] == 989.4 and h100["memory_gib"] == 79.22


def test_list_needs_a_known_kind(capsys) -> None:
    code, _, err = run_cli(capsys, "list", "chips")
    assert code == 2 and "invalid choice" in err


def test_run_mixtral_and_deepseek_end_to_end(capsys) -> None:
    code, out, err = run_cli(capsys, "run", "--model", "mixtral-8x7b", "--gpu", "h100", "--tp", "2",
                             "--duration", "5", "--arrival-rate", "4", "--output", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["requests"]["finished"] == data["requests"]["arrived"] > 0
    code, out, err = run_cli(capsys, "run", "--model", "deepseek-v3", "--gpu", "h200", "--tp", "8",
                             "--weights", "fp8", "--duration", "5", "--arrival-rate", "1",
                             "--output", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["scenario"]["precision"]["weights"] == "fp8" and data["requests"]["finished"] > 0
    code, out, err = run_cli(capsys, "run", "--model", "deepseek-v3", "--gpu", "h200", "--tp", "8")
    assert code == 2 and "does not fit on 8 x h200" in err and out == ""


@pytest.mark.parametrize("argv, needle", [
    (["--model", "llama-3.1-405b", "--tp", "16"], "scale-up domain"),
    (["--sparsity", "2:4", "--gpu", "tpu-v6e"], "do not accelerate 2:4"),
    (["--system", "nope-9000"], "unknown system 'nope-9000'"),
    (["--weights", "int4", "--activations", "int8", "--gpu", "b200", "--kv-cache", "int4"], "kv_cache"),
])
def test_run_refuses_clearly(capsys, argv, needle) -> None:
    code, out, err = run_cli(capsys, "run", *argv)
    assert code == 2 and needle in err and out == ""


def test_run_accepts_the_new_precision_flags(capsys) -> None:
    code, out, err = run_cli(capsys, "run", "--model", "llama-70b-nvfp4-sparse", "--system",
                             "dgx-b200", "--duration", "3", "--arrival-rate", "2", "--output", "json")
    assert code == 0, err
    sc = json.loads(out)["scenario"]
    assert sc["system"] == "dgx-b200" and sc["precision"]["sparsity"] == "2:4"
    code, out, err = run_cli(capsys, "run", "--weights", "w4a16", "--duration", "3", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["scenario"]["precision"]["weights"] == "int4"
