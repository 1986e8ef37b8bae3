// The drawing pad for image models: a canvas of the model's image size, painted with a soft brush.
import { $ } from "./common.js";

/** Sets up the pad for an image of `height` x `width` pixels; `onStroke()` runs when a stroke ends.
 * Returns the pad: `values` (height * width, 0..1 ink, row-major) and `clear()`. */
export function createPad([height, width], onStroke) {
  const pad = { width, height, values: new Float32Array(width * height), drawing: false, timer: null };
  const canvas = $("pad");
  canvas.width = width;
  canvas.height = height;
  $("pad-size").textContent = `${height} × ${width}`;
  const overlay = $("pad-overlay");
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const brush = Math.max(0.75, width / 16); // in pixels of the model's image
  const draw = () => {
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    pad.values.forEach((v, i) => {
      const shade = Math.round(255 * (1 - v));
      image.data.set([shade, shade, shade, 255], 4 * i);
    });
    context.putImageData(image, 0, 0);
  };
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
    draw();
  };
  canvas.addEventListener("pointerdown", (event) => { pad.drawing = true; canvas.setPointerCapture(event.pointerId); paint(event); });
  canvas.addEventListener("pointermove", (event) => { if (pad.drawing) paint(event); });
  const finish = () => {
    if (!pad.drawing) return;
    pad.drawing = false;
    clearTimeout(pad.timer);
    pad.timer = setTimeout(onStroke, 150);
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  pad.clear = () => { pad.values.fill(0); draw(); overlay.replaceChildren(); };
  draw();
  return pad;
}
