"""Click-to-drawn latency of the browser app, in a real browser (issue 10).

Starts ``terramask serve`` on a scene, opens it in Debian's chromium through Playwright,
makes one warm-up click (the embedding), then ``--clicks`` clicks at seeded random
positions, each a new object ("Refine" unticked). For each click it records, in the page,
the time from the mouse press to the ``terramask:drawn`` event (the chosen candidate's
mask on screen), and from the response's ``Server-Timing`` header the backend's own
decoder time (``decode``). Prints the medians and their ratio (the issue's goal:
click-to-drawn <= 1.5x the decoder), and the median of each part of a click
(:data:`PARTS`: page, server laps, transfer, JSON, mask decode and paint, draw) from the
page's ``performance`` marks, the fetch's resource timing and ``Server-Timing``.

``--random vit_b`` / ``--random mobilesam`` serve a random-weight checkpoint of the
official architecture, written once by ``tests/helpers`` into ``--cache``.

``--screenshots DIR`` also saves the main states of the page (a click with its candidates,
accepted objects in two classes) as PNGs, for the README.

    .venv/bin/python benchmarks/web_clicks.py --model classic --clicks 50
    .venv/bin/python benchmarks/web_clicks.py --random vit_b --clicks 50
    .venv/bin/python benchmarks/web_clicks.py --random mobilesam --clicks 50
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
  window.__times = []; window.__parts = []; window.__t0 = null;
  document.getElementById('canvas').addEventListener('mousedown', () => {
    performance.clearMarks(); performance.clearResourceTimings(); window.__t0 = performance.now();
  }, true);
  window.addEventListener('terramask:drawn', () => {
    if (window.__t0 === null) return;
    const t0 = window.__t0, end = performance.now();
    window.__t0 = null;
    window.__times.push(end - t0);
    const mark = (name) => { const m = performance.getEntriesByName('terramask:' + name, 'mark'); return m.length ? m[m.length - 1].startTime : null; };
    const r = performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/predict')).pop();
    const server = {};
    if (r) for (const s of r.serverTiming || []) server[s.name] = s.duration;
    window.__parts.push({ t0: t0, end: end, send: mark('send'), parsed: mark('parsed'), shown: mark('shown'),
      decoded: mark('decoded'), drawn: mark('drawn'), server: server,
      fetch: r ? { start: r.startTime, request: r.requestStart, response: r.responseStart, end: r.responseEnd, bytes: r.encodedBodySize } : null });
  });
}"""

#: The parts of one click, in order: (name, what it measures).
PARTS = (
    ("page_to_fetch", "mouse press -> the page calls fetch (mouse handlers, request body)"),
    ("server", "Server-Timing total: route entry -> JSON body ready (laps below)"),
    ("transfer", "fetch -> response end, minus the server total (HTTP, ASGI, validation, bytes)"),
    ("json_parse", "response end -> JSON parsed in the page"),
    ("show", "candidate list, status and first redraw (synchronous)"),
    ("mask_decode", "-> the chosen candidate's two PNGs decoded (createImageBitmap, off the main thread)"),
    ("draw", "redraw with the mask -> 'terramask:drawn'"),
    ("other", "click to drawn minus the parts above (waits between them)"),
)


def breakdown(p: dict) -> dict[str, float]:
    """Milliseconds of each part of one click (:data:`PARTS`) plus the server's own laps
    (``server_<lap>``), from the page's marks, the fetch's resource timing and its
    ``Server-Timing`` header. Parts whose marks are missing are left out."""
    f, s = p["fetch"], p["server"]
    out: dict[str, float] = {}
    if p["send"] is not None:
        out["page_to_fetch"] = p["send"] - p["t0"]
    if f is not None and "total" in s:
        out["server"] = s["total"]
        out["transfer"] = (f["end"] - f["start"]) - s["total"]
        if p["parsed"] is not None:
            out["json_parse"] = p["parsed"] - f["end"]
    steps = [("show", "parsed", "shown"), ("mask_decode", "shown", "decoded"), ("draw", "decoded", "drawn")]
    for name, a, b in steps:
        if p[a] is not None and p[b] is not None:
            out[name] = p[b] - p[a]
    out["other"] = (p["end"] - p["t0"]) - sum(out.values())
    out |= {f"server_{k}": v for k, v in s.items() if k != "total"}
    if f is not None:
        out["response_kb"] = f["bytes"] / 1024
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(scene: str, model: list[str], out: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from terramask.cli.main import main; sys.exit(main(sys.argv[1:]))",
           "serve", scene, "--port", str(port), "--out", str(out), *model]
    log = out.parent / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start:\n" + log.read_text(errors="replace")[-2000:])


def random_checkpoint(kind: str, cache: Path) -> list[str]:
    """``serve`` options for a random-weight checkpoint of the official architecture
    (``vit_b``: SAM ViT-B, ``mobilesam``: MobileSAM), written once into ``cache`` by
    ``tests/helpers`` (seed 0, decoder output layers scaled so masks are stable blobs,
    as in the tests)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "vit_b":
        from helpers.tiny_sam import write_sam_checkpoint

        path = cache / "sam_vit_b_random_seed0.pth"
        if not path.exists():
            write_sam_checkpoint(path.with_suffix(".part"), arch="vit_b").rename(path)
        return ["--model", "sam-vit-b", "--checkpoint", str(path)]
    from helpers.tiny_mobilesam import write_mobilesam_checkpoint

    path = cache / "mobile_sam_random_seed0.pt"
    if not path.exists():
        write_mobilesam_checkpoint(path.with_suffix(".part")).rename(path)
    return ["--model", "mobilesam", "--checkpoint", str(path)]


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


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return round(statistics.median(values), 1) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=SCENE)
    ap.add_argument("--model", help="model name (e.g. classic, sam-vit-b)")
    ap.add_argument("--checkpoint", help="checkpoint file (with --model for its family)")
    ap.add_argument("--random", choices=("vit_b", "mobilesam"),
                    help="a random-weight checkpoint of this architecture, made once in --cache")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "terramask-bench")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--screenshots", type=Path, help="save the main states of the page here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium binary: apt-get install -y chromium")
    if args.random:
        model = random_checkpoint(args.random, args.cache)
    else:
        model = (["--model", args.model] if args.model else []) + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _serve(args.scene, model, Path(tmp) / "out")
        try:
            info = httpx.get(url + "/scene").json()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 800})
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
                page.evaluate("() => { window.__times = []; window.__parts = []; }")
                for k in range(args.clicks):
                    x, y = rng.uniform(0.05, 0.95, 2) * [info["width"], info["height"]]
                    _click_and_wait(page, info, float(x), float(y), k + 1)
                times = [t / 1000 for t in page.evaluate("() => window.__times")]
                raw = page.evaluate("() => window.__parts")
                parts = [breakdown(p) for p in raw]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    decoder = [p["server_decode"] / 1000 for p in parts if "server_decode" in p]
    keys = [name for name, _ in PARTS] + sorted({k for p in parts for k in p if k.startswith("server_")}) + ["response_kb"]
    result = {
        "scene": f"{Path(args.scene).name} ({info['width']}x{info['height']})", "model": info["model"],
        "clicks": len(times), "median_click_to_drawn_s": statistics.median(times),
        "median_decoder_s": statistics.median(decoder), "ratio": statistics.median(times) / statistics.median(decoder),
        "median_parts_ms": {k: _median(parts, k) for k in keys},
        "parts": dict(PARTS),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result | {"raw": raw}, indent=2))


if __name__ == "__main__":
    main()
