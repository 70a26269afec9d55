"""Lazy imports of optional heavy packages with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from terramask.core.errors import MissingDependencyError


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the fix.

    ``extra`` is the terramask extra that installs it (``pip install 'terramask[extra]'``);
    ``package`` is the PyPI name when it differs from the module name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{name} is required for this feature but is not installed: "
            f"pip install 'terramask[{extra}]' (or pip install {name})"
        ) from exc
