"""``find_scene``: every object like the exemplars (or named by phrases) over a whole scene.

The Python API of ``terramask find``. Two routes feed the same tiled pipeline
(:func:`terramask.pipelines.scene.run.run_scene`: tile plan, cross-tile merge of parts of
the same class, staged outputs):

- **exemplars** (find-similar, no extra model): the exemplar file is read and reprojected
  to the scene CRS, each exemplar is placed in the tile that holds it most centrally
  (:mod:`.exemplars`), prototypes are built once for the scene
  (:func:`terramask.models.concept.similar.build_prototypes`), then every tile is searched
  with :class:`~terramask.models.concept.similar.SimilarFinder`;
- **phrases**: a concept backend (detector + SAM, SAM 3) finds the instances of each phrase
  in every tile;
- **phrases and exemplars** together (:func:`find_text_and_exemplars`): with SAM 3, the
  phrases and the exemplar boxes (examples and counter-examples) form one concept query
  in each tile (the boxes lying in that tile; an exemplar refines the phrase of its
  class); with detector + SAM, the detector's objects for the phrases and find-similar's
  objects for the exemplars (on the same SAM-family backend) are combined
  (:class:`~terramask.models.concept.combined.TextAndSimilar`) and de-duplicated by
  per-class NMS. Either way each object keeps its class: its phrase's, or its
  exemplars' class. Exemplars without a ``class`` take the phrase's class when there is
  one phrase (they are examples of it), else ``"object"``.

Outputs: those of ``auto`` plus ``classes.tif``, the ``class``/``score`` columns and the
class table in ``summary.json`` (see :mod:`terramask.pipelines.scene.run`). Bad input
(an empty or malformed phrase, exemplars outside the scene or on nodata, no example with
label 1, a model without image features) is one :class:`InputError`/:class:`ModelError`
line raised before any tile runs; nothing is written under a final name.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

from terramask.core.errors import InputError
from terramask.core.geometry import plan_tiles
from terramask.io.exemplars import DEFAULT_CLASS, ExemplarFeature, check_inside, read_exemplars, to_scene_pixels
from terramask.io.scene import open_scene
from terramask.models.base import Backend
from terramask.models.concept.base import ConceptBackend, ConceptQuery, check_phrase
from terramask.models.concept.similar import (
    DEFAULT_MAX_POINTS,
    DEFAULT_SIMILARITY,
    Prototypes,
    SimilarFinder,
    build_prototypes,
    check_backend,
)
from terramask.pipelines.find.exemplars import SceneBoxes, exemplar_images
from terramask.pipelines.find.segmenter import FindSegmenter
from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig
from terramask.pipelines.scene.run import SceneRun, check_scene, run_scene


def read_scene_exemplars(path: str | os.PathLike, exemplars: str | os.PathLike,
                         config: SceneRunConfig | None = None) -> list[ExemplarFeature]:
    """The exemplars of the file ``exemplars`` in the CRS of the scene at ``path``, each
    checked to lie in the scene (so a caller can fail before loading a model)."""
    config = config or SceneRunConfig()
    with open_scene(path, bands=config.bands) as scene:
        features = read_exemplars(exemplars, scene.crs)
        transform = scene.transform if scene.crs is not None else None
        for feature in features:
            check_inside(to_scene_pixels(feature, transform), scene.width, scene.height, scene.path)
    return features


def scene_prototypes(path: str | os.PathLike, backend: Backend, exemplars: str | os.PathLike | Sequence[ExemplarFeature],
                     config: SceneRunConfig | None = None) -> Prototypes:
    """Prototypes of the exemplars (a file, or features in the scene CRS) of the scene at
    ``path``, each read in its tile of ``config``'s plan with the scene-wide stretch."""
    config = config or SceneRunConfig()
    with open_scene(path, bands=config.bands) as scene:
        features = (read_exemplars(exemplars, scene.crs) if isinstance(exemplars, (str, os.PathLike))
                    else list(exemplars))
        tiles = plan_tiles(scene.path, scene.width, scene.height, config.tile_size, config.overlap)
        images = exemplar_images(scene, tiles, features)
    return build_prototypes(backend, images)


