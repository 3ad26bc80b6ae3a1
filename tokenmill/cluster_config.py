"""Configuration of a cluster beyond one replica: routing, disaggregated pools, speculative
decoding. Kept apart from tokenmill.cluster (which turns them into kernel numbers) so the
Scenario can import them without importing the memory planner and cost model."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from ._validation import StrictModel
from .catalogue import find_gpu, find_model


class RouterConfig(StrictModel):
    """How the front end spreads arriving requests over the replicas of the entry pool."""

    name: Literal["round-robin", "random", "least-requests", "least-tokens", "power-of-two",
                  "prefix-affinity"] = Field(
        default="round-robin", description="Routing policy (docs/cluster.md).")
    balance_abs: int = Field(
        default=32, ge=0, description="prefix-affinity: fall back to the least-loaded replica "
        "when the outstanding requests of the busiest and idlest differ by more than this and...")
    balance_rel: float = Field(
        default=1.1, ge=1.0, description="...the busiest has more than this many times the "
        "idlest's (SGLang router defaults 32 and 1.1).")
    cache_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="prefix-affinity: follow the cache only when "
        "this fraction of the prompt is cached there (SGLang router default 0.5).")


class PoolPlan(StrictModel):
    """One pool of a disaggregated deployment (fields left None follow the scenario's)."""

    gpu: Optional[str] = Field(default=None, description="Chip preset of this pool.")
    tp: Optional[PositiveInt] = Field(default=None, description="Tensor-parallel degree.")
    pp: Optional[PositiveInt] = Field(default=None, description="Pipeline stages per replica.")
    replicas: PositiveInt = Field(default=1, description="Replicas in the pool.")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            find_gpu(v)
        return v


class Disaggregation(StrictModel):
    """Separate prefill and decode pools with KV moving between them (xPyD)."""

    prefill: PoolPlan = Field(default=PoolPlan(), description="The prefill pool.")
    decode: PoolPlan = Field(default=PoolPlan(), description="The decode pool.")
    kv_link_gbps: Optional[PositiveFloat] = Field(
        default=None, description="Bandwidth of one prefill replica's path to the decode pool, "
        "GB/s (the original tokenmill's --internode-bw-gbps). None: the scale-out fabric's "
        "per-chip bandwidth times the prefill replica's chips.")
    kv_link_latency_us: Optional[NonNegativeFloat] = Field(
        default=None, description="Latency of one KV transfer, microseconds (None: the fabric's).")


class SpeculativeDecoding(StrictModel):
    """Speculative decoding with a draft model, or multi-token prediction (MTP/EAGLE) heads."""

    method: Literal["draft", "mtp"] = Field(
        default="draft", description="'draft': a small model proposes; 'mtp': extra prediction "
        "heads of the target model (one transformer layer and the LM head each) propose.")
    tokens: int = Field(ge=1, le=16, description="Tokens proposed per decode step (k).")
    acceptance_rate: float = Field(
        default=0.7, ge=0.0, le=1.0, description="Probability each proposal is accepted given "
        "the ones before it (the original tokenmill's --spec-acceptance-rate default 0.7).")
    acceptance_per_position: Optional[tuple[float, ...]] = Field(
        default=None, description="Per-position acceptance probabilities (overrides the rate).")
    draft_model: Optional[str] = Field(
        default=None, description="Draft model preset for method 'draft' (None: the smallest "
        "model of the target's family, e.g. llama-3.2-1b for Llama 3).")

    @model_validator(mode="after")
    def _check(self) -> "SpeculativeDecoding":
        if self.acceptance_per_position is not None:
            if len(self.acceptance_per_position) != self.tokens:
                raise ValueError(f"acceptance_per_position has {len(self.acceptance_per_position)} "
                                 f"entries; tokens = {self.tokens}")
            if not all(0.0 <= a <= 1.0 for a in self.acceptance_per_position):
                raise ValueError("acceptance_per_position entries must be in [0, 1]")
        if self.method == "mtp" and self.draft_model is not None:
            raise ValueError("draft_model is for method 'draft'; MTP heads belong to the model")
        if self.draft_model is not None:
            find_model(self.draft_model)
        return self

    def acceptance(self) -> np.ndarray:
        rates = self.acceptance_per_position or (self.acceptance_rate,) * self.tokens
        return np.array(rates, dtype=np.float64)

    def expected_tokens_per_step(self) -> float:
        """1 + expected accepted proposals: (1 - a^(k+1)) / (1 - a) for a constant rate."""
        total, p = 1.0, 1.0
        for a in self.acceptance():
            p *= a
            total += p
        return total
