"""Accelerator descriptions: the figures the cost model and the memory planner need."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from ._validation import NameTuple, StrictModel

GIB = 1024**3

# Kept for the foundation's callers; tokenmill.precision holds the full set of formats.
Dtype = Literal["bf16", "fp16", "fp8"]


class Hardware(StrictModel):
    """One accelerator chip. Throughputs are dense (never the 2:4-sparse headline figure)."""

    name: str = Field(description="Preset name, lower case (e.g. 'h100').")
    display_name: str = Field(description="Full product name.")
    vendor: str = Field(description="Maker, lower case (nvidia, amd, google, ...).")
    aliases: NameTuple = Field(default=(), description="Other names accepted for this chip.")
    memory_kind: Literal["hbm", "gddr", "sram"] = Field(
        description="What the model weights and KV cache live in.")
    memory_gib: PositiveFloat = Field(
        description="Device memory the serving framework can see, in GiB.")
    memory_bandwidth_tbps: PositiveFloat = Field(description="Peak memory bandwidth, TB/s.")
    bf16_tflops: PositiveFloat = Field(description="Dense BF16 tensor throughput, TFLOP/s.")
    fp16_tflops: Optional[PositiveFloat] = Field(
        default=None, description="Dense FP16 tensor throughput, TFLOP/s (None: as BF16).")
    fp8_tflops: Optional[PositiveFloat] = Field(
        default=None, description="Dense FP8 tensor throughput, TFLOP/s; None if unsupported.")
    fp4_tflops: Optional[PositiveFloat] = Field(
        default=None, description="Dense FP4 tensor throughput, TFLOP/s; None if unsupported.")
    int8_tops: Optional[PositiveFloat] = Field(
        default=None, description="Dense INT8 tensor throughput, TOP/s; None if unsupported.")
    sparsity_2_4: bool = Field(
        default=False, description="Whether the tensor cores accelerate 2:4 structured sparsity.")
    sram_mb: NonNegativeFloat = Field(default=0.0, description="On-chip SRAM (L2 or equivalent), MB.")
    scale_up_bandwidth_gbps: NonNegativeFloat = Field(
        default=0.0,
        description="Scale-up link bandwidth per chip (NVLink, Infinity Fabric, ICI), GB/s, "
        "aggregate of both directions as datasheets quote it; 0 if the chip has none.")
    scale_up_latency_us: NonNegativeFloat = Field(
        default=0.0, description="Latency of one scale-up hop, microseconds.")
    scale_up_domain: PositiveInt = Field(
        default=1, description="Chips in one scale-up domain of the standard system.")
    host_link_gbps: NonNegativeFloat = Field(
        default=0.0, description="Host link bandwidth per direction, GB/s (KV swapping).")
    tdp_w: PositiveFloat = Field(description="Thermal design power, watts.")
    idle_w: NonNegativeFloat = Field(description="Power drawn when idle, watts.")
    price_per_hour_usd: Optional[NonNegativeFloat] = Field(
        default=None, description="Typical price per chip-hour, USD; None when not rentable.")
    estimates: NameTuple = Field(
        default=(), description="Fields whose values are estimates rather than published figures.")
    sources: dict[str, str] = Field(
        default_factory=dict, description="Source of each figure, keyed by field name.")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    def tier_tflops(self, tier: str) -> Optional[float]:
        """Dense peak of one tensor-core tier (bf16, fp16, fp8, int8, fp4); None if the chip
        has no such tier. FP16 falls back to the BF16 rate where only that is published."""
        if tier == "fp16":
            return self.fp16_tflops if self.fp16_tflops is not None else self.bf16_tflops
        return {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "int8": self.int8_tops,
                "fp4": self.fp4_tflops}[tier]

    def compute_tiers(self) -> list[str]:
        """The tensor-core tiers this chip has a dense peak for."""
        return [t for t in ("bf16", "fp16", "fp8", "int8", "fp4") if self.tier_tflops(t) is not None]

    def dense_flops(self, dtype: str) -> float:
        """Peak dense FLOP/s of the tensor cores for matmuls in `dtype`."""
        tflops = self.tier_tflops(dtype)
        if tflops is None:
            raise ValueError(f"{self.name} has no {dtype.upper()} tensor cores; its tiers: "
                             f"{', '.join(self.compute_tiers())}")
        return tflops * 1e12

    def scale_up_bytes_per_s_per_direction(self) -> float:
        return self.scale_up_bandwidth_gbps * 1e9 / 2.0
