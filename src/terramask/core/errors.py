"""One error hierarchy for terramask.

Every error a user can cause derives from :class:`TerramaskError` and from the
builtin that matches it, so ``except ValueError`` keeps working for callers who do
not know terramask. Messages name the file or value at fault and the problem, in one
line; the CLI prints ``str(error)`` and the web app maps the class to a status code.
"""

from __future__ import annotations


class TerramaskError(Exception):
    """Root of every error raised on purpose by terramask."""


class InputError(TerramaskError, ValueError):
    """A parameter or value given by the user is invalid."""


class PromptError(InputError):
    """A prompt is outside the scene, on nodata, degenerate or malformed."""


class SceneError(TerramaskError, OSError):
    """A raster cannot be opened or read, or has an unsupported layout."""


class SceneNotFoundError(SceneError, FileNotFoundError):
    """The scene path does not exist."""


class BandError(InputError):
    """A requested band index does not exist in the scene."""


class OutputError(TerramaskError, OSError):
    """An output cannot be written (unwritable directory, disk full …)."""


class ModelError(TerramaskError, RuntimeError):
    """A model cannot be built, loaded or run."""


class UnknownModelError(ModelError, LookupError):
    """The model name is not in the registry."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """The checkpoint file is missing and cannot be downloaded."""


class DownloadError(ModelError, OSError):
    """A checkpoint download failed (network, truncated transfer …)."""


class ChecksumError(DownloadError):
    """A downloaded or given checkpoint does not have the expected SHA-256."""


class CheckpointMismatchError(ModelError, ValueError):
    """A checkpoint does not match the architecture it is loaded into."""


class DatasetError(InputError):
    """An evaluation dataset is malformed (missing pairs, size mismatch …)."""


class MissingDependencyError(TerramaskError, ImportError):
    """An optional package is not installed; the message gives the install command."""
