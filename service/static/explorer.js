// Atomizer explorer: plain JavaScript, no build step, nothing loaded from outside this service.
// Flow: GET v1/model (asks for the API key on 401) -> GET v1/bank/map and report/stats.json ->
// the input widget for the model's modality -> POST v1/atomize -> components, composition,
// neighbours and the map, where the query is placed by the bank's own stored projection.
"use strict";

const ROLE_COLOURS = { electron: "#0072B2", proton: "#D55E00", neutron: "#999999" };
const ROLE_TEXT = {
  electron: "the shell: sets the atom's radius",
  proton: "in the nucleus: positive charge, sets the position",
  neutron: "in the nucleus: no charge, sets the position",
};
// Okabe-Ito first (colour-blind safe), then two more for ten-class models.
const LABEL_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000",
  "#882255", "#999999"];
const KEY_STORE = "atomizer.apiKey";
const NEIGHBORS = 8;

const state = { model: null, map: null, stats: null, input: null, result: null, requested: null, rank: "distance" };
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------- requests

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const withAlpha = (colour, alpha) => colour + Math.round(255 * alpha).toString(16).padStart(2, "0");
const article = (word) => (/^[aeiou]/i.test(word) ? "an" : "a");
const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const labelColour = (label) => {
  const names = state.map ? state.map.label_names : [];
  const i = names.indexOf(label);
  return LABEL_COLOURS[(i < 0 ? names.length : i) % LABEL_COLOURS.length];
};

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.hidden = !text;
  status.classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------- start

async function start() {
  try {
    state.model = await api("v1/model");
  } catch (error) {
    if (error.status === 401) return askForKey(sessionStorage.getItem(KEY_STORE) ? error.message : "");
    return setStatus(`Cannot load the model: ${error.message}`, true);
  }
  $("key-panel").hidden = true;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
  const map = await api("v1/bank/map").catch((error) => {
    setStatus(`Cannot load the bank map: ${error.message}`, true);
    return null;
  });
  state.map = map;
  state.stats = map && map.stats; // null for a bundle exported without a report
  renderModelCard();
  setupInput();
  $("main").hidden = false;
  if (!map) return;
  setStatus("");
  $("results").hidden = false; // the map first; the other panels once there is an answer
  drawMap();
  if (state.model.modality === "text") runText();
}

function askForKey(message) {
  setStatus("");
  $("key-panel").hidden = false;
  $("key-error").textContent = message;
  $("key-input").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
  $("key-input").value = "";
  start();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  location.reload();
});

// ---------------------------------------------------------------------------------- model card

function precision(modelFile) {
  if (/int8/.test(modelFile)) return "int8";
  if (/fp16/.test(modelFile)) return "fp16";
  return "fp32";
}

