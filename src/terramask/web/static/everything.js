/* Segment everything in the page: start a job on the shown window or the whole scene
 * (tiled), find objects similar to the selected object (issue 11's find-similar, whole
 * scene), or find every instance of typed phrases (the text box, everything_text.js);
 * follow its progress, cancel it. Its results, candidate objects to accept or discard,
 * are everything_candidates.js's.
 * After a reload the page re-attaches to this tab's job (GET everything?session_id=): a
 * running one with its progress and cancel, or a finished one with open candidates.
 * Server routes: POST everything, GET everything?session_id=, GET everything/{id},
 * POST everything/{id}/cancel (terramask/web/everything_routes.py).
 *
 * app.js calls TerramaskEverything.init(hooks) once with:
 *   api(path, body, method), setStatus(text, isError), draw(), toScreen(x, y), toScene(sx, sy),
 *   scene() -> the /scene answer, canvas, sessionId() -> the click session id or null
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const POLL_MS = 250;
  const ev = { hooks: null, job: null, timer: null, sessionId: null };
  const NAMES = { window: "segment everything", scene: "segment everything", similar: "find similar",
    text: "find by text" };
  const candidates = () => root.TerramaskEverythingCandidates;
  const text = () => root.TerramaskEverythingText;

  function say(words, isError) { ev.hooks.setStatus(words, isError); }

  function fail(err) { say((err.status ? err.status + ": " : "") + err.message, true); }

  function jobPath(suffix) {
    return "everything/" + encodeURIComponent(ev.job.job_id) + (suffix ? "/" + suffix : "");
  }

  function running() {
    return !!ev.job && ev.job.state === "running";
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

  // ------------------------------------------------------------------ the job
  // scope: window | scene | similar | text-window | text-scene
  async function start(scope) {
    if (running()) return;
    const byText = scope.startsWith("text-");
    const where = byText ? scope.slice(5) : scope;
    const body = { scope: byText ? "text" : scope, session_id: ev.hooks.sessionId() || ev.sessionId || undefined };
    if (byText) {
      if (!text().ready()) return;
      body.phrases = text().phrases();
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
      if (byText) text().note(err.message, true);
      return;
    }
    if (byText) text().started();
    ev.sessionId = ev.job.session_id;
    candidates().clear();
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
      else if (ev.job.state === "done") candidates().load();
      else if (ev.job.state === "failed") say(jobName() + " failed: " + ev.job.error, true);
      else say(jobName() + " cancelled; nothing was kept.");
    }, POLL_MS);
  }

  function jobName() {
    const name = NAMES[ev.job && ev.job.scope] || "segment everything";
    return name.charAt(0).toUpperCase() + name.slice(1);
  }

  async function cancel() {
    if (!running()) return;
    const path = jobPath("cancel");
    try {
      ev.job = await ev.hooks.api(path, {});
      say("Cancelling…");
      render();
    } catch (err) {
      fail(err);
    }
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
    if (running()) {
      say(jobName() + ": still running (" + ev.job.stage + ").");
      poll();
    } else {
      candidates().load();
    }
  }

  // ------------------------------------------------------------------ panel
  // The start and cancel buttons, the progress bar and stage, then the text box and the candidates.
  function render() {
    const job = ev.job;
    const busy = running();
    $("ev-window").disabled = busy;
    $("ev-scene").disabled = busy;
    $("ev-similar").disabled = busy;
    $("ev-cancel").disabled = !busy;
    text().render(busy);
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
    candidates().render();
  }

  function init(hooks) {
    ev.hooks = hooks;
    $("ev-window").addEventListener("click", () => start("window"));
    $("ev-scene").addEventListener("click", () => start("scene"));
    $("ev-similar").addEventListener("click", () => start("similar"));
    $("ev-cancel").addEventListener("click", cancel);
    candidates().init(Object.assign({}, hooks, { job: () => ev.job, jobPath: jobPath }));
    text().init({ api: hooks.api, start: start, running: running });
    render();
    reattach();
  }

  root.TerramaskEverything = { init: init, draw: (ctx) => candidates().draw(ctx), shown: () => candidates().shown(),
    bulk: () => candidates().bulk(), visibleWindow: visibleWindow };
})(window);
