"""The import contract of DESIGN.md, checked on the source without importing it:
core imports no other layer (and only numpy/affine), io only core, models core (and
io.atomic), eval core, pipelines everything below them but models only through the
protocol, cli/web anything below and nothing imports them. String imports count.

tests/core/test_import_isolation.py and tests/eval/test_layering.py stay: they import
core/eval in a fresh interpreter and catch heavy packages loaded transitively."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers.layers import check_tree

SRC = Path(__file__).resolve().parents[1] / "src"

# Breaches tolerated while their owner fixes them (none today); an entry whose breach is gone
# fails (strict xfail) so the list only shrinks.
# Keyed by file and the unit it reaches, so a renamed module does not hide or revive an entry.
KNOWN_VIOLATIONS: dict[str, str] = {}


def _key(violation) -> str:
    return f"{violation.file} -> {violation.target_unit}"


@pytest.fixture(scope="module")
def found():
    return check_tree(SRC)


def test_source_tree_keeps_the_import_contract(found):
    unexpected = [str(v) for v in found if _key(v) not in KNOWN_VIOLATIONS]
    assert not unexpected, "import contract broken (DESIGN.md, Layers):\n" + "\n".join(unexpected)


@pytest.mark.parametrize("known", sorted(KNOWN_VIOLATIONS))
def test_known_violation_still_present(found, known):
    """Strict: passes while the breach exists; when it is fixed this fails as a reminder
    to remove the entry from KNOWN_VIOLATIONS."""
    assert known in {_key(v) for v in found}, f"fixed: remove {known!r} from KNOWN_VIOLATIONS"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "terramask" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in [p for p in (root / "terramask").rglob("*") if p.is_dir()] + [root / "terramask"]:
        (folder / "__init__.py").touch()
    return root


def test_checker_reports_each_kind_of_breach_in_a_fake_tree(tmp_path):
    src = _write(
        tmp_path / "src",
        {
            "core/bad.py": """
                import torch
                from terramask.io.scene import open_scene
                """,
            "core/good.py": "import json\nimport numpy as np\nfrom affine import Affine\nfrom . import bad\n",
            "io/scene.py": "from terramask.core import good\nimport rasterio\n",
            "io/atomic.py": "import os\n",
            "eval/datasets.py": """
                import importlib

                def read(path):
                    return importlib.import_module("terramask.io.scene").open_scene(path)
                """,
            "eval/lazy_user.py": """
                from terramask.core.lazy import require

                def f():
                    return require("terramask.pipelines.run", "x"), require("torch", "sam")
                """,
            "models/cache.py": "from terramask.io import atomic\nfrom ..io import scene\n",
            "models/resolve.py": "from terramask.models.sam import backend\n",
            "models/registry.py": "from terramask.models.classic import auto\n",
            "models/sam/backend.py": "import torch\nfrom terramask.models import registry\n",
            "models/classic/auto.py": "from terramask.models.sam.backend import x\n",
            "models/onnx/export.py": "from terramask.models.sam import backend\n",
            "pipelines/amg/gen.py": "from terramask.models.base import Backend\nfrom terramask.models.sam import backend\n",
            "pipelines/scene/tiled.py": "from terramask.pipelines.amg import gen\nfrom terramask import __version__\n",
            "pipelines/amg/up.py": "from ..scene import tiled\n",
            "web/app.py": "import fastapi\nfrom terramask.cli import main\n",
            "cli/main.py": """
                import importlib.util

                SUBCOMMANDS = {"serve": ("terramask.cli.serve", "help"), "bad": ("terramask.web.app", "help")}

                def present(name):
                    return importlib.util.find_spec("terramask.pipelines.scene.tiled") is not None
                """,
            "cli/serve.py": "import click\nfrom terramask.web import app\n",
        },
    )
    found = sorted(str(v) for v in check_tree(src))
    assert found == sorted(
        [
            "src/terramask/core/bad.py:2 imports torch (layer core -> layer third-party torch)",
            "src/terramask/core/bad.py:3 imports terramask.io.scene (layer core -> layer io)",
            "src/terramask/eval/datasets.py:5 imports terramask.io.scene (layer eval -> layer io)",
            "src/terramask/eval/lazy_user.py:5 imports terramask.pipelines.run (layer eval -> layer pipelines)",
            "src/terramask/eval/lazy_user.py:5 imports torch (layer eval -> layer third-party torch)",
            "src/terramask/models/cache.py:2 imports terramask.io.scene (layer models -> layer io)",
            "src/terramask/models/registry.py:1 imports terramask.models.classic.auto (layer models -> layer models.classic)",
            "src/terramask/models/classic/auto.py:1 imports terramask.models.sam.backend"
            " (layer models.classic -> layer models.sam)",
            "src/terramask/pipelines/amg/gen.py:2 imports terramask.models.sam.backend (layer pipelines.amg -> layer models.sam)",
            "src/terramask/pipelines/amg/up.py:1 imports terramask.pipelines.scene.tiled"
            " (layer pipelines.amg -> layer pipelines.scene)",
            "src/terramask/web/app.py:2 imports terramask.cli.main (layer web -> layer cli)",
        ]
    )


def test_checker_sees_the_cli_subcommand_table(tmp_path):
    src = _write(tmp_path / "src", {"cli/main.py": 'SUBCOMMANDS = {"x": ("terramask.cli.x", "")}\n', "cli/x.py": "",
                                     "core/errors.py": 'SUBCOMMANDS = {"x": ("terramask.cli.x", "")}\n'})
    assert [str(v) for v in check_tree(src)] == [
        "src/terramask/core/errors.py:1 imports terramask.cli.x (layer core -> layer cli)"
    ]
