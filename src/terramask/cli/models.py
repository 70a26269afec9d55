"""``terramask models``: list, download and locate model checkpoints."""

from __future__ import annotations

import json

import click

from terramask.core.errors import WeightsNotFoundError
from terramask.models.download import checkpoint_path, download, ensure_checkpoint, is_cached
from terramask.models.registry import ModelSpec, get_spec, list_specs


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _params(p: float | None) -> str:
    return "-" if p is None else f"{p:.1f}M"


def _fastest_runtimes() -> dict[str, str]:
    """family -> the runtime measured fastest on this machine (``terramask doctor``)."""
    from terramask.models.runtime_choice import ChoiceCache

    return {family: m.fastest for family, m in ChoiceCache().measurements().items()}


def _runtime(spec: ModelSpec, fastest: dict[str, str]) -> str | None:
    """What ``--runtime auto`` runs ``spec`` on here: the measured choice, ``torch`` for a
    family with no other runtime, None when not measured yet or weight-free."""
    if not spec.needs_weights:
        return None
    if spec.family not in ("sam", "mobilesam", "sam2"):  # no ONNX / OpenVINO runtime
        return "torch"
    return fastest.get(spec.family)


def _row(spec: ModelSpec, fastest: dict[str, str] | None = None) -> dict:
    cached = is_cached(spec) if spec.needs_weights else None
    return {
        "name": spec.name,
        "family": spec.family,
        "arch": spec.arch,
        "params_millions": spec.params_millions,
        "size_bytes": spec.size_bytes,
        "licence": spec.licence,
        "cached": cached,
        "path": str(checkpoint_path(spec)) if spec.needs_weights else None,
        "url": spec.url,
        "sha256": spec.sha256,
        "fastest_runtime": _runtime(spec, fastest or {}),
        "repo": spec.repo,
        "gated": spec.gated,
        "when_to_use": spec.when_to_use,
    }


@click.group(name="models")
def command() -> None:
    """List, download and locate model checkpoints."""


@command.command(name="list", short_help="Show every known model and whether it is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def list_command(as_json: bool) -> None:
    """Show every known model: family, parameters, file size, licence, whether it is
    in the cache, the runtime measured fastest here for its family (`terramask doctor`),
    and when to use it."""
    fastest = _fastest_runtimes()
    rows = [_row(spec, fastest) for spec in list_specs()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("NAME", "FAMILY", "PARAMS", "SIZE", "LICENCE", "CACHED", "RUNTIME", "WHEN TO USE")
    table = [
        (
            r["name"],
            r["family"],
            _params(r["params_millions"]),
            _size(r["size_bytes"]),
            r["licence"],
            "-" if r["cached"] is None else ("yes" if r["cached"] else "no"),
            r["fastest_runtime"] or ("-" if r["cached"] is None else "unmeasured"),
            r["when_to_use"],
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *table]) for i in range(len(header) - 1)]
    for line in [header, *table]:
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, line[-1]]))


@command.command(name="download", short_help="Download a checkpoint into the cache.")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if the checkpoint is already cached.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download_command(name: str, force: bool, quiet: bool) -> None:
    """Download NAME's official checkpoint into the cache (resumable, SHA-256 checked).

    Prints the checkpoint's path.
    """
    spec = get_spec(name)
    if not spec.needs_weights:
        click.echo(f"{spec.name} is weight-free; nothing to download.", err=True)
        return
    if spec.is_snapshot:  # a Hugging Face repository: a folder of files
        from terramask.models.snapshot import ensure_snapshot

        path = ensure_snapshot(spec, download_missing=True, force=force, progress=not quiet)
    elif force:
        if spec.url is None:
            raise WeightsNotFoundError(f"model {spec.name} has no download URL")
        path = download(spec.url, checkpoint_path(spec), spec.sha256, spec.size_bytes, not quiet, name=spec.name)
    else:
        path = ensure_checkpoint(spec, download_missing=True, progress=not quiet)
    click.echo(str(path))


@command.command(name="path", short_help="Print where a checkpoint is (or goes) in the cache.")
@click.argument("name")
@click.option("--expected", is_flag=True, help="Print the cache location even if the file is not there yet.")
def path_command(name: str, expected: bool) -> None:
    """Print where NAME's checkpoint is (or goes) in the cache.

    Exits with status 1 when it is not there, unless --expected.
    """
    spec = get_spec(name)
    path = checkpoint_path(spec)
    if not expected and not path.is_file():
        raise WeightsNotFoundError(
            f"{spec.name} is not in the cache (expected at {path}); "
            f"run `terramask models download {spec.name}` or put the file there"
        )
    click.echo(str(path))


def _attach_export_onnx() -> None:
    """``terramask models export-onnx`` lives in its own module (it needs onnx/torch only
    when run); attach it to this group."""
    from terramask.cli.models_onnx import export_onnx_command

    command.add_command(export_onnx_command)


_attach_export_onnx()
