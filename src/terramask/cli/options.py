"""Click options and parsers shared by several subcommands."""

from __future__ import annotations

import click

from terramask.core.errors import InputError


def model_options(f):
    """``--model``, ``--checkpoint``, ``--device``."""
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")(f)
    f = click.option(
        "--checkpoint",
        type=click.Path(dir_okay=False),
        help="Local checkpoint file to use instead of the cached/downloaded one.",
    )(f)
    f = click.option(
        "--model",
        "model",
        help="Model name from `terramask models list` (default: $TERRAMASK_MODEL, "
        "else the best cached SAM checkpoint, else the weight-free classic engine).",
    )(f)
    return f


def parse_numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    """``"1,2,3"`` -> ``[1.0, 2.0, 3.0]`` with a length in ``counts``, else InputError."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in counts:
        raise InputError(f"{what} {text!r}: expected {' or '.join(map(str, counts))} numbers, got {len(values)}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (label 1 object, 0 background; default 1)."""
    values = parse_numbers(text, "--point", (2, 3))
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise InputError(f"--point {text!r}: the label must be 1 (object) or 0 (background)")
    return values[0], values[1], int(label)


def parse_box(text: str) -> list[float]:
    """``"X1,Y1,X2,Y2"``."""
    return parse_numbers(text, "--box", (4,))


RUNTIME_CHOICES = ("torch", "onnx", "onnx-int8", "openvino", "auto")  # terramask.models.resolve.RUNTIMES


def runtime_option(f):
    """``--runtime torch|onnx|onnx-int8|openvino|auto`` (the ONNX-based runtimes export the
    checkpoint once into the cache)."""
    return click.option(
        "--runtime",
        type=click.Choice(RUNTIME_CHOICES),
        default="torch",
        show_default=True,
        help="Inference runtime: PyTorch; ONNX Runtime; ONNX Runtime with an int8 encoder (changes results); "
             "OpenVINO; auto: the fastest measured on this machine (`terramask doctor`).",
    )(f)


# -- automatic segmentation: one spelling of each option for `auto` and `batch` ---------------

# (option, AmgParams field, click type, help)
AMG_OPTIONS = [
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
    ("--prompts", "prompts", click.Choice(["grid", "objects"]),
     "Point prompts: grid (the reference's, default) or objects (one point per weight-free object proposal, "
     "at most the grid's count: fewer decoder prompts on a CPU)."),
]


def generation_options(f):
    """``--preset``, every automatic-generation parameter as its own option, ``--point-grids``,
    ``--output-mode`` and ``--mode`` (collected by :func:`generation_from_options`)."""
    for opt, dest, typ, text in reversed(AMG_OPTIONS):
        f = click.option(opt, dest, type=typ, default=None, help=text)(f)
    f = click.option("--mode", type=click.Choice(["fast", "exact"]), default="fast", show_default=True,
                     help="fast: decisions on low-res logits, only survivors upsampled; exact: the reference's decisions.")(f)
    f = click.option("--output-mode", type=click.Choice(["coco_rle", "uncompressed_rle"]), default="coco_rle",
                     show_default=True, help="RLE flavour of masks.json.")(f)
    f = click.option("--point-grids", "point_grids", type=click.Path(dir_okay=False),
                     help="JSON file: a list of point grids (one per crop layer), each a list of [x, y] in [0, 1]; "
                          "replaces --points-per-side.")(f)
    f = click.option("--preset", default=None,
                     help="Parameter set: default (the reference's), small-objects (the notebook's remote-sensing "
                          "tuning), quick. Single options override it.")(f)
    return f


def assets_option(f):
    """``--assets``: which assets of a STAC item SCENE become the bands."""
    return click.option("--assets", default=None,
                        help="For a STAC item SCENE (.json file or URL): asset keys or common band names as bands, "
                             "e.g. red,green,blue, visual or B08,B04,B03 (default: visual, else red,green,blue).")(f)


def scene_options(f):
    """``--bands``, ``--min-area``/``--max-area``, ``--tile-size``, ``--overlap``, ``--vector-format``, ``--quiet``."""
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)
    f = click.option("--vector-format", type=click.Choice(["gpkg", "fgb", "parquet"]), default="gpkg",
                     show_default=True,
                     help="Objects file: GeoPackage, FlatGeobuf or GeoParquet 1.1 (bbox covering column); "
                          "same columns in each.")(f)
    f = click.option("--overlap", type=click.INT, default=None,
                     help="Pixels shared by neighbouring tiles (default 128, at most a quarter of the tile); "
                          "objects up to this size crossing a tile edge are seen whole.")(f)
    f = click.option("--tile-size", type=click.INT, default=1024, show_default=True,
                     help="Tile side in pixels at native resolution (at least 64); a smaller scene is one tile.")(f)
    f = click.option("--max-area", help="Drop objects larger than this (same units as --min-area).")(f)
    f = click.option("--min-area", help="Drop objects smaller than this: 20m2, 5ha, 0.1km2 (needs a CRS) "
                                        "or 150px / 150 (pixels).")(f)
    f = click.option("--bands", help="1-based bands to show the model, e.g. 4,3,2 (default: first three, "
                                     "or band 1 as grey).")(f)
    return f


