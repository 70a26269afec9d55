/* The object layer in the page: classes, accepted objects as outlines, select, re-class,
 * delete, undo/redo, downloads. The server holds the layer (GET/POST /objects …, see
 * terramask/web/object_routes.py); every change answers with the whole layer, which
 * replaces the page's copy. Outlines arrive in scene pixels.
 *
 * app.js calls TerramaskObjects.init(hooks) once with:
 *   api(path, body, method), setStatus(text, isError), draw(), toScreen(x, y),
 *   current() -> {sessionId, predictionId, chosen, reopened} | null, clearCurrent(),
 *   sessionId(), busy(), setBusy(on, text), showReopened(response)
 *
 * Re-open (button or R on the selected object): the server predicts the object's stored
 * prompts again in this tab's session; the answer becomes the current mask, clicks refine
 * it, and Accept then replaces the object (same id, new version; 409 if another tab
 * changed it meanwhile).
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const layer = { revision: 0, classes: [], objects: [], can_undo: false, can_redo: false };
  const ui = { classId: 1, selected: null, hooks: null };

  function classById(id) {
    return layer.classes.find((c) => c.id === id) || { id: id, name: "?", color: "#808080" };
  }

  function formatArea(o) {
    if (o.area_m2 === null || o.area_m2 === undefined) return o.area_px.toLocaleString() + " px";
    if (o.area_m2 >= 1e4) return (o.area_m2 / 1e4).toFixed(2) + " ha";
    return Math.round(o.area_m2).toLocaleString() + " m²";
  }

  function apply(data) {
    layer.revision = data.revision;
    layer.classes = data.classes;
    layer.objects = data.objects;
    layer.can_undo = data.can_undo;
    layer.can_redo = data.can_redo;
    if (!layer.classes.some((c) => c.id === ui.classId) && layer.classes.length) ui.classId = layer.classes[0].id;
    if (ui.selected !== null && !layer.objects.some((o) => o.id === ui.selected)) ui.selected = null;
    render();
    ui.hooks.draw();
  }

  // A change: on 409 (another tab changed the object) reload the layer and say so.
  async function change(path, body, method, done) {
    try {
      const data = await ui.hooks.api(path, body, method);
      apply(data);
      if (done) done(data);
    } catch (err) {
      ui.hooks.setStatus((err.status ? err.status + ": " : "") + err.message, true);
      if (err.status === 409 || err.status === 404) load();
    }
  }

  async function load() {
    try {
      apply(await ui.hooks.api("objects"));
    } catch (err) {
      ui.hooks.setStatus("The object layer could not be loaded: " + err.message, true);
    }
  }

  function render() {
    const classes = $("classes");
    classes.textContent = "";
    layer.classes.forEach((c, k) => {
      const li = document.createElement("li");
      li.className = "choice" + (c.id === ui.classId ? " chosen" : "");
      li.dataset.classId = c.id;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.color;
      li.appendChild(sw);
      li.appendChild(document.createTextNode(c.name + (k < 9 ? " (Alt+" + (k + 1) + ")" : "")));
      li.addEventListener("click", () => chooseClass(c.id));
      classes.appendChild(li);
    });
    const list = $("objects");
    list.textContent = "";
    if (!layer.objects.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No objects yet: segment one, then Accept (Enter).";
      list.appendChild(li);
    }
    layer.objects.forEach((o) => {
      const c = classById(o.class_id);
      const li = document.createElement("li");
      li.className = "choice" + (o.id === ui.selected ? " chosen" : "");
      li.dataset.objectId = o.id;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.color;
      li.appendChild(sw);
      li.appendChild(document.createTextNode("#" + o.id + " " + c.name + " · " + formatArea(o)));
      li.addEventListener("click", () => select(o.id === ui.selected ? null : o.id));
      list.appendChild(li);
    });
    $("object-count").textContent = layer.objects.length ? "(" + layer.objects.length + ")" : "";
    updateButtons();
  }

  function updateButtons() {
    if (!ui.hooks) return;
    const cur = ui.hooks.current();
    $("accept").disabled = !cur;
    $("delete-object").disabled = ui.selected === null;
    $("reclass-object").disabled = ui.selected === null;
    $("reopen-object").disabled = ui.selected === null || ui.hooks.busy();
    $("accept").textContent = cur && cur.reopened ? "Accept (replace #" + cur.reopened.id + ")" : "Accept";
    $("layer-undo").disabled = !layer.can_undo;
    $("layer-redo").disabled = !layer.can_redo;
  }

  function chooseClass(id) {
    ui.classId = id;
    render();
  }

  function select(id) {
    ui.selected = id;
    render();
    ui.hooks.draw();
  }

  function accept() {
    const cur = ui.hooks.current();
    if (!cur) return;
    const body = {
      session_id: cur.sessionId, prediction_id: cur.predictionId, candidate: cur.chosen, class_id: ui.classId,
    };
    if (cur.reopened) {
      body.object_id = cur.reopened.id;
      body.version = cur.reopened.version;
    }
    change("objects", body, "POST", (data) => {
      ui.hooks.clearCurrent();
      ui.hooks.setStatus("Object #" + data.id + (cur.reopened ? " replaced, " : " accepted ") + "as " +
        classById(ui.classId).name + ".");
    });
  }

  async function reopenSelected() {
    const o = selectedObject();
    if (!o || ui.hooks.busy()) return;
    ui.hooks.setBusy(true, "Re-opening object #" + o.id + "…");
    let response;
    try {
      response = await ui.hooks.api("objects/" + o.id + "/reopen", { session_id: ui.hooks.sessionId(), version: o.version });
    } catch (err) {
      ui.hooks.setBusy(false);
      ui.hooks.setStatus((err.status ? err.status + ": " : "") + err.message, true);
      if (err.status === 409 || err.status === 404) load();
      return;
    }
    ui.hooks.setBusy(false);
    chooseClass(o.class_id);
    ui.hooks.showReopened(response);
    ui.hooks.setStatus("Object #" + o.id + " re-opened: click to refine it, Accept replaces it.");
  }

  function selectedObject() {
    return layer.objects.find((o) => o.id === ui.selected) || null;
  }

  function deleteSelected() {
    const o = selectedObject();
    if (!o) return;
    change("objects/" + o.id + "?version=" + o.version, undefined, "DELETE",
      () => ui.hooks.setStatus("Object #" + o.id + " deleted."));
  }

  function reclassSelected() {
    const o = selectedObject();
    if (!o) return;
    change("objects/" + o.id, { class_id: ui.classId, version: o.version }, "PATCH",
      () => ui.hooks.setStatus("Object #" + o.id + " is now " + classById(ui.classId).name + "."));
  }

  function addClass() {
    const name = $("class-name").value.trim();
    if (!name) { ui.hooks.setStatus("Give the class a name.", true); return; }
    change("classes", { name: name, color: $("class-color").value }, "POST", (data) => {
      $("class-name").value = "";
      chooseClass(data.id);
    });
  }

  // Outlines in class colours (screen pixels; the selected object thicker).
  function drawLayer(ctx) {
    layer.objects.forEach((o) => {
      const c = classById(o.class_id);
      ctx.save();
      ctx.strokeStyle = c.color;
      ctx.lineWidth = o.id === ui.selected ? 3.5 : 1.8;
      ctx.beginPath();
      o.outline_px.forEach((ring) => {
        ring.forEach((p, k) => {
          const [sx, sy] = ui.hooks.toScreen(p[0], p[1]);
          if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
        });
        ctx.closePath();
      });
      if (o.id === ui.selected) {
        ctx.fillStyle = c.color + "55";
        ctx.fill("evenodd");
      }
      ctx.stroke();
      ctx.restore();
    });
  }

  // Keys: Enter accept, Delete/Backspace delete the selected object, Alt+1..9 class,
  // Ctrl+Z / Ctrl+Y (or Ctrl+Shift+Z) undo/redo the layer. Returns true when handled.
  function onKey(ev) {
    if (ev.key === "Enter") { accept(); return true; }
    if ((ev.key === "Delete" || ev.key === "Backspace") && ui.selected !== null) { deleteSelected(); return true; }
    if ((ev.key === "r" || ev.key === "R") && !ev.ctrlKey && !ev.metaKey && !ev.altKey && ui.selected !== null) {
      reopenSelected();
      return true;
    }
    if (ev.altKey && /^Digit[1-9]$/.test(ev.code)) {
      const c = layer.classes[Number(ev.code.slice(5)) - 1];
      if (c) chooseClass(c.id);
      return true;
    }
    if ((ev.ctrlKey || ev.metaKey) && (ev.key === "z" || ev.key === "Z")) {
      change(ev.shiftKey ? "objects/redo" : "objects/undo", {}, "POST");
      return true;
    }
    if ((ev.ctrlKey || ev.metaKey) && (ev.key === "y" || ev.key === "Y")) {
      change("objects/redo", {}, "POST");
      return true;
    }
    return false;
  }

  function init(hooks) {
    ui.hooks = hooks;
    $("accept").addEventListener("click", accept);
    $("delete-object").addEventListener("click", deleteSelected);
    $("reclass-object").addEventListener("click", reclassSelected);
    $("reopen-object").addEventListener("click", reopenSelected);
    $("add-class").addEventListener("click", addClass);
    $("layer-undo").addEventListener("click", () => change("objects/undo", {}, "POST"));
    $("layer-redo").addEventListener("click", () => change("objects/redo", {}, "POST"));
    window.addEventListener("focus", load);  // another tab may have changed the shared layer
    load();
  }

  root.TerramaskObjects = { init: init, draw: drawLayer, onKey: onKey, updateButtons: updateButtons, layer: layer,
    apply: apply, classId: () => ui.classId, selected: () => ui.selected };
})(window);
