/* The scene picker: which scene, bands and model this page shows, and uploads.
 *
 * A multi-scene server (terramask serve DIR_OR_FILES..., terramask/web/server.py) serves
 * each view at "scenes/{scene}/{bands}/{model}/" (bands "4-3-2" or "default"; the first
 * scene also at the root), so switching is a navigation: this page's relative URLs then
 * reach the chosen view, and each scene keeps its object layer on the server. A server of
 * one scene (create_app) has no "scenes" route: the section stays hidden.
 *
 * app.js calls TerramaskScenes.init({api, setStatus}, scene) once the scene is known.
 */
(function (root) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const VIEW = /\/scenes\/([^/]+)\/([^/]+)\/([^/]+)\/$/;

  // This page's view from its URL, and the relative path back to the server's root.
  function here() {
    const m = location.pathname.match(VIEW);
    if (!m) return { scene: null, bands: "default", model: "default", root: "" };
    return { scene: decodeURIComponent(m[1]), bands: m[2], model: m[3], root: "../../../../" };
  }

  function viewUrl(view, scene, bands, model) {
    return view.root + "scenes/" + encodeURIComponent(scene) + "/" + bands + "/" + model + "/";
  }

  // "4, 3, 2" -> "4-3-2" (1 or 3 positive band numbers, at most `count`), else null.
  function bandsSegment(text, count) {
    const parts = text.split(/[\s,;-]+/).filter((p) => p.length);
    if (parts.length !== 1 && parts.length !== 3) return null;
    const numbers = parts.map(Number);
    if (numbers.some((n) => !Number.isInteger(n) || n < 1 || n > count)) return null;
    return numbers.join("-");
  }

  function option(select, value, text, selected) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    o.selected = selected;
    select.appendChild(o);
  }

  async function upload(view, listing, hooks) {
    const file = $("upload-file").files[0];
    if (!file) return;
    const limit = listing.max_upload_mb * 1e6;
    if (file.size > limit) {
      hooks.setStatus(file.name + " is larger than this server's upload limit of " + listing.max_upload_mb + " MB.", true);
      return;
    }
    const room = listing.upload_room_mb;  // null: no total quota
    if (room !== null && room !== undefined && file.size > room * 1e6) {
      hooks.setStatus(file.name + " does not fit: the server's upload folder has " + room.toFixed(1) +
        " MB left of its quota (terramask serve --upload-quota-mb).", true);
      return;
    }
    hooks.setStatus("Uploading " + file.name + "…");
    let response, data = null;
    try {
      response = await fetch(view.root + "scenes?name=" + encodeURIComponent(file.name), {
        method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
      });
      try { data = await response.json(); } catch (err) { data = null; }
    } catch (err) {
      hooks.setStatus("The upload did not reach the server (" + err.message + ").", true);
      return;
    }
    if (!response.ok) {
      hooks.setStatus(response.status + ": " + (data && data.detail ? data.detail : response.statusText), true);
      return;
    }
    location.href = view.root + data.url;
  }

  async function init(hooks, scene) {
    const view = here();
    let listing;
    try {
      listing = await hooks.api(view.root + "scenes");
    } catch (err) {
      return;  // a one-scene app: no picker
    }
    const current = {
      scene: view.scene || listing.default.scene,
      bands: view.scene ? view.bands : listing.default.bands,
      model: view.model === "default" ? listing.default.model : view.model,
    };
    $("scene-section").hidden = false;
    const picker = $("scene-picker");
    picker.textContent = "";
    listing.scenes.forEach((s) => option(picker, s.id, s.name + (s.uploaded ? " (uploaded)" : ""), s.id === current.scene));
    picker.addEventListener("change", () => { location.href = viewUrl(view, picker.value, "default", current.model); });

    const models = $("model-picker");
    models.textContent = "";
    listing.models.forEach((m) => option(models, m, m, m === current.model));
    models.addEventListener("change", () => { location.href = viewUrl(view, current.scene, current.bands, models.value); });

    $("bands").value = scene.bands.join(",");
    $("bands-count").textContent = "of " + scene.count;
    const applyBands = () => {
      const segment = bandsSegment($("bands").value, scene.count);
      if (!segment) {
        hooks.setStatus("Bands: give 1 or 3 band numbers between 1 and " + scene.count + ", e.g. 4,3,2.", true);
        return;
      }
      location.href = viewUrl(view, current.scene, segment, current.model);
    };
    $("apply-bands").addEventListener("click", applyBands);
    $("bands").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); applyBands(); } });

    $("upload-row").hidden = !(listing.max_upload_mb > 0);
    $("upload-limit").textContent = "≤ " + listing.max_upload_mb + " MB";
    $("upload-file").addEventListener("change", () => upload(view, listing, hooks));
  }

  const api = { init: init, bandsSegment: bandsSegment, here: here };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.TerramaskScenes = api;
})(typeof window !== "undefined" ? window : this);
