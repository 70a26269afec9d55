/* The bodies the page sends to POST /predict for a click or a box (no DOM here, so
 * node can test them: tests/web/test_requests_js.py).
 *
 * `current` is the object being segmented ({points, labels, box, predictionId, chosen},
 * scene pixels) or null. `refine` is the "Refine with the chosen mask" box:
 *   ticked:   the new point refines the current object: only the new point travels,
 *             with refine_from / refine_candidate; `fallback` repeats every point for a
 *             server that no longer holds the earlier prediction (404);
 *   unticked: the click starts a new object: only the new prompt travels.
 */
(function (root) {
  "use strict";

  function pointsOf(points, labels) {
    return points.map((p, k) => ({ x: p[0], y: p[1], label: labels[k] }));
  }

  function full(points, labels, box) {
    return { points: pointsOf(points, labels), boxes: box ? [box] : [], frame: "pixel" };
  }

  // A click at scene pixel (x, y) with label 1 (object) or 0 (background).
  function clickRequest(current, x, y, label, refine) {
    if (!current || !refine) return { body: full([[x, y]], [label], null), fallback: null };
    return {
      body: {
        points: [{ x: x, y: y, label: label }],
        frame: "pixel",
        refine_from: current.predictionId,
        refine_candidate: current.chosen,
      },
      fallback: full(current.points.concat([[x, y]]), current.labels.concat([label]), current.box),
    };
  }

  // A dragged box [x0, y0, x1, y1]: with refine, the current object's points stay.
  function boxRequest(current, box, refine) {
    if (!current || !refine) return { body: full([], [], box), fallback: null };
    return { body: full(current.points, current.labels, box), fallback: null };
  }

  const api = { clickRequest: clickRequest, boxRequest: boxRequest };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.TerramaskRequests = api;
})(typeof window !== "undefined" ? window : this);
