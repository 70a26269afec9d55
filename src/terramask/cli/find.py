"""``terramask find``: every object of a class over a whole scene, from exemplars or phrases."""

from __future__ import annotations

import click

from terramask.cli.options import (
    concept_model_options,
    runtime_option,
    scene_config_from_options,
    scene_options,
    text_model_options,
)


def text_route(model, checkpoint, device, runtime, detector, detector_checkpoint, box_threshold, text_threshold,
               threshold=None):
    """The concept backend for phrases: a detector + the SAM-family ``model``, or SAM 3
    (``--model sam3``), loaded by :func:`terramask.models.concept.resolve.load_concept_backend`."""
    from terramask.models.concept.resolve import load_concept_backend

    return load_concept_backend(model, detector, checkpoint, detector_checkpoint=detector_checkpoint, device=device,
                                runtime=runtime, cache=True, box_threshold=box_threshold,
                                text_threshold=text_threshold, threshold=threshold)


@click.command("find")
@click.argument("scene", metavar="SCENE")
@click.option("--text", "phrases", multiple=True, metavar="PHRASE",
              help="A class to find, in plain words (repeat for several: --text building --text 'solar panel').")
@click.option("--exemplars", type=click.Path(dir_okay=False),
              help="GeoJSON/GeoPackage of example objects: polygons (outlines) or points (clicks), optional "
                   "'label' (1 example, 0 counter-example) and 'class'. Alone: find-similar; with --text: SAM 3 "
                   "reads them as example boxes, detector + SAM adds find-similar's objects (see the README).")
@click.option("--similarity", type=click.FloatRange(-1.0, 1.0), default=0.6, show_default=True,
              help="Find-similar: cosine similarity to an example that a candidate must reach (higher: fewer, "
                   "closer matches).")
@click.option("--max-points", type=click.IntRange(1), default=64, show_default=True,
              help="Find-similar: most prompts per tile (the best-matching embedding cells).")
@click.option("--nms", "nms_thresh", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.7, show_default=True,
              help="Box IoU above which two objects of one class in a tile are duplicates.")
@concept_model_options
@runtime_option
@text_model_options
@scene_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def command(scene, phrases, exemplars, similarity, max_points, nms_thresh, model, checkpoint, device, runtime,
            detector, detector_checkpoint, box_threshold, text_threshold, threshold, out_dir, **opts):
    """Find every object like the exemplars, or named by --text, in SCENE (any size).

    With --exemplars only, objects like the examples are found with the SAM-family model
    (find-similar: no extra weights; --similarity tunes it). With --text, a detector + SAM
    or SAM 3 finds each phrase. With both, SAM 3 takes the phrases and the exemplar boxes
    as one query; detector + SAM adds the objects find-similar finds from the exemplars,
    duplicates of a class removed. Each object keeps its class (its phrase's, or its
    exemplars' class; exemplars without one are examples of a single phrase). Writes the files of `terramask auto` (labels.tif,
    objects.gpkg, masks.json, overlay.png, summary.json) plus classes.tif (class index per
    pixel; the class table is in summary.json); objects carry class, score
    (similarity/detector/presence) and predicted_iou; the overlay is coloured by class.
    """
    from terramask.core.errors import InputError
    from terramask.models.concept.base import check_phrase
    from terramask.pipelines.find.run import find_scene
    from terramask.pipelines.scene.run import check_scene

    phrases = tuple(check_phrase(p) for p in phrases)
    if not phrases and exemplars is None:
        raise InputError("nothing to find: give --text PHRASE or --exemplars FILE")
    config = scene_config_from_options(opts, None)
    check_scene(scene, config)  # bad bands or area units fail before the model loads
    features = None
    if exemplars is not None:
        from terramask.pipelines.find.run import read_scene_exemplars

        features = read_scene_exemplars(scene, exemplars, config)  # bad exemplars fail before the model loads
    if phrases:
        concept = text_route(model, checkpoint, device, runtime, detector, detector_checkpoint, box_threshold,
                             text_threshold, threshold)
        run = find_scene(scene, out_dir, phrases=phrases, concept=concept, exemplars=features, similarity=similarity,
                         max_points=max_points, nms_thresh=nms_thresh, config=config)
        name = getattr(concept, "name", detector)
    else:
        from terramask.models.resolve import load_backend

        backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
        run = find_scene(scene, out_dir, exemplars=features, backend=backend, similarity=similarity,
                         max_points=max_points, nms_thresh=nms_thresh, config=config)
        name = getattr(backend, "name", model)
    classes = [c for c in run.summary.get("classes", {}).values() if c]
    click.echo(f"{run.objects} objects of {len(classes)} class(es) ({', '.join(classes)}) from {run.tiles} tile(s); "
               f"model {name}; outputs in {run.out_dir}")
