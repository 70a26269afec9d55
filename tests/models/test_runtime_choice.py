"""The runtime choice (``--runtime auto``, ``terramask doctor``) with injected timings: the
fastest wins, failures are skipped, the result is cached per machine key and reused, and a
broken cache is measured again. No timing of real runs is asserted here."""

from __future__ import annotations

import json
import logging

import pytest

from terramask.core.errors import ModelError
from terramask.models import runtime_choice as rc
from terramask.models.runtime_choice import ChoiceCache, Measurement, choose_runtime, measure_family


class FakeBackend:
    def __init__(self, runtime: str) -> None:
        self.name = f"fake-{runtime}"
        self.runtime = runtime
        self.images = []

    def set_image(self, image):
        self.images.append(image.shape)

    def predict(self, embedding, prompts, multimask=True):
        raise NotImplementedError


class Loader:
    """``load(runtime)`` for :func:`choose_runtime`, recording what was loaded; a runtime
    in ``broken`` raises like a runtime that cannot compile the model."""

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.loaded: list[str] = []
        self.broken = broken

    def __call__(self, runtime: str) -> FakeBackend:
        self.loaded.append(runtime)
        if runtime in self.broken:
            raise ModelError("OpenVINO cannot compile encoder.onnx: unsupported op\nC++ trace line")
        return FakeBackend(runtime)


def timer_from(seconds: dict[str, float]):
    def timer(backend, tile):
        assert tile.shape == (1024, 1024, 3) and tile.dtype.name == "uint8"
        return seconds[backend.runtime]

    return timer


@pytest.fixture
def cache(tmp_path):
    return ChoiceCache(tmp_path / "runtime-choice.json", key="machine-a")


def test_the_fastest_runtime_wins_and_failures_are_recorded():
    loader = Loader(broken=("openvino",))
    m = measure_family("sam", "sam-vit-b", ("torch", "onnx", "openvino"), loader,
                       timer_from({"torch": 25.3, "onnx": 13.2}))
    assert m.fastest == "onnx" and m.seconds == {"torch": 25.3, "onnx": 13.2}
    assert m.failed == {"openvino": "ModelError: OpenVINO cannot compile encoder.onnx: unsupported op"}
    assert loader.loaded == ["torch", "onnx", "openvino"]
    assert rc.format_seconds(m) == "torch 25.30 s, onnx 13.20 s, openvino failed"
    tie = Measurement("sam", "m", {"openvino": 2.0, "onnx": 2.0, "torch": 3.0})
    assert tie.fastest == "onnx"  # ties go to the earlier candidate


def test_all_runtimes_failing_is_one_line():
    with pytest.raises(ModelError, match=r"no runtime could encode with sam-vit-b \(torch: ModelError: .*; "
                                         r"openvino: ModelError: .*\)") as err:
        measure_family("sam", "sam-vit-b", ("torch", "openvino"), Loader(broken=("torch", "openvino")))
    assert "\n" not in str(err.value)


def test_measured_once_with_a_notice_then_read_from_the_cache(cache, caplog):
    loader = Loader()
    timer = timer_from({"torch": 4.0, "onnx": 4.8, "openvino": 2.9})
    with caplog.at_level(logging.WARNING, logger="terramask.models.runtime_choice"):
        first = choose_runtime("sam2", "sam2.1-hiera-tiny", loader, cache, ("torch", "onnx", "openvino"), timer)
    assert first == "openvino" and loader.loaded == ["torch", "onnx", "openvino"]
    notices = [r.getMessage() for r in caplog.records]
    assert notices[0].startswith("measuring which runtime encodes sam2 models fastest on this machine")
    assert "\n" not in notices[0] and str(cache.path) in notices[0]
    # a second process on the same machine reads the file instead of measuring
    again = Loader()
    other = ChoiceCache(cache.path, key="machine-a")
    assert choose_runtime("sam2", "sam2.1-hiera-tiny", again, other, ("torch", "onnx", "openvino"), timer) == "openvino"
    assert again.loaded == []
    saved = json.loads(cache.path.read_text())
    entry = saved["machines"]["machine-a"]
    assert entry["families"]["sam2"]["fastest"] == "openvino" and entry["families"]["sam2"]["model"] == "sam2.1-hiera-tiny"
    assert entry["machine"]["cores"] >= 1 and "cpu" in entry["machine"]


