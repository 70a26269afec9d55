"""``terramask batch``: automatic segmentation of many scenes, resumable."""

from __future__ import annotations

import json

import click

from terramask.cli.options import (
    assets_option,
    engine_config_from_options,
    engine_options,
    generation_from_options,
    generation_options,
    model_options,
    runtime_option,
    scene_config_from_options,
    scene_options,
)
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
@runtime_option
@generation_options
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="One more generation parameter, e.g. points_per_side=64 (repeatable; overrides the preset). "
                   "Mainly for the classic engine's own options, e.g. superpixels=felzenszwalb.")
@scene_options
@engine_options
@assets_option
def command(inputs, out_dir, model, checkpoint, device, runtime, params, assets, **opts):
    """Segment every object in each scene of INPUTS (files, folders, glob patterns,
    URLs, STAC items: see `terramask auto`).

    Each scene goes through the same pipeline as `terramask auto` (any size, tile by
    tile) and gets the same files in OUT/<name>/: labels.tif, objects.gpkg, masks.json,
    overlay.png and summary.json; plus gallery.png, index.csv and index.json. Run the
    same command again after an interruption to continue: finished scenes are not
    recomputed. Exits with status 1 when a scene failed (the others are still done).
    """
    from terramask.pipelines.batch.run import run_batch
    from terramask.pipelines.scene.segmenters import AutoSegmenter

    values, preset = generation_from_options(opts, dict(parse_param(p) for p in params))
    mode = opts.pop("mode")
    config = scene_config_from_options(opts, preset)
    engine = engine_config_from_options(opts)
    if engine.name == "ray" and runtime != "torch":
        raise InputError("--engine ray runs the torch runtime; drop --runtime or use --engine local")
    as_dict = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    segmenter = AutoSegmenter(model, None if checkpoint is None else str(checkpoint), device, as_dict, mode,
                              runtime=runtime)
    result = run_batch(inputs, out_dir, segmenter, config, engine, assets=assets)
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
