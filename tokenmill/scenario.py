"""What a user asks tokenmill to simulate: a strict, frozen description, validated up front.

A Scenario names a model and a chip (presets, or objects built by hand), a parallel plan, a
serving policy, a workload and the cost model's parameters. Construction fails with an error
naming the field and the valid choices, so nothing wrong reaches the simulation.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ._validation import StrictModel
from .architecture import ModelArch
from .catalogue import find_gpu, find_model
from .hardware import Dtype, Hardware
from .workloads.config import (LengthDistribution, RateProfile, RequestClass,  # noqa: F401
                               TraceSource, Workload)

# Accepted scheduler names and the policy each one selects.
SCHEDULER_ALIASES = {"orca": "orca", "continuous-batch": "orca"}


class Precision(StrictModel):
    """Number formats of the weights, the activations and the KV cache."""

    weights: Dtype = Field(default="bf16", description="Format of the matmul weights.")
    activations: Dtype = Field(
        default="bf16", description="Format matmuls compute in; fp8 needs fp8 weights too.")
    kv_cache: Optional[Dtype] = Field(
        default=None, description="Format of the KV cache; None means the activations' format "
        "(a weight-only quantised model keeps a 16-bit cache, as vLLM does by default).")

    @model_validator(mode="after")
    def _check(self) -> "Precision":
        if self.activations == "fp8" and self.weights != "fp8":
            raise ValueError("activations = 'fp8' needs weights = 'fp8' (W8A8)")
        return self

    @property
    def kv_dtype(self) -> Dtype:
        return self.kv_cache or ("bf16" if self.activations == "fp8" else self.activations)

    @property
    def compute_dtype(self) -> Dtype:
        return "fp8" if self.activations == "fp8" else self.activations


class Plan(StrictModel):
    """How one replica of the model is laid out over chips."""

    tp: PositiveInt = Field(default=1, description="Tensor-parallel degree (chips per replica).")


class SchedulerPolicy(StrictModel):
    """How a replica picks the requests of each batch step."""

    name: Literal["orca"] = Field(
        default="orca",
        description="Batching policy. 'orca' (also accepted as 'continuous-batch', the original "
        "tokenmill's name): iteration-level batching with whole-prompt prefill.")
    max_batch_tokens: PositiveInt = Field(
        default=8192, description="Token budget of one step: decodes plus prompt tokens "
        "(vLLM's max_num_batched_tokens; the original tokenmill's default 8192).")
    max_num_seqs: PositiveInt = Field(
        default=256, description="Most requests running at once (vLLM's max_num_seqs default).")
    kv_block_size: PositiveInt = Field(
        default=16, description="Tokens per paged KV block (vLLM's default block size).")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Fraction of chip memory the engine may use (vLLM's default 0.9).")
    kv_blocks: Optional[PositiveInt] = Field(
        default=None, description="Override the KV capacity per replica, in blocks "
        "(None: derived from memory).")

    @field_validator("name", mode="before")
    @classmethod
    def _canonical_name(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() in SCHEDULER_ALIASES:
            return SCHEDULER_ALIASES[v.strip().lower()]
        if isinstance(v, str):
            raise ValueError(f"unknown scheduler {v!r}; known: {', '.join(SCHEDULER_ALIASES)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "SchedulerPolicy":
        if self.max_batch_tokens < self.max_num_seqs:
            raise ValueError(f"max_batch_tokens ({self.max_batch_tokens}) must be >= max_num_seqs "
                             f"({self.max_num_seqs}) so that every running request can decode")
        return self


class CostModelParams(StrictModel):
    """Achieved fractions of peak and fixed overheads of the step roofline.

    Defaults are provisional round figures (a dense GEMM typically sustains ~70% of peak on
    Hopper, a decode step ~80% of HBM bandwidth, NCCL all-reduce ~75% of NVLink bandwidth, a
    vLLM step ~1 ms of CPU work with CUDA graphs); `tokenmill calibrate` will fit them."""

    compute_efficiency: float = Field(default=0.70, gt=0.0, le=1.0,
                                      description="Achieved fraction of peak tensor FLOP/s.")
    memory_efficiency: float = Field(default=0.80, gt=0.0, le=1.0,
                                     description="Achieved fraction of peak memory bandwidth.")
    collective_efficiency: float = Field(default=0.75, gt=0.0, le=1.0,
                                         description="Achieved fraction of scale-up bandwidth.")
    step_overhead_ms: float = Field(default=1.0, ge=0.0,
                                    description="Framework time per step (scheduling, sampling).")


class Scenario(StrictModel):
    """Everything one simulation needs. Build it, then pass it to tokenmill.simulate()."""

    model: Union[str, ModelArch] = Field(
        default="llama-3.1-8b", description="Model preset name or alias, a path to a Hugging "
        "Face config.json, or a ModelArch.")
    gpu: Union[str, Hardware] = Field(
        default="h100", description="Chip preset name or alias, a path to a chip TOML/JSON, "
        "or a Hardware.")
    precision: Precision = Field(default=Precision(), description="Number formats.")
    plan: Plan = Field(default=Plan(), description="Parallel layout of one replica.")
    scheduler: SchedulerPolicy = Field(default=SchedulerPolicy(), description="Batching policy.")
    workload: Workload = Field(default=Workload(), description="The requests to serve.")
    cost: CostModelParams = Field(default=CostModelParams(), description="Cost-model parameters.")
    seed: int = Field(default=42, ge=0, description="Seed of every random draw in the run.")
    stop_time_s: Optional[PositiveFloat] = Field(
        default=None, description="Stop the simulation at this time and report what is "
        "unfinished (None: run until every admitted request finishes).")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: Union[str, ModelArch]) -> Union[str, ModelArch]:
        if isinstance(v, str):
            find_model(v)  # raises ConfigError, listing the known models
        return v

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: Union[str, Hardware]) -> Union[str, Hardware]:
        if isinstance(v, str):
            find_gpu(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Scenario":
        model = self.model_arch()
        model.check_tensor_parallel(self.plan.tp)
        hw = self.hardware()
        if self.precision.compute_dtype == "fp8" and hw.fp8_tflops is None:
            raise ValueError(f"precision.activations = 'fp8' but {hw.name} has no FP8 tensor cores")
        if self.plan.tp > hw.scale_up_domain:
            raise ValueError(f"plan.tp = {self.plan.tp} exceeds {hw.name}'s scale-up domain of "
                             f"{hw.scale_up_domain} chips; tensor parallelism across nodes is "
                             "not modelled")
        return self

    def model_arch(self) -> ModelArch:
        return self.model if isinstance(self.model, ModelArch) else find_model(self.model)

    def hardware(self) -> Hardware:
        return self.gpu if isinstance(self.gpu, Hardware) else find_gpu(self.gpu)
