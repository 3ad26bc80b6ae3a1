"""Number formats: weights, activations and KV cache, chosen independently of the model.

Why a separate module: the format of the weights sets how many bytes a step streams, the
format of the activations sets which tensor-core tier (and so which peak FLOP/s) the matmuls
run at, and the KV-cache format sets how many tokens fit in memory. They are three orthogonal
choices, plus optional 2:4 structured sparsity, and every part of the simulator that prices
memory or compute reads them from here.

Bytes per element include the scale factors each block-scaled format stores:
* int4 (W4A16, GPTQ/AWQ style): 4-bit values and one 16-bit scale per group of 128 weights.
* fp4 / nvfp4: 4-bit E2M1 values and one FP8 (E4M3) scale per 16 values (NVIDIA NVFP4).
* mxfp4: 4-bit E2M1 values and one 8-bit E8M0 scale per 32 values (OCP MX; gpt-oss's 4.25 bits).
* fp8 / int8: per-channel or 128x128-block scales add under 0.1% and are ignored.

2:4 sparsity (two of every four weights zero) is modelled as halving both the bytes and the
FLOPs of the sparsified matmuls (attention projections, MLPs and experts; never embeddings or
the LM head). The 2-bit position index the compressed format keeps per stored value is ignored.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ._validation import StrictModel

WeightFormat = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4", "nvfp4", "mxfp4"]
ActivationFormat = Literal["bf16", "fp16", "fp8", "int8", "fp4"]
KVFormat = Literal["bf16", "fp16", "fp8", "fp4"]
# The tensor-core tiers a chip publishes a dense peak for.
ComputeTier = Literal["bf16", "fp16", "fp8", "int8", "fp4"]

# Bytes one stored element occupies, scales included (see the module docstring).
WEIGHT_BYTES: dict[str, float] = {
    "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
    "int4": 0.5 + 2.0 / 128, "fp4": 0.5 + 1.0 / 16, "nvfp4": 0.5 + 1.0 / 16,
    "mxfp4": 0.5 + 1.0 / 32,
}
KV_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5 + 1.0 / 16}
# Parameters that are not matmul weights (embeddings, LM head, norms, biases, routers) stay
# 16-bit in every common quantised checkpoint.
UNQUANTISED_BYTES = 2.0
# Activations move between kernels in 16 bits; low-precision GEMMs quantise them on the fly.
ACTIVATION_TRAFFIC_BYTES = 2.0
SPARSITY_FACTOR = {None: 1.0, "2:4": 0.5}

# Which weight formats each activation format can multiply (the weights are stored at no more
# bits than the activations and converted to the activations' format inside the GEMM).
_WEIGHTS_FOR_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "bf16": tuple(WEIGHT_BYTES), "fp16": tuple(WEIGHT_BYTES),
    "fp8": ("fp8", "int4", "fp4", "nvfp4", "mxfp4"),
    "int8": ("int8", "int4"),
    "fp4": ("fp4", "nvfp4", "mxfp4"),
}
_WEIGHT_ALIASES = {"w4a16": "int4", "awq": "int4", "gptq": "int4"}
_KV_ALIASES = {"nvfp4": "fp4"}


class Precision(StrictModel):
    """Number formats of the weights, the activations and the KV cache, and 2:4 sparsity."""

    weights: WeightFormat = Field(
        default="bf16", description="Format of the matmul weights: bf16, fp16, fp8, int8, int4 "
        "(W4A16 with group-128 scales; also accepted as 'w4a16'), fp4/nvfp4 (E2M1 with an FP8 "
        "scale per 16) or mxfp4 (E2M1 with an E8M0 scale per 32).")
    activations: ActivationFormat = Field(
        default="bf16", description="Format the matmuls compute in; it selects the chip's "
        "tensor-core tier. fp8 needs weights of 8 bits or fewer, int8 integer weights, fp4 "
        "4-bit float weights.")
    kv_cache: Optional[KVFormat] = Field(
        default=None, description="Format of the KV cache: bf16, fp16, fp8 or fp4 (NVFP4). "
        "None means 16-bit (as vLLM's 'auto'), also for weight-only quantised models.")
    sparsity: Optional[Literal["2:4"]] = Field(
        default=None, description="'2:4' prunes two of every four matmul weights, halving their "
        "bytes and FLOPs; only on chips whose tensor cores accelerate it. None: dense.")

    @field_validator("weights", mode="before")
    @classmethod
    def _weight_alias(cls, v: object) -> object:
        return _WEIGHT_ALIASES.get(v.strip().lower(), v) if isinstance(v, str) else v

    @field_validator("kv_cache", mode="before")
    @classmethod
    def _kv_alias(cls, v: object) -> object:
        return _KV_ALIASES.get(v.strip().lower(), v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> "Precision":
        allowed = _WEIGHTS_FOR_ACTIVATIONS[self.activations]
        if self.weights not in allowed:
            raise ValueError(
                f"activations = {self.activations!r} cannot multiply weights = {self.weights!r}; "
                f"with {self.activations} activations the weights must be one of "
                f"{', '.join(allowed)} (or use 16-bit activations for weight-only quantisation)")
        return self

    @property
    def kv_dtype(self) -> KVFormat:
        """The KV-cache format in effect (16-bit unless asked otherwise)."""
        if self.kv_cache is not None:
            return self.kv_cache
        return "fp16" if self.activations == "fp16" else "bf16"

    @property
    def compute_dtype(self) -> ComputeTier:
        """The tensor-core tier the matmuls run at: the activations' format."""
        return self.activations

    @property
    def weight_bytes(self) -> float:
        return WEIGHT_BYTES[self.weights]

    @property
    def kv_bytes(self) -> float:
        return KV_BYTES[self.kv_dtype]

    @property
    def sparsity_factor(self) -> float:
        return SPARSITY_FACTOR[self.sparsity]

    def label(self) -> str:
        """Short human-readable summary, e.g. 'W4A16 int4 weights, bf16 KV'."""
        parts = [f"{self.weights} weights", f"{self.activations} activations", f"{self.kv_dtype} KV"]
        if self.sparsity:
            parts.append(f"{self.sparsity} sparse")
        return ", ".join(parts)


