"""`terramask doctor` and `terramask models list` say which runtime is fastest here per
model family, from what was measured (injected here; a real measurement in the slow test
asserts what was recorded, never how long it took)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest

from terramask.models import registry
from terramask.models.runtime_choice import ChoiceCache, Measurement

SAM = Measurement("sam", "sam-vit-b", {"torch": 25.3, "onnx": 13.2}, {"openvino": "ModelError: cannot compile"},
                  "2026-12-03T16:00:00+00:00")
SAM2 = Measurement("sam2", "sam2.1-hiera-tiny", {"torch": 3.99, "onnx": 4.78, "openvino": 2.5}, {}, "2026-12-03T16:05:00+00:00")


def _table(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FAMILY"))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_doctor_shows_the_machine_and_the_measured_choice(run_cli):
    ChoiceCache().put(SAM)
    ChoiceCache().put(SAM2)
    code, out, err = run_cli("doctor")
    assert code == 0, err
    assert re.search(r"^machine    .+, \d+ usable core\(s\); instruction sets: ", out, re.M)
    assert re.search(r"^packages   terramask [\w.+]+, numpy ", out, re.M)
    assert re.search(r"^runtimes   torch.* installed", out, re.M)
    assert re.search(r"^openvino   (CPU .+; native f32.*; compiles with \d+ thread\(s\), f32, latency hint|not usable: .+)$", out, re.M)
    rows = _table(out)
    assert rows["sam"] == ["sam", "onnx", "25.30 s", "13.20 s", "failed", "sam-vit-b", "2026-12-03T16:00:00+00:00"]
    assert rows["sam2"][:5] == ["sam2", "openvino", "3.99 s", "4.78 s", "2.50 s"]
    assert rows["mobilesam"] == ["mobilesam", "not measured", "-", "-", "-", "-", "-"]
    assert "terramask doctor --measure" in out


def test_doctor_json(run_cli):
    ChoiceCache().put(SAM)
    code, out, err = run_cli("doctor", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["families"]["sam"]["fastest"] == "onnx" and data["families"]["mobilesam"] is None
    assert data["families"]["sam"]["failed"] == {"openvino": "ModelError: cannot compile"}
    assert data["machine"]["cores"] >= 1 and len(data["machine"]["key"]) == 16
    assert data["choice_cache"].endswith("runtime-choice.json") and "torch" in data["runtimes_installed"]


def test_models_list_names_the_measured_runtime(run_cli):
    ChoiceCache().put(SAM)
    code, out, err = run_cli("models", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[5:8] == ["CACHED", "RUNTIME", "WHEN"]
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}
    assert rows["sam-vit-b"][6] == rows["sam-vit-h"][6] == "onnx"  # per family
    assert rows["mobilesam"][6] == "unmeasured" and rows["classic"][6] == "-"
    code, out, err = run_cli("models", "list", "--json")
    by_name = {r["name"]: r for r in json.loads(out)}
    assert by_name["sam-vit-l"]["fastest_runtime"] == "onnx" and by_name["sam2.1-hiera-tiny"]["fastest_runtime"] is None


def test_doctor_measure_with_nothing_cached_says_what_to_download(run_cli):
    code, out, err = run_cli("doctor", "--measure")
    assert code == 0, err
    assert "sam: no checkpoint in the cache (terramask models download " in out
    assert "mobilesam: no checkpoint in the cache (terramask models download mobilesam)" in out


def test_doctor_errors_are_one_line(run_cli):
    code, out, err = run_cli("doctor", "--model", "sam-vit-b")
    assert code == 2 and err.strip() == "terramask: error: --model chooses what --measure times; add --measure"
    code, out, err = run_cli("doctor", "--measure", "--model", "classic")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "runs only on torch" in err


def test_every_runtime_option_accepts_openvino_and_auto(run_cli, tmp_path):
    for command in ("predict", "auto", "batch", "embed", "serve"):
        code, out, err = run_cli(command, "--help")
        assert code == 0 and "torch|onnx|onnx-int8|openvino|auto" in re.sub(r"\s+", "", out), command
    code, out, err = run_cli("embed", tmp_path / "missing.tif", "--model", "classic", "--runtime", "openvino")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "has no OpenVINO runtime" in err


@pytest.mark.slow
def test_doctor_measures_every_installed_runtime_and_auto_uses_the_winner(run_cli, tiny_sam_checkpoint, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    from terramask.models.download import checkpoint_path
    from terramask.models.resolve import load_backend

    data = tiny_sam_checkpoint.read_bytes()
    spec = dataclasses.replace(registry.get_spec("sam-vit-b"), sha256=hashlib.sha256(data).hexdigest(),
                               size_bytes=len(data), arch=None)
    monkeypatch.setitem(registry.REGISTRY, "sam-vit-b", spec)
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

    code, out, err = run_cli("doctor", "--measure", "--model", "sam-vit-b")
    assert code == 0, err
    measured = ChoiceCache().get("sam")
    assert measured is not None and measured.model == "sam-vit-b" and measured.failed == {}
    assert set(measured.seconds) == {"torch", "onnx", "openvino"} and all(s > 0 for s in measured.seconds.values())
    assert f"sam: fastest {measured.fastest} (torch " in err
    assert _table(out)["sam"][1] == measured.fastest
    runtime_of = {"torch": "SamBackend", "onnx": "OnnxSamBackend", "openvino": "OpenVinoSamBackend"}
    assert type(load_backend("sam-vit-b", runtime="auto")).__name__ == runtime_of[measured.fastest]


def test_doctor_without_openvino_says_how_to_install_it(run_cli, monkeypatch):
    import sys

    from terramask.models.openvino import backend as ov_backend

    monkeypatch.setitem(sys.modules, "openvino", None)
    ov_backend.ov_core.cache_clear()
    try:
        code, out, err = run_cli("doctor")
    finally:
        ov_backend.ov_core.cache_clear()
    assert code == 0, err
    assert re.search(r"^openvino   not usable: openvino is required .*pip install 'terramask\[openvino\]'", out, re.M)
