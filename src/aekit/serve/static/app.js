// aekit latent explorer: plain JavaScript, no build step. Talks to the JSON API of aekit/serve/app.py.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
// Label colours: Tableau's ten, or evenly spaced hues when there are more classes.
const labelColor = (c, n) => (n <= PALETTE.length ? PALETTE[c] : `hsl(${Math.round(360 * c / n)}, 62%, 48%)`);
const classCount = (labels) => (labels ? Math.max(...labels) + 1 : 0);
const state = {
  info: null, map: null, view: null,
  current: null,   // {code, image, index?}: what the decoder shows and the sliders edit
  hover: null,     // [x, y] map position under the pointer
  drawn: null,     // the last analysis of a drawing or upload
  source: null,    // {image: dataURL, what}: the last drawing or upload, re-analysed when noise changes
  path: null,      // interpolation positions on the map
  ends: {a: null, b: null},
};

// ----- requests -----

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

// Run `fn(arg)` with at most one call in flight; while busy keep only the newest argument.
function latest(fn, onError) {
  let busy = false, pending = null, has = false;
  const run = async (arg) => {
    busy = true;
    try { await fn(arg); } catch (err) { onError(err); }
    busy = false;
    if (has) { has = false; const next = pending; pending = null; run(next); }
  };
  return (arg) => { if (busy) { pending = arg; has = true; } else { run(arg); } };
}

function showMsg(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

// ----- the map -----

function quantile(sorted, q) { return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))]; }

function makeView(points, canvas) {
  const xs = points.map((p) => p[0]).sort((a, b) => a - b);
  const ys = points.map((p) => p[1]).sort((a, b) => a - b);
  const x0 = quantile(xs, 0.002), x1 = quantile(xs, 0.998), y0 = quantile(ys, 0.002), y1 = quantile(ys, 0.998);
  const span = Math.max(x1 - x0, y1 - y0, 1e-6) * 1.12;  // same scale on both axes
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const size = canvas.clientWidth, pad = 30;
  const scale = (size - 2 * pad) / span;
  return {
    size, scale,
    toPx: (p) => [size / 2 + (p[0] - cx) * scale, size / 2 - (p[1] - cy) * scale],
    fromPx: (x, y) => [cx + (x - size / 2) / scale, cy - (y - size / 2) / scale],
  };
}

function niceStep(range) {
  const raw = range / 6, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}

function project(code) {
  const {mean, axes} = state.map;
  const p = axes.map((axis) => axis.reduce((sum, a, j) => sum + a * (code[j] - mean[j]), 0));
  while (p.length < 2) p.push(0);
  return p;
}

function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1, size = canvas.clientWidth;
  canvas.width = size * dpr; canvas.height = size * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

