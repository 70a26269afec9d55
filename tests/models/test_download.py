"""Checkpoint download through the real code path, against an HTTP server on 127.0.0.1:
happy path, resume, servers without Range, checksum and size errors, no network, and
the cache logic of ensure_checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import platformdirs
import pytest

from helpers.http_server import FileServer, closed_port
from terramask.core.errors import ChecksumError, DownloadError, InputError, WeightsNotFoundError
from terramask.models import download as dl
from terramask.models.cachedir import cache_dir, models_dir
from terramask.models.download import checkpoint_path, download, ensure_checkpoint, is_cached, verify_checkpoint
from terramask.models.registry import get_spec

SIZE = 300_000


@pytest.fixture
def payload(tmp_path) -> tuple[Path, bytes, str]:
    """A served directory holding ``blob.bin`` of random bytes, its bytes and SHA-256."""
    root = tmp_path / "served"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "blob.bin").write_bytes(data)
    return root, data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(payload):
    with FileServer(payload[0]) as srv:
        yield srv


def test_download_happy_path(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "out" / "blob.bin"
    assert download(server.url("blob.bin"), dest, sha, SIZE, progress=False) == dest
    assert dest.read_bytes() == data
    assert not dl.part_path(dest).exists()
    assert [(r.status, r.range) for r in server.requests] == [(200, None)]


def test_resume_continues_the_part_file(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    server.drop_after = 100_000
    with pytest.raises(DownloadError, match="resume"):
        download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    part = dl.part_path(dest)
    assert not dest.exists()
    assert part.stat().st_size == 100_000
    assert part.read_bytes() == data[:100_000]

    server.drop_after = None
    download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    assert dest.read_bytes() == data
    assert not part.exists()
    second = server.requests[-1]
    assert second.status == 206 and second.range == "bytes=100000-"
    assert second.bytes_sent == SIZE - 100_000 < SIZE


def test_server_ignoring_range_restarts_from_zero(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    server.drop_after = 50_000
    with pytest.raises(DownloadError):
        download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    server.drop_after = None
    server.ignore_range = True
    download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    assert dest.read_bytes() == data  # not the old 50 kB prefix + the whole file
    assert server.requests[-1].status == 200 and server.requests[-1].range == "bytes=50000-"


def test_stale_part_that_does_not_match_the_server_is_discarded(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    dl.part_path(dest).write_bytes(b"x" * (SIZE + 10))  # longer than the file: cannot be a prefix
    download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    assert dest.read_bytes() == data


def test_part_of_unknown_length_past_the_end_gets_416_and_restarts(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    dl.part_path(dest).write_bytes(b"x" * (SIZE + 10))
    download(server.url("blob.bin"), dest, sha, size=None, progress=False)
    assert dest.read_bytes() == data
    assert [r.status for r in server.requests] == [416, 200]


def test_complete_part_is_finished_without_network(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    dl.part_path(dest).write_bytes(data)
    download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    assert dest.read_bytes() == data
    assert server.requests == []


def test_checksum_mismatch_leaves_nothing(tmp_path, payload, server):
    dest = tmp_path / "blob.bin"
    with pytest.raises(ChecksumError, match="SHA-256"):
        download(server.url("blob.bin"), dest, "0" * 64, SIZE, progress=False)
    assert not dest.exists()
    assert not dl.part_path(dest).exists()


def test_wrong_announced_size_fails_before_downloading(tmp_path, payload, server):
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match=f"has {SIZE} bytes, expected {SIZE + 1}"):
        download(server.url("blob.bin"), dest, None, SIZE + 1, progress=False)
    assert not dest.exists() and not dl.part_path(dest).exists()


def test_existing_file_is_replaced_only_after_verification(tmp_path, payload, server):
    _, data, sha = payload
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        download(server.url("blob.bin"), dest, "f" * 64, SIZE, progress=False)
    assert dest.read_bytes() == b"old"
    download(server.url("blob.bin"), dest, sha, SIZE, progress=False)
    assert dest.read_bytes() == data


def test_http_404_explains_where_to_put_the_file(tmp_path, payload, server):
    server.not_found = True
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url("blob.bin"), dest, None, None, progress=False, name="sam-vit-b")
    message = str(info.value)
    assert "HTTP 404" in message
    assert str(dest) in message
    assert "terramask models path sam-vit-b" in message and "--checkpoint PATH" in message
    assert "\n" not in message
    assert not dest.exists() and not dl.part_path(dest).exists()


def test_connection_refused_explains_where_to_put_the_file(tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{closed_port()}/blob.bin", dest, None, None, progress=False, name="sam-vit-b")
    assert "refused" in str(info.value).lower()
    assert "terramask models path sam-vit-b" in str(info.value) and "--checkpoint PATH" in str(info.value)
    assert not dest.exists()


def test_no_progress_output_when_not_a_terminal(tmp_path, payload, server, capsys):
    _, _, sha = payload
    download(server.url("blob.bin"), tmp_path / "blob.bin", sha, SIZE, progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# ----------------------------------------------------------------------- cache dirs


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    assert models_dir(create=False) == tmp_path / "c" / "models"
    assert not (tmp_path / "c").exists()  # nothing created until asked
    assert models_dir() == tmp_path / "c" / "models"
    assert (tmp_path / "c" / "models").is_dir()


def test_cache_dir_defaults_to_the_user_cache_dir(monkeypatch):
    monkeypatch.delenv("TERRAMASK_CACHE")
    assert cache_dir(create=False) == Path(platformdirs.user_cache_dir("terramask", appauthor=False))


# -------------------------------------------------------------------- ensure_checkpoint


@pytest.fixture
def spec(payload, server):
    """sam-vit-b's spec pointing at the local server's blob."""
    _, _, sha = payload
    return dataclasses.replace(get_spec("sam-vit-b"), url=server.url("blob.bin"), sha256=sha, size_bytes=SIZE)


def test_given_checkpoint_must_exist(tmp_path, spec):
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        ensure_checkpoint(spec, tmp_path / "missing.pth")
    given = tmp_path / "mine.pth"
    given.write_bytes(b"fine-tuned weights")  # not the registry hash: user files are not checked
    assert ensure_checkpoint(spec, given) == given


def test_missing_weights_name_the_download_command(spec, server):
    with pytest.raises(WeightsNotFoundError) as info:
        ensure_checkpoint(spec)
    assert "terramask models download sam-vit-b" in str(info.value)
    assert str(checkpoint_path(spec)) in str(info.value)
    assert server.requests == []


def test_download_missing_fills_the_cache_once(spec, payload, server):
    path = ensure_checkpoint(spec, download_missing=True, progress=False)
    assert path == checkpoint_path(spec) and path.parent == models_dir(create=False)
    assert path.read_bytes() == payload[1]
    assert is_cached(spec)
    assert ensure_checkpoint(spec, download_missing=True) == path
    assert len(server.requests) == 1


def test_cached_file_is_hashed_once_then_on_change(spec, payload, monkeypatch):
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(payload[1])
    calls = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    assert ensure_checkpoint(spec) == path
    assert ensure_checkpoint(spec) == path
    assert len(calls) == 1
    # same size, new content and mtime: the sidecar no longer vouches for it
    data = bytearray(payload[1])
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ChecksumError, match="models download sam-vit-b --force"):
        ensure_checkpoint(spec)
    assert len(calls) == 2


def test_cached_file_of_wrong_size_is_damaged_or_replaced(spec, payload, server):
    path = checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(payload[1][:1000])
    assert not is_cached(spec)
    with pytest.raises(ChecksumError, match="1000 bytes"):
        ensure_checkpoint(spec)
    assert ensure_checkpoint(spec, download_missing=True, progress=False) == path
    assert path.read_bytes() == payload[1]


def test_verify_checkpoint_reports_size_and_hash(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    verify_checkpoint(f, hashlib.sha256(b"abc").hexdigest(), 3)
    with pytest.raises(ChecksumError, match="expected 4"):
        verify_checkpoint(f, None, 4)
    with pytest.raises(ChecksumError, match="SHA-256"):
        verify_checkpoint(f, "1" * 64, 3)


def test_classic_has_no_checkpoint():
    with pytest.raises(InputError, match="weight-free"):
        ensure_checkpoint(get_spec("classic"))


def test_progress_bar_on_a_terminal_only_when_asked(tmp_path, payload, server, capsys, monkeypatch):
    _, _, sha = payload
    monkeypatch.setattr(dl.sys.stderr, "isatty", lambda: True, raising=False)
    download(server.url("blob.bin"), tmp_path / "a.bin", sha, SIZE, progress=False)
    assert capsys.readouterr().err == ""
    download(server.url("blob.bin"), tmp_path / "b.bin", sha, SIZE, progress=True, name="blob")
    err = capsys.readouterr().err
    assert "blob" in err and "100%" in err
