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
from .catalogue import find_fabric, find_gpu, find_model, find_system
from .costparams import CostModelParams
from .hardware import Hardware
from .precision import Precision, split_variant
from .workloads.config import (LengthDistribution, RateProfile, RequestClass,  # noqa: F401
                               TraceSource, Workload)
from .cluster_config import Disaggregation, PoolPlan, RouterConfig, SpeculativeDecoding  # noqa: F401
from .results_config import MetricsConfig, PowerModel, Pricing

# Accepted scheduler names and the policy each one selects.
SCHEDULER_ALIASES = {
    "orca": "orca", "continuous-batch": "orca", "vllm": "vllm", "sarathi": "sarathi",
    "chunked-prefill": "sarathi", "static": "static",
}


class Plan(StrictModel):
    """How the model is laid out over chips: a replica is pp stages of tp chips; the entry
    pool has `replicas` of them (data parallelism)."""

    tp: PositiveInt = Field(default=1, description="Tensor-parallel degree (chips per stage).")
    pp: PositiveInt = Field(
        default=1, description="Pipeline stages per replica (each runs its share of the layers; "
        "micro-batches fill the pipeline, docs/cluster.md).")
    ep: PositiveInt = Field(
        default=1, description="Expert-parallel groups inside the tensor-parallel group (must "
        "divide tp and the experts). The MoE layers then dispatch and combine tokens with "
        "all-to-alls instead of all-reducing.")
    replicas: PositiveInt = Field(default=1, description="Identical replicas behind the router.")
    gpus: Optional[PositiveInt] = Field(
        default=None, description="Total chips, instead of replicas: replicas = gpus / (tp x pp); "
        "without an explicit tp the smallest tp that fits the model is chosen.")


