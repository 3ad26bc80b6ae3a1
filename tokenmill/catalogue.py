"""Built-in presets: chips and model architectures, looked up by name or alias.

Chip presets are TOML files in presets/gpus (one per chip, each figure with its source);
model presets are JSON files in presets/models holding the model's Hugging Face config.json
fields and where they were copied from. A model may also be given as a path to a config.json.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._validation import config_error
from .architecture import ModelArch
from .errors import ConfigError
from .hardware import Hardware

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PRESETS = resources.files("tokenmill") / "presets"


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=None)
def gpu_presets() -> dict[str, Hardware]:
    """Every built-in chip, by preset name."""
    out: dict[str, Hardware] = {}
    for entry in sorted((_PRESETS / "gpus").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            try:
                hw = Hardware.model_validate(data)
            except ValidationError as err:  # a broken preset is a bug in the package
                raise RuntimeError(f"built-in chip preset {entry.name} is invalid:\n{err}") from err
            out[hw.name] = hw
    return out


@lru_cache(maxsize=None)
def model_presets() -> dict[str, ModelArch]:
    """Every built-in model architecture, by preset name."""
    out: dict[str, ModelArch] = {}
    for entry in sorted((_PRESETS / "models").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            model = _model_from_preset(data)
            out[model.name] = model
    return out


def _model_from_preset(data: dict[str, Any]) -> ModelArch:
    published = data.get("published_params") or {}
    return ModelArch.from_hf_config(
        data["config"], name=data["name"], hf_id=data.get("hf_id"),
        aliases=tuple(data.get("aliases", ())), source=data.get("source"),
        published_params=published.get("total"))


def _alias_table(presets: dict[str, Any]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, preset in presets.items():
        table[_norm(name)] = name
        for alias in preset.aliases:
            table[_norm(alias)] = name
    return table


def _known(presets: dict[str, Any]) -> str:
    parts = []
    for name, preset in presets.items():
        parts.append(f"{name} (also {', '.join(preset.aliases)})" if preset.aliases else name)
    return "; ".join(parts)


def gpu_names() -> list[str]:
    return list(gpu_presets())


def model_names() -> list[str]:
    return list(model_presets())


def find_gpu(name: str) -> Hardware:
    """A chip preset by name or alias, or a chip described in a TOML or JSON file."""
    presets = gpu_presets()
    key = _alias_table(presets).get(_norm(name))
    if key is not None:
        return presets[key]
    path = Path(name)
    if path.suffix.lower() in (".toml", ".json") and path.is_file():
        return load_gpu_file(path)
    raise ConfigError(f"unknown gpu {name!r}; known gpus: {_known(presets)}; "
                      "or give the path of a .toml/.json chip description")


def find_model(name: str) -> ModelArch:
    """A model preset by name or alias, or a Hugging Face config.json given by path."""
    presets = model_presets()
    key = _alias_table(presets).get(_norm(name))
    if key is not None:
        return presets[key]
    path = Path(name)
    if path.suffix.lower() == ".json" and path.is_file():
        return load_model_file(path)
    raise ConfigError(f"unknown model {name!r}; known models: {_known(presets)}; "
                      "or give the path of a Hugging Face config.json")


def load_gpu_file(path: Path) -> Hardware:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read chip description {path}: {err}") from err
    try:
        return Hardware.model_validate(data)
    except ValidationError as err:
        raise config_error(err, f"chip description {path}") from err


def load_model_file(path: Path) -> ModelArch:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read model config {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path}: expected a JSON object")
    try:
        if "config" in data and "name" in data:  # a tokenmill preset file
            return _model_from_preset(data)
        return ModelArch.from_hf_config(data, name=path.stem, source=str(path))
    except ValidationError as err:
        raise config_error(err, f"model config {path}") from err