function drawBase() {  // points, grid and axes into an offscreen canvas, once
  const canvas = $("map"), view = state.view, size = view.size;
  const dpr = window.devicePixelRatio || 1;
  const base = document.createElement("canvas");
  base.width = size * dpr; base.height = size * dpr;
  const ctx = base.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, size, size);
  const [lx, ty] = view.fromPx(0, 0), [rx, by] = view.fromPx(size, size);
  const step = niceStep(rx - lx);
  ctx.strokeStyle = "#eef0f4"; ctx.lineWidth = 1; ctx.fillStyle = "#8a93a3"; ctx.font = "10px system-ui, sans-serif";
  for (let v = Math.ceil(lx / step) * step; v <= rx; v += step) {
    const [x] = view.toPx([v, 0]);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, size); ctx.stroke();
    ctx.fillText(fmt(v), x + 2, size - 4);
  }
  for (let v = Math.ceil(by / step) * step; v <= ty; v += step) {
    const [, y] = view.toPx([0, v]);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(size, y); ctx.stroke();
    ctx.fillText(fmt(v), 3, y - 2);
  }
  const {points, labels} = state.map, n = classCount(labels);
  ctx.globalAlpha = 0.75;
  points.forEach((p, i) => {
    const [x, y] = view.toPx(p);
    ctx.fillStyle = labels ? labelColor(labels[i], n) : "#5b6b8c";
    ctx.beginPath(); ctx.arc(x, y, 2.3, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.globalAlpha = 1;
  const info = state.info, pca = info.map.method === "pca";
  const names = pca ? info.map.explained.map((r, k) => `PC ${k + 1} (${(100 * r).toFixed(1)}%)`) : ["z0", "z1"];
  ctx.font = "600 11px system-ui, sans-serif";
  axisName(ctx, `${names[0]} →`, size - 6, size - 18, "right");
  if (info.latent_dim > 1) axisName(ctx, `↑ ${names[1]}`, 6, 16, "left");
  state.base = base;
  canvas.dataset.points = String(points.length);
}

function axisName(ctx, text, x, y, align) {  // dark text on a white halo, readable over points and ticks
  ctx.textAlign = align; ctx.lineWidth = 4; ctx.strokeStyle = "#fff"; ctx.fillStyle = "#3b4252";
  ctx.strokeText(text, x, y); ctx.fillText(text, x, y); ctx.textAlign = "left";
}

function fmt(v) { return Math.abs(v) < 1e-9 ? "0" : Number(v.toPrecision(3)).toString(); }

function drawMap() {
  const canvas = $("map"), ctx = canvas.getContext("2d"), view = state.view;
  if (!view) return;
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(state.base, 0, 0);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (state.path) {
    ctx.strokeStyle = "rgba(30, 35, 50, 0.55)"; ctx.lineWidth = 1.5; ctx.setLineDash([4, 3]);
    ctx.beginPath();
    state.path.forEach((p, i) => { const [x, y] = view.toPx(p); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke(); ctx.setLineDash([]);
    [["A", state.path[0]], ["B", state.path[state.path.length - 1]]].forEach(([name, p]) => badge(ctx, view.toPx(p), name));
  }
  if (state.drawn && state.drawn.position) diamond(ctx, view.toPx(state.drawn.position));
  if (state.current) ring(ctx, view.toPx(project(state.current.code)), "#111827", 7);
  if (state.hover) {
    const [x, y] = view.toPx(state.hover);
    ctx.strokeStyle = "rgba(17, 24, 39, 0.35)"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, view.size); ctx.moveTo(0, y); ctx.lineTo(view.size, y); ctx.stroke();
    ring(ctx, [x, y], "#4f46e5", 5);
  }
}

function ring(ctx, [x, y], color, r) {
  ctx.lineWidth = 3; ctx.strokeStyle = "#fff";
  ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
  ctx.lineWidth = 2; ctx.strokeStyle = color;
  ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
}

function diamond(ctx, [x, y]) {
  ctx.beginPath(); ctx.moveTo(x, y - 8); ctx.lineTo(x + 8, y); ctx.lineTo(x, y + 8); ctx.lineTo(x - 8, y); ctx.closePath();
  ctx.fillStyle = "#db2777"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.fill(); ctx.stroke();
}

function badge(ctx, [x, y], text) {
  ctx.fillStyle = "#111827"; ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.fill();
  ctx.fillStyle = "#fff"; ctx.font = "700 10px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.fillText(text, x, y + 0.5); ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
}

function legend() {
  const {labels, classes} = state.map, el = $("legend"), n = classCount(labels);
  el.replaceChildren();
  if (!labels) { el.textContent = "unlabelled data"; return; }
  [...new Set(labels)].sort((a, b) => a - b).forEach((c) => {
    const item = document.createElement("span"), chip = document.createElement("i");
    chip.style.background = labelColor(c, n);
    item.append(chip, classes && classes[c] ? classes[c] : String(c));
    el.append(item);
  });
}

function nearestTest(px, py, radius) {
  let best = -1, bestD = radius * radius;
  state.map.points.forEach((p, i) => {
    const [x, y] = state.view.toPx(p), d = (x - px) ** 2 + (y - py) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

function pointerPos(event) {
  const rect = $("map").getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}

const hoverDecode = latest(async (p) => {
  const data = await api("/api/decode-map", {points: [p]});
  if (state.hover) show(data.images[0], `map point (${fmt(p[0])}, ${fmt(p[1])})`);
}, (err) => showMsg("decoder-msg", err.message));

function setupMap() {
  const canvas = $("map");
  canvas.addEventListener("pointermove", (event) => {
    const [px, py] = pointerPos(event);
    state.hover = state.view.fromPx(px, py);
    drawMap();
    hoverDecode(state.hover);
  });
  canvas.addEventListener("pointerleave", () => {
    state.hover = null;
    drawMap();
    if (state.current) showCurrent();
  });
  canvas.addEventListener("click", async (event) => {
    const [px, py] = pointerPos(event);
    const index = nearestTest(px, py, 5);
    try {
      if (index >= 0) { await pickTest(index); return; }
      const p = state.view.fromPx(px, py);
      const data = await api("/api/decode-map", {points: [p]});
      setCurrent({code: data.codes[0], image: data.images[0], caption: `map point (${fmt(p[0])}, ${fmt(p[1])})`});
      showMsg("decoder-msg", "");
    } catch (err) { showMsg("decoder-msg", err.message); }
  });
}

// ----- the decoder and its sliders -----

function show(image, caption, original) {
  $("decoded").src = image;
  $("decoded-caption").textContent = caption || "";
  $("original-fig").hidden = !original;
  if (original) $("original").src = original;
}

function showCurrent() {
  const c = state.current;
  show(c.image, c.caption, c.original);
}

function setCurrent(current) {
  state.current = current;
  showCurrent();
  state.info.sliders.forEach((s, k) => {
    const input = $(`slider-${k}`);
    input.value = current.code[s.dim];
    $(`slider-value-${k}`).textContent = current.code[s.dim].toFixed(2);
  });
  drawMap();
}

async function pickTest(index) {
  const t = await api(`/api/test/${index}`);
  const label = t.label === null ? "" : ` · label ${t.class_name || t.label}`;
  const decoded = await api("/api/decode", {codes: [t.code]});
  setCurrent({code: t.code, image: decoded.images[0], index, original: t.image,
              caption: `test image #${index}${label}, decoded from its code`});
}

const sliderDecode = latest(async () => {
  const code = state.current.code.slice();
  const data = await api("/api/decode", {codes: [code]});
  state.current.image = data.images[0];
  if (!state.hover) showCurrent();
}, (err) => showMsg("decoder-msg", err.message));

function setupSliders() {
  const info = state.info, box = $("sliders");
  $("sliders-title").textContent = `Top ${info.sliders.length} latent dimensions by ${info.slider_score}`;
  info.sliders.forEach((s, k) => {
    const row = document.createElement("div"), label = document.createElement("label");
    const input = document.createElement("input"), value = document.createElement("output");
    row.className = "slider";
    label.htmlFor = input.id = `slider-${k}`;
    label.innerHTML = `z<sub>${s.dim}</sub> <small></small>`;
    label.querySelector("small").textContent = `${info.slider_score === "KL" ? "KL" : "var"} ${fmt(s.score)}`;
    Object.assign(input, {type: "range", min: s.min, max: s.max, step: (s.max - s.min) / 200, value: 0});
    value.id = `slider-value-${k}`;
    input.addEventListener("input", () => {
      if (!state.current) return;
      state.current.code[s.dim] = Number(input.value);
      state.current.index = state.current.original = undefined;
      if (!state.current.caption.endsWith(" · edited")) state.current.caption += " · edited";
      value.textContent = Number(input.value).toFixed(2);
      drawMap();
      sliderDecode();
    });
    row.append(label, input, value);
    box.append(row);
  });
  $("sample-source").textContent = `draws from ${info.sample_source}`;
  $("sample").addEventListener("click", async () => {
    try {
      const seed = Math.floor(Math.random() * 2 ** 31);
      const data = await api("/api/sample", {n: 1, seed});
      setCurrent({code: data.codes[0], image: data.images[0], caption: `random sample (seed ${seed})`});
      showMsg("decoder-msg", "");
    } catch (err) { showMsg("decoder-msg", err.message); }
  });
}

// ----- draw or upload -----

function setupDrawing() {
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false, last = null, timer = null, showingUpload = false;
  const at = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
  };
  const stroke = (p) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 20; ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...(last || p)); ctx.lineTo(...p); ctx.stroke();
    last = p;
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true; last = null; clearTimeout(timer);
    if (showingUpload) { clear(); showingUpload = false; }  // drawing starts afresh, not on top of an upload
    canvas.setPointerCapture(event.pointerId);
    stroke(at(event));
  });
  canvas.addEventListener("pointermove", (event) => { if (drawing) stroke(at(event)); });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    timer = setTimeout(() => {
      const image = fitDrawing(canvas);
      if (image) { state.source = {image, what: "your drawing"}; analyze(); }
    }, 120);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clear(); resetAnalysis(); });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    $("upload").value = "";
    if (!file) return;
    const limit = state.info.limits.max_upload_bytes;
    if (file.size > limit) { resetAnalysis(); showMsg("draw-msg", `${file.name} is larger than the ${limit >> 20} MiB upload limit`); return; }
    const reader = new FileReader();
    reader.onload = () => {
      clear();
      showingUpload = true;
      const img = new Image();
      img.onload = () => {  // show the upload on the canvas (contain-fit) when the browser can read it
        const s = Math.min(canvas.width / img.width, canvas.height / img.height);
        ctx.drawImage(img, (canvas.width - img.width * s) / 2, (canvas.height - img.height * s) / 2, img.width * s, img.height * s);
      };
      img.src = reader.result;
      state.source = {image: reader.result, what: file.name};
      analyze();
    };
    reader.readAsDataURL(file);
  });
  const noise = $("noise");
  noise.value = state.info.noise_std;
  $("noise-value").textContent = Number(noise.value).toFixed(2);
  noise.addEventListener("input", () => { $("noise-value").textContent = Number(noise.value).toFixed(2); });
  noise.addEventListener("change", () => { if (state.source) analyze(); });
  $("invert").addEventListener("change", () => { if (state.source) analyze(); });
  $("to-decoder").addEventListener("click", () => {
    const d = state.drawn;
    if (d) setCurrent({code: d.code.slice(), image: d.reconstruction, caption: `code of ${d.what}`});
  });
}

