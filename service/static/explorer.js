// Atomizer explorer: plain JavaScript modules, no build step, nothing loaded from outside this service.
// Flow: GET v1/models (asks for the API key on 401; a picker when several are served, the choice kept
// in the page's ?model=) -> GET v1/model -> GET v1/bank/map -> the input widget for the
// model's modality -> POST v1/atomize -> the text coloured by role (with its windows when a long text
// is read whole), components, composition, neighbours and the map, where the input is placed by the
// bank's own stored projection (map.js).
import { $, KEY_STORE, ROLE_COLOURS, api, article, el, fmt, labelColour as colourIn, svgEl } from "./common.js";
import { drawMap as paintMap } from "./map.js";
import { createPad } from "./pad.js";

const ROLE_TEXT = {
  electron: "the shell: sets the atom's radius",
  proton: "in the nucleus: positive charge, sets the position",
  neutron: "in the nucleus: no charge, sets the position",
};
const NEIGHBORS = 8;
const SHORT_TEXT = 80; // characters of a neighbour's text shown in the table; the rest on hover

const state = { name: null, model: null, map: null, stats: null, input: null, result: null, requested: null, rank: "distance", pad: null };
const forModel = () => `model=${encodeURIComponent(state.name)}`; // the query naming the chosen model
const labelColour = (label) => colourIn(state.map ? state.map.label_names : [], label);

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.hidden = !text;
  status.classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------- start

