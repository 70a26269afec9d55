"""Two scenes with the same file stem in different folders keep their own segment-everything
work folder and object layer (issue 10 leftover: the work folder was named by the stem)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from helpers.scenes import blob_scene, write_geotiff


def test_same_stem_scenes_do_not_share_work_or_layer_folders(tmp_path, tiny_backend):
    from terramask.web.server import create_server

    for folder, seed in (("a", 0), ("b", 3)):
        (tmp_path / folder).mkdir()
        write_geotiff(tmp_path / folder / "x.tif", blob_scene(seed=seed), nodata=0)
    out = tmp_path / "out"
    app = create_server([tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"], tiny_backend, out_dir=out)
    with TestClient(app) as client:
        ids = [s["id"] for s in client.get("/scenes").json()["scenes"]]
        assert ids == ["x", "x-2"]
        for scene_id in ids:
            assert client.get(f"/scenes/{scene_id}/default/default/scene").status_code == 200
        states = [view.state.terramask for view in app.state.views._apps.values()]
    work = sorted(state.everything.work_dir for state in states)
    layers = sorted(state.layer.folder for state in states)
    assert work == [out / "work" / "x", out / "work" / "x-2"]
    assert layers == [out / "layers" / "x", out / "layers" / "x-2"]
