"""``terramask auto``: segment everything in a scene of any size (automatic mask generation)."""

from __future__ import annotations

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


@click.command("auto")
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@click.option("--mosaic", is_flag=True,
              help="SCENE... (files, URLs or a folder) are one mosaic: put on one grid in the first scene's CRS "
                   "(reprojected on the fly, bilinear), later scenes over earlier ones; objects crossing scene "
                   "borders are merged like objects crossing tiles.")
@assets_option
@model_options
@runtime_option
@generation_options
@scene_options
@engine_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def command(scenes, mosaic, assets, model, checkpoint, device, runtime, out_dir, **opts):
    """Segment every object in SCENE (automatic mask generation), at any scene size.

    SCENE: a raster file, a URL (https://, s3://, gs://, az://) or /vsi path read by
    window where it lives, or a STAC item (.json file or URL; --assets picks its bands);
    with --mosaic, several scenes (or a folder of them) processed as one.

    Writes labels.tif (object IDs, COG), objects.gpkg (polygons with id, class,
    predicted_iou, stability_score, n_tiles, area_m2, perimeter_m), masks.json (COCO RLE
    records), overlay.png and summary.json into --out; the same files and columns for a
    one-tile scene and a tiled one. Every parameter of the reference generator is an
    option; --preset picks a starting set and single options override it.
    """
    from terramask.io.stac import scene_source
    from terramask.pipelines.scene.run import check_scene, run_scene
    from terramask.pipelines.scene.segmenters import AutoSegmenter, BackendSegmenter

    params, preset = generation_from_options(opts)
    mode = opts.pop("mode")
    config = scene_config_from_options(opts, preset)
    engine = engine_config_from_options(opts)
    if engine.name == "ray" and runtime != "torch":
        raise InputError("--engine ray runs the torch runtime; drop --runtime or use --engine local")
    if mosaic:
        from terramask.io.mosaic import mosaic_vrt

        scene = mosaic_vrt(scenes)
    elif len(scenes) != 1:
        raise InputError(f"auto takes one SCENE, got {len(scenes)}; give --mosaic to process them as one scene")
    else:
        scene = scene_source(scenes[0], assets)
    check_scene(scene, config)  # bad bands or area units fail before the model loads
    if engine.name == "local":
        from terramask.models.resolve import load_backend

        backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
        segmenter: AutoSegmenter | BackendSegmenter = BackendSegmenter(backend, params, mode)
        name = getattr(backend, "name", model)
    else:
        # On Ray every worker loads the model itself.
        as_dict = params.to_dict() if hasattr(params, "to_dict") else dict(params)
        segmenter = AutoSegmenter(model, None if checkpoint is None else str(checkpoint), device, as_dict, mode)
        name = segmenter.spec().name
    run = run_scene(scene, out_dir, segmenter, config, engine)
    click.echo(f"{run.objects} objects from {run.tiles} tile(s) ({run.skipped} empty); model {name}; mode {mode}; "
               f"outputs in {run.out_dir}")
