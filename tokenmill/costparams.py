"""The calibratable parameters of the step-cost model: achieved efficiencies and overheads.

Why a module of its own: these are the numbers `tokenmill calibrate` fits to measurements and a
calibration file stores, for one (chip, engine) pair. Everything else in the cost model is
derived exactly from the model, the chip's datasheet and the plan (tokenmill.operators,
tokenmill.collectives); these parameters say how far real kernels and real engines fall short
of the datasheet.

Defaults are round figures from public measurements, each cited on its field. They describe a
well-tuned engine on an NVIDIA data-centre GPU with CUDA graphs for decode steps (vLLM, SGLang,
TensorRT-LLM in 2024-2025). Shipped calibrations (tokenmill/data/calibrations/) replace them with
fitted values for the chips and engines the project has data for.
"""

from __future__ import annotations

import math
from typing import Optional

from pydantic import Field, PositiveInt, field_validator, model_validator

from ._validation import StrictModel


class CostModelParams(StrictModel):
    """Achieved fractions of peak, kernel and launch costs, and framework overheads.

    Sources of the defaults:
    * GEMMs, element-wise kernels and the per-kernel floor: this model fitted to Vidur's operator
      profiles (microsoft/vidur data/profiling/compute, MIT; Sarathi-Serve kernels, FP16) of
      Llama-2-7B/70B and Llama-3-8B/70B at TP 1-8 (validation/data/vidur_gemm_ops.csv): large-GEMM
      efficiency 0.756 (A100) and 0.769 (H100), half-saturation 91 and 186 rows, weight streaming
      0.74 and 0.81 of HBM bandwidth, 3.8 and 3.1 us per kernel, element-wise kernels at 0.55 and
      0.64 of HBM bandwidth (tokenmill/data/calibrations/*.json, docs/validation.md).
    * Attention: FlashAttention-2 reaches 50-73% of A100 peak and 35-50% of H100 peak in the
      forward pass (Dao, FlashAttention-2, 2023, fig. 5-7); decode attention reads the KV cache
      at 87% of HBM bandwidth and a 112-token chunk over 2,048 cached tokens runs at 18% of peak
      (Vidur's A100 / Llama-2-7B attention profile, shared/data/profiling/README.md).
    * Collectives: fitted to Vidur's NCCL all-reduce profiles inside one DGX node: 0.78 (H100)
      and 0.53 (A100) of the NVLink bandwidth per direction, 23-32 us per call as timed from
      PyTorch (NCCL's LL protocol itself needs ~1 us per hop).
    * KV reads and per-sequence CPU time: the static-batch fits (Argonne, vLLM 0.5 and
      TensorRT-LLM) put decode attention at 0.77-0.83 of HBM bandwidth and the per-sequence
      sampling and output work at 11-75 us.
    * Kernel launches without graphs: ~5 us of CPU per kernel (cudaLaunchKernel's few
      microseconds plus PyTorch's dispatch), so an eager step lasts at least kernels x 5 us.
    * Framework: ~1 ms of CPU work per step with CUDA graphs and asynchronous output processing
      (vLLM v0.6+, the foundation's default), graphs captured up to 512 sequences (vLLM V1:
      min(2 x max_num_seqs, 512)), prefills run eagerly (vLLM V0; V1 captures piecewise graphs).
    """

    compute_efficiency: float = Field(
        default=0.76, gt=0.0, le=1.0,
        description="Fraction of the dense tensor peak a large GEMM achieves (the efficiency "
        "curve's ceiling).")
    gemm_half_rows: float = Field(
        default=128.0, ge=0.0,
        description="Rows (tokens) at which a GEMM reaches half its ceiling efficiency: the "
        "achieved efficiency is compute_efficiency x M / (M + gemm_half_rows).")
    memory_efficiency: float = Field(
        default=0.78, gt=0.0, le=1.0,
        description="Fraction of peak memory bandwidth achieved streaming weights.")
    kv_read_efficiency: float = Field(
        default=0.8, gt=0.0, le=1.0,
        description="Fraction of peak memory bandwidth achieved reading and writing the KV cache.")
    elementwise_efficiency: float = Field(
        default=0.6, gt=0.0, le=1.0,
        description="Fraction of peak memory bandwidth achieved by element-wise kernels (norms, "
        "rotary, activation, residual adds, MoE permutation).")
    attention_efficiency: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="Fraction of the dense tensor peak a large attention kernel achieves.")
    attention_half_pairs: float = Field(
        default=4.0e5, ge=0.0,
        description="Query-key pairs at which a prefill's attention reaches half its ceiling "
        "efficiency (small chunks leave most SMs idle).")
    expert_spread: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="Fraction of a MoE layer's routed experts a step's tokens are spread over: "
        "1 is uniform routing (E(1 - (1 - k/E)^T) experts touched); skewed routing, as on the "
        "random-token prompts of synthetic benchmarks, touches fewer.")
    kernel_floor_us: float = Field(
        default=3.5, ge=0.0,
        description="GPU time every kernel takes however small its work (launch latency, ramp "
        "up and tail), microseconds.")
    launch_us: float = Field(
        default=5.0, ge=0.0,
        description="CPU time to launch one kernel without CUDA graphs, microseconds; an eager "
        "step takes at least kernels x launch_us.")
    cuda_graphs: bool = Field(
        default=True, description="Decode-only steps replay CUDA graphs (no per-kernel launch).")
    graph_max_batch: PositiveInt = Field(
        default=512, description="Largest decode batch with a captured graph; larger decode "
        "steps launch eagerly.")
    prefill_graphs: bool = Field(
        default=False, description="Steps that prefill also replay graphs (vLLM V1 piecewise "
        "graphs, TensorRT-LLM engines); False: they launch eagerly.")
    collective_efficiency: float = Field(
        default=0.75, gt=0.0, le=1.0,
        description="Fraction of the link bandwidth per direction collectives achieve.")
    collective_base_us: float = Field(
        default=20.0, ge=0.0,
        description="Fixed time of every collective call (launch and synchronisation), microseconds.")
    step_overhead_ms: Optional[float] = Field(
        default=None, ge=0.0,
        description="Framework time per step, both kinds (the foundation's knob and the original "
        "tokenmill's --step-overhead-ms); when given it sets prefill_step_overhead_ms and "
        "decode_step_overhead_ms.")
    prefill_step_overhead_ms: float = Field(
        default=1.0, ge=0.0,
        description="CPU time of a step that prefills (scheduling, input preparation, sampling "
        "launch), milliseconds.")
    decode_step_overhead_ms: float = Field(
        default=1.0, ge=0.0,
        description="CPU time of a decode-only step, milliseconds.")
    per_sequence_overhead_us: float = Field(
        default=20.0, ge=0.0,
        description="CPU time per sequence that samples a token in the step (sampling, "
        "detokenisation, output processing), microseconds.")

    per_sequence_per_rank_us: float = Field(
        default=0.0, ge=0.0,
        description="Extra CPU time per sampled sequence for every tensor-parallel rank beyond "
        "the first, microseconds: engines that ship each step's inputs from a driver to worker "
        "processes (vLLM V0 with Ray or multiprocessing) pay it; single-process engines do not.")

    @field_validator("gemm_half_rows", "attention_half_pairs", "kernel_floor_us", "launch_us",
                     "collective_base_us", "prefill_step_overhead_ms", "decode_step_overhead_ms",
                     "per_sequence_overhead_us", "per_sequence_per_rank_us")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="before")
    @classmethod
    def _legacy_overhead(cls, data: object) -> object:
        # step_overhead_ms (one number for every step) fills both overheads unless they are given.
        if isinstance(data, dict) and data.get("step_overhead_ms") is not None:
            data = dict(data)
            for key in ("prefill_step_overhead_ms", "decode_step_overhead_ms"):
                data.setdefault(key, data["step_overhead_ms"])
        return data
