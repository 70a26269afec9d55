/* Segment everything in the page: start a job on the shown window or the whole scene
 * (tiled), find objects similar to the selected object (issue 11's find-similar, whole
 * scene), or find every instance of typed phrases (the text box: "building, solar panel",
 * on the shown window or the whole scene; needs the server's text model, else the box is
 * off with the reason); follow its progress, cancel it; its results are candidate objects
 * drawn as dashed outlines, filtered by score and area sliders, accepted into the object
 * layer or discarded, in bulk ("all shown") or one by one. Candidates of text and
 * find-similar jobs carry a proposed class (the phrase, the example's class): accepting
 * them uses the layer's class of that name (created when missing); the others get the
 * active class. Candidates that duplicate an object already in the layer (the server's
 * duplicate_of: IoU >= 0.5, or 80 % inside it) are hidden unless "show duplicates" is
 * ticked, drawn grey when shown, and never accepted in bulk (the server leaves them
 * out too); one accepted by its own ✓ is taken as the user's choice.
 * After a reload the page re-attaches to this tab's job (GET everything?session_id=): a
 * running one with its progress and cancel, or a finished one with open candidates.
 * Server routes: POST everything, GET everything?session_id=, GET everything/text, GET everything/{id},
 * POST everything/{id}/cancel, GET everything/{id}/candidates, GET everything/{id}/duplicates
 * (asked again whenever the object layer's revision changes),
 * POST everything/{id}/accept | discard (terramask/web/everything_routes.py).
 * Outlines arrive in scene pixels.
 *
 * app.js calls TerramaskEverything.init(hooks) once with:
 *   api(path, body, method), setStatus(text, isError), draw(), toScreen(x, y), toScene(sx, sy),
 *   scene() -> the /scene answer, canvas, sessionId() -> the click session id or null
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const POLL_MS = 250;
  const CANDIDATE_COLOR = "#ff2bd6";   // magenta, dashed: not an accepted object yet
  const DUPLICATE_COLOR = "#9aa4b2";   // grey, dashed: repeats an object of the layer
  const MAX_LISTED = 100;              // rows in the panel list (the canvas shows every one)
  // marked: the layer revision the duplicate marks were computed against (null: none yet)
  const ev = { hooks: null, job: null, candidates: [], timer: null, hover: null, sessionId: null,
    marked: null, marking: false,
    text: { available: false, model: null, reason: "" } };
  const NAMES = { window: "segment everything", scene: "segment everything", similar: "find similar",
    text: "find by text" };

  function say(text, isError) { ev.hooks.setStatus(text, isError); }

  function fail(err) { say((err.status ? err.status + ": " : "") + err.message, true); }

  function jobPath(suffix) {
    return "everything/" + encodeURIComponent(ev.job.job_id) + (suffix ? "/" + suffix : "");
  }

  // The part of the scene on screen, in whole scene pixels (null when none is visible).
  function visibleWindow() {
    const scene = ev.hooks.scene();
    if (!scene) return null;
    const c = ev.hooks.canvas;
    const [x0, y0] = ev.hooks.toScene(0, 0);
    const [x1, y1] = ev.hooks.toScene(c.clientWidth, c.clientHeight);
    const c0 = Math.max(0, Math.floor(x0)), r0 = Math.max(0, Math.floor(y0));
    const c1 = Math.min(scene.width, Math.ceil(x1)), r1 = Math.min(scene.height, Math.ceil(y1));
    if (c1 <= c0 || r1 <= r0) return null;
    return { col_off: c0, row_off: r0, width: c1 - c0, height: r1 - r0 };
  }

  // The phrases typed in the text box: split at commas and semicolons, blanks dropped.
  function phrases() {
    return $("ev-text").value.split(/[,;]/).map((p) => p.trim()).filter((p) => p.length);
  }

  function textNote(text, isError) {
    const el = $("ev-text-reason");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------------ the job
  // scope: window | scene | similar | text-window | text-scene
  async function start(scope) {
    if (ev.job && ev.job.state === "running") return;
    const text = scope.startsWith("text-");
    const where = text ? scope.slice(5) : scope;
    const body = { scope: text ? "text" : scope, session_id: ev.hooks.sessionId() || ev.sessionId || undefined };
    if (text) {
      if (!ev.text.available) { textNote(ev.text.reason, true); return; }
      body.phrases = phrases();
      if (where === "scene") body.tile_size = 1024;
    }
    if (scope === "similar") {
      const selected = root.TerramaskObjects.selected();
      if (selected === null) { say("Select an object in the list first: it is the example to find more of.", true); return; }
      body.object_ids = [selected];
    }
    if (where === "window") {
      body.window = visibleWindow();
      if (!body.window) { say("No part of the scene is on screen.", true); return; }
    }
    try {
      ev.job = await ev.hooks.api("everything", body);
    } catch (err) {
      fail(err);
      if (text) textNote(err.message, true);
      return;
    }
    if (text) textNote(ev.text.model ? "Text model: " + ev.text.model + "." : "");
    ev.sessionId = ev.job.session_id;
    ev.candidates = [];
    ev.hover = null;
    const what = { window: "segment everything in the shown window", scene: "segment everything in the whole scene",
      similar: "find similar to object #" + (body.object_ids || [""])[0] + " in the whole scene",
      "text-window": "find " + (body.phrases || []).join(", ") + " in the shown window",
      "text-scene": "find " + (body.phrases || []).join(", ") + " in the whole scene" }[scope];
    say(what.charAt(0).toUpperCase() + what.slice(1) + ": started.");
    render();
    ev.hooks.draw();
    poll();
  }

  function poll() {
    clearTimeout(ev.timer);
    ev.timer = setTimeout(async () => {
      const path = jobPath();
      try {
        ev.job = await ev.hooks.api(path);
      } catch (err) {
        fail(err);
        ev.job = null;
        render();
        return;
      }
      render();
      if (ev.job.state === "running") poll();
      else if (ev.job.state === "done") loadCandidates();
      else if (ev.job.state === "failed") say(jobName() + " failed: " + ev.job.error, true);
      else say(jobName() + " cancelled; nothing was kept.");
    }, POLL_MS);
  }

  function jobName() {
    const name = NAMES[ev.job && ev.job.scope] || "segment everything";
    return name.charAt(0).toUpperCase() + name.slice(1);
  }

  async function cancel() {
    if (!ev.job || ev.job.state !== "running") return;
    const path = jobPath("cancel");
    try {
      ev.job = await ev.hooks.api(path, {});
      say("Cancelling…");
      render();
    } catch (err) {
      fail(err);
    }
  }

  async function loadCandidates() {
    const path = jobPath("candidates");
    const revision = layerRevision();
    let data;
    try {
      data = await ev.hooks.api(path);
    } catch (err) {
      fail(err);
      return;
    }
    ev.candidates = data.candidates;
    ev.marked = revision;  // the marks came with the candidates; a later layer change asks again
    const maxArea = ev.candidates.reduce((m, c) => Math.max(m, c.area_px), 1);
    $("ev-min-area").max = maxArea;
    $("ev-max-area").max = maxArea;
    $("ev-min-area").value = 0;
    $("ev-max-area").value = maxArea;
    say(ev.candidates.length + " candidate object(s) in " + Number(data.job.elapsed_s).toFixed(1) +
      " s: choose with the sliders, then accept or discard.");
    render();
    ev.hooks.draw();
  }

  // ------------------------------------------------------------------ choosing
  function limits() {
    return {
      score: Number($("ev-min-score").value),
      minArea: Number($("ev-min-area").value),
      maxArea: Number($("ev-max-area").value),
    };
  }

  // Open candidates that pass the sliders (duplicates of layer objects only when asked for).
  function shown() {
    const l = limits();
    const duplicates = $("ev-show-duplicates").checked;
    return ev.candidates.filter((c) => c.state === "open" && c.score >= l.score &&
      c.area_px >= l.minArea && c.area_px <= l.maxArea && (duplicates || !c.duplicate_of));
  }

  // What "accept all shown" takes: never a duplicate of a layer object.
  function bulk() {
    return shown().filter((c) => !c.duplicate_of);
  }

  // single: one candidate picked by its own button (a duplicate too, when it is one)
  async function decide(ids, how, single) {
    if (!ids.length || !ev.job) return;
    const path = jobPath(how);
    const body = { ids: ids };
    if (how === "accept") {
      body.class_id = root.TerramaskObjects.classId();
      // text / find-similar candidates: each with its proposed class (the layer's class of that name)
      if (ev.candidates.some((c) => ids.includes(c.id) && c.class)) body.proposed = true;
      if (single) body.duplicates = true;
    }
    let data;
    try {
      data = await ev.hooks.api(path, body);
    } catch (err) {
      fail(err);
      return;
    }
    const skipped = new Set(data.skipped || []);
    const left = new Set(data.duplicates || []);
    ev.candidates.forEach((c) => {
      if (ids.includes(c.id) && !skipped.has(c.id) && !left.has(c.id)) {
        c.state = how === "accept" ? "accepted" : "discarded";
      }
      if (data.duplicate_of && c.state === "open") c.duplicate_of = data.duplicate_of[c.id] || null;
    });
    if (how === "accept") {
      ev.marked = data.revision;
      root.TerramaskObjects.apply(data);
      const notes = [];
      if (skipped.size) notes.push(skipped.size + " already decided in another tab");
      if (left.size) notes.push(left.size + " duplicate(s) of layer objects left out");
      say(data.accepted.length + " candidate(s) accepted as objects" + (notes.length ? " (" + notes.join("; ") + ")" : "") + ".");
    } else {
      say(data.discarded.length + " candidate(s) discarded.");
    }
    if (skipped.size) loadCandidates();
    ev.hover = null;
    render();
    ev.hooks.draw();
  }

  // ------------------------------------------------------------------ panel
  function formatArea(c) {
    if (c.area_m2 === null || c.area_m2 === undefined) return c.area_px.toLocaleString() + " px";
    if (c.area_m2 >= 1e4) return (c.area_m2 / 1e4).toFixed(2) + " ha";
    return Math.round(c.area_m2).toLocaleString() + " m²";
  }

  function render() {
    const job = ev.job;
    const running = !!job && job.state === "running";
    $("ev-window").disabled = running;
    $("ev-scene").disabled = running;
    $("ev-similar").disabled = running;
    $("ev-cancel").disabled = !running;
    const off = !ev.text.available;
    $("ev-text").disabled = off;
    $("ev-text-window").disabled = off || running;
    $("ev-text-scene").disabled = off || running;
    $("ev-text-box").classList.toggle("off", off);
    const bar = $("ev-progress");
    bar.hidden = !job;
    if (job) {
      bar.max = Math.max(job.total, 1);
      if (job.state === "done") bar.value = bar.max;
      else if (job.total) bar.value = job.done;
      else bar.removeAttribute("value");  // stages only (a model that segments on its own): indeterminate
      const count = job.total ? " · " + job.done + " / " + job.total + " " + job.unit : "";
      $("ev-stage").textContent = job.state === "running" ? job.stage + count : job.stage;
    } else {
      $("ev-stage").textContent = "";
    }
    const l = limits();
    $("ev-min-score-value").textContent = l.score.toFixed(3);
    $("ev-area-values").textContent = l.minArea.toLocaleString() + "–" + l.maxArea.toLocaleString() + " px";
    const list = shown();
    const open = ev.candidates.filter((c) => c.state === "open");
    const duplicates = open.filter((c) => c.duplicate_of).length;
    $("ev-duplicates").textContent = duplicates ? "(" + duplicates + ")" : "";
    $("ev-shown").textContent = ev.candidates.length ? list.length + " shown of " + open.length + " open" +
      (duplicates && !$("ev-show-duplicates").checked ? " (" + duplicates + " duplicate(s) of layer objects hidden)" : "") : "";
    $("ev-accept-shown").disabled = !bulk().length;
    $("ev-discard-shown").disabled = !list.length;
    const ol = $("ev-list");
    ol.textContent = "";
    list.slice(0, MAX_LISTED).forEach((c) => {
      const li = document.createElement("li");
      li.className = "choice" + (c.id === ev.hover ? " chosen" : "") + (c.duplicate_of ? " duplicate" : "");
      li.dataset.candidateId = c.id;
      const text = document.createElement("span");
      if (c.class) {
        const cls = document.createElement("span");
        cls.className = "cls";
        cls.textContent = c.class + " ";
        cls.title = c.class_id ? "class of the layer" : "a new class when accepted";
        text.appendChild(cls);
      }
      text.appendChild(document.createTextNode("#" + c.id + " · " + c.score.toFixed(3) + " · " + formatArea(c) +
        (c.duplicate_of ? " · duplicate of object #" + c.duplicate_of : "")));
      li.appendChild(text);
      const yes = document.createElement("button");
      yes.type = "button";
      yes.className = "mini";
      yes.textContent = "✓";
      yes.title = c.class ? "Accept as " + c.class : "Accept with the active class";
      yes.addEventListener("click", () => decide([c.id], "accept", true));
      const no = document.createElement("button");
      no.type = "button";
      no.className = "mini";
      no.textContent = "✕";
      no.title = "Discard";
      no.addEventListener("click", () => decide([c.id], "discard"));
      li.appendChild(yes);
      li.appendChild(no);
      li.addEventListener("mouseenter", () => { ev.hover = c.id; ev.hooks.draw(); });
      li.addEventListener("mouseleave", () => { ev.hover = null; ev.hooks.draw(); });
      ol.appendChild(li);
    });
  }

  function layerRevision() {
    const objects = root.TerramaskObjects;
    return objects && objects.layer ? objects.layer.revision : null;
  }

  // The layer changed since the marks were made (an object clicked, deleted, undone): ask
  // again which open candidates duplicate an object (ids only, no outlines).
  async function remark() {
    const revision = layerRevision();
    if (!ev.job || ev.job.state !== "done" || !ev.candidates.length || ev.marking || revision === ev.marked) return;
    ev.marking = true;
    const job = ev.job;
    try {
      const data = await ev.hooks.api(jobPath("duplicates"));
      if (ev.job !== job) return;
      ev.marked = revision;
      ev.candidates.forEach((c) => { if (c.state === "open") c.duplicate_of = data.duplicate_of[c.id] || null; });
      render();
      ev.hooks.draw();
    } catch (err) {
      ev.marked = revision;  // no retry loop on every frame; the next change asks again
    } finally {
      ev.marking = false;
    }
  }

  // Shown candidates as dashed outlines (screen pixels); the hovered one filled.
  function draw(ctx) {
    if (ev.candidates.length && layerRevision() !== ev.marked) remark();
    if (!ev.candidates.length || !$("show-objects").checked) return;
    ctx.save();
    ctx.setLineDash([5, 3]);
    shown().forEach((c) => {
      const colour = c.duplicate_of ? DUPLICATE_COLOR : CANDIDATE_COLOR;
      ctx.strokeStyle = colour;
      ctx.lineWidth = c.id === ev.hover ? 3 : 1.5;
      ctx.beginPath();
      c.outline_px.forEach((ring) => {
        ring.forEach((p, k) => {
          const [sx, sy] = ev.hooks.toScreen(p[0], p[1]);
          if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
        });
        ctx.closePath();
      });
      if (c.id === ev.hover) {
        ctx.fillStyle = colour + "44";
        ctx.fill("evenodd");
      }
      ctx.stroke();
    });
    ctx.restore();
  }

  function onSlider() {
    render();
    ev.hooks.draw();
  }

  function init(hooks) {
    ev.hooks = hooks;
    $("ev-window").addEventListener("click", () => start("window"));
    $("ev-scene").addEventListener("click", () => start("scene"));
    $("ev-similar").addEventListener("click", () => start("similar"));
    $("ev-cancel").addEventListener("click", cancel);
    $("ev-accept-shown").addEventListener("click", () => decide(bulk().map((c) => c.id), "accept"));
    $("ev-show-duplicates").addEventListener("change", onSlider);
    $("ev-discard-shown").addEventListener("click", () => decide(shown().map((c) => c.id), "discard"));
    ["ev-min-score", "ev-min-area", "ev-max-area"].forEach((id) => $(id).addEventListener("input", onSlider));
    $("ev-text-window").addEventListener("click", () => start("text-window"));
    $("ev-text-scene").addEventListener("click", () => start("text-scene"));
    $("ev-text").addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); start("text-window"); }
    });
    render();
    loadTextStatus();
    reattach();
  }

  // After a reload: this tab's running job (progress, cancel) or its finished job whose
  // candidates are not all decided yet (the list comes back). Another tab has another
  // session id and never gets it.
  async function reattach() {
    const id = ev.hooks.sessionId();
    if (!id) return;
    let data;
    try {
      data = await ev.hooks.api("everything?session_id=" + encodeURIComponent(id));
    } catch (err) {
      return;  // nothing to re-attach to is no error for the page
    }
    if (!data || !data.job || ev.job) return;
    ev.job = data.job;
    ev.sessionId = data.job.session_id;
    render();
    if (ev.job.state === "running") {
      say(jobName() + ": still running (" + ev.job.stage + ").");
      poll();
    } else {
      loadCandidates();
    }
  }

  // Whether the server has a text model; without one the box is off with the reason.
  async function loadTextStatus() {
    try {
      ev.text = await ev.hooks.api("everything/text");
    } catch (err) {
      ev.text = { available: false, model: null, reason: "Text search is unavailable: " + err.message };
    }
    textNote(ev.text.available ? "Text model: " + ev.text.model + "." : ev.text.reason, false);
    render();
  }

  root.TerramaskEverything = { init: init, draw: draw, shown: shown, bulk: bulk, visibleWindow: visibleWindow };
})(window);
