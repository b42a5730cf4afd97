// The live heatmap page: follows /v1/stream for the area in view and refreshes /v1/heatmap,
// /v1/top and /v1/spaces when it says something changed (polling them once a second while the
// stream is unavailable), draws H3 hexagons on a canvas in Web Mercator, and switches to
// history (at=) with the time slider. No framework, no map tiles: the page draws a graticule,
// the spaces' outlines and a scale bar itself. The selected space's last 24 hours (/v1/series,
// 15-minute buckets on the browser's clock) are a small SVG chart, fetched again once a minute.
"use strict";

const POLL_MS = 1000; // polling, while the stream is unavailable
const QUIET_MS = 5000; // with the stream open, a refresh at least this often all the same
const STREAM_RETRY_MS = 5000; // a stream that failed is tried again after this
const TILE = 256;
const MIN_ZOOM = 2;
const MAX_ZOOM = 20;
// mean H3 hexagon edge length in metres per resolution (h3.average_hexagon_edge_length)
const EDGE_M = [1281256, 483057, 182513, 68979, 26072, 9854, 3725, 1406, 531.4, 200.8, 75.86,
  28.66, 10.83, 4.092, 1.546, 0.5842];
const HEX_MIN_PX = 7; // the finest resolution whose hexagons are at least this wide on screen
// YlOrRd: few devices pale yellow, the busiest cells deep red
const PALETTE = [[255, 255, 178], [254, 204, 92], [253, 141, 60], [240, 59, 32], [189, 0, 38]];

const $ = (id) => document.getElementById(id);
const canvas = $("map");
const ctx = canvas.getContext("2d");
const fmt = new Intl.NumberFormat();

const state = {
  key: null,
  baseRes: null,
  centre: { lat: 0, lng: 0 },
  zoom: 3,
  res: null,
  at: null, // null: live; else ms since epoch of the minute shown
  hexes: [], // {cell, count, path: Path2D (screen), ring: [[lng, lat]]}
  spaces: [],
  top: [],
  maxCount: 0,
  asOf: null,
  seq: 0,
  hover: null,
  timer: null,
  chart: { space: null, at: 0, seq: 0 }, // the space charted, when its series was fetched
  stream: null, // the open stream's AbortController (live mode)
  streamFor: "", // the query the open stream follows
  streamOpen: false,
  lastEventId: null, // sent back as Last-Event-ID when the stream is opened again
};
const CHART_EVERY_MS = 60_000;
const CHART_SPAN_MS = 86_400_000;
const CHART_STEP_MS = 900_000;

// -- projection -----------------------------------------------------------------------------

function project(lat, lng, zoom) {
  const size = TILE * 2 ** zoom;
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [((lng + 180) / 360) * size, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * size];
}

function unproject(x, y, zoom) {
  const size = TILE * 2 ** zoom;
  const lng = (x / size) * 360 - 180;
  const n = Math.PI - (2 * Math.PI * y) / size;
  return [(180 / Math.PI) * Math.atan(Math.sinh(n)), lng];
}

function toScreen(lat, lng) {
  const [cx, cy] = project(state.centre.lat, state.centre.lng, state.zoom);
  const [x, y] = project(lat, lng, state.zoom);
  return [x - cx + canvas.clientWidth / 2, y - cy + canvas.clientHeight / 2];
}

function toLatLng(sx, sy) {
  const [cx, cy] = project(state.centre.lat, state.centre.lng, state.zoom);
  return unproject(cx + sx - canvas.clientWidth / 2, cy + sy - canvas.clientHeight / 2, state.zoom);
}

function metresPerPixel() {
  return (156543.034 * Math.cos((state.centre.lat * Math.PI) / 180)) / 2 ** state.zoom;
}

function viewBbox() {
  const [maxLat, minLng] = toLatLng(0, 0);
  const [minLat, maxLng] = toLatLng(canvas.clientWidth, canvas.clientHeight);
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  return [clamp(minLng, -180, 180), clamp(minLat, -85, 85), clamp(maxLng, -180, 180),
    clamp(maxLat, -85, 85)].map((v) => v.toFixed(5)).join(",");
}

function resForZoom() {
  const mpp = metresPerPixel();
  let res = 0;
  for (let r = 0; r <= state.baseRes; r++) {
    if ((2 * EDGE_M[r]) / mpp >= HEX_MIN_PX) res = r;
  }
  return res;
}

