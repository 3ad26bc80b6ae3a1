"""The outcome of one simulation: per-request records as numpy columns, and their summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import numpy as np

from . import _core
from ._json import json_safe
from ._version import __version__
from .costmodel import CostCoefficients
from .memory import MemoryFit
from .metrics import LatencyStats
from .policy import ResolvedPolicy
from .scenario import Scenario
from .cluster_stats import ClusterStats
from .goodput import GoodputStats, LoadStats, SteadyStats
from .power import EnergyStats
from .pricing import CostStats
from .timeseries import TimeSeries
from .workloads.class_stats import ClassStats
from .workloads.info import WorkloadInfo

TTFT_PARTS = ("ttft_queue_s", "ttft_prefill_s", "ttft_recompute_s", "ttft_kv_transfer_s",
              "ttft_other_s")

STATUS_NAMES = {
    _core.STATUS_PENDING: "pending",
    _core.STATUS_WAITING: "waiting",
    _core.STATUS_RUNNING: "running",
    _core.STATUS_FINISHED: "finished",
    _core.STATUS_REJECTED_BUDGET: "rejected_token_budget",
    _core.STATUS_REJECTED_KV: "rejected_kv_capacity",
    _core.STATUS_SWAPPED: "swapped",
    _core.STATUS_TRANSFER: "kv_transfer",
}


@dataclass(frozen=True)
class RequestRecords:
    """One row per request of the workload, as numpy columns (times in seconds, NaN if never)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    admitted_s: np.ndarray
    first_token_s: np.ndarray
    completion_s: np.ndarray
    generated_tokens: np.ndarray
    preemptions: np.ndarray
    prefix_hit_tokens: np.ndarray
    status: np.ndarray
    replica: np.ndarray
    decode_replica: Optional[np.ndarray] = None  # disaggregated: the decode engine (-1 if none)
    kv_ready_s: Optional[np.ndarray] = None      # disaggregated: KV arrival on the decode side
    class_id: Optional[np.ndarray] = None   # index into the workload's classes, if it has any
    priority: Optional[np.ndarray] = None
    handoff_s: Optional[np.ndarray] = None       # disaggregated: prefill done, handed to decode
    prefill_busy_s: Optional[np.ndarray] = None  # time in steps that computed its prompt
                                                 # before its first token, in the pass that
                                                 # completed it
    prefill_lost_s: Optional[np.ndarray] = None  # the same in passes a recompute preemption
                                                 # discarded

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.column_names():
            return getattr(self, name)
        raise KeyError(f"no column {name!r}; columns: {', '.join(self.column_names())}")

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls)) + ("ttft_s", "e2e_s", "tpot_s") + TTFT_PARTS

    @property
    def finished(self) -> np.ndarray:
        return self.status == _core.STATUS_FINISHED

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.completion_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """(E2E - TTFT) / (output - 1); NaN for one-token outputs and unfinished requests."""
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = (self.completion_s - self.first_token_s) / (self.output_tokens - 1)
        return np.where(self.output_tokens > 1, tpot, np.nan)

    # Where each request's TTFT went. The five parts sum to ttft_s (NaN without a first token).
    @property
    def ttft_queue_s(self) -> np.ndarray:
        """Waiting before its first admission (admitted - arrival)."""
        return np.where(np.isnan(self.first_token_s), np.nan, self.admitted_s - self.arrival_s)

    @property
    def ttft_prefill_s(self) -> np.ndarray:
        """Time in the steps that computed its prompt, in the pass that produced its first
        token."""
        busy = self.prefill_busy_s if self.prefill_busy_s is not None else np.zeros(len(self))
        return np.where(np.isnan(self.first_token_s), np.nan, busy)

    @property
    def ttft_recompute_s(self) -> np.ndarray:
        """Time in prefill steps whose work a recompute preemption discarded before the first
        token (the prompt then had to be computed again)."""
        lost = self.prefill_lost_s if self.prefill_lost_s is not None else np.zeros(len(self))
        return np.where(np.isnan(self.first_token_s), np.nan, lost)

    @property
    def ttft_kv_transfer_s(self) -> np.ndarray:
        """Disaggregated: prefill done to KV on the decode side (waiting for decode blocks,
        the link's queue and the transfer); zero on unified replicas."""
        if self.kv_ready_s is None or self.handoff_s is None:
            moved = np.zeros(len(self))
        else:
            moved = np.nan_to_num(self.kv_ready_s - self.handoff_s, nan=0.0)
        return np.where(np.isnan(self.first_token_s), np.nan, moved)

    @property
    def ttft_other_s(self) -> np.ndarray:
        """The rest: waiting again after a preemption, between prefill chunks or pipeline
        stages, and for the first decode step after the KV arrived (disaggregated)."""
        return (self.ttft_s - self.ttft_queue_s - self.ttft_prefill_s - self.ttft_recompute_s
                - self.ttft_kv_transfer_s)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column this run has (class_id and priority only when the workload has them)."""
        return {name: self[name] for name in self.column_names() if self[name] is not None}

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas: pip install pandas)."""
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]
        except ImportError as err:
            raise ImportError("RequestRecords.to_pandas() needs pandas: pip install pandas") from err
        df = pd.DataFrame(self.columns())
        df["status"] = pd.Categorical.from_codes(self.status.astype(np.int64),
                                                 categories=[STATUS_NAMES[k] for k in range(len(STATUS_NAMES))])
        return df

    def to_arrow(self) -> Any:
        """The records as a pyarrow Table (needs pyarrow: pip install 'tokenmill[parquet]')."""
        try:
            import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        except ImportError as err:
            raise ImportError("RequestRecords.to_arrow() needs pyarrow: "
                              "pip install 'tokenmill[parquet]'") from err
        table = pa.table(self.columns())
        names = [STATUS_NAMES[int(k)] for k in self.status]
        return table.set_column(table.schema.get_field_index("status"), "status",
                                pa.array(names, type=pa.string()).dictionary_encode())


