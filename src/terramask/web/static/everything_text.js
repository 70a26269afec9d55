/* The text box of segment everything: phrases typed as "building, solar panel" are found
 * on the shown window or the whole scene (everything.js starts the job). It needs the
 * server's text model (GET everything/text); without one the box is off with the reason.
 *
 * everything.js calls TerramaskEverythingText.init(hooks) once with:
 *   api(path, body, method), start(scope) with scope "text-window" | "text-scene",
 *   running() -> whether a job runs now
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const tx = { hooks: null, status: { available: false, model: null, reason: "" } };

  // The phrases typed in the box: split at commas and semicolons, blanks dropped.
  function phrases() {
    return $("ev-text").value.split(/[,;]/).map((p) => p.trim()).filter((p) => p.length);
  }

  function note(text, isError) {
    const el = $("ev-text-reason");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }

  // Whether a text job may start; when not, the reason is noted under the box.
  function ready() {
    if (!tx.status.available) note(tx.status.reason, true);
    return tx.status.available;
  }

  // A text job started: the note names the model again (an earlier error goes away).
  function started() {
    note(tx.status.model ? "Text model: " + tx.status.model + "." : "");
  }

  // The box and its buttons: off without a text model, the buttons off while a job runs.
  function render(running) {
    const off = !tx.status.available;
    $("ev-text").disabled = off;
    $("ev-text-window").disabled = off || running;
    $("ev-text-scene").disabled = off || running;
    $("ev-text-box").classList.toggle("off", off);
  }

  // Whether the server has a text model.
  async function loadStatus() {
    try {
      tx.status = await tx.hooks.api("everything/text");
    } catch (err) {
      tx.status = { available: false, model: null, reason: "Text search is unavailable: " + err.message };
    }
    note(tx.status.available ? "Text model: " + tx.status.model + "." : tx.status.reason, false);
    render(tx.hooks.running());
  }

  function init(hooks) {
    tx.hooks = hooks;
    $("ev-text-window").addEventListener("click", () => hooks.start("text-window"));
    $("ev-text-scene").addEventListener("click", () => hooks.start("text-scene"));
    $("ev-text").addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); hooks.start("text-window"); }
    });
    render(hooks.running());
    loadStatus();
  }

  root.TerramaskEverythingText = { init: init, phrases: phrases, note: note, ready: ready, started: started,
    render: render };
})(window);
