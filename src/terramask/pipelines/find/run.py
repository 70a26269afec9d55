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
  in every tile.

Outputs: those of ``auto`` plus ``classes.tif``, the ``class``/``score`` columns and the
class table in ``summary.json`` (see :mod:`terramask.pipelines.scene.run`). Bad input
(an empty or malformed phrase, exemplars outside the scene or on nodata, no example with
label 1, a model without image features) is one :class:`InputError`/:class:`ModelError`
line raised before any tile runs; nothing is written under a final name.
"""

from __future__ import annotations

import os
from typing import Sequence

from terramask.core.errors import InputError
from terramask.core.geometry import plan_tiles
from terramask.io.exemplars import ExemplarFeature, check_inside, read_exemplars, to_scene_pixels
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
from terramask.pipelines.find.exemplars import exemplar_images
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
    ``nms_thresh``: box IoU of duplicates within one class and tile. ``config``/``engine``:
    as :func:`~terramask.pipelines.scene.run.run_scene` (local engine: the models are loaded).
    """
    config = config or SceneRunConfig()
    phrases = tuple(check_phrase(p) for p in phrases)
    if phrases and exemplars is not None:
        raise InputError("give phrases (--text) or exemplars (--exemplars), not both: exemplars feed find-similar, "
                         "phrases the text route")
    if not phrases and exemplars is None:
        raise InputError("nothing to find: give a phrase (--text) or an exemplar file (--exemplars)")
    check_scene(path, config)
    if phrases:
        if concept is None:
            raise InputError("phrases need a concept backend (a detector + SAM or SAM 3) to find them")
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