// Crop the ink, scale it into a box of 20/28 of the model's image and centre it by its centre of mass (as MNIST was made).
function fitDrawing(canvas) {
  const {width, height} = canvas, pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let x0 = width, y0 = height, x1 = -1, y1 = -1, mass = 0, mx = 0, my = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = pixels[4 * (y * width + x)];
      if (v > 25) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
      mass += v; mx += v * x; my += v * y;
    }
  }
  if (x1 < 0) return null;
  const [, h, w] = state.info.image_shape, box = Math.max(1, Math.round(0.714 * Math.min(h, w)));
  const s = box / Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const out = document.createElement("canvas");
  out.width = w; out.height = h;
  const octx = out.getContext("2d");
  octx.fillStyle = "#000"; octx.fillRect(0, 0, w, h);
  octx.imageSmoothingQuality = "high";
  const dx = w / 2 - (mx / mass - x0) * s, dy = h / 2 - (my / mass - y0) * s;  // centre of mass to the centre
  octx.drawImage(canvas, x0, y0, x1 - x0 + 1, y1 - y0 + 1, dx, dy, (x1 - x0 + 1) * s, (y1 - y0 + 1) * s);
  return out.toDataURL("image/png");
}

function resetAnalysis() {
  state.source = null; state.drawn = null;
  ["an-input", "an-recon", "an-errors", "an-noisy", "an-denoised"].forEach((id) => $(id).removeAttribute("src"));
  $("results").hidden = $("anomaly").hidden = true; $("to-decoder").disabled = true; $("draw-hint").hidden = false;
  showMsg("draw-msg", "");
  drawMap();
}

