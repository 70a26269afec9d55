"""Click-to-drawn latency of the browser app, in a real browser (issue 10).

Starts ``terramask serve`` on a scene, opens it in Debian's chromium through Playwright,
makes one warm-up click (the embedding), then ``--clicks`` clicks at seeded random
positions, each a new object ("Refine" unticked). For each click it records, in the page,
the time from the mouse press to the ``terramask:drawn`` event (every candidate mask on
screen), and from the response the backend's own decoder time. Prints the medians and
their ratio (the issue's goal: click-to-drawn <= 1.5x the decoder).

``--screenshots DIR`` also saves the main states of the page (a click with its candidates,
accepted objects in two classes) as PNGs, for the README.

    .venv/bin/python benchmarks/web_clicks.py --model classic --clicks 50
    .venv/bin/python benchmarks/web_clicks.py --checkpoint tiny_sam.pth --clicks 50
    .venv/bin/python benchmarks/web_clicks.py --model classic --clicks 5 --screenshots docs/img
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SCENE = "/work/shared/data/rs/spacenet_atlanta_buildings/full/sample_geotiff.tif"
#: Scene pixels of a few buildings of the SpaceNet Atlanta scene, for the screenshots.
BUILDINGS = ((248, 168), (538, 269), (440, 67))

INSTRUMENT = """() => {
  window.__times = []; window.__t0 = null;
  document.getElementById('canvas').addEventListener('mousedown', () => { window.__t0 = performance.now(); }, true);
  window.addEventListener('terramask:drawn', () => {
    if (window.__t0 !== null) { window.__times.push(performance.now() - window.__t0); window.__t0 = null; }
  });
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(scene: str, model: list[str], out: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from terramask.cli.main import main; sys.exit(main(sys.argv[1:]))",
           "serve", scene, "--port", str(port), "--out", str(out), *model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start")


def _screen(page, info: dict, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of scene pixel (x, y) in the fitted view (app.js fitView)."""
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"] / info["width"], box["height"] / info["height"]) * 0.96
    tx = (box["width"] - info["width"] * scale) / 2
    ty = (box["height"] - info["height"] * scale) / 2
    return box["x"] + tx + x * scale, box["y"] + ty + y * scale


def _click_and_wait(page, info: dict, x: float, y: float, count: int) -> None:
    page.mouse.click(*_screen(page, info, x, y))
    page.wait_for_function(f"() => window.__times.length >= {count}", timeout=120_000)


def screenshots(page, info: dict, folder: Path) -> None:
    """The page's main states, for the README."""
    folder.mkdir(parents=True, exist_ok=True)
    page.fill("#class-name", "building")
    page.click("#add-class")
    page.wait_for_selector("#classes li.chosen:has-text('building')")
    x, y = BUILDINGS[0]
    _click_and_wait(page, info, x, y, 1)
    page.screenshot(path=str(folder / "web-click.jpg"), type="jpeg", quality=80)
    page.keyboard.press("Enter")
    page.wait_for_selector("#objects li.choice")
    for k, (x, y) in enumerate(BUILDINGS[1:], start=2):
        _click_and_wait(page, info, x, y, k)
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#objects li.choice >> nth={k - 1}")
    page.locator("#objects li.choice").first.click()
    page.screenshot(path=str(folder / "web-objects.jpg"), type="jpeg", quality=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=SCENE)
    ap.add_argument("--model", help="model name (e.g. classic, sam-vit-b)")
    ap.add_argument("--checkpoint", help="checkpoint file instead of a model name")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--screenshots", type=Path, help="save the main states of the page here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium binary: apt-get install -y chromium")
    model = ["--model", args.model] if args.model else ["--checkpoint", args.checkpoint] if args.checkpoint else []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _serve(args.scene, model, Path(tmp) / "out")
        try:
            info = httpx.get(url + "/scene").json()
            decoder: list[float] = []
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("response", lambda r: decoder.append(r.json()["timings"]["decoder_s"])
                        if r.url.endswith("/predict") and r.status == 200 else None)
                page.goto(url)
                page.wait_for_function("document.getElementById('busy').hidden", timeout=120_000)
                page.wait_for_selector("#classes li")
                page.evaluate(INSTRUMENT)
                if args.screenshots:
                    screenshots(page, info, args.screenshots)
                    page.keyboard.press("Escape")
                page.uncheck("#use-prior")
                page.evaluate("() => { window.__times = []; }")
                _click_and_wait(page, info, info["width"] / 2, info["height"] / 2, 1)  # warm-up: the embedding
                import numpy as np

                rng = np.random.default_rng(args.seed)
                page.evaluate("() => { window.__times = []; }")
                decoder.clear()
                for k in range(args.clicks):
                    x, y = rng.uniform(0.05, 0.95, 2) * [info["width"], info["height"]]
                    _click_and_wait(page, info, float(x), float(y), k + 1)
                times = [t / 1000 for t in page.evaluate("() => window.__times")]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "scene": f"{Path(args.scene).name} ({info['width']}x{info['height']})", "model": info["model"],
        "clicks": len(times), "median_click_to_drawn_s": statistics.median(times),
        "median_decoder_s": statistics.median(decoder), "ratio": statistics.median(times) / statistics.median(decoder),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
