"""What a run reports, and how: SLOs and the measurement window, the time-series resolution,
the power model's constants and chip-hour prices. Part of the Scenario, so every output that
records the resolved scenario records these too."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator

from ._validation import StrictModel

# Power model weights, fitted by bench/fit_power.py on measured average GPU power: calibrated
# on Argonne LLM-Inference-Bench's H100 runs and Splitwise's DGX-A100 Llama-2-70B TP2/TP8
# runs (36 runs, MAPE 7.6%), validated on Argonne's A100 runs and Splitwise's TP4 runs (28
# runs, MAPE 11.6%). Sources: ../shared/data/measurements (S14, S15 in sources.json).
BUSY_WEIGHT = 0.22
COMPUTE_WEIGHT = 0.84
MEMORY_WEIGHT = 0.42


class MetricsConfig(StrictModel):
    """Service-level objectives, the steady-state window and the time-series resolution."""

    slo_ttft_ms: Optional[PositiveFloat] = Field(
        default=None, description="Time-to-first-token objective, ms (goodput counts requests "
        "meeting every objective given; vLLM bench serve --goodput ttft:MS).")
    slo_tpot_ms: Optional[PositiveFloat] = Field(
        default=None, description="Time-per-output-token objective, ms (one-token outputs "
        "meet it, as in vLLM's goodput).")
    slo_e2e_ms: Optional[PositiveFloat] = Field(
        default=None, description="End-to-end latency objective, ms.")
    warmup_s: NonNegativeFloat = Field(
        default=0.0, description="Requests arriving before this time (s) are left out of the "
        "steady-state figures (latencies, goodput, throughput over the window).")
    cooldown_s: NonNegativeFloat = Field(
        default=0.0, description="Requests arriving in the last this-many seconds of the "
        "arrivals are left out of the steady-state figures.")
    timeseries_resolution_s: Optional[NonNegativeFloat] = Field(
        default=None, description="Length of one time-series bucket, s. None: automatic (about "
        "500 buckets over the arrivals, rounded to 1, 2 or 5 x 10^k s, doubled while the run "
        "would need more than 2048); 0: no time series (energy then comes from the run's "
        "totals). A length you give is kept, however many buckets it makes.")

    @property
    def has_slo(self) -> bool:
        return any(x is not None for x in (self.slo_ttft_ms, self.slo_tpot_ms, self.slo_e2e_ms))

    @property
    def has_window(self) -> bool:
        return self.warmup_s > 0.0 or self.cooldown_s > 0.0


class PowerModel(StrictModel):
    """How a chip's power follows its work: idle_w plus (tdp_w - idle_w) times
    min(1, busy_weight * b + compute_weight * c + memory_weight * m), where b is the share of
    time the chip is inside a step and c, m the shares it spends on the compute and memory sides
    of the step roofline. Idle and TDP come from the chip preset; every chip of every replica
    draws power, busy or idle."""

    busy_weight: NonNegativeFloat = Field(
        default=BUSY_WEIGHT, description="Share of (TDP - idle) drawn while inside a step at "
        "all (clocks up, launches, collectives). Fitted: bench/fit_power.py.")
    compute_weight: NonNegativeFloat = Field(
        default=COMPUTE_WEIGHT, description="Share of (TDP - idle) per unit of compute "
        "activity (tensor cores at the achieved FLOP rate). Fitted: bench/fit_power.py.")
    memory_weight: NonNegativeFloat = Field(
        default=MEMORY_WEIGHT, description="Share of (TDP - idle) per unit of memory "
        "activity (HBM at the achieved bandwidth). Fitted: bench/fit_power.py.")
    pue: float = Field(
        default=1.0, ge=1.0, description="Facility power usage effectiveness: energy is chip "
        "energy times this (1.0: chips only; hosts, cooling and networking not counted).")


class Pricing(StrictModel):
    """Price of a chip-hour, USD. None: the chip preset's typical price."""

    price_per_hour_usd: Optional[NonNegativeFloat] = Field(
        default=None, description="Price of one chip-hour for every pool (overrides presets).")
    prefill_price_per_hour_usd: Optional[NonNegativeFloat] = Field(
        default=None, description="Disaggregated: price of a prefill-pool chip-hour.")
    decode_price_per_hour_usd: Optional[NonNegativeFloat] = Field(
        default=None, description="Disaggregated: price of a decode-pool chip-hour.")

    @model_validator(mode="after")
    def _one_way(self) -> "Pricing":
        if self.price_per_hour_usd is not None and (
                self.prefill_price_per_hour_usd is not None or self.decode_price_per_hour_usd is not None):
            raise ValueError("give price_per_hour_usd, or the per-pool prices, not both")
        return self

    def for_pool(self, role: str, preset: Optional[float]) -> Optional[float]:
        """The chip-hour price of a pool: per-pool override, global override, else preset."""
        per_pool = {"prefill": self.prefill_price_per_hour_usd,
                    "decode": self.decode_price_per_hour_usd}.get(role)
        if per_pool is not None:
            return per_pool
        if self.price_per_hour_usd is not None:
            return self.price_per_hour_usd
        return preset