// -- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined) url.searchParams.set(k, v);
  }
  const r = await fetch(url, { headers: { Authorization: `Bearer ${state.key}` } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = body.error || {};
    throw new ApiError(r.status, err.code || String(r.status), err.message || r.statusText);
  }
  return body;
}

// -- drawing --------------------------------------------------------------------------------

function colour(count) {
  const t = state.maxCount <= 1 ? 1 : Math.log1p(count) / Math.log1p(state.maxCount);
  const x = t * (PALETTE.length - 1);
  const i = Math.min(PALETTE.length - 2, Math.floor(x));
  const f = x - i;
  const c = PALETTE[i].map((v, k) => Math.round(v + (PALETTE[i + 1][k] - v) * f));
  return `rgba(${c[0]}, ${c[1]}, ${c[2]}, 0.82)`;
}

function ringPath(ring) {
  const path = new Path2D();
  ring.forEach(([lng, lat], i) => {
    const [x, y] = toScreen(lat, lng);
    if (i === 0) path.moveTo(x, y);
    else path.lineTo(x, y);
  });
  path.closePath();
  return path;
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

function drawGraticule(w, h) {
  const [north, west] = toLatLng(0, 0);
  const [south, east] = toLatLng(w, h);
  const step = niceStep((east - west) / 8);
  ctx.strokeStyle = "#e4e0d6";
  ctx.fillStyle = "#a8a29e";
  ctx.lineWidth = 1;
  ctx.font = "10px system-ui, sans-serif";
  for (let lng = Math.ceil(west / step) * step; lng <= east; lng += step) {
    const [x] = toScreen(0, lng);
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, h);
    ctx.stroke();
    ctx.fillText(`${lng.toFixed(Math.max(0, -Math.floor(Math.log10(step))))}°`, x + 3, h - 4);
  }
  for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
    const [, y] = toScreen(lat, 0);
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(w, y);
    ctx.stroke();
    ctx.fillText(`${lat.toFixed(Math.max(0, -Math.floor(Math.log10(step))))}°`, w - 44, y - 3);
  }
}

function drawScale(w, h) {
  const metres = niceStep(metresPerPixel() * 100);
  const px = metres / metresPerPixel();
  const x = 14;
  const y = h - 22;
  ctx.strokeStyle = "#1d2430";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x, y - 5);
  ctx.lineTo(x, y);
  ctx.lineTo(x + px, y);
  ctx.lineTo(x + px, y - 5);
  ctx.stroke();
  ctx.fillStyle = "#1d2430";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, x + 4, y - 6);
}

function drawSpaces() {
  ctx.lineWidth = 1.5;
  ctx.font = "12px system-ui, sans-serif";
  for (const s of state.spaces) {
    if (!s.polygon) continue;
    const path = new Path2D();
    for (const ring of s.polygon.coordinates) path.addPath(ringPath(ring));
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = "rgba(29, 36, 48, 0.55)";
    ctx.stroke(path);
    ctx.setLineDash([]);
    // a label only where the outline is wide enough to carry it (zoom in for the small ones)
    const outer = s.polygon.coordinates[0].map(([lng, lat]) => toScreen(lat, lng));
    const left = Math.min(...outer.map((p) => p[0]));
    const top = Math.min(...outer.map((p) => p[1]));
    const width = Math.max(...outer.map((p) => p[0])) - left;
    const label = `${s.name || s.space} · ${fmt.format(s.count)}`;
    if (ctx.measureText(label).width > width) continue;
    ctx.fillStyle = "rgba(29, 36, 48, 0.8)";
    ctx.fillText(label, left + 3, top - 4);
  }
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#f6f4ef";
  ctx.fillRect(0, 0, w, h);
  drawGraticule(w, h);
  for (const hex of state.hexes) {
    hex.path = ringPath(hex.ring);
    ctx.fillStyle = colour(hex.count);
    ctx.fill(hex.path);
    ctx.strokeStyle = hex === state.hover ? "#1d2430" : "rgba(255, 255, 255, 0.7)";
    ctx.lineWidth = hex === state.hover ? 2 : 0.75;
    ctx.stroke(hex.path);
  }
  drawSpaces();
  for (const layer of layers) layer(ctx);
  drawScale(w, h);
  document.body.dataset.hexagons = String(state.hexes.length);
}

