"""The persistent embedding cache: hits skip the encoder, keys separate what must differ,
bad entries are recomputed, size cap evicts least recently used entries."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.prompts import Prompts
from terramask.models import embedding_keys as ek
from terramask.models.base import Embedding, PointBatchDecoder
from terramask.models.embedding_cache import CachedBackend, EmbeddingCache


class CountingBackend:
    """A deterministic fake encoder whose features mix torch tensors and numpy arrays."""

    def __init__(self, name="fake", checkpoint=None, weights_id=None):
        self.name = name
        self.checkpoint = checkpoint
        if weights_id is not None:
            self.weights_id = weights_id
        self.calls = 0
        self.device = "cpu"

    def set_image(self, image):
        rgb = image.to_rgb8() if isinstance(image, GeoImage) else image
        self.calls += 1
        f = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] / 7.0
        features = {
            "image_embed": f,
            "high_res": [f[:, :1].to(torch.bfloat16), f[:, 1:2].half()],
            "stats": np.array([rgb.mean(), rgb.std()], dtype=np.float64),
            "orig": (rgb.shape[0], rgb.shape[1]),
            "note": None,
        }
        return Embedding(self.name, features, rgb.shape[:2], rgb.shape[:2], extras={"scale": 0.5})

    def predict(self, embedding, prompts, multimask=True):
        return ("predicted", embedding.key)


def _img(seed=0, shape=(16, 20)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _assert_same_features(a, b):
    assert set(a) == set(b)
    assert torch.equal(a["image_embed"], b["image_embed"]) and b["image_embed"].dtype == torch.float32
    assert b["high_res"][0].dtype == torch.bfloat16 and b["high_res"][1].dtype == torch.float16
    assert torch.equal(a["high_res"][0], b["high_res"][0]) and torch.equal(a["high_res"][1], b["high_res"][1])
    assert isinstance(b["high_res"], list)
    np.testing.assert_array_equal(a["stats"], b["stats"])
    assert b["stats"].dtype == np.float64
    assert b["orig"] == a["orig"] and isinstance(b["orig"], tuple)
    assert b["note"] is None


@pytest.fixture
def cache(tmp_path):
    return EmbeddingCache(tmp_path / "emb", cap_bytes=50 * 2**20)


def test_second_set_image_is_a_hit_with_identical_features(cache):
    backend = CountingBackend(weights_id="w1")
    cb = CachedBackend(backend, cache)
    first = cb.set_image(_img())
    second = cb.set_image(_img())
    assert backend.calls == 1
    assert first.extras["cache"] == "miss" and first.extras["encoder_seconds"] > 0
    assert second.extras["cache"] == "hit" and second.extras["encoder_seconds"] == 0.0
    assert second.key == first.key and second.extras["scale"] == 0.5
    assert second.image_size == (16, 20) and second.input_size == (16, 20)
    _assert_same_features(first.features, second.features)
    # other calls go to the wrapped backend
    assert cb.predict(second, Prompts()) == ("predicted", first.key)


def test_cache_survives_a_new_cache_object_and_geoimage_input(cache, tmp_path):
    rgb = _img(3)
    CachedBackend(CountingBackend(weights_id="w1"), cache).set_image(rgb)
    backend = CountingBackend(weights_id="w1")
    again = CachedBackend(backend, EmbeddingCache(tmp_path / "emb", cap_bytes=50 * 2**20))
    emb = again.set_image(GeoImage.from_rgb8(rgb))
    assert backend.calls == 0 and emb.extras["cache"] == "hit"


def test_default_directory_follows_terramask_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "tc"))
    c = EmbeddingCache()
    assert c.directory == tmp_path / "tc" / "embeddings"
    CachedBackend(CountingBackend(weights_id="w"), c).set_image(_img())
    assert len(list((tmp_path / "tc" / "embeddings").glob("*.emb"))) == 1


@pytest.mark.parametrize(
    "change",
    ["pixels", "shape", "model", "weights"],
)
def test_keys_differ_for_image_model_and_weights(cache, change):
    base = CountingBackend(weights_id="w1")
    CachedBackend(base, cache).set_image(_img())
    img = _img()
    name, wid = "fake", "w1"
    if change == "pixels":
        img[0, 0, 0] ^= 1  # e.g. another stretch or band choice changes the bytes
    elif change == "shape":
        img = img.reshape(20, 16, 3)
    elif change == "model":
        name = "other"
    else:
        wid = "w2"
    b = CountingBackend(name=name, weights_id=wid)
    emb = CachedBackend(b, cache).set_image(img)
    assert b.calls == 1 and emb.extras["cache"] == "miss"


def _only_entry(cache):
    files = list(cache.directory.glob("*.emb"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "garbage", "empty"])
def test_corrupt_entries_are_recomputed_not_used(cache, damage):
    cb = CachedBackend(CountingBackend(weights_id="w1"), cache)
    good = cb.set_image(_img())
    path = _only_entry(cache)
    data = bytearray(path.read_bytes())
    if damage == "flip_payload":
        data[-5] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "garbage":
        data = bytearray(b"not an embedding at all" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    again = cb.set_image(_img())
    assert again.extras["cache"] == "miss" and cb.backend.calls == 2
    assert cache.stats.rejected == 1
    _assert_same_features(good.features, again.features)
    # the bad file was replaced by a good one
    third = cb.set_image(_img())
    assert third.extras["cache"] == "hit" and cb.backend.calls == 2


def test_entry_under_another_key_is_stale_and_rejected(cache):
    cb = CachedBackend(CountingBackend(weights_id="w1"), cache)
    cb.set_image(_img(1))
    src = _only_entry(cache)
    key2 = cb.key_for(_img(2))
    os.replace(src, cache.path_for(key2))
    emb = cb.set_image(_img(2))
    assert emb.extras["cache"] == "miss" and cache.stats.rejected == 1
    np.testing.assert_allclose(emb.features["stats"][0], _img(2).mean())


def test_lru_eviction_keeps_recently_used_entries(tmp_path):
    probe = EmbeddingCache(tmp_path / "probe", cap_bytes=2**30)
    CachedBackend(CountingBackend(weights_id="w"), probe).set_image(_img(0))
    entry_size = probe.size_bytes()
    cache = EmbeddingCache(tmp_path / "emb", cap_bytes=int(2.5 * entry_size))
    backend = CountingBackend(weights_id="w")
    cb = CachedBackend(backend, cache)
    cb.set_image(_img(0))
    cb.set_image(_img(1))
    # make the clock visible even on coarse-mtime filesystems
    p0, p1 = cache.path_for(cb.key_for(_img(0))), cache.path_for(cb.key_for(_img(1)))
    os.utime(p0, (time.time() - 100, time.time() - 100))
    os.utime(p1, (time.time() - 50, time.time() - 50))
    assert cb.set_image(_img(0)).extras["cache"] == "hit"  # 0 is now the most recent
    cb.set_image(_img(2))  # over the cap: the least recently used (1) goes
    assert p0.exists() and not p1.exists()
    assert cache.size_bytes() <= cache.cap_bytes and cache.stats.evicted == 1
    assert cb.set_image(_img(1)).extras["cache"] == "miss"


def test_zero_cap_disables_and_oversized_entries_are_skipped(tmp_path):
    off = EmbeddingCache(tmp_path / "off", cap_bytes=0)
    b = CountingBackend(weights_id="w")
    cb = CachedBackend(b, off)
    cb.set_image(_img())
    assert cb.set_image(_img()).extras["cache"] == "miss" and b.calls == 2
    assert not (tmp_path / "off").exists()
    tiny = EmbeddingCache(tmp_path / "tiny", cap_bytes=100)
    assert tiny.put("k", CountingBackend().set_image(_img())) is None
    assert tiny.entries() == []


def test_cap_from_env(monkeypatch):
    monkeypatch.setenv("TERRAMASK_EMBEDDING_CACHE_MB", "1.5")
    assert ek.cap_bytes_from_env() == int(1.5 * 2**20)
    monkeypatch.delenv("TERRAMASK_EMBEDDING_CACHE_MB")
    assert ek.cap_bytes_from_env() == ek.DEFAULT_CAP_MB * 2**20
    monkeypatch.setenv("TERRAMASK_EMBEDDING_CACHE_MB", "lots")
    with pytest.raises(InputError, match="TERRAMASK_EMBEDDING_CACHE_MB"):
        ek.cap_bytes_from_env()


def test_writes_leave_no_temporary_files(cache):
    cb = CachedBackend(CountingBackend(weights_id="w"), cache)
    for i in range(3):
        cb.set_image(_img(i))
    assert sorted(p.suffix for p in cache.directory.iterdir()) == [".emb"] * 3


def test_weights_id_hashes_checkpoint_once_and_again_when_it_changes(tmp_path, monkeypatch):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights-v1" * 1000)
    calls = []
    real = ek._file_sha256
    monkeypatch.setattr(ek, "_file_sha256", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(ek, "_WEIGHTS_MEMO", {})
    import hashlib

    first = ek.weights_id(ckpt)
    assert first == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert ek.weights_id(ckpt) == first and len(calls) == 1
    # a new process (empty in-memory memo) reuses the on-disk memo
    monkeypatch.setattr(ek, "_WEIGHTS_MEMO", {})
    assert ek.weights_id(ckpt) == first and len(calls) == 1
    # new contents -> new id
    ckpt.write_bytes(b"weights-v2" * 1001)
    assert ek.weights_id(ckpt) != first and len(calls) == 2


def test_backend_checkpoint_path_identifies_weights(cache, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    CachedBackend(CountingBackend(checkpoint=a), cache).set_image(_img())
    hit = CountingBackend(checkpoint=a)
    assert CachedBackend(hit, cache).set_image(_img()).extras["cache"] == "hit"
    other = CountingBackend(checkpoint=b)
    assert CachedBackend(other, cache).set_image(_img()).extras["cache"] == "miss"
    with pytest.raises(ModelError, match="cannot key"):
        CachedBackend(CountingBackend(), cache).set_image(_img())


def test_wrapper_exposes_optional_capabilities_of_the_wrapped_backend(cache):
    class Decoder(CountingBackend):
        mask_threshold = 0.0

        def decode_points(self, embedding, coords, labels):
            return "decoded"

        def upscale_logits(self, embedding, low_res, window=None):
            return "up"

    assert isinstance(CachedBackend(Decoder(weights_id="w"), cache), PointBatchDecoder)
    assert not isinstance(CachedBackend(CountingBackend(weights_id="w"), cache), PointBatchDecoder)


def test_georeference_comes_from_the_image_not_the_cache(cache):
    from affine import Affine

    rgb = _img(4)
    a = GeoImage(np.moveaxis(rgb, 2, 0), transform=Affine(1, 0, 10, 0, -1, 20), crs="EPSG:32633")
    b = GeoImage(np.moveaxis(rgb, 2, 0), transform=Affine(2, 0, 99, 0, -2, 50), crs="EPSG:4326")
    cb = CachedBackend(CountingBackend(weights_id="w"), cache)
    first = cb.set_image(a)
    assert first.extras["transform"] == a.transform and first.extras["crs"] == "EPSG:32633"
    second = cb.set_image(b)  # same pixels elsewhere: a hit, with b's georeference
    assert second.extras["cache"] == "hit"
    assert isinstance(second.extras["transform"], Affine) and second.extras["transform"] == b.transform
    assert second.extras["crs"] == "EPSG:4326"
    plain = cb.set_image(rgb)
    assert "transform" not in plain.extras and "crs" not in plain.extras


def test_sam_backend_decodes_identically_from_a_cached_embedding(sam_backend, sam_test_image, tmp_path):
    cb = CachedBackend(sam_backend, EmbeddingCache(tmp_path / "emb", cap_bytes=2**30))
    fresh, hit = cb.set_image(sam_test_image), cb.set_image(sam_test_image)
    assert (fresh.extras["cache"], hit.extras["cache"]) == ("miss", "hit")
    p = Prompts(points=[[210.0, 150.0], [60.0, 40.0]], labels=[1, 0])
    a, b = cb.predict(fresh, p), cb.predict(hit, p)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a["low_res_logits"], b["low_res_logits"])


def test_entry_format_aligns_arrays_and_rejects_another_version():
    import json

    from terramask.models import embedding_format as ef

    emb = CountingBackend().set_image(_img())
    data = b"".join(bytes(p) for p in ef.encode_entry("k1", emb))
    buf = ef.aligned_buffer(len(data))
    buf[:] = np.frombuffer(data, dtype=np.uint8)
    back = ef.decode_entry(buf, "k1")
    _assert_same_features(emb.features, back.features)
    hlen = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16 : 16 + hlen])
    assert (16 + hlen) % ef.ALIGN == 0 and all(a["offset"] % ef.ALIGN == 0 for a in header["arrays"])
    older = data.replace(b'"format":1', b'"format":0', 1)
    buf[:] = np.frombuffer(older, dtype=np.uint8)
    with pytest.raises(ValueError, match="format 0"):
        ef.decode_entry(buf, "k1")
