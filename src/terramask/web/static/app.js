/* terramask browser app: click/box prompts on a scene, candidate masks, refinement, export.
 *
 * Plain JavaScript, no build step, no network beyond this server. Coordinates:
 * "scene" = scene pixels (x = column, y = row, (0, 0) at the upper-left corner of the
 * upper-left pixel), the frame every request uses; "screen" = CSS pixels of the canvas.
 * The view maps scene -> screen as  sx = x * view.scale + view.tx  (same for y).
 */
(function () {
  "use strict";

  const OBJECT_COLOR = "#008000";      // green stars, as in the SAM notebook
  const BACKGROUND_COLOR = "#ff0000";  // red stars
  const BOX_COLOR = "#00c000";
  const WINDOW_COLOR = "#ffd400";
  const DRAG_THRESHOLD = 4;            // screen px before a press becomes a drag
  const MAX_TILES_IN_VIEW = 64;
  const MAX_CACHED_TILES = 256;

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");

  const state = {
    scene: null,
    sessionId: tabSession(),  // this tab's own (sessions.py): kept over reloads and scene switches
    preview: null,          // HTMLImageElement of the whole scene
    previewScale: 1,        // scene px per preview px
    tiles: new Map(),       // "col,row" -> {img, ready, x, y, w, h}
    view: { scale: 1, tx: 0, ty: 0 },
    current: null,          // {points, labels, box, response, chosen, masks}
    history: [],            // earlier `current` entries, for Undo
    hover: null,            // candidate index under the mouse in the list
    drag: null,
    spaceDown: false,
    pending: false,
    queue: [],              // clicks/boxes made while a request runs, sent in order afterwards
    busySince: 0,
    busyTimer: null,
    lastEncoder: null,      // seconds the last computed embedding took (for the wait message)
    mouse: null,            // last mouse position in scene px
  };

  // ---------------------------------------------------------------- helpers
  // One session id per browser tab (sessionStorage is per tab): another tab never sees
  // this one's prompts or current mask.
  function tabSession() {
    const key = "terramask-session";
    let id = null;
    try { id = window.sessionStorage.getItem(key); } catch (err) { id = null; }
    if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      const bytes = new Uint8Array(12);
      window.crypto.getRandomValues(bytes);
      id = Array.from(bytes, (b) => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[b & 63]).join("");
      try { window.sessionStorage.setItem(key, id); } catch (err) { /* private mode: one id per page load */ }
    }
    return id;
  }

  // Tell the server this tab's current mask (GET session gives it back after a reload).
  function syncSession() {
    const e = state.current;
    const body = e ? { session_id: state.sessionId, prediction_id: e.response.prediction_id, candidate: e.chosen,
      reopened: e.reopened || null } : { session_id: state.sessionId, prediction_id: null };
    api("session", body, "PUT").catch(() => {});
  }

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }

  // The indicator over the canvas; while on, it counts seconds so a long encode shows progress.
  function setBusy(on, text) {
    state.pending = on;
    const el = $("busy");
    el.hidden = !on;
    clearInterval(state.busyTimer);
    state.busyTimer = null;
    if (on) {
      state.busySince = performance.now();
      el.dataset.text = text || "Working…";
      el.textContent = el.dataset.text;
      state.busyTimer = setInterval(() => {
        const s = (performance.now() - state.busySince) / 1000;
        if (s < 1) return;
        const queued = state.queue.length ? " · " + state.queue.length + " click(s) queued" : "";
        el.textContent = el.dataset.text + " " + Math.floor(s) + " s" + queued;
      }, 250);
    }
    updateButtons();
  }

  // Clicks made while busy wait here and are sent, in order, when the answer arrives.
  function enqueue(action, what) {
    state.queue.push(action);
    setStatus("Busy: " + what + " queued (" + state.queue.length + " waiting).");
    draw();
  }

  function runQueue() {
    const next = state.queue.shift();
    if (next) next.run();
  }

  async function api(path, body, method) {
    const options = body === undefined ? { method: method || "GET" } : {
      method: method || "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw Object.assign(new Error("the terramask server cannot be reached (" + err.message + ")"), { status: 0 });
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.statusText;
      throw Object.assign(new Error(detail), { status: response.status });
    }
    return data;
  }

  function unitLabel(unit) {
    const short = { metre: "m", meter: "m", degree: "°", "US survey foot": "ftUS", foot: "ft" };
    return unit ? (short[unit] || unit) : "CRS units";
  }

  function fmt(v, digits) { return Number(v).toFixed(digits); }

  function formatArea(c) {
    if (c.area_m2 !== null && c.area_m2 !== undefined) {
      const m2 = c.area_m2;
      if (m2 >= 1e6) return fmt(m2 / 1e6, 3) + " km²";
      if (m2 >= 1e4) return fmt(m2 / 1e4, 2) + " ha";
      return Math.round(m2).toLocaleString() + " m²";
    }
    return c.area_px.toLocaleString() + " px";
  }

  // scene affine transform [a, b, c, d, e, f]: X = a x + b y + c, Y = d x + e y + f
  function pixelToMap(x, y) {
    const [a, b, c, d, e, f] = state.scene.transform;
    return [a * x + b * y + c, d * x + e * y + f];
  }

  // lon/lat by bilinear interpolation in the server's control-point grid (no PROJ here)
  function pixelToLonLat(x, y) {
    const g = state.scene.lonlat_grid;
    if (!g) return null;
    const find = (arr, v) => {
      let i = 0;
      while (i < arr.length - 2 && v > arr[i + 1]) i++;
      const t = (v - arr[i]) / (arr[i + 1] - arr[i]);
      return [i, Math.min(Math.max(t, 0), 1)];
    };
    const [i, tx] = find(g.xs, x);
    const [j, ty] = find(g.ys, y);
    const lerp2 = (m) => {
      const top = m[j][i] * (1 - tx) + m[j][i + 1] * tx;
      const bottom = m[j + 1][i] * (1 - tx) + m[j + 1][i + 1] * tx;
      return top * (1 - ty) + bottom * ty;
    };
    return [lerp2(g.lon), lerp2(g.lat)];
  }

  function toScene(sx, sy) {
    const v = state.view;
    return [(sx - v.tx) / v.scale, (sy - v.ty) / v.scale];
  }

  function toScreen(x, y) {
    const v = state.view;
    return [x * v.scale + v.tx, y * v.scale + v.ty];
  }

  function insideScene(x, y) {
    return state.scene && x >= 0 && y >= 0 && x < state.scene.width && y < state.scene.height;
  }

  function eventPos(ev) {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  // ---------------------------------------------------------------- view
  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    draw();
  }

  function fitView() {
    if (!state.scene) return;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    const scale = Math.min(w / state.scene.width, h / state.scene.height) * 0.96;
    state.view = {
      scale: scale,
      tx: (w - state.scene.width * scale) / 2,
      ty: (h - state.scene.height * scale) / 2,
    };
    draw();
  }

  function zoomAt(sx, sy, factor) {
    const v = state.view;
    const fit = Math.min(canvas.clientWidth / state.scene.width, canvas.clientHeight / state.scene.height);
    const scale = Math.min(Math.max(v.scale * factor, fit / 8), 64);
    const [x, y] = toScene(sx, sy);
    state.view = { scale: scale, tx: sx - x * scale, ty: sy - y * scale };
    draw();
  }

  function panBy(dx, dy) {
    state.view.tx += dx;
    state.view.ty += dy;
    draw();
  }

  // ---------------------------------------------------------------- native-resolution tiles
  function wantTiles() {
    // Only when the preview is coarser than the scene and magnified on screen.
    return state.previewScale > 1.001 && state.view.scale * state.previewScale > 1.25;
  }

  function visibleTiles() {
    const size = state.scene.preview.tile_size;
    const [x0, y0] = toScene(0, 0);
    const [x1, y1] = toScene(canvas.clientWidth, canvas.clientHeight);
    const c0 = Math.max(0, Math.floor(x0 / size)), r0 = Math.max(0, Math.floor(y0 / size));
    const c1 = Math.min(Math.ceil(state.scene.width / size) - 1, Math.floor(x1 / size));
    const r1 = Math.min(Math.ceil(state.scene.height / size) - 1, Math.floor(y1 / size));
    const out = [];
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) out.push([c, r]);
    }
    return out;
  }

  function tileFor(c, r) {
    const key = c + "," + r;
    let tile = state.tiles.get(key);
    if (tile) {
      state.tiles.delete(key);  // re-insert: most recently used last
      state.tiles.set(key, tile);
      return tile;
    }
    const size = state.scene.preview.tile_size;
    const x = c * size, y = r * size;
    const w = Math.min(size, state.scene.width - x), h = Math.min(size, state.scene.height - y);
    tile = { img: new Image(), ready: false, x: x, y: y, w: w, h: h };
    tile.img.onload = () => { tile.ready = true; draw(); };
    tile.img.onerror = () => { tile.failed = true; };
    tile.img.src = "scene/window.png?col_off=" + x + "&row_off=" + y + "&width=" + w + "&height=" + h;
    state.tiles.set(key, tile);
    while (state.tiles.size > MAX_CACHED_TILES) {
      state.tiles.delete(state.tiles.keys().next().value);
    }
    return tile;
  }

  // ---------------------------------------------------------------- masks
  // Each candidate arrives as two 1-bit PNGs cropped to its bounding box, transparent off
  // the mask (render.py): the mask in its colour and its boundary pixels in white. They
  // are decoded off the main thread and drawn as they are.
  function pngBitmap(dataUrl) {
    const base64 = dataUrl.slice(dataUrl.indexOf(",") + 1);  // a bad one throws in a .then: a rejection
    let bytes;
    if (typeof Uint8Array.fromBase64 === "function") {
      bytes = Uint8Array.fromBase64(base64);  // native, no loop over characters
    } else {
      const text = atob(base64);
      bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    }
    return createImageBitmap(new Blob([bytes], { type: "image/png" }), { colorSpaceConversion: "none" });
  }

  // A click's answer carries the best candidate's pictures only (include png_best), the one
  // shown first: "terramask:drawn" (benchmarks/web_clicks.py times clicks to it) is
  // announced once it is on screen. The others are fetched (GET prediction/candidate) when
  // shown (hover, choose) or once the page has been idle for PREFETCH_MS, so they never
  // compete with the next click for the server or the CPU.
  const PREFETCH_MS = 300;

  function prepareMasks(entry) {
    entry.masks = entry.response.candidates.map(() => ({ fill: null, edge: null, ready: false, asked: false }));
    let announced = false;
    entry.announce = () => {
      if (announced) return;
      announced = true;
      performance.mark("terramask:drawn");
      window.dispatchEvent(new CustomEvent("terramask:drawn", { detail: entry.response.prediction_id }));
      entry.afterDrawn();
      setTimeout(() => {
        if (state.current === entry && !state.pending) entry.masks.forEach((m, i) => loadMask(entry, i));
      }, PREFETCH_MS);
    };
    if (entry.masks.length) loadMask(entry, entry.chosen);
    else entry.announce();  // nothing to draw
  }

  // Decode candidate i's pictures (fetched first when the answer did not carry them),
  // then redraw if it is the one shown. Each candidate is asked for once.
  function loadMask(entry, i) {
    const m = entry.masks[i];
    const c = entry.response.candidates[i];
    if (!m || m.asked) return;
    m.asked = true;
    const r = entry.response;
    const picture = "png" in c ? Promise.resolve(c.png) : api("prediction/candidate?session_id=" +
      encodeURIComponent(r.session_id) + "&prediction_id=" + encodeURIComponent(r.prediction_id) +
      "&candidate=" + i).then((answer) => answer.png);
    picture.then((png) => {
      c.png = png;
      if (!png) return null;  // an empty mask: nothing to draw
      return Promise.all([png.data, png.outline].map(pngBitmap)).then(([fill, edge]) => {
        if (i === entry.chosen) performance.mark("terramask:decoded");
        entry.masks[i] = { fill: fill, edge: edge, ready: true, asked: true };
      });
    }).catch(() => { /* a picture that cannot be had is not drawn; the list still shows the candidate */ })
      .then(() => {
        if (state.current === entry && (i === entry.chosen || i === state.hover)) draw();
        if (i === entry.chosen) entry.announce();
      });
  }

  // ---------------------------------------------------------------- drawing
  function drawStar(x, y, color) {
    const [sx, sy] = toScreen(x, y);
    const r = 10, inner = r * 0.45;
    ctx.beginPath();
    for (let k = 0; k < 10; k++) {
      const a = -Math.PI / 2 + k * Math.PI / 5;
      const rr = k % 2 === 0 ? r : inner;
      const px = sx + rr * Math.cos(a), py = sy + rr * Math.sin(a);
      if (k === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    }
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }

  function drawRect(box, color, dashed) {
    const [x0, y0] = toScreen(box[0], box[1]);
    const [x1, y1] = toScreen(box[2], box[3]);
    ctx.save();
    ctx.lineWidth = 2;
    ctx.strokeStyle = color;
    if (dashed) ctx.setLineDash([6, 4]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.restore();
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.scene) return;
    const v = state.view;

    // scene pixels: preview, native tiles, masks
    ctx.setTransform(dpr * v.scale, 0, 0, dpr * v.scale, dpr * v.tx, dpr * v.ty);
    ctx.imageSmoothingEnabled = v.scale < 2;
    if (state.preview) ctx.drawImage(state.preview, 0, 0, state.scene.width, state.scene.height);
    if (state.preview && wantTiles()) {
      const wanted = visibleTiles();
      if (wanted.length <= MAX_TILES_IN_VIEW) {
        for (const [c, r] of wanted) {
          const t = tileFor(c, r);
          if (t.ready) ctx.drawImage(t.img, t.x, t.y, t.w, t.h);
        }
      }
    }
    const entry = state.current;
    const shown = state.hover !== null ? state.hover : entry ? entry.chosen : null;
    if (entry && shown !== null && $("show-mask").checked) {
      const c = entry.response.candidates[shown];
      const m = entry.masks[shown];
      if (m && m.ready) {
        ctx.globalAlpha = Number($("opacity").value) / 100;
        ctx.drawImage(m.fill, c.png.col_off, c.png.row_off, c.png.width, c.png.height);
        ctx.globalAlpha = 1;
        ctx.drawImage(m.edge, c.png.col_off, c.png.row_off, c.png.width, c.png.height);
      }
    }

    // screen pixels: accepted objects, encoded window, prompts, box being dragged
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if ($("show-objects").checked) window.TerramaskObjects.draw(ctx);
    window.TerramaskEverything.draw(ctx);  // segment-everything candidates, dashed
    if (entry) {
      const w = entry.response.window;
      if (w.width < state.scene.width || w.height < state.scene.height) {
        drawRect([w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height], WINDOW_COLOR, true);
      }
    }
    const box = state.drag && state.drag.mode === "box" ? state.drag.box : null;
    const prompts = currentPrompts();
    if (prompts.box) drawRect(prompts.box, BOX_COLOR, false);
    if (box) drawRect(box, BOX_COLOR, true);
    prompts.points.forEach((p, k) => drawStar(p[0], p[1], prompts.labels[k] === 1 ? OBJECT_COLOR : BACKGROUND_COLOR));
    ctx.globalAlpha = 0.5;  // queued clicks, faded until they are sent
    state.queue.forEach((q) => { if (q.point) drawStar(q.point[0], q.point[1], q.point[2] === 1 ? OBJECT_COLOR : BACKGROUND_COLOR); });
    ctx.globalAlpha = 1;
    $("ro-zoom").textContent = "zoom " + fmt(v.scale, v.scale < 1 ? 3 : 2) + "×";
  }

  function currentPrompts() {
    const e = state.current;
    if (!e) return { points: [], labels: [], box: null };
    return { points: e.points, labels: e.labels, box: e.box };
  }

  // ---------------------------------------------------------------- candidates list
  function renderCandidates() {
    const list = $("candidates");
    list.textContent = "";
    const entry = state.current;
    if (!entry) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Click on an object to segment it.";
      list.appendChild(li);
      updateButtons();
      return;
    }
    entry.response.candidates.forEach((c, i) => {
      const li = document.createElement("li");
      li.className = "choice" + (i === entry.chosen ? " chosen" : "");
      const title = document.createElement("div");
      title.className = "title";
      const sw = document.createElement("span");
      sw.className = "swatch";
      title.appendChild(sw);
      title.appendChild(document.createTextNode(c.title));
      const meta = document.createElement("div");
      meta.className = "muted small";
      meta.textContent = formatArea(c) + (c.area_m2 !== null && c.area_m2 !== undefined ? " · " + c.area_px.toLocaleString() + " px" : "");
      li.appendChild(title);
      li.appendChild(meta);
      li.addEventListener("click", () => choose(i));
      li.addEventListener("mouseenter", () => { state.hover = i; loadMask(entry, i); draw(); });
      li.addEventListener("mouseleave", () => { state.hover = null; draw(); });
      list.appendChild(li);
    });
    updateButtons();
  }

  function choose(i) {
    const entry = state.current;
    if (!entry || i < 0 || i >= entry.response.candidates.length) return;
    entry.chosen = i;
    loadMask(entry, i);
    renderCandidates();
    draw();
    syncSession();
  }

  function updateButtons() {
    const has = !!state.current;
    $("undo").disabled = state.pending || !has;
    $("clear").disabled = state.pending || !has;
    $("export").disabled = state.pending || !has;
    $("download").disabled = !has;
    window.TerramaskObjects.updateButtons();
  }

  // ---------------------------------------------------------------- prompts -> server
  function timingText(r) {
    const t = r.timings || {};
    const parts = [];
    if (t.embedding === "reused") parts.push("embedding reused");
    else if (t.encoder_s !== undefined) parts.push("embedding " + fmt(t.encoder_s, 2) + " s" +
      (t.embedding_cache === "hit" ? " (read from the cache)" : ""));
    if (t.decoder_s !== undefined) parts.push("decoder " + fmt(t.decoder_s, 2) + " s");
    return parts.join(", ");
  }

  async function send(body, fallback) {
    body.session_id = state.sessionId || undefined;
    body.multimask = $("multimask").checked;
    body.include = ["png_best"];  // the other candidates' pictures when shown; polygons only for download
    const first = !state.embedded;
    setBusy(true, first ? "Computing the embedding" + (state.lastEncoder ? " (last took " + fmt(state.lastEncoder, 1) + " s)" : "") +
      " and segmenting…" : "Segmenting…");
    setStatus("");
    let response;
    performance.mark("terramask:send");
    try {
      try {
        response = await api("predict", body);
      } catch (err) {
        // the server no longer holds the prediction we refine from: send every point again
        if (err.status === 404 && fallback) {
          fallback.session_id = body.session_id;
          fallback.multimask = body.multimask;
          fallback.include = body.include;
          response = await api("predict", fallback);
        } else {
          throw err;
        }
      }
    } catch (err) {
      setBusy(false);
      const dropped = state.queue.length;
      state.queue = [];
      setStatus((err.status ? err.status + ": " : "") + err.message +
        (dropped ? " (" + dropped + " queued click(s) not sent)" : ""), true);
      draw();
      return;
    }
    performance.mark("terramask:parsed");
    const t = response.timings || {};
    if (t.embedding === "computed" && t.encoder_s) state.lastEncoder = t.encoder_s;
    state.embedded = true;
    // refining a re-opened object keeps its id (a click that started a new object does not)
    const reopened = response.refined && state.current ? state.current.reopened : null;
    showPrediction(response, 0, reopened || null, true, () => {
      setBusy(false);
      const best = response.candidates[0];
      setStatus(response.candidates.length + " candidate(s), best " + best.title.toLowerCase() +
        (response.prompts.prior_mask ? " (refined with the previous mask)" : "") +
        (response.note ? "\n" + response.note.charAt(0).toUpperCase() + response.note.slice(1) + "." : "") +
        "\n" + response.model + ": " + timingText(response));
      $("export-result").textContent = "";
      runQueue();
    });
    performance.mark("terramask:shown");
  }

  // A /predict answer becomes the current mask (the earlier one goes to the undo history).
  // The chosen mask is drawn first (decoded off the main thread); the candidate list, the
  // server's note of the current mask and then ``after`` (the status line) follow at once,
  // so no layout or paint of the panel delays the mask.
  function showPrediction(response, chosen, reopened, keepHistory, after) {
    state.sessionId = response.session_id;
    const entry = {
      points: response.prompts.points,
      labels: response.prompts.labels,
      box: response.prompts.boxes.length ? response.prompts.boxes[0] : null,
      response: response,
      chosen: Math.min(chosen, response.candidates.length - 1),
      masks: [],
      reopened: reopened,
      afterDrawn: () => {
        if (state.current === entry) renderCandidates();
        syncSession();
        if (after) after();
      },
    };
    if (state.current && keepHistory) state.history.push(state.current);
    state.current = entry;
    state.hover = null;
    prepareMasks(entry);
    const shown = response.candidates[entry.chosen];
    if (!shown || !shown.png) draw();  // else prepareMasks draws once, when the chosen mask is decoded
  }

  // The current object as requests.js needs it.
  function currentObject() {
    const e = state.current;
    if (!e) return null;
    return { points: e.points, labels: e.labels, box: e.box, predictionId: e.response.prediction_id, chosen: e.chosen };
  }

  function addPoint(x, y, label) {
    if (!insideScene(x, y)) {
      setStatus("That point is outside the scene.", true);
      return;
    }
    if (state.pending) {
      enqueue({ point: [x, y, label], run: () => addPoint(x, y, label) }, "click");
      return;
    }
    const r = window.TerramaskRequests.clickRequest(currentObject(), x, y, label, $("use-prior").checked);
    send(r.body, r.fallback);
  }

  function setBox(box) {
    if (state.pending) {
      enqueue({ point: null, run: () => setBox(box) }, "box");
      return;
    }
    const r = window.TerramaskRequests.boxRequest(currentObject(), box, $("use-prior").checked);
    send(r.body, r.fallback);
  }

  function undo() {
    if (state.pending || !state.current) return;
    state.current = state.history.length ? state.history.pop() : null;
    state.hover = null;
    setStatus(state.current ? "Undone." : "");
    $("export-result").textContent = "";
    renderCandidates();
    draw();
    syncSession();
  }

  function clearAll() {
    if (state.pending) return;
    state.queue = [];
    const had = !!state.current;
    state.current = null;
    state.history = [];
    state.hover = null;
    setStatus("");
    $("export-result").textContent = "";
    renderCandidates();
    draw();
    if (had) syncSession();
  }

  async function exportChosen() {
    const entry = state.current;
    if (!entry || state.pending) return;
    const name = $("export-name").value.trim();
    const body = {
      session_id: state.sessionId,
      prediction_id: entry.response.prediction_id,
      candidate: entry.chosen,
      name: name || null,
    };
    setBusy(true, "Exporting…");
    try {
      let r;
      try {
        r = await api("export", body);
      } catch (err) {
        if (err.status !== 409 || !window.confirm(err.message + "\n\nOverwrite it?")) throw err;
        body.overwrite = true;
        r = await api("export", body);
      }
      const el = $("export-result");
      el.textContent = "";
      const head = document.createElement("div");
      head.textContent = "Mask " + (r.candidate + 1) + " written to " + r.folder;
      el.appendChild(head);
      const ul = document.createElement("ul");
      Object.keys(r.files).forEach((k) => {
        const li = document.createElement("li");
        li.textContent = k;
        li.title = r.files[k];
        ul.appendChild(li);
      });
      el.appendChild(ul);
      setStatus("Exported.");
    } catch (err) {
      setStatus((err.status ? err.status + ": " : "") + err.message, true);
    } finally {
      setBusy(false);
    }
  }

  function downloadGeoJSON() {
    const entry = state.current;
    if (!entry) return;
    const frame = state.scene.crs ? "lonlat" : "map";
    const a = document.createElement("a");
    a.href = "prediction.geojson?session_id=" + encodeURIComponent(state.sessionId) +
      "&prediction_id=" + encodeURIComponent(entry.response.prediction_id) +
      "&candidate=" + entry.chosen + "&frame=" + frame;
    a.download = state.scene.name.replace(/\.[^.]*$/, "") + "-mask" + (entry.chosen + 1) + ".geojson";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  // ---------------------------------------------------------------- readout
  function updateReadout(x, y) {
    const s = state.scene;
    if (!s || x === null || !insideScene(x, y)) {
      $("ro-px").textContent = "px –";
      $("ro-map").textContent = "";
      $("ro-lonlat").textContent = "";
      return;
    }
    $("ro-px").textContent = "px x " + fmt(x, 1) + ", y " + fmt(y, 1) + " (col " + Math.floor(x) + ", row " + Math.floor(y) + ")";
    if (s.crs) {
      const [X, Y] = pixelToMap(x, y);
      const crs = s.crs.length > 24 ? "scene CRS" : s.crs;
      $("ro-map").textContent = "map " + fmt(X, 2) + ", " + fmt(Y, 2) + " " + crs;
      const ll = pixelToLonLat(x, y);
      $("ro-lonlat").textContent = ll ? "lon " + fmt(ll[0], 6) + ", lat " + fmt(ll[1], 6) : "";
    } else {
      $("ro-map").textContent = "no CRS";
      $("ro-lonlat").textContent = "";
    }
  }

  // ---------------------------------------------------------------- mouse and keys
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());

  canvas.addEventListener("mousedown", (ev) => {
    if (!state.scene) return;
    canvas.focus();
    const [sx, sy] = eventPos(ev);
    const pan = ev.button === 1 || ev.button === 2 || (ev.button === 0 && state.spaceDown);
    state.drag = {
      button: ev.button, shift: ev.shiftKey, mode: pan ? "pan-candidate" : "click",
      sx0: sx, sy0: sy, sx: sx, sy: sy, box: null,
    };
    if (ev.button === 1) ev.preventDefault();
  });

  window.addEventListener("mousemove", (ev) => {
    if (!state.scene) return;
    const [sx, sy] = eventPos(ev);
    const [x, y] = toScene(sx, sy);
    state.mouse = [x, y];
    updateReadout(x, y);
    const d = state.drag;
    if (!d) return;
    const moved = Math.hypot(sx - d.sx0, sy - d.sy0) > DRAG_THRESHOLD;
    if (d.mode === "pan-candidate" && moved) {
      d.mode = "pan";
      canvas.classList.add("panning");
    }
    if (d.mode === "click" && moved) d.mode = "box";
    if (d.mode === "pan") {
      panBy(sx - d.sx, sy - d.sy);
    } else if (d.mode === "box") {
      const [x0, y0] = toScene(d.sx0, d.sy0);
      const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
      const w = state.scene.width, h = state.scene.height;
      d.box = [clamp(Math.min(x0, x), w), clamp(Math.min(y0, y), h), clamp(Math.max(x0, x), w), clamp(Math.max(y0, y), h)];
      draw();
    }
    d.sx = sx;
    d.sy = sy;
  });

  window.addEventListener("mouseup", (ev) => {
    const d = state.drag;
    if (!d) return;
    state.drag = null;
    canvas.classList.remove("panning");
    if (d.mode === "pan") return;
    if (d.mode === "box") {
      const b = d.box;
      draw();
      if (b && b[2] - b[0] >= 1 && b[3] - b[1] >= 1) setBox(b);
      return;
    }
    // a click: left = object, right or shift+left = background
    const [x, y] = toScene(d.sx0, d.sy0);
    if (d.mode === "click" && d.button === 0) addPoint(x, y, d.shift ? 0 : 1);
    else if (d.mode === "pan-candidate" && d.button === 2) addPoint(x, y, 0);
  });

  canvas.addEventListener("mouseleave", () => updateReadout(null, null));

  canvas.addEventListener("wheel", (ev) => {
    if (!state.scene) return;
    ev.preventDefault();
    const [sx, sy] = eventPos(ev);
    const delta = ev.deltaMode === 1 ? ev.deltaY * 33 : ev.deltaY;
    zoomAt(sx, sy, Math.exp(-Math.max(-300, Math.min(300, delta)) * 0.002));
    if (state.mouse) updateReadout(...toScene(sx, sy));
  }, { passive: false });

  window.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA") && t.type !== "checkbox" && t.type !== "range") return;
    if (ev.key === " ") { state.spaceDown = true; if (t === canvas) ev.preventDefault(); return; }
    if (!state.pending && window.TerramaskObjects.onKey(ev)) { ev.preventDefault(); return; }
    if ((ev.key === "z" || ev.key === "Z") && !ev.altKey) { ev.preventDefault(); undo(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const step = 60;
    switch (ev.key) {
      case "Escape": clearAll(); break;
      case "f": case "F": fitView(); break;
      case "m": case "M": $("show-mask").checked = !$("show-mask").checked; draw(); break;
      case "+": case "=": zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 1.25); break;
      case "-": case "_": zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 0.8); break;
      case "ArrowLeft": panBy(step, 0); break;
      case "ArrowRight": panBy(-step, 0); break;
      case "ArrowUp": panBy(0, step); break;
      case "ArrowDown": panBy(0, -step); break;
      default:
        if (/^[1-9]$/.test(ev.key)) choose(Number(ev.key) - 1);
        else return;
    }
    ev.preventDefault();
  });
  window.addEventListener("keyup", (ev) => { if (ev.key === " ") state.spaceDown = false; });

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  $("fit").addEventListener("click", fitView);
  $("export").addEventListener("click", exportChosen);
  $("download").addEventListener("click", downloadGeoJSON);
  $("opacity").addEventListener("input", draw);
  $("show-mask").addEventListener("change", draw);
  $("show-objects").addEventListener("change", draw);
  window.addEventListener("resize", resizeCanvas);

  // ---------------------------------------------------------------- start
  async function start() {
    resizeCanvas();
    let scene;
    try {
      scene = await api("scene");
    } catch (err) {
      $("scene-name").textContent = "scene unavailable";
      setStatus(err.message, true);
      return;
    }
    state.scene = scene;
    document.title = scene.name + " – terramask";
    $("scene-name").textContent = scene.name;
    $("scene-meta").textContent = scene.width + " × " + scene.height + " px · " + scene.count + " band(s) " +
      scene.dtype + " · bands " + scene.bands.join(",") + " · " + (scene.crs ? (scene.crs.length > 30 ? "custom CRS" : scene.crs) : "no CRS") +
      (scene.crs ? " · pixel " + Number(scene.pixel_size[0].toPrecision(4)) + " " + unitLabel(scene.crs_units) : "");
    if (scene.crs && scene.crs.length > 30) $("scene-meta").title = scene.crs;
    $("model-name").textContent = "model: " + scene.model;
    window.TerramaskObjects.init({
      api: api, setStatus: setStatus, draw: draw, toScreen: toScreen,
      current: () => state.current && !state.pending ? {
        sessionId: state.sessionId, predictionId: state.current.response.prediction_id, chosen: state.current.chosen,
        reopened: state.current.reopened || null,
      } : null,
      clearCurrent: clearAll,
      sessionId: () => state.sessionId,
      busy: () => state.pending,
      setBusy: setBusy,
      showReopened: (response) => {
        state.history = [];
        showPrediction(response, response.reopened.candidate, response.reopened, false);
      },
    });
    if (window.TerramaskScenes) window.TerramaskScenes.init({ api: api, setStatus: setStatus }, scene);
    window.TerramaskEverything.init({
      api: api, setStatus: setStatus, draw: draw, toScreen: toScreen, toScene: toScene, canvas: canvas,
      scene: () => state.scene, sessionId: () => state.sessionId,
    });
    restoreSession();
    updateButtons();
    fitView();
    const img = new Image();
    img.onload = () => {
      setBusy(false);
      state.preview = img;
      state.previewScale = scene.width / img.naturalWidth;
      setStatus(state.previewScale > 1.001 ?
        "Large scene: overview at 1/" + fmt(state.previewScale, 1) + " resolution; zoom in for native pixels." : "");
      draw();
      runQueue();
    };
    img.onerror = () => { setBusy(false); setStatus("The scene preview could not be loaded.", true); };
    setBusy(true, "Loading the scene preview…");  // a large scene takes seconds: never a blank canvas without a word
    img.src = "scene/image.png?max_size=" + scene.preview.max_size;
  }

  // After a reload (or coming back to this scene in this tab): the tab's current mask.
  async function restoreSession() {
    let data;
    try {
      data = await api("session?session_id=" + encodeURIComponent(state.sessionId));
    } catch (err) {
      return;
    }
    if (!data || !data.current || state.current) return;
    const cur = data.current;
    showPrediction(cur.prediction, cur.candidate, cur.reopened, false);
    setStatus("Restored this tab's current mask" + (cur.reopened ? " (re-opened object #" + cur.reopened.id + ")" : "") + ".");
  }

  start();
})();
