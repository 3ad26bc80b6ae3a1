"""tokenmill: a fast discrete-event simulator of LLM inference clusters.

    import tokenmill as tm
    result = tm.simulate(tm.Scenario(workload=tm.Workload(arrival_rate=20.0)))
    print(result.ttft_ms.p99, result.requests.ttft_s)
"""

from ._version import __version__
from .architecture import ModelArch
from .calibration import Calibration, load_calibration, shipped_calibrations
from .catalogue import find_fabric, find_gpu, find_model, find_system
from .engine import simulate
from .cluster_config import Disaggregation, PoolPlan, RouterConfig, SpeculativeDecoding
from .errors import CapacityError, ConfigError, TokenmillError
from .hardware import Hardware
from .kernel_table import KernelTable
from .memory import MemoryFit, memory_fit
from .model_card import model_card
from .result import RequestRecords, Result
from .results_config import MetricsConfig, PowerModel, Pricing
from .sweep import SweepResult, sweep
from .scenario import (
    CostModelParams,
    LengthDistribution,
    Plan,
    Precision,
    Scenario,
    SchedulerPolicy,
    Workload,
)
from .systems import Fabric, System
from .workload import WorkloadArrays
from .workloads.config import RateProfile, RequestClass, TraceSource
from .workloads.describe import describe_workload

__all__ = [
    "__version__",
    "Calibration",
    "CapacityError",
    "Disaggregation",
    "PoolPlan",
    "RouterConfig",
    "SpeculativeDecoding",
    "ConfigError",
    "CostModelParams",
    "Fabric",
    "Hardware",
    "KernelTable",
    "LengthDistribution",
    "MetricsConfig",
    "PowerModel",
    "Pricing",
    "SweepResult",
    "sweep",
    "MemoryFit",
    "ModelArch",
    "Plan",
    "Precision",
    "RequestRecords",
    "Result",
    "Scenario",
    "SchedulerPolicy",
    "System",
    "TokenmillError",
    "Workload",
    "WorkloadArrays",
    "find_fabric",
    "find_gpu",
    "find_model",
    "find_system",
    "load_calibration",
    "memory_fit",
    "model_card",
    "RateProfile",
    "RequestClass",
    "TraceSource",
    "describe_workload",
    "shipped_calibrations",
    "simulate",
]
