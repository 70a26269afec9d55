"""The OpenAPI schema documents what the routes answer: every error status a route
returns is listed for it, with the one error body the app sends ({detail, type})."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def schema(client):
    return client.get("/openapi.json").json()


def test_every_documented_error_uses_the_error_body(schema):
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (path, method, code)
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"detail", "type"}
    assert "HTTPValidationError" not in schema["components"]["schemas"], "422 bodies are ErrorBody, not FastAPI's list"


@pytest.mark.parametrize("method, path, kwargs, template", [
    ("get", "/scene/image.png", {"params": {"max_size": 1}}, "/scene/image.png"),
    ("get", "/scene/window.png", {"params": {"col_off": 0, "row_off": 0, "width": 5000, "height": 5}},
     "/scene/window.png"),
    ("post", "/predict", {"json": {"points": [{"x": 3000, "y": 1}]}}, "/predict"),
    ("post", "/predict", {"json": {"points": [{"x": 1, "y": 1}], "frame": "EPSG:999999"}}, "/predict"),
    ("post", "/predict", {"json": {"points": [{"x": 50, "y": 50}], "session_id": "a", "refine_from": "b"}},
     "/predict"),
    ("post", "/predict", {"content": b"x" * (5 * 1024 * 1024), "headers": {"Content-Type": "application/json"}},
     "/predict"),
    ("get", "/prediction.geojson", {"params": {"session_id": "nobody"}}, "/prediction.geojson"),
    ("post", "/export", {"json": {"session_id": "nobody"}}, "/export"),
    ("post", "/objects", {"json": {"session_id": "nobody"}}, "/objects"),
    ("patch", "/objects/99", {"json": {"class_id": 1, "version": 0}}, "/objects/{object_id}"),
    ("delete", "/objects/99", {"params": {"version": "x"}}, "/objects/{object_id}"),
    ("post", "/classes", {"json": {"name": "", "color": "#000000"}}, "/classes"),
])
def test_errors_the_routes_return_are_documented(client, schema, method, path, kwargs, template):
    response = client.request(method.upper(), path, **kwargs)
    assert response.status_code >= 400
    assert set(response.json()) == {"detail", "type"}
    assert str(response.status_code) in schema["paths"][template][method]["responses"], response.text
