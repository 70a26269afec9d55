"""Registry entries, Hugging Face snapshot downloads from a 127.0.0.1 endpoint, and
``load_concept_backend``: the real loading path on tiny random-weight snapshots, and
its one-line errors (unknown detector, a checkpoint that is not one, gated weights)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.http_server import FileServer
from helpers.hub_api import publish_repo
from helpers.tiny_concept import write_grounding_dino, write_owlv2, write_sam3
from terramask.cli.main import main
from terramask.core.errors import DownloadError, InputError, ModelError, UnknownModelError, WeightsNotFoundError
from terramask.models import registry
from terramask.models.concept.base import CLASS_COLUMN, ConceptQuery
from terramask.models.concept.resolve import detector_spec, load_concept_backend, load_detector
from terramask.models.download import checkpoint_path, is_cached
from terramask.models.snapshot import ENV_ENDPOINT, file_url, hub_endpoint, read_manifest

pytest.importorskip("transformers")

CONCEPT = {
    # name: (family, repo, gated)
    "grounding-dino-tiny": ("grounding-dino", "IDEA-Research/grounding-dino-tiny", False),
    "grounding-dino-base": ("grounding-dino", "IDEA-Research/grounding-dino-base", False),
    "owlv2-base": ("owlv2", "google/owlv2-base-patch16-ensemble", False),
    "sam3": ("sam3", "facebook/sam3", True),
}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("snapshots")
    return {
        "grounding-dino": write_grounding_dino(root / "gdino"),
        "owlv2": write_owlv2(root / "owlv2"),
        "sam3": write_sam3(root / "sam3"),
    }


@pytest.fixture
def hub(tmp_path, snapshots, monkeypatch):
    """A Hugging Face style endpoint on 127.0.0.1 serving the tiny snapshots under the
    registry's repositories (``/{repo}/resolve/main/{file}``) and the Hub's model API
    (file list with the LFS files' SHA-256)."""
    for name, (family, repo, _) in CONCEPT.items():
        if name != "grounding-dino-base":
            publish_repo(tmp_path / "hub", repo, snapshots[family])
    with FileServer(tmp_path / "hub") as server:
        monkeypatch.setenv(ENV_ENDPOINT, f"http://127.0.0.1:{server.port}")
        yield server


@pytest.mark.parametrize("name", sorted(CONCEPT))
def test_registry_entries_name_the_official_repositories(name):
    family, repo, gated = CONCEPT[name]
    spec = registry.get_spec(name)
    assert (spec.family, spec.repo, spec.gated, spec.revision) == (family, repo, gated, "main")
    assert spec.url == f"https://huggingface.co/{repo}" and spec.is_snapshot
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {f.path for f in spec.files}
    assert spec.size_bytes and spec.params_millions
    assert ("SAM License" in spec.licence) == gated and (spec.licence == "Apache-2.0") != gated


def test_param_counts_match_the_transformers_architectures():
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection, Sam3Config, Sam3Model

    for name, config, cls in [("grounding-dino-tiny", GroundingDinoConfig(), GroundingDinoForObjectDetection),
                              ("sam3", Sam3Config(), Sam3Model)]:
        with torch.device("meta"):
            model = cls(config)
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert registry.get_spec(name).params_millions == pytest.approx(count, abs=0.05)


def test_models_list_shows_the_concept_models_and_that_sam3_is_gated(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}
    assert rows["sam3"][1:5] == ["sam3", "840.4M", "3.5 GB", "SAM License (gated: accept it on Hugging Face first)"]
    assert rows["grounding-dino-tiny"][1:6] == ["grounding-dino", "172.3M", "689.0 MB", "Apache-2.0", "no"]
    assert main(["models", "list", "--json"]) == 0
    js = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert js["sam3"]["gated"] is True and js["sam3"]["repo"] == "facebook/sam3"


def test_endpoint_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_ENDPOINT, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert file_url(registry.get_spec("owlv2-base"), "config.json") == (
        "https://mirror.example/google/owlv2-base-patch16-ensemble/resolve/main/config.json"
    )
    monkeypatch.setenv(ENV_ENDPOINT, "http://127.0.0.1:9")
    assert hub_endpoint() == "http://127.0.0.1:9"


def test_download_fetches_the_snapshot_and_loads_it(hub, snapshots, capsys):
    spec = registry.get_spec("grounding-dino-tiny")
    assert not is_cached(spec)
    with pytest.raises(WeightsNotFoundError, match="terramask models download grounding-dino-tiny"):
        load_detector("grounding-dino")
    assert main(["models", "download", "grounding-dino-tiny", "-q"]) == 0
    target = checkpoint_path(spec)
    assert capsys.readouterr().out.strip() == str(target)
    assert is_cached(spec) and not target.with_name(target.name + ".part").exists()
    assert (target / "model.safetensors").read_bytes() == (snapshots["grounding-dino"] / "model.safetensors").read_bytes()
    # optional files the repository lacks (special_tokens_map.json here) were skipped, not fatal
    assert not (target / "special_tokens_map.json").exists() and (target / "tokenizer.json").is_file()
    assert not any(r.path.endswith("special_tokens_map.json") for r in hub.requests), "the file list says it is absent"
    weights = hashlib.sha256((snapshots["grounding-dino"] / "model.safetensors").read_bytes()).hexdigest()
    verified = {f["path"]: (f["sha256"], f["verified"]) for f in read_manifest(target)["files"]}
    assert verified["model.safetensors"] == (weights, "sha256 (published by the hub)")
    served = len(hub.requests)
    detector = load_detector("grounding-dino", box_threshold=0.3, text_threshold=0.2)
    assert len(hub.requests) == served  # loaded from the cache
    assert (detector.name, detector.box_threshold, detector.text_threshold) == ("grounding-dino-tiny", 0.3, 0.2)


@pytest.mark.slow
def test_load_concept_backend_downloads_the_detector_and_pairs_it_with_sam(hub, tiny_sam_checkpoint):
    backend = load_concept_backend(detector="owlv2", checkpoint=tiny_sam_checkpoint, download=True)
    assert backend.name.startswith("owlv2-base+")
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    backend.detector.box_threshold = 0.0  # random weights: keep every box
    found = backend.find(rgb, ConceptQuery(phrases=("building", "pond")))
    assert len(found) > 0 and found.shape == (48, 64)
    assert set(found[CLASS_COLUMN].tolist()) <= {"building", "pond"}
    assert found["predicted_iou"].dtype == np.float32


def test_sam3_from_a_local_folder_and_from_a_hub_cache_folder(snapshots, tmp_path):
    backend = load_concept_backend(checkpoint=snapshots["sam3"])  # model_type sam3 picks the route
    assert type(backend).__name__ == "Sam3ConceptBackend"
    repo = tmp_path / "models--facebook--sam3"
    shutil.copytree(snapshots["sam3"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    backend = load_concept_backend("sam3", checkpoint=repo, threshold=0.2)
    assert backend.threshold == 0.2


def test_gated_weights_missing_say_how_to_get_them():
    with pytest.raises(WeightsNotFoundError) as info:
        load_concept_backend("sam3")
    message = str(info.value)
    assert "gated under the SAM License" in message and "https://huggingface.co/facebook/sam3" in message
    assert "hf download facebook/sam3 --local-dir DIR" in message and "\n" not in message


def test_gated_download_refused_by_the_hub_says_how_to_get_them(hub):
    hub.status = 403
    with pytest.raises(WeightsNotFoundError, match=r"refused sam3 \(HTTP 403\).*accept it at"):
        load_concept_backend("sam3", download=True)
    assert not checkpoint_path(registry.get_spec("sam3")).exists()


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as info:
        load_detector("yolo")
    assert "unknown detector 'yolo'" in str(info.value)
    for name in ("grounding-dino-tiny", "grounding-dino-base", "owlv2-base"):
        assert name in str(info.value)
    with pytest.raises(UnknownModelError, match="unknown detector 'sam-vit-b'"):
        detector_spec("sam-vit-b")
    assert detector_spec("Grounding_DINO").name == "grounding-dino-tiny"


def test_a_detector_checkpoint_that_is_not_one(snapshots, tmp_path):
    with pytest.raises(ModelError, match=r"is not a Grounding DINO checkpoint: its config.json has model_type 'owlv2'"):
        load_detector("grounding-dino", snapshots["owlv2"])
    with pytest.raises(ModelError, match="holds no config.json"):
        load_detector("owlv2", tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="is a single file"):
        load_detector("owlv2", weights)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_detector("owlv2", tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a readable model configuration"):
        load_detector("owlv2", tmp_path / "broken")


def test_route_options_that_do_not_fit_are_refused(snapshots):
    with pytest.raises(InputError, match="drop --detector"):
        load_concept_backend("sam3", detector="owlv2")
    with pytest.raises(InputError, match="no text threshold"):
        load_detector("owlv2", snapshots["owlv2"], text_threshold=0.3)
    with pytest.raises(InputError, match="between 0 and 1"):
        load_detector("owlv2", snapshots["owlv2"], box_threshold=1.5)
    with pytest.raises(InputError, match="is a detector"):
        load_concept_backend("owlv2-base")
    with pytest.raises(InputError, match="SAM 3's instance score"):
        load_concept_backend("classic", threshold=0.3)


def test_a_failed_download_leaves_no_snapshot_under_its_final_name(hub):
    hub.status = 503
    with pytest.raises(DownloadError, match=r"cannot download owlv2-base: .*/api/models/google/owlv2-base-patch16-ensemble/.*HTTP 503"):
        load_detector("owlv2", download=True)
    assert not checkpoint_path(registry.get_spec("owlv2-base")).exists()


def test_snapshot_folders_are_not_checkpoint_files():
    assert registry.spec_for_filename("sam3") is None
    assert registry.spec_for_filename("grounding-dino-tiny") is None


def test_sam3_named_as_the_detector_takes_the_sam3_route(snapshots, caplog):
    backend = load_concept_backend("sam-vit-b", detector="sam3", detector_checkpoint=snapshots["sam3"])
    assert type(backend).__name__ == "Sam3ConceptBackend"
    assert "model sam-vit-b is not used" in caplog.text
    with pytest.raises(InputError, match="detector checkpoint, not --checkpoint"):
        load_concept_backend(detector="sam3", checkpoint=snapshots["sam3"])