def find_scene(path: str | os.PathLike, out_dir: str | os.PathLike, *,
               exemplars: str | os.PathLike | Sequence[ExemplarFeature] | None = None,
               backend: Backend | None = None, phrases: Sequence[str] = (), concept: ConceptBackend | None = None,
               similarity: float = DEFAULT_SIMILARITY, max_points: int = DEFAULT_MAX_POINTS, nms_thresh: float = 0.7,
               config: SceneRunConfig | None = None, engine: EngineConfig | None = None) -> SceneRun:
    """Find every instance over the scene at ``path`` and write the outputs into ``out_dir``.

    Exemplar route: ``exemplars`` (a GeoJSON/GeoPackage path, see
    :mod:`terramask.io.exemplars`, or its features) with ``backend`` (a loaded SAM-family
    backend), ``similarity`` (cosine a cell and a mask must reach), ``max_points`` (prompts
    per tile). Phrase route: ``phrases`` with ``concept`` (a loaded concept backend).
    Both ``phrases`` and ``exemplars``: :func:`find_text_and_exemplars` (``backend``
    optional: the detector route's own SAM-family model is used).
    ``nms_thresh``: box IoU of duplicates within one class and tile. ``config``/``engine``:
    as :func:`~terramask.pipelines.scene.run.run_scene` (local engine: the models are loaded).
    """
    config = config or SceneRunConfig()
    phrases = tuple(check_phrase(p) for p in phrases)
    if not phrases and exemplars is None:
        raise InputError("nothing to find: give a phrase (--text) or an exemplar file (--exemplars)")
    check_scene(path, config)
    if phrases:
        if concept is None:
            raise InputError("phrases need a concept backend (a detector + SAM or SAM 3) to find them")
        if exemplars is not None:
            return find_text_and_exemplars(path, out_dir, phrases, concept, exemplars, backend=backend,
                                           similarity=similarity, max_points=max_points, nms_thresh=nms_thresh,
                                           config=config, engine=engine)
        query = ConceptQuery(phrases=phrases)
        classes = tuple(dict.fromkeys(query.class_of(p) for p in phrases))
        segmenter = FindSegmenter(concept, query, classes, nms_thresh, route="text")
        return run_scene(path, out_dir, segmenter, config, engine)
    if backend is None:
        raise InputError("exemplars need a loaded SAM-family backend to compare objects with")
    check_backend(backend)
    protos = scene_prototypes(path, backend, exemplars, config)  # type: ignore[arg-type]  # not None: checked above
    finder = SimilarFinder(backend, protos, similarity=similarity, max_points=max_points, nms_thresh=nms_thresh)
    segmenter = FindSegmenter(finder, None, protos.names, nms_thresh)
    return run_scene(path, out_dir, segmenter, config, engine)


def classed_exemplars(features: Sequence[ExemplarFeature], phrases: Sequence[str]) -> list[ExemplarFeature]:
    """``features`` with the one phrase as the class of those given none (``"object"``):
    with a single phrase, exemplars are examples (or counter-examples) of it."""
    if len(phrases) != 1:
        return list(features)
    return [replace(f, cls=phrases[0]) if f.cls == DEFAULT_CLASS else f for f in features]


def find_text_and_exemplars(path: str | os.PathLike, out_dir: str | os.PathLike, phrases: Sequence[str],
                            concept: ConceptBackend, exemplars: str | os.PathLike | Sequence[ExemplarFeature], *,
                            backend: Backend | None = None, similarity: float = DEFAULT_SIMILARITY,
                            max_points: int = DEFAULT_MAX_POINTS, nms_thresh: float = 0.7,
                            config: SceneRunConfig | None = None, engine: EngineConfig | None = None) -> SceneRun:
    """Phrases and exemplars in one run (module docstring). ``concept``: SAM 3 (it reads
    the boxes) or detector + SAM (its SAM-family backend, or ``backend``, runs
    find-similar on the exemplars). The class table lists the phrases' classes, then the
    exemplars' other classes."""
    config = config or SceneRunConfig()
    phrases = tuple(check_phrase(p) for p in phrases)
    query = ConceptQuery(phrases=phrases)
    with open_scene(path, bands=config.bands) as scene:
        features = (read_exemplars(exemplars, scene.crs) if isinstance(exemplars, (str, os.PathLike))
                    else list(exemplars))
        features = classed_exemplars(features, phrases)
        phrase_classes = tuple(dict.fromkeys(query.class_of(p) for p in phrases))
        if getattr(concept, "takes_exemplar_boxes", False):
            boxes = SceneBoxes.from_features(scene, features)
            _check_examples(features, phrase_classes)
            extra = tuple(c for c, lab in zip(boxes.classes, boxes.labels.tolist(), strict=True)
                          if lab == 1 and c not in phrase_classes)
            classes = tuple(dict.fromkeys(phrase_classes + extra))
            segmenter = FindSegmenter(concept, query, classes, nms_thresh, route="text+exemplars", boxes=boxes)
            return run_scene(path, out_dir, segmenter, config, engine)
    sam = backend if backend is not None else getattr(concept, "backend", None)
    if sam is None:
        raise InputError(f"{getattr(concept, 'name', 'this text model')} reads no example boxes and has no SAM-family "
                         "model to find objects like the exemplars; give one (--model)")
    check_backend(sam)
    from terramask.models.concept.combined import TextAndSimilar

    protos = scene_prototypes(path, sam, features, config)
    finder = SimilarFinder(sam, protos, similarity=similarity, max_points=max_points, nms_thresh=nms_thresh)
    classes = tuple(dict.fromkeys(phrase_classes + protos.names))
    segmenter = FindSegmenter(TextAndSimilar(concept, finder), query, classes, nms_thresh, route="text+similar")
    return run_scene(path, out_dir, segmenter, config, engine)


def _check_examples(features: Sequence[ExemplarFeature], phrase_classes: Sequence[str]) -> None:
    """Every exemplar class that no phrase names needs an example (label 1) somewhere."""
    for cls in dict.fromkeys(f.cls for f in features if f.cls not in phrase_classes and f.cls != DEFAULT_CLASS):
        if not any(f.label == 1 for f in features if f.cls == cls):
            raise InputError(f"exemplars of class {cls!r} are only counter-examples and no --text names it; "
                             "give an example (label 1) or the class as a phrase")
