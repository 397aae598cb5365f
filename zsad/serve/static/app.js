// The zsad page: send dropped or picked images to POST /v1/predict, show each score and overlay, mark the images
// at or above a threshold, and export the scores as CSV. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const CONCURRENCY = 4; // requests in flight; the server batches them
const MAX_RETRIES = 8; // on 503 (busy or loading), after the server's Retry-After
const rows = []; // {file, card, state, reply, error}
let health = null;
let queue = [];
let active = 0;

function setStatus(text, isError = false) {
  const el = $("model-status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function pollHealth() {
  try {
    const response = await fetch("/healthz");
    health = await response.json();
    if (health.status === "ok") {
      const m = health.model;
      setStatus(`Model ready: recipe ${m.recipe}, ${m.image_size} px input, image score ${m.image_score}` +
                (health.class_name ? `, default class "${health.class_name}"` : "") + ".");
      if (health.class_name && !$("class-name").value) $("class-name").placeholder = health.class_name;
      $("api-key-field").hidden = !health.auth;
      pump();
      return;
    }
    if (health.status === "failed") { setStatus(`The model failed to load: ${health.error}`, true); return; }
    setStatus("Loading the model…");
  } catch (err) {
    setStatus("Cannot reach the server; retrying…", true);
  }
  setTimeout(pollHealth, 1000);
}

function addFiles(files) {
  for (const file of files) {
    const card = document.createElement("article");
    card.className = "result";
    card.dataset.state = "queued";
    const view = document.createElement("img");
    view.className = "view";
    view.alt = `image ${file.name}`;
    view.src = URL.createObjectURL(file);
    view.dataset.kind = "original";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = file.name;
    name.title = file.name;
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = "…";
    const flag = document.createElement("div");
    flag.className = "flag";
    flag.textContent = "at or above the threshold";
    const detail = document.createElement("div");
    detail.className = "detail";
    detail.textContent = "waiting";
    card.append(view, name, score, flag, detail);
    $("results").append(card);
    const row = {file, card, view, score, detail, reply: null, error: null, original: view.src};
    view.addEventListener("click", () => toggleView(row));
    rows.push(row);
    queue.push(row);
  }
  updateSummary();
  pump();
}

function toggleView(row) {
  if (!row.reply) return;
  const showOverlay = row.view.dataset.kind !== "overlay";
  row.view.src = showOverlay ? `data:image/png;base64,${row.reply.anomaly_map}` : row.original;
  row.view.dataset.kind = showOverlay ? "overlay" : "original";
  row.view.classList.toggle("overlay", showOverlay);
}

function pump() {
  if (!health || health.status !== "ok") return;
  while (active < CONCURRENCY && queue.length) {
    const row = queue.shift();
    active += 1;
    send(row).finally(() => { active -= 1; pump(); });
  }
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

async function send(row) {
  const className = $("class-name").value.trim();
  if (!className && !health.class_name) {
    fail(row, "Type a class name first (the object in the images), then drop the image again.");
    return;
  }
  row.card.dataset.state = "sending";
  row.detail.textContent = "scoring…";
  const headers = {};
  const key = $("api-key").value;
  if (key) headers.Authorization = `Bearer ${key}`;
  for (let attempt = 0; attempt <= MAX_RETRIES; attempt += 1) {
    const form = new FormData();
    form.append("image", row.file, row.file.name);
    if (className) form.append("class_name", className);
    form.append("return_map", "png");
    let response;
    try {
      response = await fetch("/v1/predict", {method: "POST", body: form, headers});
    } catch (err) {
      fail(row, `The request failed: ${err}`);
      return;
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = {error: `HTTP ${response.status}`}; }
    if (response.ok) { done(row, body); return; }
    if (response.status === 503 && attempt < MAX_RETRIES) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      row.detail.textContent = `server busy, retrying in ${wait} s…`;
      await sleep(wait * 1000);
      continue;
    }
    fail(row, `${response.status}: ${body.error || response.statusText}`);
    return;
  }
}

function done(row, reply) {
  row.reply = reply;
  row.card.dataset.state = "done";
  row.card.dataset.score = String(reply.pred_score);
  row.score.textContent = `${reply.image_score} ${reply.pred_score.toFixed(4)}`;
  row.detail.textContent = `class "${reply.class_name}", ${reply.original_size[1]}×${reply.original_size[0]} px, ` +
                           `map max ${reply.map_max.toFixed(3)}`;
  if (reply.map_range) {
    $("map-min").textContent = String(reply.map_range[0]);
    $("map-max").textContent = String(reply.map_range[1]);
  }
  toggleView(row); // show the overlay
  updateSummary();
}

function fail(row, message) {
  row.error = message;
  row.card.dataset.state = "error";
  row.score.textContent = "—";
  row.detail.textContent = message;
  updateSummary();
}

function scored() { return rows.filter((r) => r.reply); }

function updateSummary() {
  const slider = $("threshold");
  const scores = scored().map((r) => r.reply.pred_score);
  slider.disabled = scores.length === 0;
  $("download-csv").disabled = scores.length === 0;
  if (scores.length) {
    const lo = Math.min(0, Math.floor(Math.min(...scores) * 10) / 10);
    const hi = Math.max(1, Math.ceil(Math.max(...scores) * 10) / 10);
    slider.min = String(lo);
    slider.max = String(hi);
  }
  markAbove();
}

function markAbove() {
  const t = Number($("threshold").value);
  $("threshold-value").textContent = t.toFixed(3);
  let above = 0;
  for (const r of rows) {
    const isAbove = r.reply !== null && r.reply.pred_score >= t;
    r.card.classList.toggle("above", isAbove);
    above += isAbove ? 1 : 0;
  }
  $("above-count").textContent = `${above} of ${scored().length} above`;
}

function csvField(value) {
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// The scores as CSV text (one row per scored image); also what the download button saves.
function scoresCsv() {
  const done = scored();
  const names = [...new Set(done.flatMap((r) => Object.keys(r.reply.scores)))].sort();
  const t = Number($("threshold").value);
  const lines = [["file", "class_name", "image_score", "pred_score", ...names, "height", "width", "threshold",
                  "above_threshold"].join(",")];
  for (const r of done) {
    const p = r.reply;
    lines.push([r.file.name, p.class_name, p.image_score, p.pred_score, ...names.map((n) => p.scores[n] ?? ""),
                p.original_size[0], p.original_size[1], t, p.pred_score >= t].map(csvField).join(","));
  }
  return lines.join("\n") + "\n";
}
window.zsadScoresCsv = scoresCsv;

function downloadCsv() {
  const url = URL.createObjectURL(new Blob([scoresCsv()], {type: "text/csv"}));
  const link = document.createElement("a");
  link.href = url;
  link.download = "zsad-scores.csv";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function clearAll() {
  queue = [];
  for (const r of rows) URL.revokeObjectURL(r.original);
  rows.length = 0;
  $("results").replaceChildren();
  updateSummary();
}

function setUp() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    addFiles([...e.dataTransfer.files]);
  });
  $("threshold").addEventListener("input", markAbove);
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearAll);
  pollHealth();
}

setUp();
