"""How each measured engine schedules, in tokenmill's policies, and which calibration prices it.

Why: a measurement is only comparable with a simulation that batches the way the measured
engine did. This module maps a measurement (engine, version, kind of run, model) to the
scheduler settings tokenmill simulates it with, and names the calibration that describes the
engine's overheads on that chip. The settings are the engines' documented defaults, or the
flags the source states, with the version cited:

* vLLM V0 (before 0.8, so every vLLM row here): without chunked prefill a step holds whole
  prompts up to max_num_batched_tokens = max(max_model_len, 2048), decodes run alongside
  ('orca'); for models whose context exceeds 32K tokens vLLM 0.5-0.6 turned chunked prefill on
  by default with a 512-token budget ('sarathi' budget 512) unless the run says otherwise
  (vllm/engine/arg_utils.py, v0.5.x-v0.6.x). max_num_seqs 256 unless the run states it.
* vLLM V1 (0.8 and later): tokenmill's 'vllm' policy with vLLM's own defaults.
* TensorRT-LLM: the in-flight batcher packs whole context requests up to max_num_tokens = 8192
  per step with decodes alongside ('orca', budget 8192), also for run.py's static batches;
  offline throughput runs chunk contexts ('vllm' policy, budget 8192, max_batch_size 2048: the
  LLM API / trtllm-bench defaults of the 0.15-1.0 era).
* SGLang (0.3-0.4): chunked prefill of 8192 tokens ('vllm' policy budget 8192), up to 2048
  running requests, radix cache off as the runs state.
* Splitwise's profiler (a 2023 vLLM build): prompts are prefilled one per step (its prompt times
  grow linearly with the batch), decodes batched.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from .architecture import ModelArch
from .measurements import Measurement, context_for


# Fraction of chip memory tokenmill lets a TensorRT-LLM run use: its KV cache takes 0.9 of what
# the weights leave (kv_cache_free_gpu_mem_fraction 0.9, the LLM API default), which for the
# large models these runs serve is ~0.97 of the chip.
TRTLLM_MEMORY_UTILIZATION = 0.97


@dataclass(frozen=True)
class EngineRun:
    """The scheduler settings and calibration one measurement is simulated with."""

    engine: str
    scheduler: dict[str, object]   # SchedulerPolicy fields
    calibration_engine: str        # the engine part of the calibration name
    note: str = ""


def _version(text: str) -> Optional[tuple[int, int]]:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def engine_run(m: Measurement, engine: str, model: ModelArch) -> EngineRun:
    """Scheduler settings for measurement `m` of `engine` serving `model`."""
    notes = m.notes.lower() + " " + m.version.lower()
    seqs = _stated(r"max-num-seqs (\d+)", notes)
    if engine == "vllm":
        version = _version(m.version)
        if version is not None and version >= (0, 8) and "nightly" not in m.version.lower():
            return EngineRun(engine, {"name": "vllm"}, "vllm", "vLLM V1 defaults")
        context = _stated(r"max_model_len (\d+)", notes) or context_for(m.model)
        if context is None and m.source == "S06":
            context = 4096  # the S06 runs start vLLM with max_model_len 4096
        context = context or model.max_position_embeddings or 4096
        chunked = "chunked-prefill true" in notes or (
            context > 32768 and "chunked-prefill false" not in notes)
        if chunked:
            return EngineRun(engine, {"name": "sarathi", "max_batch_tokens": 512,
                                      "max_num_seqs": seqs or 256}, "vllm",
                             "vLLM V0 chunked prefill, 512-token budget")
        budget = max(context, 2048)
        return EngineRun(engine, {"name": "orca", "max_batch_tokens": budget,
                                  "max_num_seqs": max(seqs or 256, 1)}, "vllm",
                         f"vLLM V0 whole-prompt steps, budget {budget}")
    if engine == "trtllm":
        # TensorRT-LLM gives the KV cache 0.9 of the memory left after the weights
        # (kv_cache_free_gpu_mem_fraction), more than vLLM's 0.9 of the whole chip.
        memory = {"gpu_memory_utilization": TRTLLM_MEMORY_UTILIZATION}
        if m.kind == "static_batch" and m.batch and m.isl:
            # run.py hands the whole batch to the in-flight batcher, which packs whole
            # context requests up to max_num_tokens (8192) per step, decodes alongside.
            budget = max(8192, int(m.isl))
            return EngineRun(engine, {"name": "orca", "max_batch_tokens": budget,
                                      "max_num_seqs": max(m.batch, 1), **memory}, "trtllm",
                             f"TensorRT-LLM static batch, max_num_tokens {budget}")
        return EngineRun(engine, {"name": "vllm", "max_batch_tokens": 8192, "max_num_seqs": 2048,
                                  "prefix_caching": False, **memory}, "trtllm",
                         "TensorRT-LLM in-flight batching, max_num_tokens 8192")
    if engine == "sglang":
        return EngineRun(engine, {"name": "vllm", "max_batch_tokens": 8192, "max_num_seqs": 2048,
                                  "prefix_caching": False}, "sglang",
                         "SGLang chunked prefill 8192, radix cache off")
    if engine == "splitwise-vllm":
        isl = int(m.isl or 1)
        batch = max(m.batch or 1, 1)
        # A budget of one prompt plus every decode: each step admits exactly one prompt.
        return EngineRun(engine, {"name": "orca", "max_batch_tokens": isl + batch,
                                  "max_num_seqs": batch}, "splitwise",
                         "Splitwise profiler: one prompt per prefill step")
    raise ValueError(f"unknown engine {engine!r}")


def _stated(pattern: str, text: str) -> Optional[int]:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def is_offline(m: Measurement) -> bool:
    return m.rate is not None and math.isinf(m.rate)
