"""What a run costs: every chip of every pool, busy or idle, at its chip-hour price.

Prices come from the chip preset (price_per_hour_usd, a typical rental price with its source
in tokenmill/presets/gpus/*.toml), overridden by Scenario.pricing (--price-per-hour, or
--prefill-price-per-hour / --decode-price-per-hour for a disaggregated cluster). A chip without
a price (not rentable, e.g. Cerebras CS-3) leaves the cost unknown unless one is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .results_config import Pricing


@dataclass(frozen=True)
class PoolCost:
    role: str
    gpu: str
    chips: int
    price_per_chip_hour_usd: Optional[float]
    chip_hours: float
    cost_usd: Optional[float]


@dataclass(frozen=True)
class CostStats:
    """Cost of the whole cluster over the run; None where a price is unknown."""

    cost_usd: Optional[float]
    chip_hours: float
    usd_per_million_output_tokens: Optional[float]  # every output token produced
    usd_per_request: Optional[float]           # per finished request
    usd_per_hour: Optional[float]              # the cluster's running cost
    pools: tuple[PoolCost, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "chip_hours": self.chip_hours,
                "usd_per_hour": self.usd_per_hour,
                "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
                "usd_per_request": self.usd_per_request,
                "pools": [dict(p.__dict__) for p in self.pools]}


def cost_stats(build: Any, pricing: Pricing, duration_s: float, output_tokens: int,
               finished: int) -> CostStats:
    pools = []
    for pool in build.pools:
        price = pricing.for_pool(pool.role, pool.hw.price_per_hour_usd)
        hours = pool.chips * duration_s / 3600.0
        pools.append(PoolCost(role=pool.role, gpu=pool.hw.name, chips=pool.chips,
                              price_per_chip_hour_usd=price, chip_hours=hours,
                              cost_usd=None if price is None else price * hours))
    known = all(p.cost_usd is not None for p in pools)
    total = sum(p.cost_usd for p in pools if p.cost_usd is not None) if known else None
    per_hour = (sum(p.chips * (p.price_per_chip_hour_usd or 0.0) for p in pools)
                if known else None)
    return CostStats(
        cost_usd=total, chip_hours=sum(p.chip_hours for p in pools),
        usd_per_million_output_tokens=(total / output_tokens * 1e6
                                       if total is not None and output_tokens > 0 else None),
        usd_per_request=total / finished if total is not None and finished > 0 else None,
        usd_per_hour=per_hour, pools=tuple(pools))
