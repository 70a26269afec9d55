"""``terramask predict``: prompted segmentation of one scene."""

from __future__ import annotations

import click
import numpy as np

from terramask.cli.options import assets_option, model_options, parse_box, parse_point, runtime_option


@click.command("predict")
@click.argument("scene", type=click.Path(dir_okay=True))
@assets_option
@click.option("--point", "points", multiple=True, metavar="X,Y[,LABEL]",
              help="Prompt point; LABEL 1 = object (default), 0 = background. Repeatable.")
@click.option("--box", "boxes", multiple=True, metavar="X1,Y1,X2,Y2", help="Prompt box (xyxy). Repeatable.")
@click.option("--prompts", "prompt_file", type=click.Path(dir_okay=False),
              help="GeoJSON/GeoPackage of prompts: points with a 'label' property, polygons as boxes.")
@click.option("--crs", default="pixel", show_default=True,
              help="Frame of --point/--box: pixel, lonlat, scene (the scene's CRS) or EPSG:N.")
@click.option("--bands", help="1-based bands to show the model, e.g. 4,3,2 (default: first three, or band 1 as grey).")
@click.option("--single", is_flag=True, help="Return one mask instead of the 3 multimask candidates.")
@click.option("--refine", "refine_dir", type=click.Path(file_okay=False),
              help="Output folder of an earlier run: keep its prompts and use its best mask's logits as the prior.")
@model_options
@runtime_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def command(scene, assets, points, boxes, prompt_file, crs, bands, single, refine_dir, model, checkpoint, device, runtime, out_dir):
    """Segment the object(s) marked by point/box prompts in SCENE.

    Writes mask.tif, candidates.tif, mask.gpkg, mask.geojson, overlay.png, logits.npy
    and result.json into --out, together (an earlier run's files there are replaced as a
    whole). Prompts far apart, or on an object larger than one window, are answered
    window by window (result.json: "method": "tiled").
    """
    from terramask.core.prompts import Prompts
    from terramask.io.crs import prompt_frame
    from terramask.io.prompt_files import read_prompt_file
    from terramask.io.scene import open_scene
    from terramask.io.stac import scene_source
    from terramask.models.resolve import load_backend
    from terramask.pipelines.prompted.objects import TiledPrediction
    from terramask.pipelines.prompted.outputs import write_prediction
    from terramask.pipelines.prompted.predict import ScenePrompter, scene_pixel_prompts
    from terramask.pipelines.prompted.refine import load_previous, merge_pixel_prompts
    from terramask.pipelines.prompted.tiled_outputs import write_tiled_prediction

    with open_scene(scene_source(scene, assets), bands=bands) as sc:
        frame, frame_crs = prompt_frame(crs, sc.crs)
        parsed = [parse_point(p) for p in points]
        cli_prompts = Prompts(
            points=np.array([p[:2] for p in parsed], dtype=float).reshape(-1, 2),
            labels=np.array([p[2] for p in parsed], dtype=np.int64),
            boxes=np.array([parse_box(b) for b in boxes], dtype=float).reshape(-1, 4),
            frame=frame,
            crs=frame_crs,
        )
        sources = [cli_prompts] + ([read_prompt_file(prompt_file)] if prompt_file else [])
        previous = load_previous(refine_dir, sc) if refine_dir else None
        pixel_prompts = merge_pixel_prompts([scene_pixel_prompts(sc, p) for p in sources if not p.is_empty], previous)
        backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
        prompter = ScenePrompter(sc, backend)
        window = previous.window if previous is not None else None
        result = prompter.segment(pixel_prompts, multimask=not single, window=window)
        if isinstance(result, TiledPrediction):
            paths = write_tiled_prediction(result, sc, out_dir)
            summary = f"{len(result.objects)} object(s) over {len(result.windows)} window(s)"
            scores = result.scores
        else:
            rgb8 = prompter.session(result.window or sc.window).rgb8
            paths = write_prediction(result, sc, out_dir, rgb8=rgb8)
            summary = f"{len(result.candidates)} candidate(s)"
            scores = result.candidates.scores
    click.echo(
        f"{summary}; best score {float(np.max(scores)):.3f}; "
        f"model {result.model}; outputs in {paths['result.json'].parent}"
    )
