"""Where terramask keeps downloaded checkpoints (and other caches).

``cache_dir()`` is ``$TERRAMASK_CACHE`` when set (``~`` expanded), otherwise the
platform's user cache directory for ``terramask`` (``~/.cache/terramask`` on Linux,
``~/Library/Caches/terramask`` on macOS, ``%LOCALAPPDATA%\\terramask\\Cache`` on
Windows). Directories are created on first use, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "TERRAMASK_CACHE"


def cache_dir(create: bool = True) -> Path:
    """Root of terramask's caches; created when ``create`` (the default)."""
    configured = os.environ.get(ENV_CACHE, "").strip()
    if configured:
        root = Path(configured).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("terramask", appauthor=False))
    if create:
        _make(root)
    return root


def models_dir(create: bool = True) -> Path:
    """Folder of downloaded model checkpoints: ``cache_dir() / "models"``."""
    path = cache_dir(create=create) / "models"
    if create:
        _make(path)
    return path


def _make(path: Path) -> None:
    from terramask.core.errors import OutputError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create cache directory {path}: {exc.strerror or exc} (set {ENV_CACHE} to a writable folder)"
        ) from exc