# The original tokenmill's quantised model presets, as a base model plus a precision.
QUANTISED_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "llama-8b-fp8": ("llama-3.1-8b", {"weights": "fp8", "activations": "fp8"}),
    "llama-70b-fp8": ("llama-3.1-70b", {"weights": "fp8", "activations": "fp8"}),
    "llama-8b-w4a16": ("llama-3.1-8b", {"weights": "int4", "activations": "bf16", "kv_cache": "bf16"}),
    "llama-70b-w4a16": ("llama-3.1-70b", {"weights": "int4", "activations": "bf16", "kv_cache": "bf16"}),
    "llama-8b-w4a8kv4": ("llama-3.1-8b", {"weights": "int4", "activations": "fp8", "kv_cache": "fp4"}),
    "llama-70b-w4a8kv4": ("llama-3.1-70b", {"weights": "int4", "activations": "fp8", "kv_cache": "fp4"}),
    "llama-70b-nvfp4-sparse": ("llama-3.1-70b", {"weights": "nvfp4", "activations": "fp4",
                                                 "sparsity": "2:4"}),
    "kimi-k2-nvfp4-sparse": ("kimi-k2", {"weights": "nvfp4", "activations": "fp4", "sparsity": "2:4"}),
    "llama-4-maverick-fp8": ("llama-4-maverick", {"weights": "fp8", "activations": "fp8"}),
    "llama4-maverick-fp8": ("llama-4-maverick", {"weights": "fp8", "activations": "fp8"}),
    "deepseek-v3-fp8": ("deepseek-v3", {"weights": "fp8", "activations": "fp8"}),
    "gpt-oss-120b-mxfp4": ("gpt-oss-120b", {"weights": "mxfp4"}),
    "gpt-oss-20b-mxfp4": ("gpt-oss-20b", {"weights": "mxfp4"}),
}


def split_variant(name: str) -> Optional[tuple[str, dict[str, str]]]:
    """(base model, precision fields) if `name` is a quantised preset name, else None."""
    return QUANTISED_VARIANTS.get(name.strip().lower().replace("_", "-"))
