"""Calibration files: fitted cost-model parameters for one (chip, engine) pair, with provenance.

Why: the cost model's efficiencies and overheads differ by chip and by serving engine (vLLM,
TensorRT-LLM, SGLang, their versions). `tokenmill calibrate` fits them to measurements and
writes a calibration file; `tokenmill run --calibration FILE` and `Scenario(calibration=...)`
apply it. Files the project ships (tokenmill/data/calibrations/) are selected by name, e.g.
`--calibration h100-vllm`; `tokenmill calibrate --list` shows them.

A calibration file is JSON (or TOML) laid out like `Calibration`: the chip and engine it
describes, the full parameter set, which parameters were fitted (the others are defaults or
transferred from another fit), the data it was fitted on, and the fit's residuals. Loading it
validates every field strictly; errors name the field, the value and what is valid.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field, NonNegativeInt, Strict, ValidationError

from ._validation import NameTuple, StrictModel, describe_validation_error
from .costparams import CostModelParams
from .errors import ConfigError

CALIBRATION_FORMAT = 1


class FitResiduals(StrictModel):
    """How well the fitted parameters reproduce the data they were fitted on."""

    rows: NonNegativeInt = Field(description="Measurements (or metric values) in the fit.")
    mape_before: float = Field(ge=0.0, description="Mean absolute percentage error with the "
                               "starting parameters, percent.")
    mape_after: float = Field(ge=0.0, description="Mean absolute percentage error after the fit, percent.")
    max_abs_pct_error: float = Field(ge=0.0, description="Largest absolute percentage error after the fit.")
    rms_log_error: float = Field(ge=0.0, description="Root mean square of log(predicted/measured) after the fit.")


class FitStage(StrictModel):
    """One least-squares stage: the parameters it fitted and the data it used."""

    name: str = Field(description="What this stage fits (e.g. 'gemm operators', 'collectives', 'steps').")
    parameters: NameTuple = Field(description="CostModelParams fields fitted in this stage.")
    data: NameTuple = Field(description="Measurement files or sources used, with row filters.")
    residuals: FitResiduals = Field(description="Residuals of this stage's fit.")


class Calibration(StrictModel):
    """Fitted cost-model parameters of one chip with one serving engine."""

    format: int = Field(default=CALIBRATION_FORMAT, description="Calibration file format version.")
    name: str = Field(description="Short name, e.g. 'h100-vllm'.")
    chip: str = Field(description="Chip preset the parameters describe (e.g. 'h100').")
    engine: str = Field(description="Serving engine and version the overheads describe "
                        "(e.g. 'vllm 0.5 (mid-2024)').")
    params: CostModelParams = Field(description="The full parameter set to simulate with.")
    fitted: NameTuple = Field(default=(), description="Parameters fitted to data; the rest are "
                              "defaults or transferred (see notes).")
    fitted_sources: NameTuple = Field(
        default=(), description="Source ids (shared/data/measurements/sources.json) or files of "
        "the rows fitted on; `validate` reports those rows apart from the held-out ones.")
    fitted_models: Optional[str] = Field(
        default=None, description="Regular expression of the models whose step and batch rows "
        "were fitted (None: all); rows of other models are held out.")
    fitted_rows: NameTuple = Field(
        default=(), description="Ids of the step and batch measurements the fit used; `validate` "
        "reports exactly these as fit rows and every other row as held out.")
    stages: Annotated[tuple[FitStage, ...], Strict(False)] = Field(
        default=(), description="The fit's stages, data and residuals.")
    notes: Optional[str] = Field(default=None, description="Transfers, exclusions and caveats.")
    tokenmill_version: Optional[str] = Field(default=None, description="Version that wrote the file.")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_json())


def _parse(text: str, source: str) -> Calibration:
    from .catalogue import parse_file_text

    suffix = Path(source).suffix.lower() or ".json"
    data = parse_file_text(text, suffix if suffix in (".json", ".toml", ".yaml", ".yml") else ".json",
                           f"calibration {source}")
    if not isinstance(data, dict):
        raise ConfigError(f"calibration {source}: expected a table of fields, got {type(data).__name__}")
    if data.get("format", CALIBRATION_FORMAT) != CALIBRATION_FORMAT:
        raise ConfigError(f"calibration {source}: format = {data.get('format')!r} is not supported; "
                          f"valid: {CALIBRATION_FORMAT}")
    try:
        return Calibration.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, f"calibration {source}")) from None


def shipped_calibrations() -> dict[str, Calibration]:
    """The calibrations shipped with tokenmill, by name."""
    folder = resources.files("tokenmill") / "data" / "calibrations"
    out: dict[str, Calibration] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            cal = _parse(entry.read_text(), f"tokenmill/data/calibrations/{entry.name}")
            out[cal.name] = cal
    return out


def load_calibration(name_or_path: str | Path) -> Calibration:
    """A shipped calibration by name ('h100-vllm') or a calibration file by path."""
    text = str(name_or_path)
    shipped = shipped_calibrations()
    if text.strip().lower() in shipped:
        return shipped[text.strip().lower()]
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"calibration {text!r} is neither a file nor a shipped calibration; "
                          f"shipped: {', '.join(shipped) or 'none'}")
    try:
        return _parse(path.read_text(), str(path))
    except OSError as err:
        raise ConfigError(f"calibration {path}: cannot read it ({err.strerror})") from err