function renderLegend() {
  const stops = PALETTE.map((c, i) => `rgb(${c}) ${(i / (PALETTE.length - 1)) * 100}%`);
  $("legend").innerHTML =
    `<div>devices per cell (res ${state.res})</div>` +
    `<div class="bar" style="background: linear-gradient(to right, ${stops.join(", ")})"></div>` +
    `<div class="ends"><span>1</span><span>${fmt.format(Math.max(1, state.maxCount))}</span></div>`;
}

function renderTop() {
  $("top-res").textContent = `res ${state.res}, in view`;
  const list = $("top");
  list.replaceChildren(
    ...state.top.map((c) => {
      const li = document.createElement("li");
      li.dataset.cell = c.cell;
      li.dataset.count = String(c.count);
      li.innerHTML = `<span class="cell">${c.cell}</span><span class="count">${fmt.format(c.count)}</span>`;
      li.addEventListener("mouseenter", () => highlight(c.cell));
      li.addEventListener("mouseleave", () => highlight(null));
      li.addEventListener("click", () => centreOn(c.cell));
      return li;
    }),
  );
}

function renderSpaces() {
  const body = $("spaces").tBodies[0];
  body.replaceChildren(
    ...state.spaces.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.space = s.space;
      tr.dataset.count = String(s.count);
      const name = document.createElement("td");
      name.textContent = s.name || s.space;
      name.title = `${s.space} (${s.kind} space)`;
      const count = document.createElement("td");
      count.className = "num";
      count.textContent = fmt.format(s.count);
      tr.append(name, count);
      tr.classList.toggle("selected", s.space === state.chart.space);
      tr.addEventListener("click", () => selectSpace(s.space));
      return tr;
    }),
  );
}

// -- the selected space's last 24 hours ---------------------------------------------------------

function selectSpace(space) {
  state.chart.space = space;
  for (const tr of $("spaces").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.space === space);
  }
  refreshChart(true);
}

async function refreshChart(force = false) {
  const chart = state.chart;
  if (!chart.space && state.spaces.length) chart.space = state.spaces[0].space;
  if (!chart.space || (!force && Date.now() - chart.at < CHART_EVERY_MS)) return;
  chart.at = Date.now();
  const seq = ++chart.seq;
  const to = Date.now();
  const query = { space: chart.space, step: "15m", from: to - CHART_SPAN_MS, to };
  let body;
  try {
    query.tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    body = await api("/v1/series", query).catch((err) => {
      if (err.code !== "bad_tz") throw err;
      query.tz = "UTC"; // a zone the browser knows and the engine does not
      return api("/v1/series", query);
    });
  } catch (err) {
    if (seq === chart.seq) $("chart-title").textContent = `${err.code}: ${err.message}`;
    return;
  }
  if (seq === chart.seq) drawChart(body, query);
}

