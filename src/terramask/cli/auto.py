"""``terramask auto``: segment everything in a scene (automatic mask generation)."""

from __future__ import annotations

import json
import sys

import click

from terramask.cli.options import model_options, runtime_option

# (option, AmgParams field, click type, help)
_PARAM_OPTIONS = [
    ("--points-per-side", "points_per_side", click.INT, "Grid points along one side of each crop (default 32)."),
    ("--points-per-batch", "points_per_batch", click.INT, "Prompts decoded together (memory, not results; default 64)."),
    ("--pred-iou-thresh", "pred_iou_thresh", click.FLOAT, "Keep masks whose predicted IoU exceeds this, in [0, 1] (default 0.88)."),
    ("--stability-score-thresh", "stability_score_thresh", click.FLOAT, "Keep masks at least this stable, in [0, 1] (default 0.95)."),
    ("--stability-score-offset", "stability_score_offset", click.FLOAT, "Logit shift used by the stability score (default 1.0)."),
    ("--box-nms-thresh", "box_nms_thresh", click.FLOAT, "Box IoU above which duplicates are removed (default 0.7)."),
    ("--crop-n-layers", "crop_n_layers", click.INT, "Extra layers of overlapping crops (default 0)."),
    ("--crop-nms-thresh", "crop_nms_thresh", click.FLOAT, "Box IoU for duplicates between crops (default 0.7)."),
    ("--crop-overlap-ratio", "crop_overlap_ratio", click.FLOAT, "Overlap of first-layer crops, in [0, 1) (default 512/1500)."),
    ("--crop-n-points-downscale-factor", "crop_n_points_downscale_factor", click.INT,
     "Points per side shrink by this factor per crop layer (default 1)."),
    ("--min-mask-region-area", "min_mask_region_area", click.INT,
     "Fill holes and remove islands smaller than this many pixels (default 0 = off)."),
]


def _param_options(f):
    for opt, dest, typ, text in reversed(_PARAM_OPTIONS):
        f = click.option(opt, dest, type=typ, default=None, help=text)(f)
    return f


def _load_grids(path: str | None):
    if path is None:
        return None
    import numpy as np

    from terramask.core.errors import InputError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise InputError(f"--point-grids {path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--point-grids {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"--point-grids {path}: expected a JSON list of grids, each a list of [x, y] in [0, 1]")
    try:
        return [np.asarray(g, dtype=np.float64) for g in data]
    except (TypeError, ValueError):
        raise InputError(f"--point-grids {path}: every grid must be a list of [x, y] numbers") from None


def _progress_bar(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(desc="prompts", unit="pt", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


@click.command("auto")
@click.argument("scene", type=click.Path(dir_okay=True))
@model_options
@runtime_option
@click.option("--preset", default="default", show_default=True,
              help="Parameter set: default (the reference's), small-objects (the notebook's remote-sensing tuning), quick.")
@_param_options
@click.option("--point-grids", "point_grids", type=click.Path(dir_okay=False),
              help="JSON file: a list of point grids (one per crop layer), each a list of [x, y] in [0, 1]; replaces --points-per-side.")
@click.option("--output-mode", type=click.Choice(["coco_rle", "uncompressed_rle"]), default="coco_rle", show_default=True,
              help="RLE flavour of masks.json.")
@click.option("--mode", type=click.Choice(["fast", "exact"]), default="fast", show_default=True,
              help="fast: decisions on low-res logits, only survivors upsampled; exact: the reference's decisions.")
@click.option("--bands", help="1-based bands to show the model, e.g. 4,3,2 (default: first three, or band 1 as grey).")
@click.option("--min-area", help="Drop objects smaller than this: 20m2, 5ha, 0.1km2 (needs a CRS) or 150px / 150 (pixels).")
@click.option("--max-area", help="Drop objects larger than this (same units as --min-area).")
@click.option("--tile-size", type=click.INT, default=None,
              help="Segment in tiles of this many pixels (default: whole image up to 2048 px, tiles of 1024 beyond).")
@click.option("--overlap", type=click.INT, default=128, show_default=True, help="Tile overlap in pixels (tiled runs).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: in this process; ray: tiles as Ray tasks, each worker loading the model once (tiled runs).")
@click.option("--address", help="Ray cluster address (auto, ray://head:10001, head:6379); default starts a local Ray.")
@click.option("--workers", type=click.IntRange(1), help="Number of Ray workers (default: one per CPU).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def command(scene, model, checkpoint, device, runtime, preset, point_grids, output_mode, mode, bands, min_area, max_area,
            tile_size, overlap, engine, address, workers, quiet, out_dir, **param_values):
    """Segment every object in SCENE (automatic mask generation).

    Writes labels.tif (object IDs), objects.gpkg (polygons with id, predicted_iou,
    stability_score, area_m2), masks.json (COCO RLE records), overlay.png and
    summary.json into --out. Every parameter of the reference generator is an option;
    --preset picks a starting set and single options override it.
    """
    from terramask.io.scene import open_scene
    from terramask.models.resolve import load_backend
    from terramask.pipelines.amg.filters import area_to_pixels, check_range, parse_area
    from terramask.pipelines.scene.single import MAX_SIDE, run_auto
    from terramask.pipelines.amg.presets import get_preset, resolve_params

    grids = _load_grids(point_grids)
    params = resolve_params(preset, point_grids=grids, output_mode=output_mode, **param_values)
    lo = parse_area(min_area, "--min-area") if min_area is not None else None
    hi = parse_area(max_area, "--max-area") if max_area is not None else None
    with open_scene(scene, bands=bands) as sc:
        shape = (sc.height, sc.width)
        tiled = tile_size is not None or max(shape) > MAX_SIDE or engine == "ray"
        min_px = area_to_pixels(lo, sc.transform, sc.crs, shape, "--min-area")
        max_px = area_to_pixels(hi, sc.transform, sc.crs, shape, "--max-area")
        check_range(min_px, max_px, min_area or "", max_area or "")
    if engine == "ray" and runtime != "torch":
        raise InputError("--engine ray runs the torch runtime; drop --runtime or use --engine local")
    # On Ray every worker loads the model itself; locally it is loaded once here.
    backend = (load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
               if engine == "local" else None)
    name = getattr(backend, "name", model)
    if tiled:
        from terramask.pipelines.scene.tiled import DEFAULT_TILE_SIZE, run_tiled_auto

        res = run_tiled_auto(
            scene, out_dir, model=model, checkpoint=checkpoint, device=device, backend=backend,
            engine=engine, address=address, workers=workers, params=params, mode=mode, bands=bands,
            tile_size=tile_size or DEFAULT_TILE_SIZE, overlap=overlap, progress=False if quiet else None,
            min_area_px=min_px, max_area_px=max_px,
            extra_summary={"preset": get_preset(preset).name, "model": name},
        )
        count = getattr(res, "objects", None)
        click.echo(f"{count if count is not None else 'all'} objects (tiled); model {name}; mode {mode}; outputs in {out_dir}")
        return
    bar, update = _progress_bar(quiet)
    try:
        run = run_auto(
            scene, backend, out_dir, params, mode, bands=bands, min_area=lo, max_area=hi,
            preset=get_preset(preset).name, model_name=name, progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"{len(run.result)} objects; model {name}; mode {mode}; outputs in {run.paths['summary.json'].parent}")