def test_another_machine_or_family_is_measured_again(cache):
    choose_runtime("sam", "sam-vit-b", Loader(), cache, ("torch", "onnx"), timer_from({"torch": 1.0, "onnx": 2.0}))
    elsewhere, loader = ChoiceCache(cache.path, key="machine-b"), Loader()
    assert choose_runtime("sam", "sam-vit-b", loader, elsewhere, ("torch", "onnx"),
                          timer_from({"torch": 3.0, "onnx": 2.0})) == "onnx"
    assert loader.loaded == ["torch", "onnx"]
    family = Loader()
    choose_runtime("mobilesam", "mobilesam", family, cache, ("torch",), timer_from({"torch": 1.0}))
    assert family.loaded == ["torch"]
    # both machines' and both families' results are kept side by side
    assert set(ChoiceCache(cache.path, key="machine-a").measurements()) == {"sam", "mobilesam"}
    assert ChoiceCache(cache.path, key="machine-a").get("sam").fastest == "torch"
    assert ChoiceCache(cache.path, key="machine-b").get("sam").fastest == "onnx"


def test_a_cached_choice_whose_runtime_is_gone_is_measured_again(cache):
    cache.put(Measurement("sam", "sam-vit-b", {"openvino": 1.0, "torch": 9.0}))
    loader = Loader()
    assert choose_runtime("sam", "sam-vit-b", loader, cache, ("torch", "onnx"),
                          timer_from({"torch": 9.0, "onnx": 5.0})) == "onnx"
    assert loader.loaded == ["torch", "onnx"]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99}),
                                     json.dumps({"format": 1, "machines": {"machine-a": {"families": {"sam": {"x": 1}}}}})])
def test_a_broken_cache_file_is_ignored_and_replaced(cache, content, caplog):
    cache.path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="terramask.models.runtime_choice"):
        assert choose_runtime("sam", "sam-vit-b", Loader(), cache, ("torch", "onnx"),
                              timer_from({"torch": 2.0, "onnx": 1.0})) == "onnx"
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    assert ChoiceCache(cache.path, key="machine-a").get("sam").fastest == "onnx"


def test_time_encode_warms_up_then_times_one_encode():
    backend = FakeBackend("torch")
    seconds = rc.time_encode(backend, rc.fixed_tile())
    assert seconds >= 0.0 and backend.images == [(1024, 1024, 3), (1024, 1024, 3)]
    assert (rc.fixed_tile() == rc.fixed_tile()).all()  # the same tile every time


def test_available_runtimes_follow_the_installed_packages(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "openvino" not in rc.available_runtimes()


# -- load_backend(runtime="auto") ------------------------------------------------------


def test_auto_uses_the_cached_choice_without_measuring(tiny_sam_checkpoint, monkeypatch):
    pytest.importorskip("segment_anything")
    from terramask.models import resolve
    from terramask.models.sam.backend import SamBackend

    ChoiceCache().put(Measurement("sam", "sam-vit-b", {"torch": 1.0, "onnx": 2.0}))
    monkeypatch.setattr(rc, "measure_family", lambda *a, **k: pytest.fail("measured although a choice is cached"))
    assert isinstance(resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="auto"), SamBackend)


def test_auto_is_torch_for_weight_free_models_and_gpus(monkeypatch):
    from terramask.models import resolve
    from terramask.models.registry import get_spec

    monkeypatch.setattr(rc, "measure_family", lambda *a, **k: pytest.fail("nothing to measure"))
    assert type(resolve.load_backend("classic", runtime="auto")).__name__ == "ClassicBackend"
    assert resolve._auto_runtime(get_spec("sam-vit-b"), None, "cuda", False) == "torch"


def test_auto_measures_on_first_use_with_the_model_being_loaded(tiny_sam_checkpoint, monkeypatch):
    """First use: every installed runtime is loaded with this checkpoint and timed (timer
    injected), the winner is loaded and cached."""
    pytest.importorskip("segment_anything")
    from terramask.models import resolve

    seen = []

    def fake_measure(family, model, runtimes, load, timer=None):
        backend = load("torch")
        seen.append((family, model, runtimes, type(backend).__name__))
        return Measurement(family, model, {"torch": 1.0})

    monkeypatch.setattr(rc, "measure_family", fake_measure)
    monkeypatch.setattr(rc, "available_runtimes", lambda: ("torch", "onnx"))
    backend = resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="auto")
    assert seen == [("sam", "sam:tiny_sam", ("torch", "onnx"), "SamBackend")]
    assert type(backend).__name__ == "SamBackend"
    assert ChoiceCache().get("sam").model == "sam:tiny_sam"


def test_auto_without_the_checkpoint_says_where_to_get_it(monkeypatch):
    from terramask.core.errors import WeightsNotFoundError
    from terramask.models import resolve

    monkeypatch.setattr(rc, "measure_family", lambda *a, **k: pytest.fail("measured without weights"))
    with pytest.raises(WeightsNotFoundError, match="terramask models download sam-vit-b"):
        resolve.load_backend("sam-vit-b", runtime="auto")
