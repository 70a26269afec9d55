"""summary.json says where a scene run's time went: read, encode, decode, post-processing,
parts, merge, write and quicklook, from the timings the segmenter's result carries."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest

from helpers.blobs import BlobSegmenter, blob_scene, disc, rect
from helpers.scenes import write_geotiff
from terramask.pipelines.amg.generator import AmgResult
from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.run import run_scene
from terramask.pipelines.scene.tiled import STAGES, segment_stages

SHAPE = (300, 400)


@dataclass(frozen=True)
class TimedBlobs:
    """Blob masks whose result reports encoder/post-processing time, like ``AmgResult``."""

    encoder_s: float = 0.02
    post_s: float = 0.01

    def __call__(self):
        blobs = BlobSegmenter()()

        def segment(image):
            time.sleep(self.encoder_s + self.post_s)
            result = AmgResult.from_maskset(blobs(image))
            result.timings = {"encoder": self.encoder_s, "postprocess": self.post_s}
            return result

        return segment


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    objects = [disc(SHAPE, 80, 80, 30), rect(SHAPE, 200, 100, 330, 220)]
    return write_geotiff(tmp_path_factory.mktemp("s") / "s.tif", blob_scene(SHAPE, objects))


def test_summary_has_every_stage(scene, tmp_path):
    config = SceneRunConfig(tile_size=256, overlap=64, progress=False)
    run = run_scene(scene, tmp_path, TimedBlobs(), config)
    timings = json.loads((tmp_path / "summary.json").read_text())["timings_s"]
    assert set(STAGES) | {"merge", "write", "quicklook", "tiles", "segment", "total"} <= set(timings)
    segmented = run.tiles - run.skipped
    assert segmented == 4
    assert timings["encode"] == pytest.approx(0.02 * segmented, abs=1e-3)
    assert timings["postprocess"] == pytest.approx(0.01 * segmented, abs=1e-3)
    assert all(timings[k] >= 0 for k in timings)
    worker = sum(timings[k] for k in STAGES)
    assert worker == pytest.approx(timings["segment"], rel=0.02, abs=0.01)
    assert timings["tiles"] + timings["quicklook"] <= timings["total"] + 1e-3


def test_segment_stages_without_timings_count_everything_as_decode():
    assert segment_stages(np.zeros(3), 1.5) == {"encode": 0.0, "decode": 1.5, "postprocess": 0.0}

    class R:
        timings = {"encoder": 1.0, "postprocess": 0.25}
    assert segment_stages(R(), 2.0) == {"encode": 1.0, "decode": 0.75, "postprocess": 0.25}