class SchedulerPolicy(StrictModel):
    """How a replica picks the requests of each batch step (rules: docs/schedulers.md).

    Limits left as None take the policy's own defaults (see tokenmill.policy), which for
    'vllm' depend on the chip, as in vLLM itself."""

    name: Literal["orca", "vllm", "sarathi", "static"] = Field(
        default="orca",
        description="'orca' (also 'continuous-batch'): iteration-level batching, whole prompts; "
        "'vllm': vLLM V1's scheduler (running first, chunked prefill, prefix caching); "
        "'sarathi' (also 'chunked-prefill'): stall-free batching with a small token budget; "
        "'static': request-level batching.")
    max_batch_tokens: Optional[PositiveInt] = Field(
        default=None, description="Token budget of one step, decodes included (vLLM's "
        "max_num_batched_tokens; Sarathi's chunk size). None: the policy's default.")
    max_num_seqs: Optional[PositiveInt] = Field(
        default=None, description="Most requests running at once. None: the policy's default.")
    kv_block_size: PositiveInt = Field(
        default=16, description="Tokens per paged KV block (vLLM's default block size).")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Fraction of chip memory the engine may use (vLLM's default 0.9).")
    kv_blocks: Optional[PositiveInt] = Field(
        default=None, description="Override the KV capacity per replica, in blocks "
        "(None: derived from memory).")
    priority_scheduling: bool = Field(
        default=False, description="Serve waiting requests by (priority, arrival) and preempt "
        "the lowest-priority, latest-arriving running request (vLLM's 'priority' policy).")
    preemption: Literal["recompute", "swap"] = Field(
        default="recompute", description="What preemption does with the victim's KV: free it "
        "and prefill again later (vLLM V1), or copy it to host memory and back (vLLM V0 swap).")
    swap_space_gib: float = Field(
        default=4.0, ge=0.0, description="Host memory per chip for swapped-out KV, GiB "
        "(vLLM V0's default swap_space).")
    prefix_caching: Optional[bool] = Field(
        default=None, description="Reuse cached KV blocks of shared prompt prefixes. None: on "
        "for 'vllm' (its V1 default), off otherwise.")

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
        if self.name == "static" and self.prefix_caching:
            raise ValueError("prefix_caching is not modelled with request-level (static) batching")
        return self


def _calibrated_cost(calibration: str, given: object) -> object:
    """The calibration's parameters with the explicitly given cost fields on top."""
    from .calibration import load_calibration

    base = load_calibration(calibration).params.model_dump()
    if isinstance(given, CostModelParams):
        given = given.model_dump(exclude_unset=True)
    if not isinstance(given, dict):
        return base if given is None else given
    if given.get("step_overhead_ms") is not None:  # one number for both overheads wins
        base.pop("prefill_step_overhead_ms")
        base.pop("decode_step_overhead_ms")
    return {**base, **given}


class Scenario(StrictModel):
    """Everything one simulation needs. Build it, then pass it to tokenmill.simulate()."""

    model: Union[str, ModelArch] = Field(
        default="llama-3.1-8b", description="Model preset name or alias, a path to a Hugging "
        "Face config.json, or a ModelArch.")
    gpu: Union[str, Hardware] = Field(
        default="h100", description="Chip preset name or alias, a path to a chip TOML/JSON/YAML, "
        "or a Hardware.")
    system: Optional[str] = Field(
        default=None, description="System preset (dgx-h100, gb200-nvl72, ...): selects its chip "
        "and scale-up domain. None: the chip's own standard domain.")
    precision: Precision = Field(default=Precision(), description="Number formats.")
    plan: Plan = Field(default=Plan(), description="Parallel layout of one replica.")
    scheduler: SchedulerPolicy = Field(default=SchedulerPolicy(), description="Batching policy.")
    workload: Workload = Field(default=Workload(), description="The requests to serve.")
    cost: CostModelParams = Field(default=CostModelParams(), description="Cost-model parameters "
                                  "(efficiencies and overheads; a calibration fills them).")
    calibration: Optional[str] = Field(
        default=None, description="Shipped calibration name (e.g. 'h100-vllm') or calibration "
        "file whose parameters fill `cost`; fields given in `cost` override it.")
    kernel_table: Optional[str] = Field(
        default=None, description="CSV of measured step or operator times (gpu, model, op, "
        "batch_size, seq_len, latency_ms) that override the cost model where they apply.")
    router: RouterConfig = Field(default=RouterConfig(), description="Request routing.")
    disaggregation: Optional[Disaggregation] = Field(
        default=None, description="Separate prefill and decode pools (None: unified replicas).")
    speculative: Optional[SpeculativeDecoding] = Field(
        default=None, description="Speculative decoding or MTP heads (None: off).")
    fabric: Optional[str] = Field(
        default=None, description="Scale-out fabric preset between nodes (None: the system's "
        "default, else ndr-400).")
    seed: int = Field(default=42, ge=0, description="Seed of every random draw in the run.")
    stop_time_s: Optional[PositiveFloat] = Field(
        default=None, description="Stop the simulation at this time and report what is "
        "unfinished (None: run until every admitted request finishes).")
    metrics: MetricsConfig = Field(default=MetricsConfig(), description="SLOs for goodput, "
                                   "the steady-state window and the time-series resolution.")
    power: PowerModel = Field(default=PowerModel(), description="How chip power follows work.")
    pricing: Pricing = Field(default=Pricing(), description="Chip-hour prices (None: presets).")

    @model_validator(mode="before")
    @classmethod
    def _resolve_names(cls, data: object) -> object:
        """A quantised preset name (llama-70b-fp8) is a model plus a precision; a system names
        its chip. Explicit precision fields and an explicit gpu win."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.get("model")
        variant = split_variant(model) if isinstance(model, str) else None
        if variant is not None:
            base, fields = variant
            given = data.get("precision", {})
            if isinstance(given, Precision):
                given = given.model_dump(exclude_unset=True)
            data["model"] = base
            data["precision"] = {**fields, **(given if isinstance(given, dict) else {})}
        system = data.get("system")
        if isinstance(system, str):
            chip = find_system(system).chip
            if "gpu" not in data:
                data["gpu"] = chip
        calibration = data.get("calibration")
        if isinstance(calibration, str):
            data["cost"] = _calibrated_cost(calibration, data.get("cost"))
        return _plan_from_gpus(data)

    @field_validator("fabric")
    @classmethod
    def _known_fabric(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            find_fabric(v)
        return v

    @field_validator("kernel_table")
    @classmethod
    def _readable_table(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            from .kernel_table import KernelTable

            KernelTable.load(v)  # refuse a missing or malformed file up front
        return v

    @field_validator("system")
    @classmethod
    def _known_system(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            find_system(v)
        return v

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
        model.check_expert_parallel(self.plan.tp, self.plan.ep)
        model.stage_layers(self.plan.pp, 0)
        hw = self.hardware()
        if self.system is not None:
            sys_chip = find_system(self.system).chip
            if find_gpu(sys_chip).name != hw.name:
                raise ValueError(f"system {self.system!r} is built from {sys_chip}, not {hw.name}; "
                                 "drop gpu or pick a system of that chip")
        tier = self.precision.compute_dtype
        if hw.tier_tflops(tier) is None:
            raise ValueError(
                f"precision.activations = {tier!r} needs {tier.upper()} tensor cores, which "
                f"{hw.name} lacks; valid activations on {hw.name}: {', '.join(hw.compute_tiers())}")
        if self.precision.sparsity and not hw.sparsity_2_4:
            raise ValueError(f"precision.sparsity = {self.precision.sparsity!r} but {hw.name}'s "
                             "tensor cores do not accelerate 2:4 sparsity; valid: none")
        from .policy import resolve_policy  # needs the chip: vLLM's defaults depend on it

        resolve_policy(self.scheduler, hw)
        if self.plan.tp > hw.scale_up_domain:
            raise ValueError(f"plan.tp = {self.plan.tp} exceeds {hw.name}'s scale-up domain of "
                             f"{hw.scale_up_domain} chips; tensor parallelism across nodes is "
                             "not modelled (use pipeline stages across nodes)")
        plan = self.plan
        if plan.gpus is not None and plan.tp * plan.pp * plan.replicas != plan.gpus:
            raise ValueError(f"plan.gpus = {plan.gpus} but tp x pp x replicas = "
                             f"{plan.tp} x {plan.pp} x {plan.replicas} = "
                             f"{plan.tp * plan.pp * plan.replicas}")
        spec = self.speculative
        pools_pp = [plan.pp] if self.disaggregation is None else [
            self.disaggregation.prefill.pp or plan.pp, self.disaggregation.decode.pp or plan.pp]
        if spec is not None and max(pools_pp) > 1:
            raise ValueError("speculative decoding is not modelled with pipeline parallelism")
        if spec is not None and self.scheduler.preemption == "swap":
            raise ValueError("speculative decoding is not modelled with swap preemption")
        if self.disaggregation is not None:
            if self.scheduler.name == "static":
                raise ValueError("request-level (static) batching is not modelled with "
                                 "disaggregated prefill and decode")
            if plan.replicas != 1 or plan.gpus is not None:
                raise ValueError("with disaggregation give replicas per pool "
                                 "(disaggregation.prefill.replicas, .decode.replicas), not "
                                 "plan.replicas or plan.gpus")
            for role, pool in (("prefill", self.disaggregation.prefill),
                               ("decode", self.disaggregation.decode)):
                chip = self.hardware_named(pool.gpu) if pool.gpu else hw
                model.check_tensor_parallel(pool.tp or plan.tp)
                model.stage_layers(pool.pp or plan.pp, 0)
                if (pool.tp or plan.tp) > chip.scale_up_domain:
                    raise ValueError(f"disaggregation.{role}.tp = {pool.tp or plan.tp} exceeds "
                                     f"{chip.name}'s scale-up domain of {chip.scale_up_domain}")
        if self.router.name == "prefix-affinity" and not self.scheduler.name == "vllm" \
                and not self.scheduler.prefix_caching:
            raise ValueError("router 'prefix-affinity' needs prefix caching: use scheduler "
                             "'vllm' or set scheduler.prefix_caching = true")
        return self

    def hardware_named(self, name: str) -> Hardware:
        """Another chip of the scenario (a disaggregated pool's), with its own scale-up domain."""
        return find_gpu(name)

    def model_arch(self) -> ModelArch:
        return self.model if isinstance(self.model, ModelArch) else find_model(self.model)

    def hardware(self) -> Hardware:
        """The chip, with the system's scale-up domain when a system is named."""
        hw = self.gpu if isinstance(self.gpu, Hardware) else find_gpu(self.gpu)
        if self.system is not None:
            domain = find_system(self.system).scale_up_domain
            if domain != hw.scale_up_domain:
                hw = hw.model_copy(update={"scale_up_domain": domain})
        return hw


def _plan_from_gpus(data: dict) -> dict:
    """plan.gpus given without replicas: derive replicas (and tp, if not given, as the smallest
    degree that fits the model in memory and divides the chips)."""
    plan = data.get("plan")
    if isinstance(plan, Plan):
        plan = plan.model_dump(exclude_unset=True)
    if not isinstance(plan, dict) or plan.get("gpus") is None or "replicas" in plan:
        return data
    gpus, pp = plan["gpus"], plan.get("pp", 1)
    if not isinstance(gpus, int) or not isinstance(pp, int) or gpus < 1 or pp < 1:
        return data  # the field validators report it
    plan = dict(plan)
    if "tp" not in plan:
        plan["tp"] = _smallest_fitting_tp(data, gpus, pp)
    if gpus % (plan["tp"] * pp) != 0:
        raise ValueError(f"plan.gpus = {gpus} is not a multiple of tp x pp = {plan['tp']} x {pp}")
    plan["replicas"] = gpus // (plan["tp"] * pp)
    return {**data, "plan": plan}


def _smallest_fitting_tp(data: dict, gpus: int, pp: int) -> int:
    from .architecture import valid_tp_degrees
    from .errors import CapacityError
    from .memory import plan_memory

    model_ref = data.get("model", "llama-3.1-8b")
    model = find_model(model_ref) if isinstance(model_ref, str) else model_ref
    gpu = data.get("gpu", "h100")
    hw = find_gpu(gpu) if isinstance(gpu, str) else gpu
    precision = data.get("precision", Precision())
    if isinstance(precision, dict):
        precision = Precision.model_validate(precision)
    sched = data.get("scheduler", SchedulerPolicy())
    if isinstance(sched, dict):
        sched = SchedulerPolicy.model_validate(sched)
    for tp in valid_tp_degrees(model, limit=hw.scale_up_domain):
        if gpus % (tp * pp):
            continue
        try:
            plan_memory(model, hw, precision, tp, sched, pp=pp)
        except CapacityError:
            continue
        return tp
    raise ValueError(f"plan.gpus = {gpus}: no tensor-parallel degree within {hw.name}'s scale-up "
                     f"domain divides {gpus} / pp {pp} and fits {model.name}")
