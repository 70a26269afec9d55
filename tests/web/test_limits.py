"""Limits of the web app and a small hostile battery (issue 16).

In-process (TestClient, tiny SAM): body size -> 413, prompt counts -> 422 with a
sentence, the hostile inputs (malformed JSON, wrong types, NaN/inf, huge numbers, empty
lists, unknown fields) -> 4xx with one line, never 500; the model worker's budget and
cancellation. Against ``terramask serve`` in a subprocess on 127.0.0.1 (slow): a 50 MB
body refused in under a second with flat memory, 100,000 points refused while a
concurrent click is answered, SIGTERM stops a busy server in under 5 s, memory back near
idle after a large request. Every request loop is bounded in count and time.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from served import Served, rss_bytes

from terramask.web.limits import (
    MAX_BODY_BYTES,
    MAX_BOXES,
    MAX_POINTS,
    ModelWorker,
    RequestCancelled,
    RequestTimeout,
)

INSIDE = {"x": 140, "y": 100, "label": 1}  # on the bright rectangle of the blob scene


def _one_line_4xx(response, status: int | None = None) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    detail = body["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


# -- body size -----------------------------------------------------------------------------
def test_body_over_the_limit_is_413_by_its_content_length(client):
    response = client.post("/predict", content=b"x" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"})
    detail = _one_line_4xx(response, 413)
    assert f"{MAX_BODY_BYTES:,} bytes" in detail


def test_chunked_body_over_the_limit_is_413_as_it_arrives(client):
    sent = []

    def chunks():
        for _ in range(40):  # 40 x 256 kB = 10 MB, more than twice the limit
            sent.append(1)
            yield b" " * (256 * 1024)

    response = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert "larger than the limit" in response.json()["detail"]


def test_body_limit_is_configurable(web_env, tiny_backend):
    from terramask.web.app import create_app

    app = create_app(web_env["scene"], tiny_backend, max_body_bytes=1000)
    try:
        with TestClient(app) as small:
            many = {"points": [INSIDE] * 40}  # about 1.3 kB
            assert small.post("/predict", json=many).status_code == 413
            assert small.post("/predict", json={"points": [INSIDE]}).status_code == 200
    finally:
        app.state.terramask.close()


# -- prompt counts -------------------------------------------------------------------------
def test_too_many_points_or_boxes_is_422_with_a_sentence(client):
    detail = _one_line_4xx(client.post("/predict", json={"points": [INSIDE] * (MAX_POINTS + 1)}), 422)
    assert f"points: at most {MAX_POINTS:,} per request, got {MAX_POINTS + 1:,}" in detail
    boxes = [[100, 70, 180, 130]] * (MAX_BOXES + 1)
    detail = _one_line_4xx(client.post("/predict", json={"boxes": boxes}), 422)
    assert f"boxes: at most {MAX_BOXES} per request" in detail


def test_the_most_points_allowed_are_answered(client):
    rng = np.random.default_rng(0)
    points = [{"x": float(x), "y": float(y), "label": 1} for x, y in rng.uniform([100, 70], [180, 130], (MAX_POINTS, 2))]
    response = client.post("/predict", json={"points": points, "include": []})
    assert response.status_code == 200, response.text
    assert len(response.json()["prompts"]["points"]) == MAX_POINTS


# -- export names --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x\n", "x\r\n", "\nx", "x/y", "..", "a..b", ".hidden", "", "x" * 81, "x\x00"])
def test_export_names_must_match_in_full(client, first, web_env, name):
    body = {"session_id": first["session_id"], "prediction_id": first["prediction_id"], "name": name}
    before = set((web_env["root"] / "exports").glob("*"))
    detail = _one_line_4xx(client.post("/export", json=body), 422)
    assert "plain folder name" in detail
    assert set((web_env["root"] / "exports").glob("*")) == before, "nothing written"


# -- hostile battery -----------------------------------------------------------------------
_HOSTILE_PREDICT = [
    (b"{", "malformed JSON"),
    (b'{"points": [{"x": 1, "y": 2}', "truncated JSON"),
    (b"[]", "a list, not an object"),
    (b'"points"', "a string"),
    (b"null", "null"),
    (b'{"points": "140,100"}', "points as a string"),
    (b'{"points": [[140, 100]]}', "a point as a list"),
    (b'{"points": [{"x": "a", "y": 100}]}', "x as text"),
    (b'{"points": [{"x": true, "y": 100}]}', "x as a bool"),
    (b'{"points": [{"x": NaN, "y": 100}]}', "NaN"),
    (b'{"points": [{"x": Infinity, "y": 100}]}', "Infinity"),
    (b'{"points": [{"x": -Infinity, "y": 100}]}', "-Infinity"),
    (b'{"points": [{"x": 1e308, "y": 1e308}]}', "huge numbers"),
    (b'{"points": [{"x": 1e400, "y": 100}]}', "overflowing number"),
    (b'{"points": [{"x": 140, "y": 100}], "frame": "lonlat"}', "pixels read as lon/lat"),
    (b'{"points": [{"x": 1e300, "y": 1e300}], "frame": "lonlat"}', "huge lon/lat"),
    (b'{"points": [{"x": 140, "y": 100}], "frame": "EPSG:3857"}', "pixels read as web mercator"),
    (b'{"boxes": [[0, 0, 1e308, Infinity]]}', "infinite box"),
    (b'{"boxes": [[1e308, 1e308, 1e308, 1e308]]}', "huge box"),
    (b'{"boxes": [[100, 70, 180]]}', "short box"),
    (b'{"boxes": [[]]}', "empty box"),
    (b'{"boxes": "all"}', "boxes as text"),
    (b'{"points": [], "boxes": []}', "empty lists"),
    (b"{}", "nothing"),
    (b'{"points": [{"x": 140, "y": 100}], "evil": 1}', "unknown field"),
    (b'{"points": [{"x": 140, "y": 100, "z": 3}]}', "unknown point field"),
    (b'{"points": [{"x": 140, "y": 100, "label": 99999999999999999999999}]}', "huge label"),
    (b'{"points": [{"x": 140, "y": 100}], "refine_from": "last", "refine_candidate": 1e30}', "huge candidate"),
    (b'{"points": [{"x": 140, "y": 100}], "refine_from": "last", "session_id": "nobody"}', "unknown session"),
    (b'{"points": [{"x": 140, "y": 100}], "multimask": "maybe"}', "multimask as text"),
    (b'{"points": [{"x": 140, "y": 100}], "include": ["everything"]}', "unknown include"),
    (b'{"points": [{"x": 140, "y": 100}], "frame": "EPSG:"}', "incomplete EPSG code"),
    (b'{"points": [{"x": 140, "y": 100}], "frame": "+proj=ob_tran +o_proj=moll"}', "odd PROJ string"),
    (b'{"points": [{"x": 140, "y": 100}], "frame": "IAU_2015:49900"}', "a Mars CRS"),
    ('{"points": [{"x": 140, "y": 100}], "frame": "\u00e9\u00e9\u00e9"}'.encode(), "non-ASCII frame"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"points": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "deep nesting"),
]


@pytest.mark.parametrize("body, case", _HOSTILE_PREDICT, ids=[c for _, c in _HOSTILE_PREDICT])
def test_hostile_predict_bodies_are_4xx_with_one_line(client, body, case):
    _one_line_4xx(client.post("/predict", content=body, headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize(
    "payload",
    [
        {"candidate": -1}, {"candidate": 1e30}, {"candidate": 10**30}, {"candidate": "first"},
        {"prediction_id": "\n"}, {"session_id": "x\n"}, {"session_id": ""}, {"name": ["a"]}, {"name": 5},
        {"overwrite": "yes"}, {"unknown": True},
    ],
)
def test_hostile_export_bodies_are_4xx_with_one_line(client, first, payload):
    body = {"session_id": first["session_id"], "prediction_id": first["prediction_id"], **payload}
    _one_line_4xx(client.post("/export", json=body))


@pytest.mark.parametrize(
    "path",
    [
        "/scene/window.png?col_off=-1&row_off=0&width=10&height=10",
        "/scene/window.png?col_off=0&row_off=0&width=0&height=10",
        f"/scene/window.png?col_off={10**30}&row_off=0&width=10&height=10",
        "/scene/window.png?col_off=1e5&row_off=0&width=10&height=10",
        "/scene/window.png?col_off=100000&row_off=0&width=10&height=10",
        "/scene/window.png?col_off=0&row_off=0&width=100000&height=100000",
        "/scene/image.png?max_size=NaN",
        f"/scene/image.png?max_size={10**30}",
        "/prediction.geojson?session_id=a%0A&prediction_id=last",
        "/prediction.geojson?session_id=nobody&prediction_id=last",
        "/prediction.geojson?session_id=nobody&candidate=-1",
        "/prediction.geojson?session_id=nobody&frame=map%0A",
        "/static/..%2f..%2fapp.py",
    ],
)
def test_hostile_queries_are_4xx_with_one_line(client, path):
    _one_line_4xx(client.get(path))


# -- the model worker: budget, queue, cancellation ------------------------------------------
def _run(worker: ModelWorker, fn, disconnected=None, budget=None):
    import asyncio

    async def never() -> bool:
        return False

    return asyncio.run(worker.run(fn, "job", disconnected or never, budget))


def test_a_job_over_budget_is_503_and_stops_at_its_next_checkpoint():
    worker = ModelWorker(budget=0.3)
    steps = []

    def slow(check):
        for i in range(50):
            check()
            steps.append(i)
            time.sleep(0.05)

    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="0.3 s budget"):
        _run(worker, slow)
    assert time.monotonic() - started < 1.0
    time.sleep(0.2)
    assert 3 <= len(steps) < 15, "the job stopped at a checkpoint soon after the budget"
    assert not worker.busy and worker.lock.acquire(timeout=0.5)
    worker.lock.release()
    assert worker.stop()


def test_a_job_whose_budget_passed_in_the_queue_never_runs():
    worker = ModelWorker(budget=5.0)
    ran = []
    release = threading.Event()
    blocker = worker.submit(lambda check: release.wait(5), "blocker")
    queued = worker.submit(lambda check: ran.append(1), "queued", budget=0.1)
    time.sleep(0.3)
    release.set()
    assert blocker.future.result(2) is True
    with pytest.raises(RequestTimeout):
        queued.future.result(2)
    assert ran == []
    assert worker.stop()


def test_a_disconnected_client_cancels_its_job():
    worker = ModelWorker(budget=30.0)
    steps = []
    calls = []

    async def gone_after_a_moment() -> bool:
        calls.append(1)
        return len(calls) > 3

    def slow(check):
        for i in range(200):
            check()
            steps.append(i)
            time.sleep(0.02)

    started = time.monotonic()
    with pytest.raises(RequestCancelled, match="disconnected"):
        _run(worker, slow, gone_after_a_moment)
    assert time.monotonic() - started < 2.0
    time.sleep(0.2)
    assert len(steps) < 100 and not worker.busy
    assert worker.stop()


def test_slow_encoder_over_budget_is_503_and_the_next_click_reuses_its_embedding(web_env, tiny_backend):
    """An encoder run longer than the budget cannot be interrupted, but the request is
    answered at the budget, and the embedding it computed serves the next click."""
    from terramask.web.app import create_app

    class SlowEncoder:
        name = tiny_backend.name
        encoded = 0

        def set_image(self, image):
            time.sleep(1.0)
            self.encoded += 1
            return tiny_backend.set_image(image)

        def predict(self, embedding, prompts, multimask=True):
            return tiny_backend.predict(embedding, prompts, multimask=multimask)

    backend = SlowEncoder()
    app = create_app(web_env["scene"], backend, request_budget=0.4)
    worker = app.state.terramask.worker
    try:
        with TestClient(app) as slow:
            started = time.monotonic()
            response = slow.post("/predict", json={"points": [INSIDE]})
            assert response.status_code == 503 and "0.4 s budget" in response.json()["detail"]
            assert time.monotonic() - started < 0.9
            deadline = time.monotonic() + 60
            while worker.busy and time.monotonic() < deadline:
                time.sleep(0.1)  # the encoder finishes and caches the window's embedding
            worker.budget = 60.0
            assert slow.post("/predict", json={"points": [INSIDE]}).status_code == 200
            assert backend.encoded == 1
    finally:
        app.state.terramask.close()


# -- a real server in a subprocess -----------------------------------------------------------
@pytest.fixture(scope="module")
def served(web_env, tiny_sam_checkpoint):
    with Served(web_env["scene"], tiny_sam_checkpoint, web_env["root"] / "served-exports") as server:
        yield server


def _post_raw(port: int, path: str, headers: dict, body: bytes, timeout: float = 10.0) -> tuple[int, float]:
    """Send a request over a raw socket, stop sending as soon as the server answers;
    returns (status, seconds until the status line arrived)."""
    started = time.monotonic()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    pending = memoryview(head.encode() + b"\r\n" + body)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setblocking(False)
        while b"\r\n" not in answer and time.monotonic() - started < timeout:
            readable, writable, _ = select.select([sock], [sock] if len(pending) else [], [], 0.5)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    pending = pending[sock.send(pending[: 256 * 1024]):]
                except (BrokenPipeError, ConnectionResetError):
                    pending = pending[:0]
    assert answer, "no answer from the server"
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


@pytest.mark.slow
def test_served_50_mb_body_is_413_in_under_a_second_with_flat_memory(served):
    size = 50 * 1024 * 1024
    before = rss_bytes(served.pid)
    status, seconds = _post_raw(served.port, "/predict", {"Content-Type": "application/json",
                                                         "Content-Length": str(size)}, b" " * size)
    assert status == 413 and seconds < 1.0
    chunk = f"{1024 * 1024:x}\r\n".encode() + b" " * (1024 * 1024) + b"\r\n"
    status, seconds = _post_raw(served.port, "/predict", {"Content-Type": "application/json",
                                                         "Transfer-Encoding": "chunked"}, chunk * 50 + b"0\r\n\r\n")
    assert status == 413 and seconds < 1.0
    assert rss_bytes(served.pid) - before < 20 * 1024 * 1024
    assert httpx.get(served.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.slow
def test_served_100000_points_are_refused_while_a_concurrent_click_is_answered(served):
    huge = json.dumps({"points": [INSIDE] * 100_000})
    results = {}

    def post_huge():
        results["huge"] = httpx.post(served.url + "/predict", content=huge,
                                     headers={"Content-Type": "application/json"}, timeout=30)

    thread = threading.Thread(target=post_huge)
    thread.start()
    started = time.monotonic()
    click = httpx.post(served.url + "/predict", json={"points": [INSIDE]}, timeout=30)
    click_seconds = time.monotonic() - started
    thread.join(30)
    assert click.status_code == 200 and click_seconds < 10
    assert click.json()["candidates"]
    assert results["huge"].status_code == 422
    assert "at most 1,000 per request, got 100,000" in results["huge"].json()["detail"]


@pytest.mark.slow
def test_served_memory_returns_near_idle_after_large_requests(served):
    """Large requests (1,000 points, 10 boxes, a body near the limit) leave the server
    near its idle memory: what stays is the allocator's high-water mark and the bounded
    prediction history, and it does not grow from one round to the next."""
    rng = np.random.default_rng(1)
    xy = rng.uniform([100, 70], [180, 130], (MAX_POINTS, 2))
    large = {"points": [{"x": float(x), "y": float(y), "label": 1} for x, y in xy]}
    near_limit = {"points": [INSIDE], "frame": "x" * (MAX_BODY_BYTES - 1000)}  # parsed, then refused
    for _ in range(2):  # warm up: embedding, first responses
        assert httpx.post(served.url + "/predict", json={"points": [INSIDE]}, timeout=60).status_code == 200
    idle = rss_bytes(served.pid)
    after = []
    for _ in range(3):
        assert httpx.post(served.url + "/predict", json=large, timeout=120).status_code == 200
        assert httpx.post(served.url + "/predict", json={"boxes": [[100, 70, 180, 130]] * 10},
                          timeout=120).status_code == 200
        assert httpx.post(served.url + "/predict", json=near_limit, timeout=60).status_code == 422
        after.append(rss_bytes(served.pid))
    mb = [f"{v / 2**20:.0f}" for v in [idle, *after]]
    assert after[-1] - idle < 192 * 2**20, f"idle and after each round (MB): {mb}"
    assert after[-1] - after[0] < 64 * 2**20, f"idle and after each round (MB): {mb}"


@pytest.mark.slow
def test_sigterm_stops_a_busy_server_in_under_5_seconds(web_env, tiny_sam_checkpoint):
    with Served(web_env["scene"], tiny_sam_checkpoint, web_env["root"] / "busy-exports", encoder_delay=60) as server:
        answers = []

        def click():
            try:
                answers.append(httpx.post(server.url + "/predict", json={"points": [INSIDE]}, timeout=30).status_code)
            except httpx.TransportError as exc:
                answers.append(type(exc).__name__)

        threads = [threading.Thread(target=click) for _ in range(3)]  # one encodes, two wait for the model
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        assert server.proc.poll() is None and answers == [], "the server is busy"
        seconds = server.terminate()
        for thread in threads:
            thread.join(10)
        assert seconds < 5.0, f"SIGTERM took {seconds:.1f} s; {server.stderr()}"
        assert "Traceback" not in server.stderr()


# -- CRS failures ----------------------------------------------------------------------------
def test_prompts_in_a_mars_crs_are_422_naming_both_crs(client):
    response = client.post("/predict", json={"points": [{"x": 10, "y": 5}], "frame": "IAU_2015:49900"})
    detail = _one_line_4xx(response, 422)
    assert "Mars (2015)" in detail and "EPSG:32633" in detail
