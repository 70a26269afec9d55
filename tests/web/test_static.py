"""The single-page UI: served, offline (only local assets), calling only real routes."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from terramask.web.app import STATIC_DIR


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append(value)
            if name == "id":
                self.ids.add(value)


def _page(client) -> _Refs:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    parser = _Refs()
    parser.feed(response.text)
    return parser


def test_page_references_only_local_assets_that_are_served(client):
    refs = _page(client).refs
    assert "static/app.js" in refs and "static/app.css" in refs
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert not re.match(r"^([a-z]+:)?//", ref, re.I), f"external reference {ref}"
        response = client.get("/" + ref.lstrip("/"))
        assert response.status_code == 200, ref


def test_assets_load_nothing_from_the_network():
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} references a URL"
        assert "@import" not in text and "import(" not in text, f"{path.name} imports a module"


def _scripts() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(STATIC_DIR.glob("*.js")))


def test_every_element_the_script_uses_exists(client):
    ids = _page(client).ids
    script = _scripts()
    used = set(re.findall(r'\$\("([\w-]+)"\)', script)) | set(re.findall(r'getElementById\("([\w-]+)"\)', script))
    assert used and used <= ids, f"missing elements: {sorted(used - ids)}"


def test_the_script_calls_only_routes_of_the_app(app, web_env, tiny_backend, tmp_path):
    script = _scripts()
    calls = (set(re.findall(r'(?:api|change)\("([\w/.-]+)"', script)) | set(re.findall(r'"([a-z][\w/.-]*)\?', script))
             | set(re.findall(r'<a [^>]*href="([a-z][\w/.-]*)"', (STATIC_DIR / "index.html").read_text(encoding="utf-8"))))
    calls = {re.sub(r"/$", "/{object_id}", call) for call in calls}
    assert {"scene", "predict", "export", "scene/image.png", "scene/window.png", "prediction.geojson", "objects",
            "objects/undo", "objects/redo", "classes", "objects/{object_id}", "objects.gpkg", "objects.geojson",
            "labels.tif", "objects.fgb", "session", "scenes"} <= calls
    from terramask.web.server import create_server

    server = create_server([web_env["scene"]], tiny_backend, out_dir=tmp_path / "out", models=[])
    server.state.views.close()
    # the scene view's routes, and the multi-scene server's own ("scenes")
    routes = {getattr(route, "path", "") for route in [*app.routes, *server.routes]}
    for call in calls:
        assert "/" + call in routes, call


def test_no_cdn_docs_pages(client):
    # FastAPI's Swagger/ReDoc pages pull scripts from a CDN; the app is offline, so they are off
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_is_valid_javascript():
    for path in sorted(STATIC_DIR.glob("*.js")):
        result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_long_status_messages_wrap_inside_the_panel():
    """Bug 5: a long error (a path, a CRS WKT) widened the side panel; the status line
    wraps anywhere and the panel never scrolls sideways."""
    css = (STATIC_DIR / "app.css").read_text(encoding="utf-8")
    status = re.search(r"^\.status \{([^}]*)\}", css, re.M)
    panel = re.search(r"^#panel \{([^}]*)\}", css, re.M)
    assert status and "overflow-wrap: anywhere" in status.group(1)
    assert panel and "overflow-x: hidden" in panel.group(1)


def test_the_page_loads_the_request_builders_before_the_app():
    refs = [r for r in _page_refs_of_index() if r.endswith(".js")]
    assert refs == ["static/requests.js", "static/objects.js", "static/everything_text.js",
                    "static/everything_candidates.js", "static/everything.js", "static/scenes.js",
                    "static/app.js"]


def _page_refs_of_index() -> list[str]:
    parser = _Refs()
    parser.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    return parser.refs