function svg(name, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawChart(body, query) {
  const points = body.points;
  const W = 300, H = 110, LEFT = 26, RIGHT = 4, TOP = 6, BOTTOM = 16;
  const t0 = points.length ? points[0].t : query.from;
  const t1 = points.length ? points[points.length - 1].t + CHART_STEP_MS : query.to;
  const max = Math.max(1, ...points.map((p) => p.count));
  const x = (t) => LEFT + ((t - t0) / Math.max(1, t1 - t0)) * (W - LEFT - RIGHT);
  const y = (n) => H - BOTTOM - (n / max) * (H - TOP - BOTTOM);
  // a step line: each bucket's count holds from its start to the next bucket's
  const line = points.flatMap((p, i) => {
    const end = i + 1 < points.length ? points[i + 1].t : t1;
    return [`${x(p.t).toFixed(1)},${y(p.count).toFixed(1)}`, `${x(end).toFixed(1)},${y(p.count).toFixed(1)}`];
  });
  const hm = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const chart = $("chart");
  chart.replaceChildren(
    svg("line", { x1: LEFT, y1: y(0), x2: W - RIGHT, y2: y(0), class: "axis" }),
    svg("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: y(0), class: "axis" }),
    svg("text", { x: LEFT - 3, y: TOP + 8, "text-anchor": "end" }, fmt.format(max)),
    svg("text", { x: LEFT - 3, y: y(0), "text-anchor": "end" }, "0"),
    svg("text", { x: LEFT, y: H - 3 }, hm(t0)),
    svg("text", { x: W - RIGHT, y: H - 3, "text-anchor": "end" }, hm(t1)),
    svg("polyline", { points: line.join(" "), class: "series" }),
  );
  const space = state.spaces.find((s) => s.space === body.space);
  $("chart-title").textContent = `${space ? space.name || space.space : body.space} · ${body.tz}`;
  Object.assign(chart.dataset, {
    space: body.space,
    counts: points.map((p) => p.count).join(","),
    starts: points.map((p) => p.t).join(","),
    from: String(query.from),
    to: String(query.to),
    tz: body.tz,
  });
}

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

// -- refreshing -----------------------------------------------------------------------------

async function refresh() {
  if (!state.key || state.baseRes === null) return;
  const seq = ++state.seq;
  const res = resForZoom();
  const bbox = viewBbox();
  const at = state.at === null ? null : String(state.at);
  try {
    const [heat, top, spaces] = await Promise.all([
      api("/v1/heatmap", { bbox, res, format: "geojson", at }),
      api("/v1/top", { n: 10, res, bbox, at }),
      api("/v1/spaces", { geometry: state.spaces.some((s) => s.polygon) ? null : "true", at }),
    ]);
    if (seq !== state.seq) return; // a newer refresh started meanwhile (the view moved)
    state.res = res;
    state.hexes = heat.features.map((f) => ({
      cell: f.properties.cell,
      count: f.properties.count,
      ring: f.geometry.coordinates[0],
    }));
    state.maxCount = Math.max(0, ...state.hexes.map((x) => x.count));
    state.top = top.cells;
    const geometry = new Map(state.spaces.map((s) => [s.space, s.polygon]));
    state.spaces = spaces.spaces.map((s) => ({ ...s, polygon: s.polygon || geometry.get(s.space) }));
    state.asOf = heat.as_of;
    state.hover = state.hexes.find((x) => state.hover && x.cell === state.hover.cell) || null;
    Object.assign(document.body.dataset, {
      res: String(res),
      bbox,
      asOf: String(heat.as_of),
      mode: state.at === null ? "live" : "history",
      refreshes: String(Number(document.body.dataset.refreshes) + 1),
    });
    draw();
    renderLegend();
    renderTop();
    renderSpaces();
    refreshChart();
    const when = new Date(heat.as_of).toLocaleTimeString();
    const devices = state.hexes.reduce((sum, x) => sum + x.count, 0);
    setStatus(
      `${state.at === null ? "live" : "history"} · ${when} · ${fmt.format(state.hexes.length)} ` +
        `cells, ${fmt.format(devices)} devices in view`,
    );
  } catch (err) {
    if (seq !== state.seq) return;
    if (err.status === 401) return askForKey("That key was not accepted.");
    setStatus(`${err.code || "error"}: ${err.message}`, true);
  }
}

async function loop() {
  // one refresh, then the next: soon while polling, after QUIET_MS while the stream is open
  await refresh();
  clearTimeout(state.timer);
  if (state.at === null) state.timer = setTimeout(loop, state.streamOpen ? QUIET_MS : POLL_MS);
}

function schedule() {
  // live: the stream of the view says when to refresh; history: one answer
  clearTimeout(state.timer);
  if (state.at !== null) {
    closeStream();
    state.timer = setTimeout(refresh, 0);
    return;
  }
  openStream();
  state.timer = setTimeout(loop, 0);
}

function changed() {
  // the stream says a count in view changed: refresh now
  if (state.at !== null) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(loop, 0);
}

function closeStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.streamFor = "";
  state.streamOpen = false;
}

function parseEvent(block) {
  const event = {};
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a heartbeat
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    event[name] = name in event ? `${event[name]}\n${value}` : value;
  }
  return event;
}

