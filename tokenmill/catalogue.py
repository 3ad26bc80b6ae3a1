"""Built-in presets (chips, models, systems, fabrics) and user files, looked up by name or alias.

Chip, system and fabric presets are TOML files in presets/ (one per item, every figure with its
source); model presets are JSON files holding the model's Hugging Face config.json fields, where
they were copied from, and the published parameter counts. Users add their own chip, system or
fabric as a TOML, JSON or YAML file and their own model as a config.json (or a preset-shaped
JSON/YAML), validated by the same strict models, so a typo names the bad field.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from ._validation import config_error
from .architecture import ModelArch
from .errors import ConfigError
from .hardware import Hardware
from .hf_config import arch_from_hf_config
from .systems import Fabric, System

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PRESETS = resources.files("tokenmill") / "presets"
_FILE_SUFFIXES = (".toml", ".json", ".yaml", ".yml")
M = TypeVar("M", bound=BaseModel)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def parse_file_text(text: str, suffix: str, what: str) -> Any:
    """Parse TOML, JSON or YAML text (YAML needs the optional PyYAML: pip install tokenmill[yaml])."""
    suffix = suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise ConfigError(f"{what}: reading YAML needs PyYAML (pip install 'tokenmill[yaml]'); "
                                  "or give the file as TOML or JSON") from None
            return yaml.safe_load(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{what}: not valid {suffix.lstrip('.').upper()} ({err})") from err
    except Exception as err:  # yaml.YAMLError, without importing yaml at module level
        if type(err).__module__.startswith("yaml"):
            raise ConfigError(f"{what}: not valid YAML ({err})") from err
        raise
    raise ConfigError(f"{what}: unknown file type {suffix!r}; use .toml, .json, .yaml or .yml")


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from err
    data = parse_file_text(text, path.suffix, f"{what} {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a table/object at the top level")
    return data


def _validate(cls: type[M], data: dict[str, Any], what: str) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise config_error(err, what) from err


@lru_cache(maxsize=None)
def _toml_presets(folder: str, cls: type[M]) -> dict[str, M]:
    out: dict[str, M] = {}
    for entry in sorted((_PRESETS / folder).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            try:
                item = cls.model_validate(data)
            except ValidationError as err:  # a broken preset is a bug in the package
                raise RuntimeError(f"built-in preset {folder}/{entry.name} is invalid:\n{err}") from err
            out[item.name] = item  # type: ignore[attr-defined]
    return out


def gpu_presets() -> dict[str, Hardware]:
    """Every built-in chip, by preset name."""
    return _toml_presets("gpus", Hardware)


def system_presets() -> dict[str, System]:
    """Every built-in system (box or rack), by preset name."""
    return _toml_presets("systems", System)


def fabric_presets() -> dict[str, Fabric]:
    """Every built-in scale-out fabric, by preset name."""
    return _toml_presets("fabrics", Fabric)


@lru_cache(maxsize=None)
def _model_files() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted((_PRESETS / "models").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            out[data["name"]] = data
    return out


@lru_cache(maxsize=None)
def model_presets() -> dict[str, ModelArch]:
    """Every built-in model architecture that can be simulated, by preset name."""
    return {name: model_from_preset(data) for name, data in _model_files().items()
            if data.get("config") is not None}


def announced_models() -> dict[str, dict[str, Any]]:
    """Models that were announced with headline figures only (no architecture to simulate)."""
    return {name: data for name, data in _model_files().items() if data.get("config") is None}


_PRESET_KEYS = {"name", "hf_id", "aliases", "source", "provenance", "notes", "published", "config",
                "status"}


def model_from_preset(data: dict[str, Any], what: str = "model preset") -> ModelArch:
    """A ModelArch from a tokenmill model file: descriptive keys plus a config.json under 'config'."""
    unknown = sorted(set(data) - _PRESET_KEYS)
    if unknown:
        raise ConfigError(f"invalid {what}:\n  {unknown[0]}: unknown key (valid: "
                          f"{', '.join(sorted(_PRESET_KEYS))})")
    if not isinstance(data.get("config"), dict):
        raise ConfigError(f"invalid {what}:\n  config: required, a config.json object")
    meta = {k: data[k] for k in ("hf_id", "source", "provenance", "notes", "published") if data.get(k)}
    try:
        return arch_from_hf_config(data["config"], name=str(data["name"]),
                                   aliases=tuple(data.get("aliases", ())), **meta)
    except ValidationError as err:
        raise config_error(err, what) from err


def _alias_table(presets: dict[str, Any]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, preset in presets.items():
        table[_norm(name)] = name
        for alias in (preset.aliases if hasattr(preset, "aliases") else preset.get("aliases", ())):
            table[_norm(alias)] = name
    return table


def _known(presets: dict[str, Any]) -> str:
    parts = []
    for name, preset in presets.items():
        aliases = preset.aliases if hasattr(preset, "aliases") else preset.get("aliases", ())
        parts.append(f"{name} (also {', '.join(aliases)})" if aliases else name)
    return "; ".join(parts)


def gpu_names() -> list[str]:
    return list(gpu_presets())


def model_names() -> list[str]:
    return list(model_presets())


def _find(kind: str, name: str, presets: dict[str, M], load: Callable[[Path], M], hint: str) -> M:
    key = _alias_table(presets).get(_norm(name))
    if key is not None:
        return presets[key]
    path = Path(name)
    if path.suffix.lower() in _FILE_SUFFIXES and path.is_file():
        return load(path)
    if path.suffix.lower() in _FILE_SUFFIXES:
        raise ConfigError(f"{kind} file {name!r} does not exist")
    plural = "gpus" if kind == "gpu" else f"{kind}s"
    raise ConfigError(f"unknown {kind} {name!r}; known {plural}: {_known(presets)}; {hint}")


def find_gpu(name: str) -> Hardware:
    """A chip preset by name or alias, or a chip described in a TOML, JSON or YAML file."""
    return _find("gpu", name, gpu_presets(), load_gpu_file,
                 "or give the path of a .toml/.json/.yaml chip description")


def find_system(name: str) -> System:
    """A system preset by name or alias, or a system described in a file."""
    return _find("system", name, system_presets(), load_system_file,
                 "or give the path of a .toml/.json/.yaml system description")


def find_fabric(name: str) -> Fabric:
    """A fabric preset by name or alias, or a fabric described in a file."""
    return _find("fabric", name, fabric_presets(), load_fabric_file,
                 "or give the path of a .toml/.json/.yaml fabric description")


def find_model(name: str) -> ModelArch:
    """A model preset by name or alias, or a Hugging Face config.json given by path."""
    presets = model_presets()
    key = _alias_table(presets).get(_norm(name))
    if key is not None:
        return presets[key]
    announced = _alias_table(announced_models()).get(_norm(name))
    if announced is not None:
        data = announced_models()[announced]
        fig = data.get("announced", {})
        raise ConfigError(
            f"model {announced!r} was only announced ({fig.get('total', '?')} total, "
            f"{fig.get('active', '?')} active parameters) and its architecture was never "
            "published, so tokenmill cannot derive its memory or step cost; give a config.json "
            "path to model a similar architecture")
    from .precision import split_variant  # a quantised preset name is a model plus a precision
    variant = split_variant(name)
    if variant is not None:
        return find_model(variant[0])
    return _find("model", name, presets, load_model_file,
                 "or give the path of a Hugging Face config.json")


def load_gpu_file(path: Path) -> Hardware:
    return _validate(Hardware, _read(path, "chip description"), f"chip description {path}")


def load_system_file(path: Path) -> System:
    return _validate(System, _read(path, "system description"), f"system description {path}")


def load_fabric_file(path: Path) -> Fabric:
    return _validate(Fabric, _read(path, "fabric description"), f"fabric description {path}")


def load_model_file(path: Path) -> ModelArch:
    """A Hugging Face config.json (or YAML of the same fields), or a tokenmill model preset file."""
    data = _read(path, "model config")
    if "config" in data and "name" in data:
        return model_from_preset(data, f"model preset {path}")
    try:
        return arch_from_hf_config(data, name=path.stem if path.stem != "config" else
                                   (path.parent.name or "config"), source=str(path))
    except ValidationError as err:
        raise config_error(err, f"model config {path}") from err