const analyze = latest(async () => {
  const source = state.source;
  if (!source) return;
  const noise = Number($("noise").value);
  const d = await api("/api/analyze", {image: source.image, noise_std: noise, invert: $("invert").checked});
  if (state.source !== source) return;  // cleared or replaced meanwhile
  d.what = source.what;
  state.drawn = d;
  $("an-input").src = d.input; $("an-recon").src = d.reconstruction; $("an-errors").src = d.error_map;
  $("an-noisy").src = d.noisy; $("an-denoised").src = d.denoised;
  $("noisy-caption").textContent = `noisy, σ = ${noise.toFixed(2)}`;
  const verdict = d.percentile >= 99 ? "anomalous" : d.percentile >= 95 ? "unusual" : "typical";
  $("anomaly-marker").style.left = `${d.percentile}%`;
  $("anomaly-text").textContent =
    `Anomaly score: reconstruction error ${d.error.toFixed(4)} (MSE per pixel), higher than ${d.percentile}% of ` +
    `the test images: ${verdict}. ` + (d.position ? "The pink diamond marks its code on the map."
      : `At ${d.size[1]}×${d.size[0]} its code has another shape than the map's, so it has no place there.`);
  $("anomaly").className = `anomaly ${verdict}`;
  $("results").hidden = $("anomaly").hidden = false; $("to-decoder").disabled = !d.code; $("draw-hint").hidden = true;
  showMsg("draw-msg", "");
  drawMap();
}, (err) => {
  state.drawn = null;
  ["an-input", "an-recon", "an-errors", "an-noisy", "an-denoised"].forEach((id) => $(id).removeAttribute("src"));
  $("results").hidden = $("anomaly").hidden = true; $("to-decoder").disabled = true;
  showMsg("draw-msg", `Could not analyse ${state.source ? state.source.what : "the image"}: ${err.message}`);
  drawMap();
});

