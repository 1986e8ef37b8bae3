// Shared by the explorer's modules: colours, requests, and small DOM helpers.
export const ROLE_COLOURS = { electron: "#0072B2", proton: "#D55E00", neutron: "#999999" };
// Okabe-Ito first (colour-blind safe), then two more for ten-class models.
export const LABEL_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000",
  "#882255", "#999999"];
export const KEY_STORE = "atomizer.apiKey";

export const $ = (id) => document.getElementById(id);

export class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

/** JSON from the service; the API key, when the person gave one, goes along as a bearer token. */
export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

/** An element; text always goes in as text (never as HTML). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export const withAlpha = (colour, alpha) => colour + Math.round(255 * alpha).toString(16).padStart(2, "0");
export const article = (word) => (/^[aeiou]/i.test(word) ? "an" : "a");
export const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
export const labelColour = (names, label) => {
  const i = names.indexOf(label);
  return LABEL_COLOURS[(i < 0 ? names.length : i) % LABEL_COLOURS.length];
};
