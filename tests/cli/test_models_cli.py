"""`terramask models list|download|path` through the real entry point, downloads served
from 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from helpers.http_server import FileServer
from terramask.cli.main import main
from terramask.models import registry
from terramask.models.cachedir import models_dir
from terramask.models.download import checkpoint_path


def _place_sparse(name: str) -> Path:
    spec = registry.get_spec(name)
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(spec.size_bytes)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A random-weight tiny SAM checkpoint in the official architecture, in a served dir."""
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(tmp_path_factory.mktemp("served") / "sam_vit_b_01ec64.pth", arch="tiny")


@pytest.fixture
def served_vit_b(tiny_ckpt, monkeypatch):
    """sam-vit-b's registry entry pointed at the tiny checkpoint on a local server. The
    tiny file is not a vit_b, so ``arch`` is None (the backend reads it from the file)."""
    data = tiny_ckpt.read_bytes()
    with FileServer(tiny_ckpt.parent) as server:
        spec = dataclasses.replace(
            registry.get_spec("sam-vit-b"),
            url=server.url(tiny_ckpt.name),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            arch=None,
        )
        monkeypatch.setitem(registry.REGISTRY, "sam-vit-b", spec)
        yield server, spec, data


# ---------------------------------------------------------------------------- list


def test_list_shows_every_model(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["NAME", "FAMILY", "PARAMS", "SIZE", "LICENCE", "CACHED"]
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in out[1:])}
    assert list(rows) == list(registry.REGISTRY)
    assert rows["sam-vit-b"][:6] == ["sam-vit-b", "sam", "93.7M", "375.0 MB", "Apache-2.0", "no"]
    assert rows["sam-vit-h"][2:4] == ["641.1M", "2.6 GB"]
    assert rows["classic"][1:6] == ["classic", "-", "-", "n/a (no weights)", "-"]
    assert rows["classic"][6:] == ["-", registry.get_spec("classic").when_to_use]  # RUNTIME: weight-free
    assert rows["sam-vit-b"][6] == "unmeasured"  # until `terramask doctor --measure` (tests/cli/test_doctor.py)


def test_list_json_reports_cached_models(capsys):
    _place_sparse("sam-vit-l")
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sam-vit-l"]["cached"] is True
    assert rows["sam-vit-b"]["cached"] is False
    assert rows["classic"]["cached"] is None and rows["classic"]["path"] is None
    assert rows["sam-vit-h"]["size_bytes"] == 2_564_550_879
    assert rows["sam-vit-b"]["path"] == str(models_dir(create=False) / "sam_vit_b_01ec64.pth")
    for key in ("family", "arch", "params_millions", "licence", "url", "sha256", "when_to_use"):
        assert key in rows["sam-vit-b"]


# ---------------------------------------------------------------------------- path


def test_path_of_a_missing_checkpoint_fails_unless_expected(capsys):
    expected = models_dir(create=False) / "sam_vit_h_4b8939.pth"
    assert main(["models", "path", "sam-vit-h"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert str(expected) in captured.err and "terramask models download sam-vit-h" in captured.err

    assert main(["models", "path", "sam-vit-h", "--expected"]) == 0
    assert capsys.readouterr().out.strip() == str(expected)
    assert not expected.parent.exists()  # asking for the path creates nothing


def test_path_of_a_cached_checkpoint(capsys):
    path = _place_sparse("sam-vit-b")
    assert main(["models", "path", "SAM_VIT_B"]) == 0
    assert capsys.readouterr().out.strip() == str(path)


def test_path_of_classic_and_of_an_unknown_model(capsys):
    assert main(["models", "path", "classic"]) == 2
    assert "weight-free" in capsys.readouterr().err
    assert main(["models", "path", "sam-vit-z"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'sam-vit-z'" in err and "sam-vit-b" in err


# ------------------------------------------------------------------------ download


def test_download_then_load_from_the_cache(served_vit_b, capsys):
    """End to end: `terramask models download sam-vit-b` over HTTP, then the backend
    loads from the cache with no model named and no network."""
    server, spec, data = served_vit_b
    assert main(["models", "download", "sam-vit-b"]) == 0
    path = checkpoint_path(spec)
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes() == data
    assert not path.with_name(path.name + ".part").exists()

    assert main(["models", "download", "sam-vit-b"]) == 0  # already there: no new request
    assert len(server.requests) == 1

    from terramask.models.resolve import load_backend

    server.not_found = True  # the cache must be enough now
    backend = load_backend()
    assert backend.name == "sam-vit-b"
    import numpy as np

    from terramask.core.prompts import Prompts

    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    emb = backend.set_image(image)
    result = backend.predict(emb, Prompts(points=np.array([[20.0, 10.0]]), labels=np.array([1])), multimask=True)
    assert result.masks.shape == (3, 40, 56)


def test_download_force_fetches_again(served_vit_b, capsys):
    server, spec, data = served_vit_b
    assert main(["models", "download", "sam-vit-b", "-q"]) == 0
    assert main(["models", "download", "sam-vit-b", "--force", "--quiet"]) == 0
    assert [r.status for r in server.requests] == [200, 200]
    assert checkpoint_path(spec).read_bytes() == data


def test_download_resumes_after_an_interruption(served_vit_b, capsys):
    server, spec, data = served_vit_b
    server.drop_after = len(data) // 3
    assert main(["models", "download", "sam-vit-b"]) == 1
    assert "resume" in capsys.readouterr().err
    assert not checkpoint_path(spec).exists()
    server.drop_after = None
    assert main(["models", "download", "sam-vit-b"]) == 0
    assert checkpoint_path(spec).read_bytes() == data
    assert server.requests[-1].status == 206
    assert server.requests[-1].bytes_sent == len(data) - len(data) // 3


def test_download_with_a_wrong_checksum_leaves_nothing(served_vit_b, monkeypatch, capsys):
    server, spec, data = served_vit_b
    monkeypatch.setitem(registry.REGISTRY, "sam-vit-b", dataclasses.replace(spec, sha256="0" * 64))
    assert main(["models", "download", "sam-vit-b"]) == 1
    assert "SHA-256" in capsys.readouterr().err
    path = checkpoint_path(spec)
    assert not path.exists() and not path.with_name(path.name + ".part").exists()


def test_download_offline_says_where_to_put_the_file(served_vit_b, capsys):
    server, spec, _ = served_vit_b
    server.not_found = True
    assert main(["models", "download", "sam-vit-b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("terramask: error:") and err.count("\n") == 1
    assert str(checkpoint_path(spec)) in err
    assert "terramask models path sam-vit-b" in err and "--checkpoint PATH" in err


def test_download_classic_needs_nothing(capsys):
    assert main(["models", "download", "classic"]) == 0
    assert "weight-free" in capsys.readouterr().err
    assert not models_dir(create=False).exists()


def test_models_command_and_resolution_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, terramask.cli.models, terramask.models.resolve; "
        "heavy = [m for m in ('torch', 'segment_anything', 'cv2') if m in sys.modules]; "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