async function start() {
  try {
    const served = (await api("v1/models")).data.map((m) => m.id);
    const asked = new URLSearchParams(location.search).get("model");
    state.name = served.includes(asked) ? asked : served[0];
    setupPicker(served);
    state.model = await api(`v1/model?${forModel()}`);
  } catch (error) {
    if (error.status === 401) return askForKey(sessionStorage.getItem(KEY_STORE) ? error.message : "");
    return setStatus(`Cannot load the model: ${error.message}`, true);
  }
  $("key-panel").hidden = true;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
  const map = await api(`v1/bank/map?${forModel()}`).catch((error) => {
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

function setupPicker(served) { // one model: no picker; several: choosing one reloads the page for it
  $("model-pick").hidden = served.length < 2;
  const picker = $("model-picker");
  picker.replaceChildren(...served.map((name) => el("option", { value: name, text: name })));
  picker.value = state.name;
  picker.onchange = () => { location.search = `?model=${encodeURIComponent(picker.value)}`; };
  $("report-link").href = served.length < 2 ? "report/" : `models/${encodeURIComponent(state.name)}/report/`;
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
    ["name", m.id === m.name ? m.name : `${m.id} (bundle ${m.name})`], ["version", m.version], ["modality", m.modality],
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
    ["device", `${m.runtime.device} (${m.runtime.provider.replace("ExecutionProvider", "")}), ${m.runtime.precision || precision(m.runtime.model_file)}`],
    ["inference", `${m.runtime.workers} batch${m.runtime.workers === 1 ? "" : "es"} at once, ${m.runtime.threads_per_worker} thread${m.runtime.threads_per_worker === 1 ? "" : "s"} each`],
    ["bank", `${m.bank.atoms.toLocaleString("en")} atoms, ${m.bank.search} search`]);
  $("model-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]));
  document.title = `${m.id} · Atomizer explorer`;

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
  if (modality === "text") {
    $("chunk-hint").textContent = `(past ${state.model.input.max_components} tokens: read in overlapping windows pooled into one atom, instead of cut)`;
  }
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
$("chunk-toggle").addEventListener("change", () => runText());
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
    const chunk = typeof value === "string" && $("chunk-toggle").checked; // a long text read whole, in windows
    const body = JSON.stringify({ model: state.name, inputs: [value], neighbors: NEIGHBORS, rank_by: state.rank,
      include: ["embedding", "composition", "components", "neighbors", ...(chunk ? ["chunks"] : [])], ...(chunk ? { chunk } : {}) });
    const response = await api("v1/atomize", { method: "POST", body });
    const result = response.results[0];
    const ids = result.neighbors.map((n) => n.id).join(",");
    const requested = ids ? (await api(`v1/bank/map?limit=0&ids=${encodeURIComponent(ids)}&${forModel()}`)).requested : null;
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

function setupPad() {
  state.pad = createPad(imageShape(), runPad);
  $("pad-clear").addEventListener("click", () => state.pad.clear());
  $("pad-run").addEventListener("click", runPad);
  $("pad-overlay-toggle").addEventListener("change", () => { $("pad-overlay").style.opacity = $("pad-overlay-toggle").checked ? 1 : 0; });
}

function runPad() { // the ink (0..1) in the model's raw pixel range
  const [low, high] = (state.model.input.preprocess || {}).value_range || [0, 255];
  atomize(Array.from(state.pad.values, (v) => low + v * (high - low)));
}

// ---------------------------------------------------------------------------------- results

function renderResult() {
  for (const id of ["components-panel", "composition-panel", "neighbors-panel"]) $(id).hidden = false;
  renderComponents();
  renderTextRoles();
  renderChunks();
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

function probabilityText(probabilities) {
  return Object.entries(probabilities).map(([role, p]) => `${role} ${p.toFixed(3)}`).join(", ");
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
      // A light tint and an inset border in the role's colour, and its initial: a grey tint alone
      // (neutron) would read as ink on the drawing.
      const inset = 0.06 * pw;
      const rect = svgEl("rect", { x: x + inset, y: y + inset, width: pw - 2 * inset, height: ph - 2 * inset,
        fill: ROLE_COLOURS[c.role], "fill-opacity": 0.12, stroke: ROLE_COLOURS[c.role], "stroke-width": 0.06 * pw,
        tabindex: 0, class: "patch", "data-role": c.role, "aria-label": `patch ${c.index}: ${c.role}` });
      rect.append(svgEl("title", {}, `patch ${c.index}: ${c.role}`));
      rect.addEventListener("mouseenter", () => showDetail(c));
      rect.addEventListener("focus", () => showDetail(c));
      const letter = svgEl("text", { x: x + 0.18 * pw, y: y + 0.42 * ph, "font-size": 0.3 * ph, class: "patch-role",
        fill: ROLE_COLOURS[c.role] }, c.role[0]);
      overlay.append(rect, letter);
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

// ---------------------------------------------------------------------------------- the text by role

/** The input text itself, each component's characters tinted with its role's colour (the text
 * between components stays plain). With several windows (a long text read whole), a numbered
 * marker where each window begins and a dotted line over the characters two windows share. The
 * API's offsets count Unicode code points, so the text is cut with Array.from (not as UTF-16). */
function renderTextRoles() {
  const box = $("text-roles");
  const note = $("text-roles-note");
  const text = state.input;
  const components = (state.result.components || []).filter((c) => Number.isInteger(c.start) && Number.isInteger(c.end));
  box.replaceChildren();
  box.hidden = typeof text !== "string" || !components.length;
  note.hidden = box.hidden || !state.result.truncated;
  if (box.hidden) return;
  const chars = Array.from(text);
  const chunks = state.result.chunks || [];
  const windows = chunks.length > 1 ? chunks : [];
  const cuts = new Set([0, chars.length]);
  for (const c of components) cuts.add(c.start).add(c.end);
  for (const w of windows) cuts.add(w.start).add(w.end);
  const points = [...cuts].filter((x) => x >= 0 && x <= chars.length).sort((a, b) => a - b);
  const owner = new Int32Array(chars.length).fill(-1); // the component that read each character
  components.forEach((c, j) => { for (let k = Math.max(0, c.start); k < Math.min(c.end, chars.length); k++) if (owner[k] < 0) owner[k] = j; });
  const read = Math.max(...components.map((c) => c.end));
  const marker = (w) => el("span", { class: "chunk-mark", "data-chunk": w.index, "aria-hidden": "true",
    title: `window ${w.index + 1}: characters ${w.start}–${w.end}, ${w.components} components`, text: String(w.index + 1) });
  let holder = null, held = -1; // the span of the component being written
  for (let p = 0; p + 1 < points.length; p++) {
    const [a, b] = [points[p], points[p + 1]];
    const j = owner[a];
    const starting = windows.filter((w) => w.start === a);
    if (j < 0 || j !== held) {
      box.append(...starting.map(marker));
      holder = null; held = -1;
      if (j >= 0) {
        const c = components[j];
        const label = c.token !== undefined ? `“${c.token}”` : `#${c.index}`;
        holder = el("span", { class: "span-role", "data-role": c.role, "data-component": j, style: `--c:${ROLE_COLOURS[c.role]}`,
          title: `${label}: ${c.role} (${probabilityText(c.probabilities)})` });
        holder.addEventListener("mouseenter", () => showDetail(c));
        box.append(holder);
        held = j;
      }
    } else holder.append(...starting.map(marker));
    const piece = chars.slice(a, b).join("");
    const covering = windows.filter((w) => w.start <= a && a < w.end).map((w) => w.index);
    const classes = [covering.length > 1 ? "shared" : "", j < 0 && a >= read && state.result.truncated ? "unread" : ""].filter(Boolean);
    const target = holder || box;
    if (!windows.length && !classes.length) target.append(piece);
    else target.append(el("span", { class: classes.join(" "), "data-windows": covering.join(" "), text: piece }));
  }
  if (state.result.truncated) {
    note.textContent = `The text is longer than the model's ${state.model.input.max_components} tokens: it was cut, and the greyed end ` +
      "was not read. Tick “read long texts whole (chunks)” to read all of it.";
  }
}

function renderChunks() {
  const chunks = state.result.chunks || [];
  $("chunks-box").hidden = !chunks.length;
  if (!chunks.length) return;
  const max = state.model.input.max_components;
  $("chunks-title").textContent = chunks.length === 1 ? "One window" : `Read in ${chunks.length} windows`;
  $("chunks-caption").textContent = chunks.length === 1 ? `The text fits the model's ${max} tokens: one window, as without chunking.`
    : `Longer than the model's ${max} tokens, the text was read whole in overlapping windows whose atoms were pooled into ` +
      "one. In the text above, a numbered bar marks where each window begins and a dotted line the characters two windows " +
      "share; hover a row to see its window. Energy with next: the pair energy of the window's atom with the next one's " +
      "(lower = more strongly bound).";
  const highlight = (index, on) => {
    for (const piece of $("text-roles").querySelectorAll(`[data-windows~="${index}"]`)) piece.classList.toggle("in-window", on);
  };
  $("chunks").tBodies[0].replaceChildren(...chunks.map((w) => {
    const row = el("tr", { "data-chunk": w.index },
      el("td", { text: w.index + 1 }), el("td", { text: `${w.start}–${w.end}` }), el("td", { class: "num", text: w.components }),
      el("td", { class: "num", text: fmt(w.composition.charge, 3) }),
      el("td", { class: "num", text: fmt(w.energy_with_next, 4) }));
    row.addEventListener("mouseenter", () => highlight(w.index, true));
    row.addEventListener("mouseleave", () => highlight(w.index, false));
    return row;
  }));
}

// ---------------------------------------------------------------------------------- neighbours

function shorten(text, limit = SHORT_TEXT) { // by code points, so an emoji is never cut in half
  const chars = Array.from(text);
  return chars.length > limit ? `${chars.slice(0, limit - 1).join("").trimEnd()}…` : text;
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
  const anyStored = neighbors.some((n) => storedText(n) !== null); // the training texts, or what `atomize index` stored
  $("stored-header").hidden = !anyStored;
  $("neighbors").tBodies[0].replaceChildren(...neighbors.map((n, i) => el("tr", {},
    el("td", { text: i + 1 }), el("td", { text: n.id }),
    el("td", {}, el("span", { class: "swatch", style: `background:${labelColour(n.label)}` }), ` ${n.label ?? "–"}`),
    el("td", { class: "num", text: fmt(n.distance, 4) }), el("td", { class: "num", text: fmt(n.energy, 4) }),
    ...(anyStored ? [storedCell(storedText(n))] : []))));
}

function storedCell(text) { // the text shortened, all of it on hover
  return text === null ? el("td", { class: "stored", text: "–" }) : el("td", { class: "stored", text: shorten(text), title: text });
}

// ---------------------------------------------------------------------------------- map

function drawMap() {
  const map = state.map;
  paintMap({ map, result: state.result, requested: state.requested, zoomed: $("map-zoom").checked, colourOf: labelColour });
  $("map-caption").textContent = `${map.sampled.toLocaleString("en")} of ${map.total.toLocaleString("en")} bank atoms on the ` +
    "bank's top two principal axes (fitted once at export), each drawn with its radius. Your input (black, with a cross) " +
    "is placed by the same projection, its circle dashed; lines join it to its nearest atoms (ringed). The map shrinks distances, so atoms look closer than they are.";
  $("map-legend").replaceChildren(...map.label_names.map((name) => el("li", {},
    el("span", { class: "swatch", style: `background:${labelColour(name)}` }), name)));
}

$("map-zoom").addEventListener("change", () => drawMap());
window.addEventListener("resize", () => { if (state.result) { drawMap(); renderComposition(); } });

start();
