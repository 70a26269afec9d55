"""Output folders as a unit: leftovers of a killed run are cleaned up by the next run."""

from pathlib import Path

import pytest

from terramask.core.errors import OutputError
from terramask.pipelines.prompted.folder import output_folder


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_next_run_removes_staging_left_by_a_kill(tmp_path):
    out = tmp_path / "run"
    _write(tmp_path / ".run.tmp-deadbeef0000", "mask.tif", "half written")
    _write(out, "result.json", "old")
    with output_folder(out) as staging:
        (staging / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_kill_between_the_two_renames_restores_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    _write(tmp_path / ".run.old-0123456789ab", "result.json", "earlier")
    with pytest.raises(RuntimeError):
        with output_folder(out):
            raise RuntimeError("the new run fails")
    assert (out / "result.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_other_folders_leftovers_are_not_touched(tmp_path):
    _write(tmp_path / ".other.tmp-deadbeef0000", "x", "keep")
    with output_folder(tmp_path / "run") as staging:
        (staging / "result.json").write_text("{}")
    assert (tmp_path / ".other.tmp-deadbeef0000" / "x").read_text() == "keep"


def test_folder_with_foreign_files_is_refused(tmp_path):
    _write(tmp_path / "run", "notes.txt", "mine")
    with pytest.raises(OutputError, match="notes.txt"):
        with output_folder(tmp_path / "run"):
            pass
