// The bank on its stored 2D map, each atom with its radius, and the input placed by the same
// projection: xy = (z - mean) @ axes.T, the two lines of arithmetic the exporter stored.
import { $, withAlpha } from "./common.js";

const view = { points: [], toScreen: null }; // what the tooltip looks up: [x, y, text] in CSS pixels

export function project({ mean, axes }, embedding) {
  return axes.map((axis) => axis.reduce((sum, a, k) => sum + a * (embedding[k] - mean[k]), 0));
}

/** Draws `map` (GET v1/bank/map) on #map; with `result` (one atomize answer), the input too and
 * lines to its `requested` neighbours; `zoomed` frames the input and its neighbours. */
export function drawMap({ map, result, requested, zoomed, colourOf }) {
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
  const query = result ? project(map.projection, result.embedding) : null;
  zoomed = Boolean(query && requested && zoomed);
  // Zoomed: framed on the input and its neighbours (atoms outside the frame are cut off).
  const xs = zoomed ? requested.x.concat([query[0]]) : atoms.x.concat(query ? [query[0]] : []);
  const ys = zoomed ? requested.y.concat([query[1]]) : atoms.y.concat(query ? [query[1]] : []);
  // Framed on the nuclei, not on the shells: with radii larger than the spread of the atoms
  // (a barely trained model) the shells would shrink every nucleus into one dot.
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 1e-6);
  const margin = zoomed ? 0.6 * span : 0.06 * span;
  const [x0, x1, y0, y1] = [Math.min(...xs) - margin, Math.max(...xs) + margin, Math.min(...ys) - margin, Math.max(...ys) + margin];
  const scale = Math.min((width - 20) / (x1 - x0 || 1), (height - 20) / (y1 - y0 || 1)); // equal aspect: circles stay round
  const ox = (width - scale * (x1 - x0)) / 2, oy = (height - scale * (y1 - y0)) / 2;
  const toScreen = (x, y) => [ox + (x - x0) * scale, height - (oy + (y - y0) * scale)];
  view.toScreen = toScreen;
  view.points = [];
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
    const colour = colourOf(atoms.label[i]);
    context.beginPath();
    context.arc(sx, sy, Math.max(1.5, atoms.radius[i] * scale), 0, 2 * Math.PI);
    if (fillAlpha) { context.fillStyle = withAlpha(colour, fillAlpha); context.fill(); }
    context.strokeStyle = withAlpha(colour, strokeAlpha);
    context.stroke();
    view.points.push([sx, sy, `atom ${atoms.id[i]} · ${atoms.label[i]}`]);
    drawn++;
  }
  for (let i = 0; i < atoms.x.length; i++) { // the nuclei on top of every shell
    const [sx, sy] = toScreen(atoms.x[i], atoms.y[i]);
    context.beginPath();
    context.arc(sx, sy, 2.2, 0, 2 * Math.PI);
    context.fillStyle = colourOf(atoms.label[i]);
    context.fill();
  }
  let neighboursDrawn = 0;
  if (query) {
    const [qx, qy] = toScreen(query[0], query[1]);
    const rows = requested ? requested.id.map((id, i) => i) : [];
    context.lineWidth = 1;
    for (const i of rows) { // lines first, so the atoms sit on top of them
      const [sx, sy] = toScreen(requested.x[i], requested.y[i]);
      context.beginPath(); context.moveTo(qx, qy); context.lineTo(sx, sy);
      context.strokeStyle = "#1d233099"; context.stroke();
    }
    for (const i of rows) {
      const [sx, sy] = toScreen(requested.x[i], requested.y[i]);
      const colour = colourOf(requested.label[i]);
      context.beginPath();
      context.arc(sx, sy, Math.max(4, requested.radius[i] * scale), 0, 2 * Math.PI);
      context.lineWidth = 2; context.strokeStyle = colour; context.stroke();
      context.beginPath();
      context.arc(sx, sy, 5, 0, 2 * Math.PI);
      context.fillStyle = colour; context.fill();
      context.lineWidth = 1.5; context.strokeStyle = "#1d2330"; context.stroke();
      view.points.push([sx, sy, `neighbour ${i + 1}: atom ${requested.id[i]} · ${requested.label[i]}`]);
      neighboursDrawn++;
    }
    context.beginPath();
    context.arc(qx, qy, Math.max(5, result.composition.radius * scale), 0, 2 * Math.PI);
    context.fillStyle = "#1d233014"; context.fill();
    context.lineWidth = 2.5; context.strokeStyle = "#1d2330"; context.setLineDash([6, 4]); context.stroke();
    context.setLineDash([]);
    context.beginPath(); // a cross marks the query's nucleus
    context.moveTo(qx - 8, qy); context.lineTo(qx + 8, qy); context.moveTo(qx, qy - 8); context.lineTo(qx, qy + 8);
    context.lineWidth = 3; context.stroke();
    context.lineWidth = 1;
    view.points.push([qx, qy, "your input"]);
  }
  context.restore();
  canvas.dataset.atomsDrawn = drawn;
  canvas.dataset.neighboursDrawn = neighboursDrawn;
  canvas.dataset.queryDrawn = query ? "yes" : "no";
}

$("map").addEventListener("mousemove", (event) => {
  const box = $("map").getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  let best = null, bestDistance = 64; // within 8 px
  for (const point of view.points) {
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
