"""The band choice the scene picker turns into a view URL segment (static/scenes.js, run
in node): 1 or 3 band numbers within the scene's band count, else nothing is opened."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from terramask.web.app import STATIC_DIR

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the page's scripts "
                                                                    "are tested in node")


def _segment(text: str, count: int):
    script = (f"const s = require({json.dumps(str(STATIC_DIR / 'scenes.js'))});\n"
              f"process.stdout.write(JSON.stringify(s.bandsSegment({json.dumps(text)}, {count})));")
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("text, count, segment", [
    ("4,3,2", 8, "4-3-2"),
    (" 4, 3 ,2 ", 8, "4-3-2"),
    ("1", 1, "1"),
    ("5", 4, None),
    ("4,3", 8, None),
    ("0,1,2", 8, None),
    ("1.5,2,3", 8, None),
    ("a,b,c", 8, None),
    ("", 8, None),
])
def test_bands_become_a_url_segment(text, count, segment):
    assert _segment(text, count) == segment
