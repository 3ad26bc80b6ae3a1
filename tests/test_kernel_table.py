"""Kernel tables: measured step and operator times override the model inside their range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tokenmill as tm
from tokenmill import _core
from tokenmill.catalogue import find_gpu, find_model
from tokenmill.costmodel import StepShape, coefficients, gpu_seconds, step_seconds
from tokenmill.costparams import CostModelParams
from tokenmill.errors import ConfigError
from tokenmill.kernel_table import KernelTable
from tokenmill.precision import Precision

TABLE = """gpu,model,op,batch_size,seq_len,latency_ms
h100,llama-3.1-8b,decode,1,512,6.0
h100,llama-3.1-8b,decode,1,2048,7.0
h100,llama-3.1-8b,decode,64,512,10.0
h100,llama-3.1-8b,decode,64,2048,16.0
H100-SXM,Llama-3.1-8B,prefill,1,512,20.0
H100-SXM,Llama-3.1-8B,prefill,1,1024,36.0
h100,llama-3.1-8b,mlp_up_proj,1,1,0.05
h100,llama-3.1-8b,mlp_up_proj,1024,1,0.25
a100,llama-3.1-8b,decode,1,512,99.0
"""


def _cost(table: KernelTable, params: CostModelParams = CostModelParams()):
    return coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, params,
                        kernel_table=table)


def _framework(c, logits: float, prefill: bool) -> float:
    return (c.overhead_prefill_s if prefill else c.overhead_decode_s) + c.overhead_per_token_s * logits


def test_decode_table_known_answers_at_points_midpoints_and_outside() -> None:
    c = _cost(KernelTable.parse(TABLE))
    plain = _cost(KernelTable.parse("\n".join(line for line in TABLE.splitlines()
                                              if ",decode," not in line) + "\n"))
    corner = StepShape(decode_tokens=64, logit_tokens=64, decode_context=64 * 2048)
    assert step_seconds(c, corner) == pytest.approx(_framework(c, 64, False) + 16.0e-3)
    # bilinear: batch halfway (32.5) and context halfway (1280) -> mean of the four corners
    mid = StepShape(decode_tokens=32.5, logit_tokens=32.5, decode_context=32.5 * 1280)
    assert step_seconds(c, mid) == pytest.approx(_framework(c, 32.5, False) + (6 + 7 + 10 + 16) / 4 * 1e-3)
    # along one axis only: batch 1, context 1280 -> between 6 and 7 ms
    edge = StepShape(decode_tokens=1, logit_tokens=1, decode_context=1280)
    assert step_seconds(c, edge) == pytest.approx(_framework(c, 1, False) + 6.5e-3)
    # outside the table (batch 100) the model prices the step, as it does without a table
    out = StepShape(decode_tokens=100, logit_tokens=100, decode_context=100 * 1000)
    assert step_seconds(c, out) == step_seconds(plain, out)
    # a mixed step is the model's too
    mixed = StepShape(prefill_tokens=100, prefill_pairs=5050, logit_tokens=2, decode_tokens=1,
                      decode_context=600)
    assert step_seconds(c, mixed) == step_seconds(plain, mixed)


def test_prefill_table_and_op_table() -> None:
    c = _cost(KernelTable.parse(TABLE))
    s = StepShape(prefill_tokens=768, prefill_pairs=768 * 769 / 2, logit_tokens=1)
    assert step_seconds(c, s) == pytest.approx(_framework(c, 1, True) + 28.0e-3)
    # a prefill with a cached prefix is not a table step: the op table still applies inside it
    hit = StepShape(prefill_tokens=512, prefill_pairs=512 * 600, prefill_context=344, logit_tokens=1)
    no_ops = coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, CostModelParams())
    rows = 512.0
    delta = gpu_seconds(c, hit) - gpu_seconds(no_ops, hit)
    modelled = max(no_ops.mlp_in_flops_per_row * (rows + no_ops.gemm_half_rows) / no_ops.flops_per_s,
                   (no_ops.mlp_in_weight_bytes + no_ops.mlp_in_act_bytes_per_row * rows) / no_ops.bytes_per_s)
    table = (0.05 + (0.25 - 0.05) * (512 - 1) / (1024 - 1)) * 1e-3 * 32  # per layer x 32 layers
    assert delta == pytest.approx(table - modelled, rel=1e-9)


def test_compiled_kernel_interpolates_exactly_like_the_twin() -> None:
    c = _cost(KernelTable.parse(TABLE))
    arr = c.to_array()
    rng = np.random.default_rng(2)
    for _ in range(500):
        d = float(rng.integers(0, 80))
        p = 0.0 if d and rng.random() < 0.6 else float(rng.integers(1, 1500))
        args = (p, p * (p + 1) / 2, 0.0, float(rng.integers(1, 3)) + d, d, d * float(rng.integers(400, 2400)))
        assert _core.step_time(arr, *args) == step_seconds(c, StepShape(*args))


def test_rows_of_other_chips_models_or_tp_do_not_apply() -> None:
    table = KernelTable.parse(TABLE)
    assert all(r.gpu.lower().startswith("h100") for r in table.matching(model="llama-3.1-8b", gpu="h100", tp=1))
    with pytest.raises(ConfigError, match="no rows for gpu 'b200'"):
        table.matching(model="llama-3.1-8b", gpu="b200", tp=1)
    tp2 = KernelTable.parse("gpu,model,op,batch_size,seq_len,latency_ms,tp\nh100,llama-3.1-8b,decode,1,8,5,2\n")
    with pytest.raises(ConfigError, match="at tp 1"):
        tp2.matching(model="llama-3.1-8b", gpu="h100", tp=1)


@pytest.mark.parametrize("text, match", [
    ("gpu,model,op,batch_size,latency_ms\nh100,m,decode,1,2\n", "missing column"),
    ("gpu,model,op,batch_size,seq_len,latency_ms\nh100,m,softmax,1,1,2\n", "line 2: op"),
    ("gpu,model,op,batch_size,seq_len,latency_ms\nh100,m,decode,1,1,-2\n", "latency_ms"),
    ("gpu,model,op,batch_size,seq_len,latency_ms\nh100,m,decode,x,1,2\n", "batch_size"),
])
def test_malformed_tables_are_refused_with_the_line(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KernelTable.parse(text)


def test_incomplete_step_grid_is_refused() -> None:
    text = TABLE.replace("h100,llama-3.1-8b,decode,64,2048,16.0\n", "")
    with pytest.raises(ConfigError, match="batch_size 64, seq_len 2048"):
        _cost(KernelTable.parse(text))


def test_long_op_tables_keep_evenly_spread_points_and_both_ends() -> None:
    rows = "\n".join(f"h100,llama-3.1-8b,qkv_proj,{m},1,{0.01 * m}" for m in range(1, 101))
    table = KernelTable.parse("gpu,model,op,batch_size,seq_len,latency_ms\n" + rows + "\n")
    c = _cost(table)
    n = int(c.kt_op_n[0])
    assert n == _core.KERNEL_TABLE_ROWS
    assert c.kt_op_rows[0] == 1.0 and c.kt_op_rows[n - 1] == 100.0


def test_scenario_and_cli_take_a_kernel_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "kt.csv"
    path.write_text(TABLE)
    wl = tm.Workload(arrival_rate=2.0, num_requests=20,
                     prompt=tm.LengthDistribution(mean=512, sigma=0.0),
                     output=tm.LengthDistribution(mean=8, sigma=0.0))
    with_table = tm.simulate(tm.Scenario(workload=wl, kernel_table=str(path)))
    plain = tm.simulate(tm.Scenario(workload=wl))
    assert with_table.cost.has_kernel_table and not plain.cost.has_kernel_table
    assert with_table.ttft_ms.p50 != plain.ttft_ms.p50
    from tokenmill.cli import main

    assert main(["run", "--num-requests", "5", "--kernel-table", str(path), "--output", "json"]) == 0
    capsys.readouterr()
    assert main(["run", "--kernel-table", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