async function openStream() {
  // Server-Sent Events over fetch (EventSource cannot send the key in a header)
  const params = {
    spaces: state.spaces.map((s) => s.space).join(",") || null,
    bbox: viewBbox(),
    res: resForZoom(),
  };
  const url = new URL("/v1/stream", location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== null) url.searchParams.set(k, v);
  if (state.stream && state.streamFor === url.href) return; // already following this view
  closeStream();
  const ctrl = new AbortController();
  state.stream = ctrl;
  state.streamFor = url.href;
  const headers = { Authorization: `Bearer ${state.key}` };
  if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
  try {
    const r = await fetch(url, { headers, signal: ctrl.signal, cache: "no-store" });
    if (r.status === 401) return askForKey("That key was not accepted.");
    if (!r.ok || !r.body) throw new Error(`stream answered ${r.status}`);
    state.streamOpen = true;
    document.body.dataset.transport = "stream";
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.id) state.lastEventId = event.id;
        if (event.event === "counts") {
          document.body.dataset.streamEvents = String(Number(document.body.dataset.streamEvents || 0) + 1);
          changed();
        } else if (event.event === "error") {
          const err = JSON.parse(event.data || "{}").error || {};
          if (err.code === "unauthenticated") return askForKey("That key was revoked.");
        }
      }
    }
  } catch (err) {
    if (ctrl.signal.aborted) return; // the view moved, or history was chosen
  }
  if (state.stream !== ctrl) return;
  // the stream ended or failed: poll meanwhile, and try it again later
  state.streamOpen = false;
  state.stream = null;
  document.body.dataset.transport = "poll";
  setTimeout(() => state.at === null && state.stream === null && openStream(), STREAM_RETRY_MS);
}

let moveTimer = null;
function viewChanged() {
  draw();
  document.dispatchEvent(new Event("occupancy:view"));
  clearTimeout(moveTimer);
  moveTimer = setTimeout(schedule, 150);
  const c = state.centre;
  history.replaceState(null, "", `#view=${c.lat.toFixed(5)},${c.lng.toFixed(5)},${state.zoom.toFixed(2)}`);
}

// -- interaction ----------------------------------------------------------------------------

function zoomAt(sx, sy, delta) {
  const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, state.zoom + delta));
  const [lat, lng] = toLatLng(sx, sy);
  state.zoom = zoom;
  // keep the point under the cursor where it was
  const [x, y] = toScreen(lat, lng);
  const [clat, clng] = toLatLng(canvas.clientWidth / 2 + (x - sx), canvas.clientHeight / 2 + (y - sy));
  state.centre = { lat: clat, lng: clng };
  viewChanged();
}

function hexAt(sx, sy) {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  for (let i = state.hexes.length - 1; i >= 0; i--) {
    const hex = state.hexes[i];
    if (hex.path && ctx.isPointInPath(hex.path, sx * dpr, sy * dpr)) return hex;
  }
  return null;
}

function highlight(cell) {
  state.hover = state.hexes.find((x) => x.cell === cell) || null;
  for (const li of $("top").children) li.classList.toggle("hover", li.dataset.cell === cell);
  draw();
}

function centreOn(cell) {
  const hex = state.hexes.find((x) => x.cell === cell);
  if (!hex) return;
  const n = hex.ring.length - 1;
  const lng = hex.ring.slice(0, n).reduce((s, p) => s + p[0], 0) / n;
  const lat = hex.ring.slice(0, n).reduce((s, p) => s + p[1], 0) / n;
  state.centre = { lat, lng };
  viewChanged();
}

function bindMap() {
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, centre: project(state.centre.lat, state.centre.lng, state.zoom) };
    canvas.setPointerCapture(e.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    const rect = canvas.getBoundingClientRect();
    if (drag) {
      const [lat, lng] = unproject(drag.centre[0] - (e.clientX - drag.x), drag.centre[1] - (e.clientY - drag.y), state.zoom);
      state.centre = { lat, lng };
      viewChanged();
      return;
    }
    const hex = hexAt(e.clientX - rect.left, e.clientY - rect.top);
    const tip = $("tooltip");
    if (hex) {
      tip.hidden = false;
      tip.textContent = `${hex.cell} · ${fmt.format(hex.count)} device${hex.count === 1 ? "" : "s"}`;
      tip.style.left = `${e.clientX - rect.left + 12}px`;
      tip.style.top = `${e.clientY - rect.top + 12}px`;
    } else {
      tip.hidden = true;
    }
    if (hex !== state.hover) highlight(hex ? hex.cell : null);
  });
  const end = () => {
    drag = null;
    canvas.classList.remove("dragging");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("pointerleave", () => ($("tooltip").hidden = true));
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(e.clientX - rect.left, e.clientY - rect.top, -e.deltaY * 0.002);
  }, { passive: false });
  canvas.addEventListener("dblclick", (e) => {
    const rect = canvas.getBoundingClientRect();
    zoomAt(e.clientX - rect.left, e.clientY - rect.top, 1);
  });
  $("zoom-in").addEventListener("click", () => zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 1));
  $("zoom-out").addEventListener("click", () => zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, -1));
  window.addEventListener("resize", viewChanged);
}

