"""The model registry: official SAM entries, name lookup and its errors."""

from __future__ import annotations

import dataclasses
import re

import pytest

from terramask.core.errors import UnknownModelError
from terramask.models.registry import FAMILIES, REGISTRY, get_spec, list_specs, spec_for_filename

OFFICIAL = {
    # name: (arch, file, sha256 prefix, size)
    "sam-vit-b": ("vit_b", "sam_vit_b_01ec64.pth", "ec2df627", 375_042_383),
    "sam-vit-l": ("vit_l", "sam_vit_l_0b3195.pth", "3adcc431", 1_249_524_607),
    "sam-vit-h": ("vit_h", "sam_vit_h_4b8939.pth", "a7bf3b02", 2_564_550_879),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_sam_entries_point_at_the_official_files(name):
    arch, filename, sha_prefix, size = OFFICIAL[name]
    spec = get_spec(name)
    assert spec.family == "sam"
    assert spec.arch == arch
    assert spec.url == f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"
    assert spec.filename == filename
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert spec.sha256.startswith(sha_prefix)
    assert spec.size_bytes == size
    assert spec.licence == "Apache-2.0"
    assert spec.needs_weights


def test_param_counts_match_the_official_architectures():
    import torch
    from segment_anything import sam_model_registry

    for name in OFFICIAL:
        spec = get_spec(name)
        with torch.device("meta"):  # no memory, no weights: only the shapes
            model = sam_model_registry[spec.arch]()
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert spec.params_millions == pytest.approx(count, abs=0.05)


def test_classic_is_weight_free():
    spec = get_spec("classic")
    assert spec.family == "classic"
    assert not spec.needs_weights
    assert spec.url is None and spec.sha256 is None and spec.size_bytes is None


def test_every_entry_is_complete_and_in_a_known_family():
    names = [spec.name for spec in list_specs()]
    assert names == list(REGISTRY)
    assert len(set(names)) == len(names)
    for spec in list_specs():
        assert spec.family in FAMILIES
        assert spec.when_to_use and spec.licence
        if spec.needs_weights:
            assert spec.url and spec.url.endswith(spec.filename)
            assert spec.size_bytes and spec.size_bytes > 0
    assert [s.name for s in list_specs("sam")] == ["sam-vit-b", "sam-vit-l", "sam-vit-h"]


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("sam-vit-b").url = "http://elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize("spelling", ["SAM-VIT-B", "sam_vit_b", "  sam-vit-b "])
def test_names_are_case_and_separator_insensitive(spelling):
    assert get_spec(spelling).name == "sam-vit-b"


def test_unknown_name_lists_known_names_and_suggests_the_closest():
    with pytest.raises(UnknownModelError) as info:
        get_spec("sam-vit-bb")
    message = str(info.value)
    assert "'sam-vit-bb'" in message
    assert "Did you mean 'sam-vit-b'?" in message
    for name in REGISTRY:
        assert name in message
    assert "\n" not in message
    assert isinstance(info.value, LookupError)


def test_unknown_name_without_a_close_match_has_no_suggestion():
    with pytest.raises(UnknownModelError) as info:
        get_spec("resnet")
    assert "Did you mean" not in str(info.value)


def test_spec_for_filename():
    assert spec_for_filename("sam_vit_l_0b3195.pth") is get_spec("sam-vit-l")
    assert spec_for_filename("my_finetuned.pth") is None

