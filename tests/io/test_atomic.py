"""Atomic outputs: temporary names, rename on success, nothing left behind on failure."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest

from terramask.core.errors import OutputError
from terramask.io.atomic import (
    AtomicPath,
    atomic_output,
    ensure_output_dir,
    remove_stale_temporaries,
    temporary_path,
    write_json,
)


def test_temporary_path_is_hidden_sibling_with_same_suffix(tmp_path):
    tmp = temporary_path(tmp_path / "mask.tif")
    assert tmp.parent == tmp_path
    assert tmp.suffix == ".tif"
    assert tmp.name.startswith(".mask.tmp-")
    assert temporary_path(tmp_path / "mask.tif") != tmp


def test_success_renames_and_leaves_only_the_final_file(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_output(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_leaves_no_final_file_and_no_temporary(tmp_path, exc):
    target = tmp_path / "out.gpkg"
    with pytest.raises(type(exc)):
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            (tmp.parent / (tmp.name + "-journal")).write_text("sidecar")
            raise exc
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_file_untouched(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_output(target) as tmp:
            tmp.write_text("new but broken")
            raise ValueError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_body_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="produced no file"):
        with atomic_output(tmp_path / "x.tif"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "x.tif"):
            pass


def test_atomic_path_commit_and_discard(tmp_path):
    a = AtomicPath(tmp_path / "a.json")
    a.tmp.write_text("{}")
    assert a.commit() == tmp_path / "a.json"
    with pytest.raises(OutputError):
        a.commit()
    b = AtomicPath(tmp_path / "b.json")
    b.tmp.write_text("{}")
    b.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_json_converts_numpy(tmp_path):
    path = write_json(tmp_path / "r.json", {"n": np.int64(3), "s": np.float32(0.5), "a": np.arange(3),
                                            "p": tmp_path})
    data = json.loads(path.read_text())
    assert data == {"n": 3, "s": 0.5, "a": [0, 1, 2], "p": str(tmp_path)}


def test_ensure_output_dir_creates_nested(tmp_path):
    out = ensure_output_dir(tmp_path / "a" / "b")
    assert out.is_dir()
    assert list(out.iterdir()) == []  # the probe file is gone


def test_ensure_output_dir_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        ensure_output_dir(blocker / "out")
    message = str(info.value)
    assert "\n" not in message and str(blocker / "out") in message
    assert isinstance(info.value, OSError)


def test_ensure_output_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        ensure_output_dir(blocker)


def test_ensure_output_dir_not_writable(tmp_path, monkeypatch):
    # Tests run as root, for whom permission bits do not apply: simulate the refusal.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OutputError, match="not writable: Permission denied"):
        ensure_output_dir(tmp_path / "ro")


def test_remove_stale_temporaries_only_touches_temporaries(tmp_path):
    keep = tmp_path / "labels.tif"
    keep.write_text("final")
    stale = temporary_path(keep)
    stale.write_text("partial")
    (tmp_path / ".hidden").write_text("user file")
    removed = remove_stale_temporaries(tmp_path)
    assert removed == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "labels.tif"]


def test_staging_dir_moves_outputs_together(tmp_path):
    from terramask.io.atomic import StagingDir

    staging = StagingDir(tmp_path)
    (staging / "labels.tif").write_text("labels")
    (staging / "summary.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [staging.path.name]  # nothing under a final name yet
    paths = staging.commit(["labels.tif", "summary.json"])
    assert paths == {"labels.tif": tmp_path / "labels.tif", "summary.json": tmp_path / "summary.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "summary.json"]
    assert (tmp_path / "labels.tif").read_text() == "labels"


def test_staging_dir_missing_output_and_stale_folders(tmp_path):
    from terramask.io.atomic import StagingDir

    staging = StagingDir(tmp_path)
    (staging / "a.txt").write_text("a")
    with pytest.raises(OutputError, match="produced no file"):
        staging.commit(["a.txt", "b.txt"])
    assert not staging.path.exists()
    left = StagingDir(tmp_path)  # a killed run leaves its folder
    (left / "x.json").write_text("partial")
    (tmp_path / ".run.tmp-user").mkdir()  # not a name StagingDir makes: also a run folder by its mark
    keep = tmp_path / ".hidden-dir"
    keep.mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert left.path in removed and not left.path.exists() and keep.exists()
    assert not (tmp_path / ".run.tmp-user").exists()