def engine_options(f):
    """``--engine``, ``--address``, ``--workers``."""
    f = click.option("--workers", type=click.IntRange(1), help="Number of Ray workers (default: one per CPU).")(f)
    f = click.option("--address", help="Ray cluster address (auto, ray://head:10001, head:6379); "
                                       "default starts a local Ray.")(f)
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="local: in this process; ray: Ray workers, each loading the model once.")(f)
    return f


def load_point_grids(path: str | None):
    """``--point-grids`` file -> list of ``(n, 2)`` arrays, or None."""
    if path is None:
        return None
    import json

    import numpy as np

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


def generation_from_options(opts: dict, extra: dict | None = None):
    """``(params, preset name or None)`` from the :func:`generation_options` values in
    ``opts`` (consumed) and ``extra`` (``batch --param KEY=VALUE`` pairs).

    ``params`` is an ``AmgParams`` (the preset, default ``default``, with the single
    options and ``extra`` applied) or, when ``extra`` holds the classic engine's own
    ``generate`` options, that dict (then no preset or generation option may be given).
    """
    from terramask.pipelines.amg.params import AmgParams
    from terramask.pipelines.amg.presets import get_preset, resolve_params

    preset = opts.pop("preset", None)
    grids = load_point_grids(opts.pop("point_grids", None))
    output_mode = opts.get("output_mode", "coco_rle")
    values = {dest: opts.pop(dest, None) for _, dest, _, _ in AMG_OPTIONS}
    given = {k: v for k, v in values.items() if v is not None}
    extra = dict(extra or {})
    own = sorted(set(extra) - set(AmgParams.names()))
    if own:
        if preset is not None or given or grids is not None:
            raise InputError(f"--param {', '.join(own)} are options of the classic engine's own generation; "
                             "they cannot be combined with --preset or automatic-generation parameters")
        return extra, None
    name = get_preset(preset or "default").name
    params = resolve_params(name, point_grids=grids, output_mode=output_mode, **{**given, **extra})
    return params, name


def scene_config_from_options(opts: dict, preset: str | None):
    """:class:`~terramask.pipelines.scene.config.SceneRunConfig` from the
    :func:`scene_options` values in ``opts`` (consumed) and ``--output-mode``."""
    from terramask.pipelines.scene.config import SceneRunConfig, default_overlap

    tile_size = opts.pop("tile_size")
    overlap = opts.pop("overlap", None)
    quiet = opts.pop("quiet", False)
    return SceneRunConfig(
        bands=opts.pop("bands", None), tile_size=tile_size,
        overlap=default_overlap(tile_size) if overlap is None else overlap,
        min_area=opts.pop("min_area", None), max_area=opts.pop("max_area", None),
        output_mode=opts.pop("output_mode", "coco_rle"), progress=False if quiet else None, preset=preset,
        vector_format=opts.pop("vector_format", "gpkg"),
    )


def engine_config_from_options(opts: dict):
    """:class:`~terramask.pipelines.scene.config.EngineConfig` from :func:`engine_options` values."""
    from terramask.pipelines.scene.config import EngineConfig

    return EngineConfig(opts.pop("engine", "local"), opts.pop("address", None), opts.pop("workers", None))


def concept_model_options(f):
    """``--model``, ``--checkpoint``, ``--device`` for commands whose model may be SAM 3:
    ``--checkpoint`` also takes a folder (a Hugging Face snapshot, e.g. from ``hf download
    facebook/sam3 --local-dir DIR``). Same spellings and help as :func:`model_options`."""
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")(f)
    f = click.option(
        "--checkpoint",
        type=click.Path(),
        help="Local checkpoint to use instead of the cached/downloaded one: a file, or for SAM 3 "
        "(--model sam3) a Hugging Face folder holding config.json and the weights.",
    )(f)
    f = click.option(
        "--model",
        "model",
        help="Model name from `terramask models list` (default: $TERRAMASK_MODEL, "
        "else the best cached SAM checkpoint, else the weight-free classic engine).",
    )(f)
    return f


def text_model_options(f):
    """The text model of ``find --text`` and of ``serve``'s text box: ``--detector``,
    ``--detector-checkpoint``, ``--box-threshold``, ``--text-threshold``, ``--threshold``
    (see :func:`terramask.models.concept.resolve.load_concept_backend`)."""
    f = click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Text route with SAM 3: its instance score threshold (default 0.5).")(f)
    f = click.option("--text-threshold", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Text route: Grounding DINO text-token threshold (default: the documented one).")(f)
    f = click.option("--box-threshold", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Text route: detector box score threshold (default: the detector's documented one).")(f)
    f = click.option("--detector-checkpoint", type=click.Path(),
                     help="Text route: local detector (or SAM 3) checkpoint, a Hugging Face snapshot folder.")(f)
    f = click.option("--detector", default=None, metavar="NAME_OR_FOLDER",
                     help="Text route: open-vocabulary detector from `terramask models list` (grounding-dino-tiny, "
                     "grounding-dino-base, owlv2-base; or sam3 for SAM 3), or a Hugging Face folder of one.")(f)
    return f
