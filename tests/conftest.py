"""Fixtures shared by the whole suite. Package-specific fixtures live in the
conftest.py of each tests/<package>/ folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real labelled data described in ../shared/data/rs/README.md (a sibling of the checkout).
RS_DATA = Path(os.environ.get("TERRAMASK_RS_DATA", REPO.parent / "shared" / "data" / "rs"))


@pytest.fixture(scope="session")
def rs_data() -> Path:
    """Root of the shared real remote-sensing data; tests needing it skip when absent."""
    if not RS_DATA.is_dir():
        pytest.skip(f"shared data not found at {RS_DATA}")
    return RS_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own model/embedding cache, so no test sees a user's cache."""
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("TERRAMASK_MODEL", raising=False)


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory) -> Path:
    """A random-weight SAM checkpoint in the official architecture (tiny image encoder)."""
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth", arch="tiny", seed=0)
