"""The catalogue: sourced presets, datasheet cross-checks, systems, fabrics and user files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tokenmill import ConfigError
from tokenmill.catalogue import (announced_models, fabric_presets, find_fabric, find_gpu,
                                 find_model, find_system, gpu_presets, model_presets,
                                 system_presets)
from tokenmill.hardware import Hardware

DATASHEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hardware_datasheets.csv"

# Every chip the original tokenmill shipped, by its old names, and the ones the issue adds.
ORIGINAL_NAMES = ["rubin", "b200", "h200", "h100", "a100", "a10g", "mi355x", "mi325x", "mi300x",
                  "tpu-v8i", "tpu-v8t", "tpu-v7-ironwood", "groq-lpu-v1", "cerebras-cs3", "cs3", "wse3"]
ADDED = ["b300", "gb200", "h100-pcie", "a100-40gb", "l40s", "l4", "mi250x", "tpu-v5e", "tpu-v5p",
         "tpu-v6e", "gaudi3"]
MODELS = ["llama-2-7b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b",
          "llama-3.3-70b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b", "mixtral-8x7b",
          "mixtral-8x22b", "qwen2.5-7b", "qwen2.5-32b", "qwen2.5-72b", "qwen3-8b", "qwen3-32b",
          "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "deepseek-r1", "kimi-k2",
          "gpt-oss-20b", "gpt-oss-120b", "llama-4-scout", "llama-4-maverick",
          # the original tokenmill's names
          "llama-8b", "llama-70b", "llama4-maverick"]


@pytest.mark.parametrize("name", ORIGINAL_NAMES + ADDED)
def test_chip_names_resolve(name: str) -> None:
    assert isinstance(find_gpu(name), Hardware)


@pytest.mark.parametrize("name", MODELS)
def test_model_names_resolve(name: str) -> None:
    assert find_model(name).total_params() > 1e9


def test_sram_chips_are_modelled_as_sram() -> None:
    for name in ("groq-lpu-v1", "cerebras-cs3"):
        hw = find_gpu(name)
        assert hw.memory_kind == "sram" and hw.memory_gib * 1024 <= hw.sram_mb * 1.1


def test_no_sparse_headline_is_used_as_dense_peak() -> None:
    # Dense FP8 is about twice BF16 (L40S: 733 vs 362.05) and FP4 at most ~3x FP8 (B300).
    for hw in gpu_presets().values():
        if hw.fp8_tflops:
            assert hw.fp8_tflops <= 2.05 * hw.bf16_tflops, hw.name
        if hw.fp4_tflops and hw.fp8_tflops:
            assert hw.fp4_tflops <= 3.2 * hw.fp8_tflops, hw.name
        assert hw.idle_w < hw.tdp_w


@pytest.mark.parametrize("kind, presets", [("system", system_presets), ("fabric", fabric_presets)])
def test_every_system_and_fabric_figure_has_a_source(kind, presets) -> None:
    items = presets()
    assert len(items) >= (10 if kind == "system" else 8)
    for item in items.values():
        data = item.model_dump()
        numbers = [k for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for field in numbers + (["chip", "default_fabric"] if kind == "system" else []):
            if data.get(field) is not None:
                assert item.sources.get(field), f"{item.name}.{field} has no source"
        for field in item.estimates:
            assert "estimate" in item.sources[field].lower(), (item.name, field)


def test_systems_point_at_real_chips_and_fabrics() -> None:
    for s in system_presets().values():
        find_gpu(s.chip)
        if s.default_fabric:
            find_fabric(s.default_fabric)
    assert find_system("gb200-nvl72").scale_up_domain == 72
    assert find_system("dgx-h100").default_fabric == "ndr-400"
    assert find_fabric("quantum-x800").name == "xdr-800"
    for name, bw in [("hdr-200", 25), ("ndr-400", 50), ("xdr-800", 100), ("spectrum-x400", 50),
                     ("spectrum-x800", 100), ("ethernet-100", 12.5), ("ethernet-200", 25),
                     ("ethernet-400", 50)]:
        f = find_fabric(name)
        assert f.bandwidth_per_chip_gbps == bw == f.line_rate_gbit / 8


def test_model_presets_keep_source_and_provenance() -> None:
    for m in model_presets().values():
        assert m.source and m.provenance and m.published and m.published.source
    assert set(model_presets()) >= {n for n in MODELS if "-" in n and n not in ("llama-8b", "llama-70b", "llama4-maverick")}


def test_behemoth_is_listed_but_refused() -> None:
    assert "llama4-behemoth" in announced_models()
    with pytest.raises(ConfigError, match="only announced .*2T total, 288B active"):
        find_model("llama4-behemoth")


@pytest.mark.skipif(not DATASHEETS.is_file(), reason="shared/data is not beside this checkout")
def test_chips_agree_with_the_datasheet_table() -> None:
    with DATASHEETS.open(encoding="utf-8") as fh:
        rows = {r["device"]: r for r in csv.DictReader(fh)}
    pairs = {"H100-SXM5-80GB": "h100", "H200-SXM-141GB": "h200", "A100-SXM4-80GB": "a100",
             "B200 (HGX B200 / DGX B200)": "b200", "B200 (in GB200 NVL72)": "gb200",
             "MI300X": "mi300x", "MI325X": "mi325x", "MI355X": "mi355x", "TPU v5e": "tpu-v5e",
             "TPU v5p": "tpu-v5p", "TPU v6e (Trillium)": "tpu-v6e",
             "TPU7x (Ironwood)": "tpu-v7-ironwood", "Gaudi 3 (HL-325L OAM)": "gaudi3", "L40S": "l40s"}
    columns = {"mem_bw_tb_s": "memory_bandwidth_tbps", "bf16_dense_tflops": "bf16_tflops",
               "fp8_dense_tflops": "fp8_tflops", "fp4_dense_tflops": "fp4_tflops",
               "memory_gb": "memory_gib", "tdp_w": "tdp_w"}
    # Documented disagreements (see each preset's sources): Gaudi 3 scale-up uses 21 of 24 ports.
    for device, name in pairs.items():
        hw, row = find_gpu(name), rows[device]
        for col, field in columns.items():
            text = row[col].split()[0].replace("~", "") if row[col].strip() else ""
            if not text:
                continue
            assert getattr(hw, field) == pytest.approx(float(text), rel=0.02), (name, field)
        if name != "gaudi3":
            assert hw.scale_up_bandwidth_gbps == pytest.approx(float(row["scale_up_bw_gb_s_per_device"]))


def _chip(**over) -> dict:
    base = find_gpu("h100").model_dump()
    base.update(name="my-chip", display_name="My chip", aliases=[], **over)
    return base


def test_user_chip_files_in_every_format(tmp_path) -> None:
    data = _chip(memory_gib=96.0)
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert find_gpu(str(tmp_path / "c.json")).memory_gib == 96.0
    toml_lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if k not in ("sources",)
                  and v is not None]
    toml_lines.append("[sources]")
    toml_lines += [f"{k} = {json.dumps(v)}" for k, v in data["sources"].items()]
    (tmp_path / "c.toml").write_text("\n".join(toml_lines) + "\n")
    assert find_gpu(str(tmp_path / "c.toml")).name == "my-chip"
    yaml = pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert find_gpu(str(tmp_path / "c.yaml")).memory_gib == 96.0


def test_user_chip_errors_name_the_field(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_chip(memory_gib=-4.0, turbo=True)))
    with pytest.raises(ConfigError) as err:
        find_gpu(str(bad))
    text = str(err.value)
    assert "memory_gib: Input should be greater than 0 (got -4.0)" in text
    assert "turbo: unknown key" in text
    (tmp_path / "broken.toml").write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        find_gpu(str(tmp_path / "broken.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        find_gpu(str(tmp_path / "missing.toml"))


def test_yaml_without_pyyaml_says_so(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError("no yaml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"YAML needs PyYAML \(pip install 'tokenmill\[yaml\]'\)"):
        find_gpu(str(path))


def test_user_model_files(tmp_path) -> None:
    ds = json.loads((Path(__file__).resolve().parents[1] / "tokenmill" / "presets" / "models"
                     / "deepseek-v3.json").read_text())
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(ds["config"]))
    m = find_model(str(cfg))
    assert m.total_params() == find_model("deepseek-v3").total_params()
    yaml = pytest.importorskip("yaml")
    cfg_yaml = tmp_path / "dsv3.yaml"
    cfg_yaml.write_text(yaml.safe_dump(ds["config"]))
    assert find_model(str(cfg_yaml)).kv_bytes_per_token(1, 2.0) == 70_272
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({**ds, "name": "my-ds", "colour": "blue"}))
    with pytest.raises(ConfigError, match="colour: unknown key"):
        find_model(str(preset))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**ds["config"], "num_experts_per_tok": 300}))
    with pytest.raises(ConfigError, match="experts_per_token"):
        find_model(str(bad))


def test_quantised_names_resolve_to_their_base_model() -> None:
    assert find_model("llama-70b-fp8") is find_model("llama-3.1-70b")
    assert find_model("kimi-k2-nvfp4-sparse") is find_model("kimi-k2")


def test_every_new_config_field_is_described() -> None:
    from tokenmill.architecture import PublishedSize
    from tokenmill.precision import Precision
    from tokenmill.systems import Fabric, System

    for model in (System, Fabric, PublishedSize, Precision):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
