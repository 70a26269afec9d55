"""A reload does not lose a segment-everything job (issue 10), in a real browser
(Playwright + Debian's chromium): a tab that reloads while its job runs gets the
progress bar and the cancel button back (and cancel works); once the job is done, a
reload brings its candidate list back, accepted ones left out; another tab of the same
browser sees none of it (its own session).

The app runs in this process (uvicorn on 127.0.0.1) with the classic engine behind a
gate: each automatic generation waits until the test lets it through, so the job is
still running when the page reloads.
"""

from __future__ import annotations

import threading

import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import serve_in_thread

from helpers.scenes import write_geotiff
from helpers.squares_scene import squares_scene

pytestmark = pytest.mark.slow
WAIT_MS = 60_000


class Gated:
    """The classic backend whose ``generate`` waits for ``gate`` (one release per call)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.gate = threading.Semaphore(0)

    def set_image(self, image):
        return self.inner.set_image(image)

    def predict(self, embedding, prompts, multimask=True):
        return self.inner.predict(embedding, prompts, multimask=multimask)

    def generate(self, image, **kwargs):
        assert self.gate.acquire(timeout=120), "the test never opened the gate"
        return self.inner.generate(image, **kwargs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(url, gated backend)``: the squares scene served by uvicorn."""
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    root = tmp_path_factory.mktemp("reload")
    scene = write_geotiff(root / "squares.tif", squares_scene())
    gated = Gated(load_backend("classic"))
    app = create_app(scene, gated, out_dir=root / "out")
    with serve_in_thread(app) as url:
        yield url, gated
        for _ in range(8):
            gated.gate.release()  # a job the test left waiting ends
    app.state.terramask.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _ready(page) -> None:
    page.wait_for_function("document.getElementById('busy').hidden && "
                           "!document.getElementById('scene-name').textContent.startsWith('loading')")
    page.wait_for_selector("#classes li")


def _open(context, url):
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    _ready(page)
    return page


def _reload(page) -> None:
    with page.expect_response("**/everything?session_id=*") as asked:
        page.reload()
    assert asked.value.status == 200
    _ready(page)


def _running(page) -> bool:
    return page.evaluate("() => !document.getElementById('ev-progress').hidden && "
                         "!document.getElementById('ev-cancel').disabled")


def _shown(page) -> list[dict]:
    return page.evaluate("() => window.TerramaskEverything.shown()")


def test_a_reload_gets_the_running_job_and_its_candidates_back_and_another_tab_does_not(served, browser):
    url, gated = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = _open(context, url)
    session = page.evaluate("() => window.sessionStorage.getItem('terramask-session')")

    # a running job survives the reload: progress bar and cancel come back, and cancel works
    with page.expect_response("**/everything") as started:
        page.click("#ev-window")
    first = started.value.json()
    assert first["state"] == "running" and first["session_id"] == session
    page.wait_for_function("() => !document.getElementById('ev-cancel').disabled")
    _reload(page)
    page.wait_for_function("() => !document.getElementById('ev-cancel').disabled")
    assert _running(page) and page.locator("#ev-window").is_disabled(), "a second job cannot start meanwhile"
    assert "still running" in page.locator("#status").inner_text()
    with page.expect_response(f"**/everything/{first['job_id']}/cancel"):
        page.click("#ev-cancel")
    gated.gate.release()
    page.wait_for_function("() => document.getElementById('status').textContent.includes('cancelled')")
    assert not _running(page)

    # the next job: another tab of this browser never sees it
    with page.expect_response("**/everything") as started:
        page.click("#ev-window")
    second = started.value.json()
    _reload(page)
    page.wait_for_function("() => !document.getElementById('ev-cancel').disabled")
    other = _open(context, url)
    other.wait_for_timeout(500)  # its own look-up has answered (nothing) by then
    assert not _running(other) and other.locator("#ev-progress").is_hidden() and not _shown(other)
    assert other.evaluate("() => window.sessionStorage.getItem('terramask-session')") != session

    # done: the candidates; after a reload the list comes back, accepted ones left out
    gated.gate.release()
    page.wait_for_function("() => window.TerramaskEverything.shown().length > 0")
    before = [c["id"] for c in _shown(page)]
    page.locator("#ev-list li").first.locator("button", has_text="✓").click()
    page.wait_for_function("() => document.querySelectorAll('#objects li.choice').length === 1")
    _reload(page)
    page.wait_for_function("() => window.TerramaskEverything.shown().length > 0")
    assert [c["id"] for c in _shown(page)] == before[1:], "the open candidates, the accepted one left out"
    assert page.locator("#ev-list li").count() == min(len(before) - 1, 100)
    assert not _running(page) and page.locator("#ev-window").is_enabled()
    assert page.evaluate("() => document.getElementById('ev-progress').value") == 1.0, "the bar shows it done"
    other.reload()
    _ready(other)
    other.wait_for_timeout(500)
    assert not _shown(other) and other.locator("#ev-progress").is_hidden(), second["job_id"]
    context.close()
