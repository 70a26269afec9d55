"""Scene-run settings are checked once, when built, and serialise for summary.json."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from terramask.core.errors import InputError
from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig, default_overlap
from terramask.pipelines.scene.merge import MergeParams


def test_scene_config_normalises_and_serialises():
    config = SceneRunConfig(bands="4, 3,2", tile_size=512.0, overlap=64, min_area="20m2", max_area=500,
                            merge=MergeParams(iou_thresh=0.6), preset="quick")
    assert config.bands == (4, 3, 2) and config.tile_size == 512 and isinstance(config.tile_size, int)
    assert config.min_area.unit == "m2" and config.max_area.unit == "px"
    d = config.to_dict()
    assert d["bands"] == [4, 3, 2] and d["min_area"] == "20m2" and d["max_area"] == "500"
    assert d["merge"]["iou_thresh"] == 0.6 and d["preset"] == "quick"
    assert json.loads(json.dumps(d)) == d
    assert pickle.loads(pickle.dumps(config)) == config
    assert config.with_(tile_size=256).tile_size == 256 and config.tile_size == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tile_size = 5  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, words", [
    ({"tile_size": 32}, "--tile-size 32 is too small"),
    ({"tile_size": 256, "overlap": 256}, "overlap"),
    ({"tile_size": 100.5}, "whole number"),
    ({"bands": "4,3"}, "one band (grey) or three"),
    ({"bands": "a,b,c"}, "1-based band numbers"),
    ({"min_area": "5 acres"}, "--min-area"),
    ({"min_area": "30px", "max_area": "10px"}, "larger than --max-area"),
    ({"output_mode": "binary_mask"}, "--output-mode"),
])
def test_scene_config_rejects_bad_values(kwargs, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        SceneRunConfig(**kwargs)


def test_default_overlap():
    assert default_overlap(1024) == 128 and default_overlap(160) == 40 and default_overlap(64) == 16


def test_engine_config():
    eng = EngineConfig("ray", "auto", 2, {"cpus_per_worker": 2})
    assert eng.options == {"cpus_per_worker": 2}
    assert eng.to_dict() == {"name": "ray", "address": "auto", "workers": 2, "ray_options": {"cpus_per_worker": 2}}
    assert hash(eng) == hash(EngineConfig("ray", "auto", 2, (("cpus_per_worker", 2),)))
    with pytest.raises(InputError, match="unknown engine"):
        EngineConfig("spark")
    with pytest.raises(InputError, match="--address only applies"):
        EngineConfig("local", address="auto")
    with pytest.raises(InputError, match="--workers"):
        EngineConfig("ray", workers=0)
