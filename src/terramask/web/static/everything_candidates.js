/* The candidates of a finished segment-everything job (everything.js runs the job): drawn
 * as dashed outlines, filtered by score and area sliders, accepted into the object layer or
 * discarded, in bulk ("all shown") or one by one. Candidates of text and find-similar jobs
 * carry a proposed class (the phrase, the example's class): accepting them uses the
 * layer's class of that name (created when missing); the others get the active class.
 * Candidates that duplicate an object already in the layer (the server's duplicate_of:
 * IoU >= 0.5, or 80 % inside it) are hidden unless "show duplicates" is ticked, drawn grey
 * when shown, and never accepted in bulk (the server leaves them out too); one accepted by
 * its own ✓ is taken as the user's choice. The marks are asked for again (GET
 * everything/{id}/duplicates, ids only) whenever the object layer's revision changes.
 * Server routes: GET everything/{id}/candidates, GET everything/{id}/duplicates,
 * POST everything/{id}/accept | discard (terramask/web/everything_routes.py).
 * Outlines arrive in scene pixels.
 *
 * everything.js calls TerramaskEverythingCandidates.init(hooks) once with app.js's hooks
 * (api, setStatus, draw, toScreen) and:
 *   job() -> the job (its GET everything/{id} answer) or null, jobPath(suffix) -> its route
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const CANDIDATE_COLOR = "#ff2bd6";   // magenta, dashed: not an accepted object yet
  const DUPLICATE_COLOR = "#9aa4b2";   // grey, dashed: repeats an object of the layer
  const MAX_LISTED = 100;              // rows in the panel list (the canvas shows every one)
  // marked: the layer revision the duplicate marks were computed against (null: none yet)
  const cs = { hooks: null, candidates: [], hover: null, marked: null, marking: false };

  function say(text, isError) { cs.hooks.setStatus(text, isError); }

  function fail(err) { say((err.status ? err.status + ": " : "") + err.message, true); }

  function layerRevision() {
    const objects = root.TerramaskObjects;
    return objects && objects.layer ? objects.layer.revision : null;
  }

  // A new job: no candidates until it is done.
  function clear() {
    cs.candidates = [];
    cs.hover = null;
  }

  // The finished job's candidates, with their duplicate marks; the area sliders span them.
  async function load() {
    const path = cs.hooks.jobPath("candidates");
    const revision = layerRevision();
    let data;
    try {
      data = await cs.hooks.api(path);
    } catch (err) {
      fail(err);
      return;
    }
    cs.candidates = data.candidates;
    cs.marked = revision;  // the marks came with the candidates; a later layer change asks again
    const maxArea = cs.candidates.reduce((m, c) => Math.max(m, c.area_px), 1);
    $("ev-min-area").max = maxArea;
    $("ev-max-area").max = maxArea;
    $("ev-min-area").value = 0;
    $("ev-max-area").value = maxArea;
    say(cs.candidates.length + " candidate object(s) in " + Number(data.job.elapsed_s).toFixed(1) +
      " s: choose with the sliders, then accept or discard.");
    render();
    cs.hooks.draw();
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
    return cs.candidates.filter((c) => c.state === "open" && c.score >= l.score &&
      c.area_px >= l.minArea && c.area_px <= l.maxArea && (duplicates || !c.duplicate_of));
  }

  // What "accept all shown" takes: never a duplicate of a layer object.
  function bulk() {
    return shown().filter((c) => !c.duplicate_of);
  }

  // single: one candidate picked by its own button (a duplicate too, when it is one)
  async function decide(ids, how, single) {
    if (!ids.length || !cs.hooks.job()) return;
    const path = cs.hooks.jobPath(how);
    const body = { ids: ids };
    if (how === "accept") {
      body.class_id = root.TerramaskObjects.classId();
      // text / find-similar candidates: each with its proposed class (the layer's class of that name)
      if (cs.candidates.some((c) => ids.includes(c.id) && c.class)) body.proposed = true;
      if (single) body.duplicates = true;
    }
    let data;
    try {
      data = await cs.hooks.api(path, body);
    } catch (err) {
      fail(err);
      return;
    }
    const skipped = new Set(data.skipped || []);
    const left = new Set(data.duplicates || []);
    cs.candidates.forEach((c) => {
      if (ids.includes(c.id) && !skipped.has(c.id) && !left.has(c.id)) {
        c.state = how === "accept" ? "accepted" : "discarded";
      }
      if (data.duplicate_of && c.state === "open") c.duplicate_of = data.duplicate_of[c.id] || null;
    });
    if (how === "accept") {
      cs.marked = data.revision;
      root.TerramaskObjects.apply(data);
      const notes = [];
      if (skipped.size) notes.push(skipped.size + " already decided in another tab");
      if (left.size) notes.push(left.size + " duplicate(s) of layer objects left out");
      say(data.accepted.length + " candidate(s) accepted as objects" + (notes.length ? " (" + notes.join("; ") + ")" : "") + ".");
    } else {
      say(data.discarded.length + " candidate(s) discarded.");
    }
    if (skipped.size) load();
    cs.hover = null;
    render();
    cs.hooks.draw();
  }

  // The layer changed since the marks were made (an object clicked, deleted, undone): ask
  // again which open candidates duplicate an object (ids only, no outlines).
  async function remark() {
    const revision = layerRevision();
    const job = cs.hooks.job();
    if (!job || job.state !== "done" || !cs.candidates.length || cs.marking || revision === cs.marked) return;
    cs.marking = true;
    try {
      const data = await cs.hooks.api(cs.hooks.jobPath("duplicates"));
      if (cs.hooks.job() !== job) return;
      cs.marked = revision;
      cs.candidates.forEach((c) => { if (c.state === "open") c.duplicate_of = data.duplicate_of[c.id] || null; });
      render();
      cs.hooks.draw();
    } catch (err) {
      cs.marked = revision;  // no retry loop on every frame; the next change asks again
    } finally {
      cs.marking = false;
    }
  }

  // ------------------------------------------------------------------ panel
  function formatArea(c) {
    if (c.area_m2 === null || c.area_m2 === undefined) return c.area_px.toLocaleString() + " px";
    if (c.area_m2 >= 1e4) return (c.area_m2 / 1e4).toFixed(2) + " ha";
    return Math.round(c.area_m2).toLocaleString() + " m²";
  }

  function row(c) {
    const li = document.createElement("li");
    li.className = "choice" + (c.id === cs.hover ? " chosen" : "") + (c.duplicate_of ? " duplicate" : "");
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
    li.addEventListener("mouseenter", () => { cs.hover = c.id; cs.hooks.draw(); });
    li.addEventListener("mouseleave", () => { cs.hover = null; cs.hooks.draw(); });
    return li;
  }

  // The slider values, the "N shown of M open" line, the bulk buttons and the list.
  function render() {
    const l = limits();
    $("ev-min-score-value").textContent = l.score.toFixed(3);
    $("ev-area-values").textContent = l.minArea.toLocaleString() + "–" + l.maxArea.toLocaleString() + " px";
    const list = shown();
    const open = cs.candidates.filter((c) => c.state === "open");
    const duplicates = open.filter((c) => c.duplicate_of).length;
    $("ev-duplicates").textContent = duplicates ? "(" + duplicates + ")" : "";
    $("ev-shown").textContent = cs.candidates.length ? list.length + " shown of " + open.length + " open" +
      (duplicates && !$("ev-show-duplicates").checked ? " (" + duplicates + " duplicate(s) of layer objects hidden)" : "") : "";
    $("ev-accept-shown").disabled = !bulk().length;
    $("ev-discard-shown").disabled = !list.length;
    const ol = $("ev-list");
    ol.textContent = "";
    list.slice(0, MAX_LISTED).forEach((c) => ol.appendChild(row(c)));
  }

  // Shown candidates as dashed outlines (screen pixels); the hovered one filled.
  function draw(ctx) {
    if (cs.candidates.length && layerRevision() !== cs.marked) remark();
    if (!cs.candidates.length || !$("show-objects").checked) return;
    ctx.save();
    ctx.setLineDash([5, 3]);
    shown().forEach((c) => {
      const colour = c.duplicate_of ? DUPLICATE_COLOR : CANDIDATE_COLOR;
      ctx.strokeStyle = colour;
      ctx.lineWidth = c.id === cs.hover ? 3 : 1.5;
      ctx.beginPath();
      c.outline_px.forEach((ring) => {
        ring.forEach((p, k) => {
          const [sx, sy] = cs.hooks.toScreen(p[0], p[1]);
          if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
        });
        ctx.closePath();
      });
      if (c.id === cs.hover) {
        ctx.fillStyle = colour + "44";
        ctx.fill("evenodd");
      }
      ctx.stroke();
    });
    ctx.restore();
  }

  function onSlider() {
    render();
    cs.hooks.draw();
  }

  function init(hooks) {
    cs.hooks = hooks;
    $("ev-accept-shown").addEventListener("click", () => decide(bulk().map((c) => c.id), "accept"));
    $("ev-discard-shown").addEventListener("click", () => decide(shown().map((c) => c.id), "discard"));
    $("ev-show-duplicates").addEventListener("change", onSlider);
    ["ev-min-score", "ev-min-area", "ev-max-area"].forEach((id) => $(id).addEventListener("input", onSlider));
  }

  root.TerramaskEverythingCandidates = { init: init, clear: clear, load: load, render: render, draw: draw,
    shown: shown, bulk: bulk };
})(window);
