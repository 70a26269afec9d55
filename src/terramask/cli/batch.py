"""``terramask batch``: automatic segmentation of many scenes, resumable."""

from __future__ import annotations

import json

import click

from terramask.cli.options import model_options
from terramask.core.errors import InputError


def parse_param(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``; the value is read as JSON when it parses
    (numbers, true/false, null, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise InputError(f"--param {text!r}: expected KEY=VALUE, e.g. points_per_side=64")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one sub-folder per scene, gallery.png, index.csv/json, journal.jsonl.")
@model_options
@click.option("--preset", help="Automatic-generation preset (default, small-objects, quick).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="One generation parameter, e.g. points_per_side=64 (repeatable; overrides the preset). "
                   "The classic model also takes its own options, e.g. superpixels=felzenszwalb.")
@click.option("--mode", type=click.Choice(["fast", "exact"]), default="fast", show_default=True,
              help="Automatic generation mode.")
@click.option("--bands", help="1-based bands to show the model, e.g. 4,3,2 (default: first three, or band 1 as grey).")
@click.option("--tile-size", type=int, default=1024, show_default=True, help="Tile side in pixels (native resolution).")
@click.option("--overlap", type=int, default=128, show_default=True,
              help="Pixels shared by neighbouring tiles; objects up to this size crossing an edge are seen whole.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: in this process; ray: scenes as Ray tasks, each worker loading the model once.")
@click.option("--address", help="Ray cluster address (e.g. auto, ray://head:10001); default starts a local Ray.")
@click.option("--workers", type=int, help="Number of Ray workers (default: one per CPU).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(inputs, out_dir, model, checkpoint, device, preset, params, mode, bands, tile_size, overlap, engine,
            address, workers, quiet):
    """Segment every object in each scene of INPUTS (files, folders, glob patterns).

    Scenes of any size are processed tile by tile. Writes per scene labels.tif,
    objects.gpkg, overlay.png and summary.json into OUT/<name>/, plus gallery.png,
    index.csv and index.json. Run the same command again after an interruption to
    continue: finished scenes are not recomputed. Exits with status 1 when a scene failed
    (the others are still done).
    """
    from terramask.pipelines.batch.run import run_batch

    values: dict = {}
    if preset:
        from terramask.pipelines.amg.presets import get_preset

        values.update(get_preset(preset).values)
    values.update(dict(parse_param(p) for p in params))
    result = run_batch(
        inputs, out_dir, model=model, checkpoint=checkpoint, device=device, params=values or None, mode=mode,
        bands=bands, tile_size=tile_size, overlap=overlap, engine=engine, address=address, workers=workers,
        progress=False if quiet else None,
    )
    objects = sum(r["objects"] or 0 for r in result.rows)
    reused = f" ({result.reused} already done)" if result.reused else ""
    click.echo(f"{len(result.rows)} scene(s): {result.done} done{reused}, {result.failed} failed; "
               f"{objects} objects; outputs in {result.out_dir}")
    for r in result.rows:
        if r["status"] != "done":
            error = r["error"] or "unknown error"
            click.echo(f"failed: {error if r['input'] in error else r['input'] + ': ' + error}", err=True)
    if result.failed:
        raise click.ClickException(f"{result.failed} of {len(result.rows)} scene(s) failed; see {result.paths['index_csv']}")
