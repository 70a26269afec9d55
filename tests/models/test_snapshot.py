"""Hugging Face snapshot downloads verified against the SHA-256 the hub publishes for LFS
files (and a SHA-256 pinned in the registry), from a Hub-like endpoint on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers.http_server import FileServer
from helpers.hub_api import publish_repo
from terramask.core.errors import ChecksumError, DownloadError, WeightsNotFoundError
from terramask.models.download import checkpoint_path
from terramask.models.registry import HubFile, ModelSpec
from terramask.models.snapshot import ENV_ENDPOINT, MANIFEST, ensure_snapshot, published_files, read_manifest

REPO = "org/tiny-detector"
WEIGHTS = bytes(range(256)) * 64  # 16 KiB standing in for model.safetensors


def _spec(pinned: str | None = None, gated: bool = False) -> ModelSpec:
    return ModelSpec(
        name="tiny-detector", family="owlv2", arch=None, url=f"https://huggingface.co/{REPO}", filename="tiny-detector",
        sha256=None, size_bytes=None, licence="SAM License" if gated else "Apache-2.0", params_millions=None,
        when_to_use="test", repo=REPO, gated=gated,
        files=(HubFile("config.json"), HubFile("special_tokens_map.json", required=False),
               HubFile("model.safetensors", sha256=pinned)),
    )


@pytest.fixture
def snapshot(tmp_path) -> Path:
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "owlv2"}')
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    return folder


def _serve(tmp_path, monkeypatch, snapshot, **published):
    root = tmp_path / "hub"
    if published.pop("api", True):
        publish_repo(root, REPO, snapshot, **published)
    else:
        (root / REPO / "resolve").mkdir(parents=True)
        import shutil

        shutil.copytree(snapshot, root / REPO / "resolve" / "main")
    server = FileServer(root).start()
    monkeypatch.setenv(ENV_ENDPOINT, f"http://127.0.0.1:{server.port}")
    return server


def test_lfs_files_are_checked_against_the_published_sha256_and_recorded(tmp_path, monkeypatch, snapshot):
    server = _serve(tmp_path, monkeypatch, snapshot)
    try:
        spec = _spec()
        assert published_files(spec)["model.safetensors"].sha256 == hashlib.sha256(WEIGHTS).hexdigest()
        target = ensure_snapshot(spec, download_missing=True, progress=False)
    finally:
        server.stop()
    assert target == checkpoint_path(spec) and (target / "model.safetensors").read_bytes() == WEIGHTS
    record = {f["path"]: f for f in read_manifest(target)["files"]}
    assert record["model.safetensors"]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert record["model.safetensors"]["verified"] == "sha256 (published by the hub)"
    assert record["config.json"]["sha256"] is None and record["config.json"]["verified"].startswith("size")
    # the file list says which optional files exist: no request for the missing one
    assert "special_tokens_map.json" not in record
    assert not any(r.path.endswith("special_tokens_map.json") for r in server.requests)


def test_a_file_that_differs_from_the_published_sha256_is_one_error_and_nothing_is_kept(tmp_path, monkeypatch, snapshot):
    server = _serve(tmp_path, monkeypatch, snapshot, sha256={"model.safetensors": "ab" * 32})
    try:
        spec = _spec()
        with pytest.raises(ChecksumError) as err:
            ensure_snapshot(spec, download_missing=True, progress=False)
    finally:
        server.stop()
    message = str(err.value)
    assert "model.safetensors" in message and "ab" * 32 in message and "\n" not in message
    target = checkpoint_path(spec)
    assert not target.exists()
    staging = target.with_name(target.name + ".part")
    assert not (staging / "model.safetensors").exists() and not (staging / "model.safetensors.part").exists()


def test_a_pinned_sha256_must_agree_with_the_published_one(tmp_path, monkeypatch, snapshot):
    good = hashlib.sha256(WEIGHTS).hexdigest()
    server = _serve(tmp_path, monkeypatch, snapshot)
    try:
        with pytest.raises(ChecksumError, match="model.safetensors is pinned to SHA-256 " + "cd" * 32):
            ensure_snapshot(_spec(pinned="cd" * 32), download_missing=True, progress=False)
        assert not checkpoint_path(_spec()).exists()
        assert not any(r.path.endswith("model.safetensors") for r in server.requests), "refused before the download"
        target = ensure_snapshot(_spec(pinned=good.upper()), download_missing=True, progress=False)
    finally:
        server.stop()
    verified = {f["path"]: f["verified"] for f in read_manifest(target)["files"]}
    assert verified["model.safetensors"] == "sha256 (pinned in the registry, equal to the published one)"


def test_a_pinned_sha256_is_checked_where_the_endpoint_publishes_nothing(tmp_path, monkeypatch, snapshot):
    server = _serve(tmp_path, monkeypatch, snapshot, api=False)
    try:
        with pytest.raises(ChecksumError, match="model.safetensors is not the published file"):
            ensure_snapshot(_spec(pinned="cd" * 32), download_missing=True, progress=False)
        target = ensure_snapshot(_spec(), download_missing=True, progress=False)
    finally:
        server.stop()
    doc = json.loads((target / MANIFEST).read_text())
    assert {f["verified"] for f in doc["files"]} == {"none (the endpoint publishes no file list)"}


def test_gated_repositories_refused_by_the_api_name_the_licence_step(tmp_path, monkeypatch, snapshot):
    server = _serve(tmp_path, monkeypatch, snapshot)
    server.status = 401
    try:
        with pytest.raises(WeightsNotFoundError, match="gated under the SAM License"):
            ensure_snapshot(_spec(gated=True), download_missing=True, progress=False)
        server.status = 500
        with pytest.raises(DownloadError, match="HTTP 500"):
            ensure_snapshot(_spec(), download_missing=True, progress=False)
    finally:
        server.stop()
    assert not checkpoint_path(_spec()).exists()


def test_a_staged_file_left_by_an_earlier_run_is_checked_again(tmp_path, monkeypatch, snapshot):
    spec = _spec()
    staging = checkpoint_path(spec).with_name("tiny-detector.part")
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"not the published weights")
    (staging / "config.json").write_text('{"model_type": "owlv2"}')
    server = _serve(tmp_path, monkeypatch, snapshot)
    try:
        target = ensure_snapshot(spec, download_missing=True, progress=False)
    finally:
        server.stop()
    assert (target / "model.safetensors").read_bytes() == WEIGHTS
    assert [r.path for r in server.requests if r.path.startswith(REPO)] == [f"{REPO}/resolve/main/model.safetensors"], \
        "the staged config.json (right size) is kept, the wrong weights fetched again"