function renderModelCard() {
  const m = state.model;
  const metrics = m.training.metrics || {};
  const facts = [
    ["name", m.name], ["version", m.version], ["modality", m.modality],
    ["input", m.modality === "text" ? `up to ${m.input.max_components} tokens`
      : imageShape() ? `${imageShape().join(" × ")} image, ${patchShape().join(" × ")} patches`
      : `${m.input.max_components} components × ${m.input.component_dim}`],
    ["trained on", `${m.training.dataset}, ${m.training.epochs} epoch${m.training.epochs === 1 ? "" : "s"}, seed ${m.training.seed}`],
  ];
  for (const [key, name] of [["test_accuracy", "test accuracy"], ["knn_accuracy", "kNN accuracy"],
    ["best_val_accuracy", "best val. accuracy"]]) {
    if (typeof metrics[key] === "number") facts.push([name, metrics[key].toFixed(3)]);
  }
  facts.push(["labels", m.label_names.join(", ")], ["embedding", `${m.embedding_dim} dimensions`],
    ["potential", `${m.potential.kind}, λ = ${m.potential.weight}`],
    ["device", `${m.runtime.device} (${m.runtime.provider.replace("ExecutionProvider", "")}), ${precision(m.runtime.model_file)}`],
    ["bank", `${m.bank.atoms.toLocaleString("en")} atoms, ${m.bank.search} search`]);
  $("model-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]));
  document.title = `${m.name} · Atomizer explorer`;

  const shares = state.stats ? state.stats.role_shares : null;
  $("role-legend").replaceChildren(...m.role_names.map((role, i) => el("li", {},
    el("span", { class: "swatch", style: `background:${ROLE_COLOURS[role]}` }),
    el("span", { text: `${role}${shares ? ` (${(100 * shares[i]).toFixed(0)}% of components)` : ""}: ${ROLE_TEXT[role] || ""}` }))));

  const tops = state.stats && state.stats.top_tokens;
  const box = $("role-tokens");
  box.replaceChildren();
  if (tops) {
    box.append(el("h3", { text: "Most characteristic tokens" }),
      el("p", { class: "hint", text: `by lift over the role's average share, seen at least ${state.stats.min_token_count} times (training report)` }));
    for (const role of m.role_names) {
      const line = el("p", {}, el("span", { class: "swatch", style: `background:${ROLE_COLOURS[role]}` }), ` ${role}: `);
      for (const t of (tops[role] || []).slice(0, 8)) {
        line.append(el("span", { class: "tok", title: `lift ${t.lift.toFixed(2)}, ${t.count} times`, text: t.token }));
      }
      box.append(line);
    }
  }
}

// ---------------------------------------------------------------------------------- input

const imageShape = () => (state.model.input.preprocess || {}).image_shape;
const patchShape = () => (state.model.input.preprocess || {}).patch_shape;

function setupInput() {
  const modality = state.model.modality;
  $("text-form").hidden = modality !== "text";
  $("pad-form").hidden = !(modality === "numeric" && imageShape());
  $("numbers-form").hidden = !(modality === "numeric" && !imageShape());
  if (modality === "numeric" && imageShape()) setupPad();
}

$("text-form").addEventListener("submit", (event) => { event.preventDefault(); runText(); });
$("text-input").addEventListener("keydown", (event) => { // Enter atomizes; Shift+Enter starts a new line
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); runText(); }
});
$("numbers-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const rows = $("numbers-input").value.trim().split(/\n+/).map((line) => line.trim().split(/[\s,]+/).filter(Boolean).map(Number));
  const value = rows.every((row) => row.length === 1) ? rows.map((row) => row[0]) : rows;
  atomize(value);
});
for (const radio of document.querySelectorAll("input[name=rank]")) {
  radio.addEventListener("change", () => { state.rank = radio.value; if (state.input !== null) atomize(state.input); });
}

function runText() {
  const text = $("text-input").value.trim();
  if (text) atomize(text);
}

