"""tokenmill: a fast discrete-event simulator of LLM inference clusters.

    import tokenmill as tm
    result = tm.simulate(tm.Scenario(workload=tm.Workload(arrival_rate=20.0)))
    print(result.ttft_ms.p99, result.requests.ttft_s)
"""

from ._version import __version__
from .architecture import ModelArch
from .engine import simulate
from .errors import CapacityError, ConfigError, TokenmillError
from .hardware import Hardware
from .result import RequestRecords, Result
from .scenario import (
    CostModelParams,
    LengthDistribution,
    Plan,
    Precision,
    Scenario,
    SchedulerPolicy,
    Workload,
)
from .workload import WorkloadArrays
from .workloads.config import RateProfile, RequestClass, TraceSource
from .workloads.describe import describe_workload

__all__ = [
    "__version__",
    "CapacityError",
    "ConfigError",
    "CostModelParams",
    "Hardware",
    "LengthDistribution",
    "ModelArch",
    "Plan",
    "Precision",
    "RequestRecords",
    "Result",
    "Scenario",
    "SchedulerPolicy",
    "TokenmillError",
    "Workload",
    "WorkloadArrays",
    "RateProfile",
    "RequestClass",
    "TraceSource",
    "describe_workload",
    "simulate",
]
