// occupancy live page: paths. With an admin key, the "paths" control draws over the heatmap the
// paths of the last hour of the devices seen in the area in view (GET /v1/history/paths,
// format=geojson: a LineString per device, named by its pseudonym only), fetched again when the
// view moves and every minute. Loaded after app.js, whose map it draws on (window.occupancy).
"use strict";

(() => {
  const { state, api, viewBbox, toScreen, draw, layers } = window.occupancy;
  const SPAN_MS = 3_600_000; // the last hour
  const LIMIT = 500; // paths at most (the answer says when there were more)
  const MOVED_MS = 400; // a view that stopped moving this long is fetched for
  const EVERY_MS = 60_000;
  const button = document.getElementById("paths");
  const paths = { on: false, features: [], seq: 0, moved: null, timer: null };

  function mark(query, body, error) {
    const d = document.body.dataset;
    d.paths = paths.on ? String(paths.features.length) : "";
    d.pathsQuery = query ? JSON.stringify(query) : "";
    d.pathsTruncated = body ? String(body.truncated) : "";
    d.pathsError = error || "";
    button.setAttribute("aria-pressed", String(paths.on));
    button.classList.toggle("error", Boolean(error));
    button.title = error || (paths.on
      ? `${paths.features.length} paths of the last hour in view${body && body.truncated ? " (the first " + LIMIT + ")" : ""}`
      : "Paths of the last hour in view (an admin key)");
  }

  function drawPaths(ctx) {
    if (!paths.on) return;
    ctx.save();
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    ctx.strokeStyle = "rgba(29, 78, 216, 0.7)";
    for (const f of paths.features) {
      ctx.beginPath();
      f.geometry.coordinates.forEach(([lng, lat], i) => {
        const [x, y] = toScreen(lat, lng);
        if (i) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
      });
      ctx.stroke();
    }
    ctx.restore();
  }

  async function fetchPaths() {
    clearTimeout(paths.timer);
    if (!paths.on || !state.key) return;
    const seq = ++paths.seq;
    const to = Date.now();
    const query = { format: "geojson", bbox: viewBbox(), from: to - SPAN_MS, to, limit: LIMIT };
    try {
      const body = await api("/v1/history/paths", query);
      if (seq !== paths.seq || !paths.on) return;
      paths.features = body.features;
      mark(query, body, "");
    } catch (err) {
      if (seq !== paths.seq || !paths.on) return;
      paths.features = [];
      const message = err.status === 403
        ? "paths need an admin key (change key)"
        : `paths: ${err.code || "error"}: ${err.message}`;
      mark(query, null, message);
    }
    draw();
    paths.timer = setTimeout(fetchPaths, EVERY_MS);
  }

  button.addEventListener("click", () => {
    paths.on = !paths.on;
    paths.seq++; // an answer on its way is for the state before
    paths.features = [];
    clearTimeout(paths.timer);
    mark(null, null, "");
    draw();
    fetchPaths();
  });

  document.addEventListener("occupancy:view", () => {
    if (!paths.on) return;
    clearTimeout(paths.moved);
    paths.moved = setTimeout(fetchPaths, MOVED_MS);
  });

  // another key (the login form): fetched again with it
  document.getElementById("login-form").addEventListener("submit", () => {
    if (paths.on) setTimeout(fetchPaths, 0);
  });

  layers.push(drawPaths);
  mark(null, null, "");
})();
