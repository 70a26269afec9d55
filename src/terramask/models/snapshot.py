"""Hugging Face repository snapshots: the directories ``transformers`` models load from.

A snapshot spec (:attr:`ModelSpec.is_snapshot`) names a repository, a revision and the
files ``from_pretrained`` reads. :func:`ensure_snapshot` turns it into a local directory:

- a user-given path: a directory holding ``config.json`` (``hf download REPO --local-dir
  DIR``, ``save_pretrained``), a ``config.json`` file (its folder), or a Hugging Face
  cache folder ``models--org--name`` (its snapshot for ``refs/main``, or the only one);
- else the cache directory ``<models>/<repo name>/`` when every required file is there;
- else, with ``download_missing``, the endpoint's model API
  (``{endpoint}/api/models/{repo}/revision/{revision}?blobs=true``, as the Hub answers it)
  gives each file's size and, for files stored with Git LFS (the weights), the SHA-256
  the hub publishes (``lfs.sha256``); each file is then fetched through the verified
  downloader (:func:`terramask.models.download.download`: resumable, size and SHA-256
  checked before the rename) from ``{endpoint}/{repo}/resolve/{revision}/{path}`` into a
  staging directory ``<dir>.part/`` that is renamed into place once complete, so the
  cache never holds half a snapshot under its final name. A SHA-256 pinned in the
  registry (:attr:`HubFile.sha256`) must agree with the published one and is checked
  too. A mismatch is one :class:`ChecksumError` naming the file; nothing is kept under
  the final name. What was verified is recorded in ``terramask-verified.json`` in the
  snapshot (``sha256`` with its source, or ``size`` for small files the hub publishes no
  hash for, or ``none`` from an endpoint without the model API);
- else :class:`WeightsNotFoundError` with the command (or, for gated weights, the licence
  step) that gets them.

The endpoint is ``$TERRAMASK_HF_ENDPOINT``, else ``$HF_ENDPOINT``, else
``https://huggingface.co``; ``$HF_TOKEN`` (or ``$HUGGING_FACE_HUB_TOKEN``) is sent as a
bearer token, which gated repositories need.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from terramask.core.errors import ChecksumError, DownloadError, ModelError, OutputError, WeightsNotFoundError
from terramask.models.download import HTTPStatusError, checkpoint_path, download, fetch_json, verify_checkpoint
from terramask.models.registry import HubFile, ModelSpec

logger = logging.getLogger(__name__)

ENV_ENDPOINT = "TERRAMASK_HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
#: The record of what a downloaded snapshot's files were checked against.
MANIFEST = "terramask-verified.json"


def hub_endpoint() -> str:
    """The Hugging Face style endpoint files are fetched from (no trailing ``/``)."""
    for var in (ENV_ENDPOINT, "HF_ENDPOINT"):
        value = os.environ.get(var, "").strip()
        if value:
            return value.rstrip("/")
    return DEFAULT_ENDPOINT


def file_url(spec: ModelSpec, path: str) -> str:
    """``{endpoint}/{repo}/resolve/{revision}/{path}`` for one file of ``spec``."""
    if spec.repo is None:
        raise ModelError(f"model {spec.name!r} is not a Hugging Face snapshot")
    return f"{hub_endpoint()}/{spec.repo}/resolve/{spec.revision}/{path}"


def api_url(spec: ModelSpec) -> str:
    """``{endpoint}/api/models/{repo}/revision/{revision}?blobs=true``: the file list with
    sizes and LFS SHA-256 values (the Hub's model API)."""
    if spec.repo is None:
        raise ModelError(f"model {spec.name!r} is not a Hugging Face snapshot")
    return f"{hub_endpoint()}/api/models/{spec.repo}/revision/{spec.revision}?blobs=true"


@dataclass(frozen=True)
class Published:
    """What the endpoint publishes about one file: ``size`` in bytes and, for Git LFS
    files, ``sha256`` (lower-case hex; ``None`` for small files kept in git itself)."""

    size: int | None
    sha256: str | None


def published_files(spec: ModelSpec, headers: dict[str, str] | None = None) -> dict[str, Published] | None:
    """``{path: Published}`` of ``spec``'s repository at its revision, from the endpoint's
    model API; ``None`` when the endpoint has no such API (HTTP 404: a plain file mirror).
    Gated repositories refused (401/403) raise :class:`WeightsNotFoundError` with the
    licence step; an answer without a file list raises :class:`DownloadError`."""
    url = api_url(spec)
    try:
        doc = fetch_json(url, headers)
    except HTTPStatusError as exc:
        if exc.status == 404:
            logger.warning("%s publishes no file list (HTTP 404); %s is downloaded without SHA-256 checks",
                           hub_endpoint(), spec.name)
            return None
        if spec.gated and exc.status in (401, 403):
            raise WeightsNotFoundError(f"the hub refused {spec.name} (HTTP {exc.status}); {gated_hint(spec)}") from exc
        raise DownloadError(f"cannot download {spec.name}: {exc}") from exc
    siblings = doc.get("siblings") if isinstance(doc, dict) else None
    if not isinstance(siblings, list):
        raise DownloadError(f"cannot download {spec.name}: {url} answered without a file list ('siblings')")
    found: dict[str, Published] = {}
    for entry in siblings:
        if not isinstance(entry, dict) or not isinstance(entry.get("rfilename"), str):
            continue
        lfs = entry.get("lfs")
        lfs = lfs if isinstance(lfs, dict) else {}
        size = lfs.get("size", entry.get("size"))
        sha = lfs.get("sha256")
        found[entry["rfilename"]] = Published(
            int(size) if isinstance(size, int) else None,
            sha.lower() if isinstance(sha, str) and len(sha) == 64 else None,
        )
    return found


def _expected(spec: ModelSpec, f: HubFile, published: Published | None) -> tuple[str | None, int | None, str]:
    """``(sha256, size, how)`` a download of ``f`` is checked against; ``how`` is what the
    manifest records. A pinned hash the hub contradicts is a :class:`ChecksumError`."""
    pub_sha = published.sha256 if published is not None else None
    if f.sha256 is not None and pub_sha is not None and f.sha256.lower() != pub_sha:
        raise ChecksumError(
            f"{spec.name}: {f.path} is pinned to SHA-256 {f.sha256.lower()} but {hub_endpoint()} publishes {pub_sha} "
            f"for {spec.repo}@{spec.revision}; nothing was downloaded"
        )
    size = f.size_bytes if f.size_bytes is not None else (published.size if published is not None else None)
    if f.sha256 is not None:
        how = "sha256 (pinned in the registry" + (", equal to the published one)" if pub_sha else ")")
        return f.sha256.lower(), size, how
    if pub_sha is not None:
        return pub_sha, size, "sha256 (published by the hub)"
    if published is not None:
        return None, size, "size (the hub publishes no hash for files kept in git, only for LFS files)"
    return None, size, "none (the endpoint publishes no file list)"


def _auth_headers() -> dict[str, str]:
    for var in _TOKEN_VARS:
        token = os.environ.get(var, "").strip()
        if token:
            return {"Authorization": f"Bearer {token}"}
    return {}


def _has_files(directory: Path, files: tuple[HubFile, ...]) -> bool:
    for f in files:
        path = directory / f.path
        if not path.is_file():
            if f.required:
                return False
            continue
        if f.size_bytes is not None and path.stat().st_size != f.size_bytes:
            return False
    return True


def is_snapshot_cached(spec: ModelSpec) -> bool:
    """True when every required file of ``spec`` is in its cache directory (sizes checked
    where recorded; hashes are checked when downloaded)."""
    return _has_files(checkpoint_path(spec), spec.files)


def gated_hint(spec: ModelSpec) -> str:
    """How to get gated weights, in one sentence."""
    return (
        f"{spec.name} weights are gated under the {spec.licence.split(' (')[0]}: accept it at "
        f"https://huggingface.co/{spec.repo}, then either set HF_TOKEN and run `terramask models download {spec.name}`, "
        f"or run `hf download {spec.repo} --local-dir DIR` and pass that DIR as the checkpoint"
    )


def local_snapshot(path: str | os.PathLike[str]) -> Path:
    """The snapshot directory a user-given ``path`` stands for (see the module docstring).

    Raises :class:`WeightsNotFoundError` for a missing path and :class:`ModelError` for a
    path that holds no ``config.json``.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise WeightsNotFoundError(f"checkpoint {given} does not exist")
    if given.is_file():
        if given.name == "config.json":
            return given.parent
        raise ModelError(
            f"{given} is a single file; a Hugging Face model is a folder: give the folder holding "
            "config.json and the weights (e.g. from `hf download REPO --local-dir DIR`)"
        )
    if (given / "config.json").is_file():
        return given
    snapshots = given / "snapshots"
    if snapshots.is_dir():  # a hub cache folder models--org--name
        ref = given / "refs" / "main"
        if ref.is_file() and (snapshots / ref.read_text().strip() / "config.json").is_file():
            return snapshots / ref.read_text().strip()
        found = sorted(p for p in snapshots.iterdir() if (p / "config.json").is_file())
        if len(found) == 1:
            return found[0]
    raise ModelError(f"{given} holds no config.json: not a Hugging Face model folder (snapshot)")


def read_config(directory: Path) -> dict:
    """The snapshot's ``config.json`` as a dict; :class:`ModelError` when unreadable."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable model configuration: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a model configuration (expected a JSON object)")
    return config


def ensure_snapshot(
    spec: ModelSpec,
    checkpoint: str | os.PathLike[str] | None = None,
    download_missing: bool = False,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """A local snapshot directory for ``spec`` (see the module docstring); ``force``
    downloads again even when the cache holds it."""
    if checkpoint is not None:
        return local_snapshot(checkpoint)
    target = checkpoint_path(spec)
    if not force and _has_files(target, spec.files):
        return target
    if not download_missing:
        if spec.gated:
            raise WeightsNotFoundError(f"{spec.name} not found at {target}; {gated_hint(spec)}")
        raise WeightsNotFoundError(
            f"weights for {spec.name} not found at {target}: run `terramask models download {spec.name}` "
            f"(or pass a local Hugging Face folder of {spec.repo} as the checkpoint)"
        )
    return _download_snapshot(spec, target, progress)


def _download_snapshot(spec: ModelSpec, target: Path, progress: bool) -> Path:
    staging = target.with_name(target.name + ".part")
    headers = _auth_headers()
    published = published_files(spec, headers)
    manifest: list[dict] = []
    for f in spec.files:
        if published is not None and f.path not in published:
            if f.required:
                raise DownloadError(f"cannot download {spec.name}: {spec.repo}@{spec.revision} has no {f.path}")
            logger.info("%s has no %s; skipped", spec.repo, f.path)
            continue
        sha, size, how = _expected(spec, f, None if published is None else published[f.path])
        dest = staging / f.path
        if dest.is_file() and not _still_valid(dest, sha, size):
            dest.unlink()  # left by an earlier run, but not the file published now
        if not dest.is_file():  # else: complete and verified by an earlier, interrupted run (renamed only then)
            try:
                download(file_url(spec, f.path), dest, sha, size, progress, name=spec.name, headers=headers)
            except ChecksumError as exc:
                raise ChecksumError(f"{spec.name}: {f.path} is not the published file ({exc})") from exc
            except HTTPStatusError as exc:
                if exc.status == 404 and not f.required:
                    logger.info("%s has no %s; skipped", spec.repo, f.path)
                    continue
                if spec.gated and exc.status in (401, 403):
                    raise WeightsNotFoundError(
                        f"the hub refused {spec.name} (HTTP {exc.status}); {gated_hint(spec)}") from exc
                raise DownloadError(
                    f"cannot download {spec.name}: {file_url(spec, f.path)} answered HTTP {exc.status}; without "
                    f"network access, copy a snapshot of {spec.repo} into {target} or pass its folder as the checkpoint"
                ) from exc
        manifest.append({"path": f.path, "bytes": dest.stat().st_size, "sha256": sha, "verified": how})
    _write_manifest(staging, spec, manifest)
    _swap_in(staging, target)
    logger.info("saved %s", target)
    return target


def _still_valid(path: Path, sha256: str | None, size: int | None) -> bool:
    """True when a staged file matches the expected size and SHA-256 (hashed once per version)."""
    try:
        verify_checkpoint(path, sha256, size)
    except ChecksumError as exc:
        logger.info("discarding %s: %s", path, exc)
        return False
    return True


def _write_manifest(staging: Path, spec: ModelSpec, files: list[dict]) -> None:
    doc = {"repo": spec.repo, "revision": spec.revision, "endpoint": hub_endpoint(), "files": files}
    try:
        staging.mkdir(parents=True, exist_ok=True)
        (staging / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {staging / MANIFEST}: {exc.strerror or exc}") from exc


def read_manifest(directory: Path) -> dict | None:
    """The verification record of a downloaded snapshot (``None`` for folders given by hand)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by the complete ``staging`` directory."""
    old = target.with_name(target.name + ".old")
    try:
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        raise OutputError(f"cannot move {staging} to {target}: {exc.strerror or exc}") from exc
