"""Per-class results of a simulation: counts, latencies and SLO attainment.

A request attains its class's SLOs when it finished and each objective given (TTFT, TPOT,
E2E) is met; attainment is the share of the class's arrived requests that did (rejected and
unfinished requests count against it, as in DistServe's goodput). TPOT is not defined for
one-token outputs, so a TPOT objective does not apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .. import _core
from ..metrics import LatencyStats
from .config import RequestClass


@dataclass(frozen=True)
class ClassStats:
    name: str
    priority: int
    requests: int
    arrived: int
    finished: int
    rejected: int
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    e2e_ms: LatencyStats
    slo_ttft_ms: Optional[float] = None
    slo_tpot_ms: Optional[float] = None
    slo_e2e_ms: Optional[float] = None
    slo_attained: Optional[int] = None
    slo_attainment: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "priority": self.priority, "requests": self.requests,
            "arrived": self.arrived, "finished": self.finished, "rejected": self.rejected,
            "latency_ms": {"ttft": self.ttft_ms.to_dict(), "tpot": self.tpot_ms.to_dict(),
                           "e2e": self.e2e_ms.to_dict()},
            "slo_ms": {"ttft": self.slo_ttft_ms, "tpot": self.slo_tpot_ms, "e2e": self.slo_e2e_ms},
            "slo_attained": self.slo_attained, "slo_attainment": self.slo_attainment,
        }


def class_stats(classes: Sequence[RequestClass], class_id: np.ndarray, status: np.ndarray,
                arrival: np.ndarray, first: np.ndarray, done: np.ndarray,
                output: np.ndarray) -> tuple[ClassStats, ...]:
    """One ClassStats per class, from the per-request records."""
    out = []
    finished_all = status == _core.STATUS_FINISHED
    rejected_all = (status == _core.STATUS_REJECTED_BUDGET) | (status == _core.STATUS_REJECTED_KV)
    arrived_all = status != _core.STATUS_PENDING
    with np.errstate(invalid="ignore", divide="ignore"):
        ttft = first - arrival
        e2e = done - arrival
        tpot = np.where(output > 1, (done - first) / (output - 1), np.nan)
    for k, cls in enumerate(classes):
        mine = class_id == k
        fin = mine & finished_all
        multi = fin & (output > 1)
        attained = attainment = None
        if any(x is not None for x in (cls.slo_ttft_ms, cls.slo_tpot_ms, cls.slo_e2e_ms)):
            ok = fin.copy()
            if cls.slo_ttft_ms is not None:
                ok &= ttft * 1e3 <= cls.slo_ttft_ms
            if cls.slo_e2e_ms is not None:
                ok &= e2e * 1e3 <= cls.slo_e2e_ms
            if cls.slo_tpot_ms is not None:
                ok &= (output <= 1) | (tpot * 1e3 <= cls.slo_tpot_ms)
            attained = int(np.count_nonzero(ok))
            arrived = int(np.count_nonzero(mine & arrived_all))
            attainment = attained / arrived if arrived else float("nan")
        out.append(ClassStats(
            name=cls.name, priority=cls.priority, requests=int(np.count_nonzero(mine)),
            arrived=int(np.count_nonzero(mine & arrived_all)), finished=int(np.count_nonzero(fin)),
            rejected=int(np.count_nonzero(mine & rejected_all)),
            ttft_ms=LatencyStats.from_seconds(ttft[fin]), tpot_ms=LatencyStats.from_seconds(tpot[multi]),
            e2e_ms=LatencyStats.from_seconds(e2e[fin]), slo_ttft_ms=cls.slo_ttft_ms,
            slo_tpot_ms=cls.slo_tpot_ms, slo_e2e_ms=cls.slo_e2e_ms, slo_attained=attained,
            slo_attainment=attainment))
    return tuple(out)
