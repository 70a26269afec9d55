"""A Hugging Face style repository laid out for :class:`helpers.http_server.FileServer`.

:func:`publish_repo` copies a snapshot folder to ``{root}/{repo}/resolve/{revision}/``
(what ``/resolve/`` URLs serve) and writes the model API answer the Hub gives for
``GET /api/models/{repo}/revision/{revision}?blobs=true`` (the server ignores the query)
to ``{root}/api/models/{repo}/revision/{revision}``: ``siblings`` rows with ``rfilename``,
``size``, ``blobId`` and, for files the Hub keeps in Git LFS (weights), ``lfs`` with
``sha256``, ``size`` and ``pointerSize``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")


def publish_repo(root: Path, repo: str, snapshot: Path, revision: str = "main",
                 sha256: dict[str, str] | None = None) -> dict:
    """Serve ``snapshot`` as ``repo`` under ``root``; ``sha256`` overrides the published
    hash of some files (a hub answer that disagrees with the bytes). Returns the API answer."""
    files = root / repo / "resolve" / revision
    shutil.copytree(snapshot, files)
    siblings = []
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        name = path.relative_to(files).as_posix()
        data = path.read_bytes()
        row: dict = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
        if name.endswith(LFS_SUFFIXES):
            digest = (sha256 or {}).get(name, hashlib.sha256(data).hexdigest())
            row["lfs"] = {"sha256": digest, "size": len(data), "pointerSize": 134}
        siblings.append(row)
    answer = {"id": repo, "modelId": repo, "sha": "0" * 40, "private": False, "siblings": siblings}
    api = root / "api" / "models" / repo / "revision" / revision
    api.parent.mkdir(parents=True, exist_ok=True)
    api.write_text(json.dumps(answer))
    return answer
