"""OpenVINO's per-machine settings: threads, precision (f32 unless asked and supported),
the latency hint, the compiled-blob cache; and OpenVINO failures as one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from terramask.core.errors import InputError, ModelError
from terramask.models.machine import usable_cores
from terramask.models.openvino.settings import ENV_PRECISION, ENV_THREADS, choose_settings, supported_precisions

XEON_SPR = ("FP32", "BF16", "FP16", "INT8", "BIN", "EXPORT_IMPORT")
AMD_ZEN3 = ("FP32", "INT8", "BIN", "EXPORT_IMPORT")


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    monkeypatch.delenv(ENV_PRECISION, raising=False)


def test_defaults_are_f32_latency_on_every_usable_core():
    s = choose_settings(XEON_SPR, cache_dir=Path("/c/openvino"))
    assert (s.threads, s.precision, s.hint) == (usable_cores(), "f32", "LATENCY")
    # f32 is asked for explicitly: OpenVINO alone would choose bf16 on this CPU
    assert s.config() == {"INFERENCE_NUM_THREADS": usable_cores(), "INFERENCE_PRECISION_HINT": "f32",
                          "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": "/c/openvino"}
    assert "CACHE_DIR" not in choose_settings(AMD_ZEN3).config()


def test_reduced_precision_only_where_the_cpu_has_it(monkeypatch):
    assert supported_precisions(XEON_SPR) == ("f32", "bf16", "f16")
    assert supported_precisions(AMD_ZEN3) == ("f32",)
    assert choose_settings(XEON_SPR, precision="bf16").precision == "bf16"
    monkeypatch.setenv(ENV_PRECISION, "F16")
    assert choose_settings(XEON_SPR).precision == "f16"
    with pytest.raises(InputError, match=rf"{ENV_PRECISION}=f16: this CPU \(AMD EPYC 7763\) has no native f16 .*supports f32\)"):
        choose_settings(AMD_ZEN3, cpu="AMD EPYC 7763")
    monkeypatch.setenv(ENV_PRECISION, "int4")
    with pytest.raises(InputError, match=rf"{ENV_PRECISION}='int4': expected one of f32, bf16, f16"):
        choose_settings(XEON_SPR)


def test_threads_from_the_argument_or_the_environment(monkeypatch):
    assert choose_settings(AMD_ZEN3, threads=1).threads == 1
    monkeypatch.setenv(ENV_THREADS, "3")
    assert choose_settings(AMD_ZEN3).threads == 3
    assert choose_settings(AMD_ZEN3, threads=2).threads == 2  # the argument wins
    for bad, why in (("many", "whole number"), ("0", ">= 1")):
        monkeypatch.setenv(ENV_THREADS, bad)
        with pytest.raises(InputError, match=f"{ENV_THREADS} must be .*{why}"):
            choose_settings(AMD_ZEN3)
    with pytest.raises(InputError, match="at least 1 thread"):
        choose_settings(AMD_ZEN3, threads=0)


def test_machine_settings_read_this_cpu_and_cache_under_the_model_cache(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from terramask.models.openvino.backend import cpu_description, machine_settings

    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path))
    name, caps = cpu_description()
    assert name and "FP32" in caps
    s = machine_settings(threads=1)
    assert s.threads == 1 and s.precision == "f32" and s.cache_dir == tmp_path / "openvino"


def test_a_file_openvino_cannot_read_is_one_line_naming_it(tmp_path):
    pytest.importorskip("openvino")
    from terramask.models.openvino.backend import compile_graph

    bad = tmp_path / "encoder.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    with pytest.raises(ModelError, match=f"OpenVINO cannot compile {bad}: ") as err:
        compile_graph(bad, choose_settings(AMD_ZEN3, threads=1))
    assert "\n" not in str(err.value)