@dataclass(frozen=True)
class Result:
    """Summary attributes of a run, its per-request records and what produced them."""

    scenario: Scenario
    model_name: str
    gpu_name: str
    policy: ResolvedPolicy
    memory: MemoryFit
    cost: CostCoefficients
    requests: RequestRecords
    num_requests: int
    num_arrived: int
    num_finished: int
    num_unfinished: int
    num_rejected_token_budget: int
    num_rejected_kv_capacity: int
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    itl_ms: LatencyStats
    e2e_ms: LatencyStats
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    total_token_throughput: float
    kv_mean_utilization: float
    kv_peak_utilization: float
    kv_peak_blocks: int
    preemptions: int
    recomputed_tokens: int
    swapped_out_bytes: float
    prefix_hit_rate: float
    max_step_tokens: int
    steps: int
    events: int
    prefill_tokens_computed: int
    core_wall_time_s: float
    wall_time_s: float
    cluster: Optional[ClusterStats] = None         # pools, replicas, KV transfers, speculation
    workload_info: Optional[WorkloadInfo] = None   # source, and rows or draws left out or changed
    class_stats: tuple[ClassStats, ...] = ()       # per request class, when there are classes
    timeseries: Optional[TimeSeries] = None        # per replica over time (None if turned off)
    energy: Optional[EnergyStats] = None           # every chip, busy or idle
    spend: Optional[CostStats] = None              # chip-hours at their prices
    goodput: Optional[GoodputStats] = None         # with SLOs (scenario or request classes)
    steady: Optional[SteadyStats] = None           # with a warm-up or cool-down window
    load: Optional[LoadStats] = None               # time-weighted queue, batch and KV use
    ttft_breakdown_ms: dict[str, float] = field(default_factory=dict)  # mean of each TTFT part

    @property
    def num_rejected(self) -> int:
        return self.num_rejected_token_budget + self.num_rejected_kv_capacity

    def to_dict(self, include_requests: bool = False,
                include_timeseries: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready): the resolved scenario, the version and every summary figure."""
        out: dict[str, Any] = {
            "tokenmill_version": __version__,
            "scenario": self.scenario.model_dump(mode="json"),
            "resolved": {"model": self.model_name, "gpu": self.gpu_name,
                         "chips": self.cluster.chips if self.cluster is not None else None},
            "requests": {
                "total": self.num_requests,
                "arrived": self.num_arrived,
                "finished": self.num_finished,
                "unfinished": self.num_unfinished,
                "rejected_token_budget": self.num_rejected_token_budget,
                "rejected_kv_capacity": self.num_rejected_kv_capacity,
            },
            "latency_ms": {
                "ttft": self.ttft_ms.to_dict(),
                "tpot": self.tpot_ms.to_dict(),
                "itl": self.itl_ms.to_dict(),
                "e2e": self.e2e_ms.to_dict(),
            },
            "throughput": {
                "duration_s": self.duration_s,
                "requests_per_s": self.request_throughput,
                "output_tokens_per_s": self.output_token_throughput,
                "total_tokens_per_s": self.total_token_throughput,
            },
            "kv_cache": {
                "block_size": self.memory.kv_block_size,
                "capacity_blocks": self.memory.kv_capacity_blocks,
                "capacity_tokens": self.memory.kv_capacity_tokens,
                "mean_utilization": self.kv_mean_utilization,
                "peak_utilization": self.kv_peak_utilization,
                "peak_blocks": self.kv_peak_blocks,
            },
            "scheduler": {
                **self.policy.to_dict(),
                "preemptions": self.preemptions,
                "recomputed_tokens": self.recomputed_tokens,
                "swapped_out_bytes": self.swapped_out_bytes,
                "prefix_hit_rate": self.prefix_hit_rate,
                "max_step_tokens": self.max_step_tokens,
            },
            "ttft_breakdown_ms": dict(self.ttft_breakdown_ms),
            "goodput": self.goodput.to_dict() if self.goodput is not None else None,
            "steady_state": self.steady.to_dict() if self.steady is not None else None,
            "load": self.load.to_dict() if self.load is not None else None,
            "energy": self.energy.to_dict() if self.energy is not None else None,
            "cost": self.spend.to_dict() if self.spend is not None else None,
            "cluster": self.cluster.to_dict() if self.cluster is not None else None,
            "workload": self.workload_info.to_dict() if self.workload_info is not None else None,
            "classes": [c.to_dict() for c in self.class_stats],
            "memory": self.memory.to_dict(),
            "simulation": {
                "events": self.events,
                "steps": self.steps,
                "prefill_tokens_computed": self.prefill_tokens_computed,
                "core_wall_time_s": self.core_wall_time_s,
                "wall_time_s": self.wall_time_s,
            },
        }
        if include_requests:
            out["request_records"] = {k: v.tolist() for k, v in self.requests.columns().items()}
        if include_timeseries and self.timeseries is not None:
            out["timeseries"] = self.timeseries.to_dict()
        return out

    def to_json(self, indent: int | None = 2, include_requests: bool = False,
                include_timeseries: bool = False) -> str:
        return json.dumps(json_safe(self.to_dict(include_requests, include_timeseries)),
                          indent=indent)

    def plot(self, kind: str = "overview", ax: Any = None) -> Any:
        """A matplotlib Figure of this run (needs matplotlib: pip install 'tokenmill[report]').
        kind: 'overview' (all of the below), 'cdf' (TTFT and TPOT), 'timeseries' (queue,
        batch, KV use and power over time) or 'ttft' (where TTFT went)."""
        from .plots import plot_result

        return plot_result(self, kind, ax)

    def flat_summary(self) -> dict[str, Any]:
        """The summary as one flat row (for CSV): nested keys joined with '_'."""
        data = self.to_dict()
        data.pop("scenario")
        classes = data.pop("classes")
        if data.get("energy") is not None:
            data["energy"].pop("pools")
        if data.get("cost") is not None:
            data["cost"].pop("pools")
        if data.get("goodput") is not None:
            data["goodput"].pop("classes")
        if data.get("workload") is not None:  # lists do not fit one CSV cell each
            data["workload"]["notes"] = " | ".join(data["workload"]["notes"])
            data["workload"]["classes"] = ",".join(data["workload"]["classes"])
        row: dict[str, Any] = {}
        _flatten(data, "", row)
        for c in classes:
            _flatten({k: v for k, v in c.items() if k != "name"}, f"class_{c['name']}_", row)
        return row


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{key}_", out)
        else:
            out[f"{prefix}{key}"] = value