function bindTime() {
  const slider = $("time");
  const label = $("time-label");
  const show = () => {
    const minutes = Number(slider.value);
    if (minutes === 0) {
      label.textContent = "live";
      return null;
    }
    const at = Math.floor(Date.now() / 60000) * 60000 + minutes * 60000;
    label.textContent = `${new Date(at).toLocaleString()} (${-minutes} min ago)`;
    return at;
  };
  slider.addEventListener("input", show);
  slider.addEventListener("change", () => {
    state.at = show();
    $("live").disabled = state.at === null;
    schedule();
  });
  $("live").addEventListener("click", () => {
    slider.value = "0";
    slider.dispatchEvent(new Event("change"));
  });
}

// -- other modules (paths.js): layers drawn over the map, and what they need of it -----------

const layers = []; // functions of the canvas context, called after the spaces are drawn
window.occupancy = { state, api, viewBbox, toScreen, draw, layers };

// -- start ----------------------------------------------------------------------------------

function fitTo(points) {
  if (!points.length) return false;
  const lats = points.map((p) => p[1]);
  const lngs = points.map((p) => p[0]);
  const [minLat, maxLat, minLng, maxLng] = [Math.min(...lats), Math.max(...lats), Math.min(...lngs), Math.max(...lngs)];
  state.centre = { lat: (minLat + maxLat) / 2, lng: (minLng + maxLng) / 2 };
  const [x0, y0] = project(maxLat, minLng, 0);
  const [x1, y1] = project(minLat, maxLng, 0);
  const span = Math.max((x1 - x0) / canvas.clientWidth, (y1 - y0) / canvas.clientHeight, 1e-9);
  state.zoom = Math.max(MIN_ZOOM, Math.min(16, Math.log2(0.9 / span)));
  return true;
}

async function initialView() {
  const view = new URLSearchParams(location.hash.slice(1)).get("view");
  if (view) {
    const [lat, lng, zoom] = view.split(",").map(Number);
    if ([lat, lng, zoom].every(Number.isFinite)) {
      state.centre = { lat, lng };
      state.zoom = zoom;
      return;
    }
  }
  const spaces = await api("/v1/spaces", { geometry: "true" });
  state.spaces = spaces.spaces;
  const corners = spaces.spaces.filter((s) => s.polygon).flatMap((s) => s.polygon.coordinates[0]);
  if (fitTo(corners)) return;
  // no spaces: find where the devices are from a coarse world heatmap
  const world = await api("/v1/heatmap", { bbox: "-180,-85,180,85", res: Math.min(3, state.baseRes), format: "geojson" });
  fitTo(world.features.flatMap((f) => f.geometry.coordinates[0]));
}

async function start() {
  try {
    state.baseRes = (await api("/v1/top", { n: 1 })).res;
    await initialView();
  } catch (err) {
    if (err.status === 401) return askForKey("That key was not accepted.");
    setStatus(`${err.code || "error"}: ${err.message}`, true);
    setTimeout(start, 2000);
    return;
  }
  viewChanged();
  schedule();
}

function askForKey(message = "") {
  sessionStorage.removeItem("occupancy.key");
  state.key = null;
  $("login-error").textContent = message;
  setStatus("an API key is needed", true);
  $("login").showModal();
}

function main() {
  // a key in the URL fragment (never sent to the server) is kept for this tab and removed from
  // the address bar, so a shared screenshot or link does not carry it
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("key");
  if (fromUrl) {
    sessionStorage.setItem("occupancy.key", fromUrl);
    params.delete("key");
    history.replaceState(null, "", params.toString() ? `#${params}` : location.pathname);
  }
  state.key = sessionStorage.getItem("occupancy.key");
  bindMap();
  bindTime();
  $("login-form").addEventListener("submit", () => {
    state.key = $("key").value.trim();
    sessionStorage.setItem("occupancy.key", state.key);
    start();
  });
  $("logout").addEventListener("click", () => askForKey());
  if (state.key) start();
  else askForKey();
}

main();
