"""The bodies the page sends for clicks and boxes (static/requests.js, run in node).

Bug 2: with "Refine with the chosen mask" unticked, the page sent the earlier points with
the new click, merging two objects; it must send only the new prompt."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from terramask.web.app import STATIC_DIR

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the page's request "
                                                                    "builders are tested in node")

CURRENT = {"points": [[10, 20], [30, 40]], "labels": [1, 0], "box": [5, 5, 50, 50], "predictionId": "p1",
           "chosen": 2}


def _run(call: str) -> dict:
    script = f"const r = require({json.dumps(str(STATIC_DIR / 'requests.js'))});\n" \
             f"process.stdout.write(JSON.stringify({call}));"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_unticked_refine_sends_only_the_new_point():
    r = _run(f"r.clickRequest({json.dumps(CURRENT)}, 100, 120, 1, false)")
    assert r == {"body": {"points": [{"x": 100, "y": 120, "label": 1}], "boxes": [], "frame": "pixel"},
                 "fallback": None}


def test_ticked_refine_sends_the_new_point_with_the_chosen_prediction_and_a_full_fallback():
    r = _run(f"r.clickRequest({json.dumps(CURRENT)}, 100, 120, 0, true)")
    assert r["body"] == {"points": [{"x": 100, "y": 120, "label": 0}], "frame": "pixel",
                         "refine_from": "p1", "refine_candidate": 2}
    assert r["fallback"]["points"] == [{"x": 10, "y": 20, "label": 1}, {"x": 30, "y": 40, "label": 0},
                                       {"x": 100, "y": 120, "label": 0}]
    assert r["fallback"]["boxes"] == [[5, 5, 50, 50]]


def test_the_first_click_is_a_new_object_either_way():
    for refine in ("true", "false"):
        r = _run(f"r.clickRequest(null, 7, 8, 1, {refine})")
        assert r["body"]["points"] == [{"x": 7, "y": 8, "label": 1}] and "refine_from" not in r["body"]


def test_a_box_keeps_the_points_only_when_refining():
    alone = _run(f"r.boxRequest({json.dumps(CURRENT)}, [1, 2, 3, 4], false)")
    assert alone["body"] == {"points": [], "boxes": [[1, 2, 3, 4]], "frame": "pixel"}
    kept = _run(f"r.boxRequest({json.dumps(CURRENT)}, [1, 2, 3, 4], true)")
    assert [p["x"] for p in kept["body"]["points"]] == [10, 30] and kept["body"]["boxes"] == [[1, 2, 3, 4]]
