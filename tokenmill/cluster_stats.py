"""Per-pool and per-replica figures of a cluster run: utilisation, KV transfers, speculation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import LatencyStats


@dataclass(frozen=True)
class ReplicaStats:
    """One replica (all its pipeline stages) over the run."""

    pool: str
    index: int
    gpu: str
    chips: int
    requests: int            # requests it took (prefill replicas: requests it prefilled)
    busy_fraction: float     # of its busiest stage, over the run
    steps: int
    preemptions: int
    kv_peak_utilization: float
    kv_link_utilization: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PoolStats:
    role: str
    gpu: str
    tp: int
    pp: int
    replicas: int
    chips: int
    busy_fraction: float     # mean over its replicas

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ClusterStats:
    """What the router, the pools, the KV links and speculative decoding did."""

    router: str
    pools: tuple[PoolStats, ...]
    replicas: tuple[ReplicaStats, ...]
    kv_transfer_ms: LatencyStats          # prefill done -> KV on the decode replica
    kv_link_utilization: float            # mean over prefill replicas' links
    spec_tokens_per_step: float           # tokens per decode step (1 without speculation)

    @property
    def chips(self) -> int:
        return sum(p.chips for p in self.pools)

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "chips": self.chips,
            "pools": [p.to_dict() for p in self.pools],
            "replicas": [r.to_dict() for r in self.replicas],
            "kv_transfer_ms": self.kv_transfer_ms.to_dict(),
            "kv_link_utilization": self.kv_link_utilization,
            "spec_tokens_per_step": self.spec_tokens_per_step,
        }


def cluster_stats(build: Any, raw: dict, duration: float) -> ClusterStats:
    """Summarise the kernel's per-engine and per-pipe counters by replica and by pool."""
    engines, pipes = raw["replicas"], raw["pipes"]
    engine_pipe = engines["pipe"]
    took = np.bincount(engine_pipe[raw["replica"][raw["replica"] >= 0]], minlength=len(pipes["pool"]))
    dec = raw["decode_replica"]
    if (dec >= 0).any():
        took = took + np.bincount(engine_pipe[dec[dec >= 0]], minlength=len(pipes["pool"]))
    replicas = []
    pool_busy: dict[int, list[float]] = {}
    for p in range(len(pipes["pool"])):
        pool = build.pools[int(pipes["pool"][p])]
        mine = engine_pipe == p
        busy = float(pipes["busiest_stage_busy_s"][p]) / duration if duration > 0 else 0.0
        peak = float((engines["kv_peak_blocks"][mine] / engines["capacity_blocks"][mine]).max())
        link = float(pipes["kv_link_busy_s"][p]) / duration if duration > 0 else 0.0
        pool_busy.setdefault(int(pipes["pool"][p]), []).append(busy)
        replicas.append(ReplicaStats(
            pool=pool.role, index=p, gpu=pool.hw.name, chips=pool.tp * pool.pp,
            requests=int(took[p]), busy_fraction=busy, steps=int(engines["steps"][mine].sum()),
            preemptions=int(engines["preemptions"][mine].sum()), kv_peak_utilization=peak,
            kv_link_utilization=link))
    pools = tuple(PoolStats(role=b.role, gpu=b.hw.name, tp=b.tp, pp=b.pp, replicas=b.replicas,
                            chips=b.chips, busy_fraction=float(np.mean(pool_busy.get(k, [0.0]))))
                  for k, b in enumerate(build.pools))
    moved = ~np.isnan(raw["kv_ready_s"])
    transfer = raw["kv_ready_s"][moved] - raw["handoff_s"][moved]
    links = [r.kv_link_utilization for r in replicas if r.pool == "prefill"]
    decoded = float(engines["decode_tokens"].sum())
    spec = float(engines["spec_tokens"].sum())
    return ClusterStats(
        router=build.router.name, pools=pools, replicas=tuple(replicas),
        kv_transfer_ms=LatencyStats.from_seconds(transfer),
        kv_link_utilization=float(np.mean(links)) if links else 0.0,
        spec_tokens_per_step=(spec / decoded if spec > 0 and decoded > 0 else 1.0))