async function atomize(value) {
  $("input-error").textContent = "";
  try {
    const body = JSON.stringify({ inputs: [value], neighbors: NEIGHBORS, rank_by: state.rank,
      include: ["embedding", "composition", "components", "neighbors"] });
    const response = await api("v1/atomize", { method: "POST", body });
    const result = response.results[0];
    const ids = result.neighbors.map((n) => n.id).join(",");
    const requested = ids ? (await api(`v1/bank/map?limit=0&ids=${encodeURIComponent(ids)}`)).requested : null;
    state.input = value;
    state.result = result;
    state.requested = requested;
    renderResult();
  } catch (error) {
    if (error.status === 401) return askForKey(error.message);
    $("input-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------------------------- drawing pad

const pad = { width: 0, height: 0, values: null, drawing: false, timer: null };

function setupPad() {
  const [height, width] = imageShape();
  Object.assign(pad, { width, height, values: new Float32Array(width * height) });
  const canvas = $("pad");
  canvas.width = width;
  canvas.height = height;
  $("pad-size").textContent = `${height} × ${width}`;
  const overlay = $("pad-overlay");
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const brush = Math.max(0.75, width / 16); // in pixels of the model's image
  const paint = (event) => {
    const box = canvas.getBoundingClientRect();
    const cx = ((event.clientX - box.left) / box.width) * width;
    const cy = ((event.clientY - box.top) / box.height) * height;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        const ink = Math.max(0, 1 - d / (brush + 0.5));
        pad.values[y * width + x] = Math.min(1, pad.values[y * width + x] + ink * 0.6);
      }
    }
    drawPad();
  };
  canvas.addEventListener("pointerdown", (event) => { pad.drawing = true; canvas.setPointerCapture(event.pointerId); paint(event); });
  canvas.addEventListener("pointermove", (event) => { if (pad.drawing) paint(event); });
  const finish = () => {
    if (!pad.drawing) return;
    pad.drawing = false;
    clearTimeout(pad.timer);
    pad.timer = setTimeout(runPad, 150);
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  $("pad-clear").addEventListener("click", () => { pad.values.fill(0); drawPad(); $("pad-overlay").replaceChildren(); });
  $("pad-run").addEventListener("click", runPad);
  $("pad-overlay-toggle").addEventListener("change", () => { $("pad-overlay").style.opacity = $("pad-overlay-toggle").checked ? 1 : 0; });
  drawPad();
}

function drawPad() {
  const canvas = $("pad");
  const context = canvas.getContext("2d");
  const image = context.createImageData(pad.width, pad.height);
  pad.values.forEach((v, i) => {
    const shade = Math.round(255 * (1 - v));
    image.data.set([shade, shade, shade, 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
}

function runPad() {
  const [low, high] = (state.model.input.preprocess || {}).value_range || [0, 255];
  atomize(Array.from(pad.values, (v) => low + v * (high - low)));
}

// ---------------------------------------------------------------------------------- results

function renderResult() {
  for (const id of ["components-panel", "composition-panel", "neighbors-panel"]) $(id).hidden = false;
  renderComponents();
  renderComposition();
  renderNeighbors();
  drawMap();
}

function probabilityRows(probabilities) {
  return el("div", { class: "probs" }, ...Object.entries(probabilities).flatMap(([role, p]) => [
    el("span", { text: role }),
    el("span", {}, el("span", { class: "bar", style: `--c:${ROLE_COLOURS[role]};width:${(100 * p).toFixed(1)}%;display:block` })),
    el("span", { text: p.toFixed(3) }),
  ]));
}

function showDetail(component) {
  const what = component.token !== undefined ? `“${component.token}”` : `patch ${component.index}`;
  $("component-detail").replaceChildren(el("div", { text: `${what} is ${article(component.role)} ${component.role}` }), probabilityRows(component.probabilities));
}

function renderComponents() {
  const components = state.result.components;
  const box = $("components");
  box.replaceChildren();
  $("component-detail").replaceChildren();
  const overlay = $("pad-overlay");
  overlay.replaceChildren();
  if (imageShape() && state.model.modality === "numeric") {
    const [, width] = imageShape();
    const [ph, pw] = patchShape();
    const columns = width / pw;
    components.forEach((c) => {
      const x = (c.index % columns) * pw;
      const y = Math.floor(c.index / columns) * ph;
      const rect = svgEl("rect", { x, y, width: pw, height: ph, fill: ROLE_COLOURS[c.role], "fill-opacity": 0.2,
        stroke: ROLE_COLOURS[c.role], "stroke-width": 0.08, tabindex: 0, class: "patch", "data-role": c.role,
        "aria-label": `patch ${c.index}: ${c.role}` });
      rect.append(svgEl("title", {}, `patch ${c.index}: ${c.role}`));
      rect.addEventListener("mouseenter", () => showDetail(c));
      rect.addEventListener("focus", () => showDetail(c));
      overlay.append(rect);
    });
    const counts = {};
    components.forEach((c) => { counts[c.role] = (counts[c.role] || 0) + 1; });
    box.append(el("p", { class: "hint", text: `${components.length} patches, shown on the drawing: ` +
      Object.entries(counts).map(([role, n]) => `${n} ${role}${n === 1 ? "" : "s"}`).join(", ") }));
    return;
  }
  for (const c of components) {
    const label = c.token !== undefined ? c.token : `#${c.index}`;
    const chip = el("span", { class: "component", tabindex: 0, "data-role": c.role, style: `--c:${ROLE_COLOURS[c.role]}`,
      "aria-label": `${label}: ${c.role}` }, el("span", { text: label }), el("span", { class: "role", text: c.role }));
    chip.addEventListener("mouseenter", () => showDetail(c));
    chip.addEventListener("focus", () => showDetail(c));
    box.append(chip);
  }
  if (components.length) showDetail(components[0]);
}

function renderComposition() {
  const c = state.result.composition;
  const n = state.result.components.length || 1;
  const [rMin, rMax] = state.model.radius_range;
  const svg = $("composition-chart");
  svg.replaceChildren();
  const width = svg.clientWidth || 420;
  svg.setAttribute("viewBox", `0 0 ${width} 205`);
  svg.setAttribute("aria-label", `electrons ${fmt(c.electrons, 2)}, protons ${fmt(c.protons, 2)}, neutrons ${fmt(c.neutrons, 2)}, ` +
    `mass ${fmt(c.mass, 2)}, charge ${fmt(c.charge, 3)}, radius ${fmt(c.radius, 3)}`);
  const left = 90, right = width - 70, barWidth = right - left;
  const rows = [["electrons", c.electrons, ROLE_COLOURS.electron], ["protons", c.protons, ROLE_COLOURS.proton],
    ["neutrons", c.neutrons, ROLE_COLOURS.neutron]];
  rows.forEach(([name, value, colour], i) => {
    const y = 8 + i * 24;
    svg.append(svgEl("text", { x: 0, y: y + 13 }, name),
      svgEl("rect", { x: left, y, width: barWidth, height: 17, fill: "#eef1f5" }),
      svgEl("rect", { x: left, y, width: Math.max(1, (barWidth * value) / n), height: 17, fill: colour, class: "comp-bar", "data-name": name }),
      svgEl("text", { x: right + 6, y: y + 13 }, fmt(value, 2)));
  });
  svg.append(svgEl("text", { x: left, y: 92, class: "muted" }, `of ${n} components`));
  // mass as a number; charge on a -1..1 axis; radius between the model's bounds
  svg.append(svgEl("text", { x: 0, y: 118 }, "mass"), svgEl("text", { x: left, y: 118 }, `${fmt(c.mass, 2)} (protons + neutrons)`));
  const gauge = (y, name, value, low, high, labelText) => {
    const t = Math.min(1, Math.max(0, (value - low) / (high - low || 1)));
    svg.append(svgEl("text", { x: 0, y: y + 4 }, name),
      svgEl("line", { x1: left, x2: right, y1: y, y2: y, stroke: "#9aa3b3", "stroke-width": 2 }),
      svgEl("text", { x: left, y: y + 16, class: "muted" }, String(low)),
      svgEl("text", { x: right, y: y + 16, class: "muted", "text-anchor": "end" }, String(high)),
      svgEl("circle", { cx: left + t * barWidth, cy: y, r: 6, fill: "#1d2330" }),
      svgEl("text", { x: right + 6, y: y + 4 }, labelText));
  };
  gauge(144, "charge", c.charge, -1, 1, fmt(c.charge, 3));
  gauge(176, "radius", c.radius, rMin, rMax, fmt(c.radius, 3));
}

function storedText(neighbor) { // what a bank built by `atomize index` stored with the atom
  const metadata = neighbor.metadata;
  if (!metadata) return null;
  if (typeof metadata !== "object") return String(metadata);
  const { text, ...rest } = metadata;
  const others = Object.keys(rest).length ? JSON.stringify(rest) : "";
  return text !== undefined ? [String(text), others].filter(Boolean).join(" ") : others || null;
}

function renderNeighbors() {
  const neighbors = state.result.neighbors;
  const anyStored = neighbors.some((n) => storedText(n) !== null); // bundle banks store no text; user banks may
  $("stored-header").hidden = !anyStored;
  $("neighbors").tBodies[0].replaceChildren(...neighbors.map((n, i) => el("tr", {},
    el("td", { text: i + 1 }), el("td", { text: n.id }),
    el("td", {}, el("span", { class: "swatch", style: `background:${labelColour(n.label)}` }), ` ${n.label ?? "–"}`),
    el("td", { class: "num", text: fmt(n.distance, 4) }), el("td", { class: "num", text: fmt(n.energy, 4) }),
    ...(anyStored ? [el("td", { class: "stored", text: storedText(n) ?? "–" })] : []))));
}

// ---------------------------------------------------------------------------------- map

function project(embedding) {
  const { mean, axes } = state.map.projection;
  return axes.map((axis) => axis.reduce((sum, a, k) => sum + a * (embedding[k] - mean[k]), 0));
}

const mapView = { points: [], toScreen: null };

function drawMap() {
  const map = state.map;
  const canvas = $("map");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.lineWidth = 1;
  context.clearRect(0, 0, width, height);
  const atoms = map.atoms;
  const query = state.result ? project(state.result.embedding) : null;
  const zoomed = Boolean(query && state.requested && $("map-zoom").checked);
  // Zoomed: framed on the input and its neighbours (atoms outside the frame are cut off).
  const xs = zoomed ? state.requested.x.concat([query[0]]) : atoms.x.concat(query ? [query[0]] : []);
  const ys = zoomed ? state.requested.y.concat([query[1]]) : atoms.y.concat(query ? [query[1]] : []);
  // Framed on the nuclei, not on the shells: with radii larger than the spread of the atoms
  // (a barely trained model) the shells would shrink every nucleus into one dot.
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 1e-6);
  const margin = zoomed ? 0.6 * span : 0.06 * span;
  const [x0, x1, y0, y1] = [Math.min(...xs) - margin, Math.max(...xs) + margin, Math.min(...ys) - margin, Math.max(...ys) + margin];
  const scale = Math.min((width - 20) / (x1 - x0 || 1), (height - 20) / (y1 - y0 || 1)); // equal aspect: circles stay round
  const ox = (width - scale * (x1 - x0)) / 2, oy = (height - scale * (y1 - y0)) / 2;
  const toScreen = (x, y) => [ox + (x - x0) * scale, height - (oy + (y - y0) * scale)];
  mapView.toScreen = toScreen;
  mapView.points = [];
  // How much of the canvas the discs would cover: a crowded map draws thin outlines only, or
  // thousands of translucent discs add up to one flat blob.
  const coverage = atoms.radius.reduce((sum, r) => sum + Math.PI * (r * scale) ** 2, 0) / (width * height);
  const fillAlpha = coverage > 1 ? 0 : 0.08, strokeAlpha = Math.min(0.4, Math.max(0.06, 0.6 / Math.max(coverage, 1)));
  let drawn = 0;
  context.save();
  context.beginPath();
  context.rect(0, 0, width, height);
  context.clip();
  for (let i = 0; i < atoms.x.length; i++) {
    const [sx, sy] = toScreen(atoms.x[i], atoms.y[i]);
    if (sx < -50 || sy < -50 || sx > width + 50 || sy > height + 50) continue; // outside a zoomed frame
    const colour = labelColour(atoms.label[i]);
    context.beginPath();
    context.arc(sx, sy, Math.max(1.5, atoms.radius[i] * scale), 0, 2 * Math.PI);
    if (fillAlpha) { context.fillStyle = withAlpha(colour, fillAlpha); context.fill(); }
    context.strokeStyle = withAlpha(colour, strokeAlpha);
    context.stroke();
    mapView.points.push([sx, sy, `atom ${atoms.id[i]} · ${atoms.label[i]}`]);
    drawn++;
  }
  for (let i = 0; i < atoms.x.length; i++) { // the nuclei on top of every shell
    const [sx, sy] = toScreen(atoms.x[i], atoms.y[i]);
    context.beginPath();
    context.arc(sx, sy, 2.2, 0, 2 * Math.PI);
    context.fillStyle = labelColour(atoms.label[i]);
    context.fill();
  }
  let neighboursDrawn = 0;
  if (query) {
    const [qx, qy] = toScreen(query[0], query[1]);
    const requested = state.requested;
    const rows = requested ? requested.id.map((id, i) => i) : [];
    context.lineWidth = 1;
    for (const i of rows) { // lines first, so the atoms sit on top of them
      const [sx, sy] = toScreen(requested.x[i], requested.y[i]);
      context.beginPath(); context.moveTo(qx, qy); context.lineTo(sx, sy);
      context.strokeStyle = "#1d233099"; context.stroke();
    }
    for (const i of rows) {
      const [sx, sy] = toScreen(requested.x[i], requested.y[i]);
      const colour = labelColour(requested.label[i]);
      context.beginPath();
      context.arc(sx, sy, Math.max(4, requested.radius[i] * scale), 0, 2 * Math.PI);
      context.lineWidth = 2; context.strokeStyle = colour; context.stroke();
      context.beginPath();
      context.arc(sx, sy, 5, 0, 2 * Math.PI);
      context.fillStyle = colour; context.fill();
      context.lineWidth = 1.5; context.strokeStyle = "#1d2330"; context.stroke();
      mapView.points.push([sx, sy, `neighbour ${i + 1}: atom ${requested.id[i]} · ${requested.label[i]}`]);
      neighboursDrawn++;
    }
    context.beginPath();
    context.arc(qx, qy, Math.max(5, state.result.composition.radius * scale), 0, 2 * Math.PI);
    context.fillStyle = "#1d233014"; context.fill();
    context.lineWidth = 2.5; context.strokeStyle = "#1d2330"; context.setLineDash([6, 4]); context.stroke();
    context.setLineDash([]);
    context.beginPath(); // a cross marks the query's nucleus
    context.moveTo(qx - 8, qy); context.lineTo(qx + 8, qy); context.moveTo(qx, qy - 8); context.lineTo(qx, qy + 8);
    context.lineWidth = 3; context.stroke();
    context.lineWidth = 1;
    mapView.points.push([qx, qy, "your input"]);
  }
  context.restore();
  canvas.dataset.atomsDrawn = drawn;
  canvas.dataset.neighboursDrawn = neighboursDrawn;
  canvas.dataset.queryDrawn = query ? "yes" : "no";
  $("map-caption").textContent = `${map.sampled.toLocaleString("en")} of ${map.total.toLocaleString("en")} bank atoms on the ` +
    "bank's top two principal axes (fitted once at export), each drawn with its radius. Your input (black, with a cross) " +
    "is placed by the same projection, its circle dashed; lines join it to its nearest atoms (ringed). The map shrinks distances, so atoms look closer than they are.";
  $("map-legend").replaceChildren(...map.label_names.map((name) => el("li", {},
    el("span", { class: "swatch", style: `background:${labelColour(name)}` }), name)));
}

$("map").addEventListener("mousemove", (event) => {
  const box = $("map").getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  let best = null, bestDistance = 64; // within 8 px
  for (const point of mapView.points) {
    const d = (point[0] - x) ** 2 + (point[1] - y) ** 2;
    if (d <= bestDistance) { best = point; bestDistance = d; }
  }
  const tip = $("map-tip");
  tip.hidden = !best;
  if (best) {
    tip.textContent = best[2];
    tip.style.left = `${best[0] + 10}px`;
    tip.style.top = `${best[1] - 10}px`;
  }
});
$("map").addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
$("map-zoom").addEventListener("change", () => drawMap());
window.addEventListener("resize", () => { if (state.result) { drawMap(); renderComposition(); } });

start();
