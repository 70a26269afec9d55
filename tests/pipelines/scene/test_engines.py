"""Execution engines: the in-process default, and Ray with two local workers giving the
same objects as the local engine, each worker building its model once."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

import helpers.blobs
from helpers.blobs import BlobSegmenter
from terramask.core.errors import InputError, MissingDependencyError
from terramask.pipelines.scene import engines
from terramask.pipelines.scene.engines import RayEngine, make_engine


@dataclass(frozen=True)
class Square:
    """A worker factory recording each build (one file line per build, per process)."""

    log_dir: str

    def __call__(self):
        with open(Path(self.log_dir) / f"{os.getpid()}.log", "a") as fh:
            fh.write("built\n")
        return lambda x: (x, x * x, os.getpid())


def builds(log_dir: Path) -> dict[str, int]:
    return {p.stem: len(p.read_text().splitlines()) for p in log_dir.glob("*.log")}


def test_local_engine_builds_once_and_keeps_order(tmp_path):
    with make_engine("local") as eng:
        out = list(eng.map(Square(str(tmp_path)), range(5)))
    assert [o[:2] for o in out] == [(i, i * i) for i in range(5)]
    assert builds(tmp_path) == {str(os.getpid()): 1}


def test_make_engine_errors():
    with pytest.raises(InputError, match="unknown engine"):
        make_engine("dask")
    with pytest.raises(InputError, match="--address"):
        make_engine("local", address="auto")
    with pytest.raises(InputError, match="workers"):
        RayEngine(workers=0)


def test_cuda_models_reserve_a_gpu_per_ray_worker():
    assert make_engine("ray", device="cuda").gpus_per_worker == 1
    assert make_engine("ray", device="cuda:1", gpus_per_worker=0.5).gpus_per_worker == 0.5
    assert make_engine("ray").gpus_per_worker == 0


def test_missing_ray_names_the_install_command(monkeypatch):
    def fail(module, extra, package=None):
        raise MissingDependencyError(f"{module} is required: pip install 'terramask[{extra}]'")

    monkeypatch.setattr(engines, "require", fail)
    with pytest.raises(MissingDependencyError, match=r"terramask\[ray\]"):
        list(RayEngine(workers=1).map(Square("."), [1]))


# -- Ray ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    # Test code is not installed on the workers: ship it by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(helpers.blobs)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def gpkg(path):
    meta, _, geoms, cols = pyogrio.raw.read(path)
    return list(meta["fields"]), [np.asarray(c).tolist() for c in cols], [bytes(g) for g in geoms]


@pytest.mark.slow
def test_ray_engine(local_ray, rs_data, tmp_path):
    from terramask.pipelines.batch.run import run_batch
    from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig
    from terramask.pipelines.scene.run import run_scene
    from terramask.pipelines.scene.segmenters import AutoSegmenter

    # map: two workers, each built once; ordered and unordered
    logs = tmp_path / "logs"
    logs.mkdir()
    eng = RayEngine(workers=2)
    out = list(eng.map(Square(str(logs)), range(8)))
    assert [o[:2] for o in out] == [(i, i * i) for i in range(8)]
    unordered = list(eng.map(Square(str(logs)), range(8), ordered=False))
    assert sorted(o[:2] for o in unordered) == [(i, i * i) for i in range(8)]
    assert all(n == 1 for n in builds(logs).values()) and len(builds(logs)) <= 4  # 2 actors per map call
    eng.close()
    assert local_ray.is_initialized(), "an engine must not shut down a Ray it did not start"

    # tiles of one scene, with the real (weight-free) classic model loaded in each worker
    scene = rs_data / "spacenet_atlanta_buildings" / "full" / "sample_geotiff.tif"
    config = SceneRunConfig(tile_size=512, overlap=96, progress=False)
    local = run_scene(scene, tmp_path / "local", AutoSegmenter("classic"), config)
    remote = run_scene(scene, tmp_path / "ray", AutoSegmenter("classic"), config, EngineConfig("ray", workers=2))
    engine = dict(remote.summary["engine"])
    assert 0 < engine.pop("startup_s") < remote.summary["timings_s"]["tiles"]  # actors and models ready first
    assert engine == {"name": "ray", "address": None, "workers": 2, "ray_options": {}, "processes_used": 2}
    assert local.summary["engine"]["startup_s"] == 0
    assert remote.objects == local.objects > 10
    with rasterio.open(local.paths["labels.tif"]) as a, rasterio.open(remote.paths["labels.tif"]) as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert gpkg(local.paths["objects.gpkg"]) == gpkg(remote.paths["objects.gpkg"])
    assert local.paths["masks.json"].read_bytes() == remote.paths["masks.json"].read_bytes()

    # files of a batch
    from helpers.blobs import blob_scene, disc, rect
    from helpers.scenes import write_geotiff

    folder = tmp_path / "scenes"
    folder.mkdir()
    shape = (160, 200)
    for i in range(4):
        write_geotiff(folder / f"s{i}.tif", blob_scene(shape, [rect(shape, 10 + 9 * i, 20, 80, 60), disc(shape, 150, 110, 20)], seed=i))
    bconfig = SceneRunConfig(tile_size=128, overlap=32, progress=False)
    b_local = run_batch([folder], tmp_path / "b_local", BlobSegmenter(), bconfig)
    b_ray = run_batch([folder], tmp_path / "b_ray", BlobSegmenter(), bconfig, EngineConfig("ray", workers=2))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in b_local.rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in b_ray.rows] == strip
    for r in b_local.rows:
        with rasterio.open(tmp_path / "b_local" / r["name"] / "labels.tif") as a, \
                rasterio.open(tmp_path / "b_ray" / r["name"] / "labels.tif") as b:
            assert np.array_equal(a.read(1), b.read(1))
