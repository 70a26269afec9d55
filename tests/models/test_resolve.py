"""Model resolution (explicit name > TERRAMASK_MODEL > best cached SAM > classic) and
load_backend, with random-weight SAM checkpoints in the official architecture."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from terramask.core.errors import CheckpointMismatchError, InputError, UnknownModelError, WeightsNotFoundError
from terramask.models import registry
from terramask.models.download import checkpoint_path
from terramask.models.resolve import load_backend, resolve_model_name, spec_for_checkpoint


def _place_sparse(name: str) -> None:
    """Put a sparse file of the registry's exact size where ``name``'s checkpoint goes
    (resolution only stats files; nothing reads these)."""
    spec = registry.get_spec(name)
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(spec.size_bytes)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth", arch="tiny")


# ------------------------------------------------------------------------- resolution


def test_explicit_name_wins_and_is_canonical(monkeypatch):
    monkeypatch.setenv("TERRAMASK_MODEL", "sam-vit-l")
    _place_sparse("sam-vit-h")
    assert resolve_model_name("SAM_VIT_B") == "sam-vit-b"
    assert resolve_model_name("classic") == "classic"


def test_unknown_explicit_name():
    with pytest.raises(UnknownModelError, match="sam-vit-x"):
        resolve_model_name("sam-vit-x")


def test_environment_variable_beats_the_cache(monkeypatch):
    _place_sparse("sam-vit-h")
    monkeypatch.setenv("TERRAMASK_MODEL", "sam-vit-l")
    assert resolve_model_name(None) == "sam-vit-l"
    monkeypatch.setenv("TERRAMASK_MODEL", "classic")
    assert resolve_model_name() == "classic"


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("TERRAMASK_MODEL", "sam-vit-q")
    with pytest.raises(UnknownModelError, match="TERRAMASK_MODEL='sam-vit-q'"):
        resolve_model_name()


@pytest.mark.parametrize(
    "present, expected",
    [
        (["sam-vit-b"], "sam-vit-b"),
        (["sam-vit-b", "sam-vit-l"], "sam-vit-l"),
        (["sam-vit-l", "sam-vit-h"], "sam-vit-h"),
        (["sam-vit-b", "sam-vit-h"], "sam-vit-h"),
    ],
)
def test_best_cached_sam_checkpoint(present, expected):
    for name in present:
        _place_sparse(name)
    assert resolve_model_name() == expected


def test_cached_file_of_the_wrong_size_does_not_count():
    _place_sparse("sam-vit-b")
    path = checkpoint_path(registry.get_spec("sam-vit-h"))
    path.write_bytes(b"partial")
    assert resolve_model_name() == "sam-vit-b"


def test_empty_cache_falls_back_to_classic_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="terramask.models.resolve"):
        assert resolve_model_name() == "classic"
    notices = [r.getMessage() for r in caplog.records if r.name == "terramask.models.resolve"]
    assert len(notices) == 1
    assert "terramask models download sam-vit-b" in notices[0] and "\n" not in notices[0]


def test_no_notice_when_a_model_is_named(caplog):
    with caplog.at_level(logging.WARNING):
        resolve_model_name("classic")
    assert not caplog.records


# ----------------------------------------------------------------------- load_backend


def test_unknown_runtime():
    with pytest.raises(InputError, match="runtime 'tensorflow'"):
        load_backend("classic", runtime="tensorflow")


def test_classic_takes_no_checkpoint(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="weight-free"):
        load_backend("classic", checkpoint=f)


def test_classic_backend_loads_without_weights():
    from terramask.models.base import Backend
    from terramask.models.classic.backend import ClassicBackend

    backend = load_backend("classic")
    assert isinstance(backend, ClassicBackend) and isinstance(backend, Backend)
    assert backend.name == "classic"


def test_empty_cache_loads_classic():
    from terramask.models.classic.backend import ClassicBackend

    assert isinstance(load_backend(), ClassicBackend)


def test_missing_sam_weights_offline_name_the_download_command():
    with pytest.raises(WeightsNotFoundError, match="terramask models download sam-vit-b"):
        load_backend("sam-vit-b")


def test_missing_given_checkpoint(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        load_backend("sam-vit-b", checkpoint=tmp_path / "nope.pth")


def test_checkpoint_without_name_is_a_sam_of_the_files_architecture(tiny_ckpt):
    backend = load_backend(checkpoint=tiny_ckpt)
    assert backend.name == "sam:tiny_sam"
    emb = backend.set_image(np.zeros((48, 64, 3), np.uint8))
    assert emb.image_size == (48, 64)


def test_checkpoint_not_matching_the_named_architecture(tiny_ckpt):
    with pytest.raises(CheckpointMismatchError, match="vit_b"):
        load_backend("sam-vit-b", checkpoint=tiny_ckpt)


def test_checkpoint_with_an_official_file_name_is_checked_against_that_model(tiny_ckpt, tmp_path):
    official_name = tmp_path / "sam_vit_l_0b3195.pth"
    shutil.copy(tiny_ckpt, official_name)
    assert spec_for_checkpoint(official_name).name == "sam-vit-l"
    with pytest.raises(CheckpointMismatchError, match="vit_l"):
        load_backend(checkpoint=official_name)


def test_unnamed_model_loads_the_cached_checkpoint(tiny_ckpt, monkeypatch):
    """The resolution order end to end: a (tiny) sam-vit-b checkpoint in the cache is
    picked and loaded when no model is named."""
    data = tiny_ckpt.read_bytes()
    spec = dataclasses.replace(
        registry.get_spec("sam-vit-b"), arch=None, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    monkeypatch.setitem(registry.REGISTRY, "sam-vit-b", spec)
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert resolve_model_name() == "sam-vit-b"
    backend = load_backend()
    assert backend.name == "sam-vit-b"


def test_sam_specs_pass_their_arch_name_and_device_to_the_backend(tmp_path, monkeypatch):
    from terramask.models.sam import backend as sam

    calls = []
    record = classmethod(lambda cls, path, **kw: calls.append((path, kw)) or "ok")
    monkeypatch.setattr(sam.SamBackend, "from_checkpoint", record)
    given = tmp_path / "w.pth"
    given.write_bytes(b"x")
    for name in ("sam-vit-b", "sam-vit-l", "sam-vit-h"):
        spec = registry.get_spec(name)
        assert sam.normalize_arch_name(spec.arch) == spec.arch  # the backend knows the registry's arch keys
        assert load_backend(name, checkpoint=given, device="cpu") == "ok"
        assert calls[-1] == (given, {"arch": spec.arch, "device": "cpu", "name": name})


# ------------------------------------------------------------------ fine-tuning run dirs


def _run_dir(tmp_path, ckpt, **info):
    from terramask.models.finetune.run_dir import RUN_FORMAT

    run = tmp_path / "my-run"
    run.mkdir()
    if ckpt is not None:
        shutil.copyfile(ckpt, run / "model.pth")
    meta = {"format": RUN_FORMAT, "name": "sam:tiny@my-run", "checkpoint": "model.pth",
            "base_model": {"name": "sam:tiny", "family": "sam", "arch": None}, **info}
    (run / "terramask.json").write_text(json.dumps(meta))
    return run


def test_a_run_directory_is_a_model_name(tiny_ckpt, tmp_path):
    run = _run_dir(tmp_path, tiny_ckpt)
    assert resolve_model_name(str(run)) == str(run.resolve())
    spec = registry.get_spec(str(run))
    assert (spec.name, spec.family, spec.arch) == ("sam:tiny@my-run", "sam", None)
    backend = load_backend(str(run))
    assert backend.name == "sam:tiny@my-run" and backend.source == str(run.resolve() / "model.pth")
    cached = load_backend(str(run), cache=True)
    emb = cached.set_image(np.zeros((32, 32, 3), np.uint8))
    assert emb.model == "sam:tiny@my-run"


def test_a_run_directory_brings_its_own_checkpoint(tiny_ckpt, tmp_path):
    run = _run_dir(tmp_path, tiny_ckpt)
    with pytest.raises(InputError, match="drop --checkpoint"):
        load_backend(str(run), checkpoint=tiny_ckpt)


def test_unfinished_or_foreign_run_directories(tmp_path, tiny_ckpt):
    run = _run_dir(tmp_path, None)
    with pytest.raises(InputError, match="no checkpoint yet"):
        load_backend(str(run))
    (run / "terramask.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a terramask fine-tuning run"):
        registry.get_spec(str(run))
    (run / "terramask.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        load_backend(str(run))
    # a plain folder is no model
    with pytest.raises(UnknownModelError):
        load_backend(str(tmp_path))


def test_a_text_model_outside_find_points_to_terramask_find():
    from terramask.core.errors import ModelError
    from terramask.models.resolve import load_backend

    with pytest.raises(ModelError, match=r"terramask find SCENE --text PHRASE --model sam3"):
        load_backend("sam3")
    with pytest.raises(ModelError, match=r"--detector owlv2-base"):
        load_backend("owlv2-base")