// ----- interpolation -----

async function setEnd(name, end) {
  const box = $(`end-${name}`);
  if (end.index !== undefined) {
    const t = await api(`/api/test/${end.index}`);
    end = {index: end.index, image: t.image};
    box.querySelector("input").value = end.index;
  } else {
    box.querySelector("input").value = "";
  }
  box.querySelector("img").src = end.image;
  state.ends[name] = end;
}

const interpolate = latest(async () => {
  const {a, b} = state.ends;
  if (!a || !b) return;
  const frames = Number($("frames").value);
  const end = (e) => (e.index !== undefined ? e.index : e.code);
  const data = await api("/api/interpolate", {a: end(a), b: end(b), frames});
  const strip = $("strip");
  strip.replaceChildren(...data.images.map((src, i) => {
    const img = document.createElement("img");
    img.className = "pixels"; img.src = src; img.alt = `frame ${i}`;
    img.title = `t = ${(i / (frames - 1)).toFixed(2)}`;
    img.addEventListener("click", () => setCurrent({code: data.codes[i], image: src, caption: `interpolation frame ${i + 1}/${frames}`}));
    return img;
  }));
  state.path = data.positions;
  showMsg("interp-msg", "");
  drawMap();
}, (err) => showMsg("interp-msg", err.message));

function setupInterpolation() {
  const n = state.info.test_images, labels = state.map.labels;
  $("frames").max = state.info.limits.max_frames;
  $("frames-value").textContent = $("frames").value;
  $("frames").addEventListener("input", () => { $("frames-value").textContent = $("frames").value; interpolate(); });
  ["b", "a"].forEach((name) => {  // one copy of the template per end, A first
    const box = $("end-template").content.firstElementChild.cloneNode(true);
    box.id = `end-${name}`;
    box.querySelector("b").textContent = name.toUpperCase();
    $("interp-panel").querySelector(".interp-controls").prepend(box);
    const input = box.querySelector("input");
    input.max = n - 1;
    input.addEventListener("change", async () => {
      const i = Number(input.value);
      if (!Number.isInteger(i) || i < 0 || i >= n) { showMsg("interp-msg", `pick a test image from 0 to ${n - 1}`); return; }
      try { await setEnd(name, {index: i}); interpolate(); } catch (err) { showMsg("interp-msg", err.message); }
    });
    box.querySelector("button").addEventListener("click", async () => {
      const c = state.current;
      if (!c) return;
      try {
        await setEnd(name, c.index !== undefined ? {index: c.index} : {code: c.code.slice(), image: c.image});
        interpolate();
      } catch (err) { showMsg("interp-msg", err.message); }
    });
  });
  const other = labels ? Math.max(0, labels.findIndex((l) => l !== labels[0])) : Math.min(1, n - 1);
  return Promise.all([setEnd("a", {index: 0}), setEnd("b", {index: other})]).then(interpolate);
}

// ----- start -----

async function main() {
  try {
    const [info, map] = await Promise.all([api("/api/info"), api("/api/map")]);
    state.info = info; state.map = map;
    const family = info.family ? info.family.toUpperCase() : (info.variational ? "VAE" : "AE");
    $("model-line").textContent =
      `${info.name} · ${family} · ${info.latent_dim}-D latent · ${info.image_shape.join("×")} images · ` +
      `${info.test_images} test images of ${info.data}`;
    $("map-how").textContent = info.map.how;
    setupCanvas($("map"));
    state.view = makeView(map.points, $("map"));
    drawBase(); legend(); setupMap(); setupSliders(); setupDrawing();
    await setupInterpolation();
    await pickTest(0);
    document.body.dataset.ready = "1";
  } catch (err) {
    showMsg("page-msg", `The explorer could not start: ${err.message}`);
  }
}

main();
