"""`terramask embed` fills the persistent embedding cache that later runs share, and
`export_onnx_command` (terramask models export-onnx) writes a loadable ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.scenes import blob_scene, write_geotiff

pytestmark = pytest.mark.slow  # each test encodes several tiles with a (tiny) SAM


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth", arch="tiny")


@pytest.fixture()
def scene_tif(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", blob_scene(rows=300, cols=420), nodata=0)


def test_embed_then_predict_reuses_the_cached_embedding(run_cli, tiny_ckpt, scene_tif):
    code, out, err = run_cli("embed", scene_tif, "--checkpoint", tiny_ckpt, "--tile-size", 256, "--overlap", 32, "--quiet")
    assert code == 0, err
    # the whole scene (what predict encodes) + a 2x2 tile grid (what auto encodes)
    assert "5 window(s)" in out and "5 encoded" in out and "0 already cached" in out
    code, out, err = run_cli("embed", scene_tif, "--checkpoint", tiny_ckpt, "--tile-size", 256, "--overlap", 32, "--quiet")
    assert code == 0 and "0 encoded" in out and "5 already cached" in out

    # another process-level user of the cache (the predict pipeline) finds the scene's embedding
    from terramask.io.scene import open_scene
    from terramask.models.resolve import load_backend
    from terramask.pipelines.prompted.predict import ScenePrompter

    with open_scene(scene_tif) as sc:
        prompter = ScenePrompter(sc, load_backend(checkpoint=tiny_ckpt, cache=True))
        from terramask.core.prompts import Prompts

        prompter.predict(Prompts(points=[[140.0, 100.0]], labels=[1]))
        session = prompter.session(sc.window)
    assert session.embedding.extras["cache"] == "hit" and session.embedding.extras["encoder_seconds"] == 0.0


def test_embed_skips_nodata_tiles_and_refuses_weight_free_models(run_cli, tiny_ckpt, tmp_path):
    px = blob_scene(rows=200, cols=600)
    px[:, :, 300:] = 0  # right half nodata
    tif = write_geotiff(tmp_path / "half.tif", px, nodata=0)
    code, out, err = run_cli("embed", tif, "--checkpoint", tiny_ckpt, "--tile-size", 200, "--overlap", 0, "--quiet")
    assert code == 0, err
    assert "4 window(s)" in out and "3 encoded" in out and " 1 empty (nodata)" in out  # tile x 400-600
    code, out, err = run_cli("embed", tif, "--model", "classic")
    assert code == 2 and "no image encoder" in err


def test_embed_with_the_onnx_runtime(run_cli, tiny_ckpt, scene_tif):
    code, out, err = run_cli("embed", scene_tif, "--checkpoint", tiny_ckpt, "--runtime", "onnx", "--tile-size", 512, "--quiet")
    assert code == 0, err
    assert "1 window(s)" in out and "1 encoded" in out


def test_export_onnx_command(tiny_ckpt, tmp_path):
    from click.testing import CliRunner

    from terramask.cli.models_onnx import export_onnx_command
    from terramask.models.onnx.backend import OnnxSamBackend

    out_dir = tmp_path / "export"
    result = CliRunner().invoke(export_onnx_command, [str(tiny_ckpt), "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert "exported sam:tiny_sam" in result.output and "encoder.onnx" in result.output
    backend = OnnxSamBackend(out_dir, threads=1)
    emb = backend.set_image(np.zeros((40, 60, 3), np.uint8))
    assert emb.features.shape == (1, 256, 64, 64)
    again = CliRunner().invoke(export_onnx_command, [str(tiny_ckpt), "--out", str(out_dir)])
    assert again.exit_code != 0 and "already holds" in str(again.exception)
