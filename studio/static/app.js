// MT-MusicLDM studio page: uploads, job submission + polling, players, WebAudio mute/solo mixer, downloads.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  info: null, session: null, uploads: {}, job: null, polling: false,
  result: null, buffers: {}, ctx: null, sources: [], gains: {}, startedAt: 0, muted: new Set(), solo: new Set(),
};
const POLL_MS = 400, MAX_POLL_ERRORS = 10;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(method, url, body, headers = {}) {
  const opts = { method, headers };
  if (body !== undefined) {
    if (body instanceof Blob) opts.body = body;
    else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  const res = await fetch(url, opts);
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    const err = new Error(detail); err.status = res.status; throw err;
  }
  return res.status === 204 ? null : res.json();
}

function showError(message) { const box = $("#error"); box.textContent = message; box.hidden = !message; }
function setStatus(text, progress) {
  $("#status-text").textContent = text;
  if (progress !== undefined) $("#progress").value = progress;
}
function dot(name) { return el("span", { class: "dot", style: `background:${state.info.colours[name]}` }); }
function fmtTime(s) { const m = Math.floor(s / 60); return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`; }
function describe(u) {
  const ch = u.source_channels === 1 ? "mono" : u.source_channels === 2 ? "stereo" : `${u.source_channels} ch`;
  return `${u.filename} · ${fmtTime(u.seconds)} · ${u.source_rate / 1000} kHz ${ch}`;
}

// ---------------------------------------------------------------- inputs

function buildStemRows() {
  const rows = $("#stem-rows");
  for (const stem of state.info.stems) {
    const modes = el("div", { class: "modes", role: "radiogroup" });
    for (const [value, label] of [["given", "use upload"], ["generate", "generate"], ["silent", "silent"]]) {
      modes.append(el("label", {}, el("input", { type: "radio", name: `mode-${stem}`, value,
        checked: value === "generate", disabled: value === "given", onchange: updateForm }), label));
    }
    rows.append(el("div", { class: "stem-row", id: `row-${stem}` },
      el("span", { class: "track-name" }, dot(stem), stem),
      el("div", { class: "upload-cell" },
        el("input", { type: "file", id: `file-${stem}`, accept: "audio/*", onchange: (e) => upload(stem, e.target) }),
        el("span", { class: "upload-status", id: `status-${stem}` }, "no file")),
      modes));
  }
}

function mode(stem) { return document.querySelector(`input[name=mode-${stem}]:checked`).value; }
function setMode(stem, value) { document.querySelector(`input[name=mode-${stem}][value=${value}]`).checked = true; }

async function upload(slot, input) {
  const file = input.files[0];
  const status = slot === "reference" ? $("#reference-status") : $(`#status-${slot}`);
  if (!file) return;
  showError("");
  const limit = state.info.max_upload_mb * 1024 * 1024;
  status.classList.remove("bad");
  if (file.size > limit) {
    status.textContent = `too large (${(file.size / 1048576).toFixed(1)} MB > ${state.info.max_upload_mb} MB)`;
    status.classList.add("bad"); input.value = ""; return;
  }
  status.textContent = `uploading ${file.name}…`;
  try {
    const u = await api("PUT", `/api/sessions/${state.session}/uploads/${slot}`, file,
                        { "X-Filename": encodeURIComponent(file.name) });
    state.uploads[slot] = u;
    status.textContent = describe(u);
    if (slot !== "reference") {
      document.querySelector(`input[name=mode-${slot}][value=given]`).disabled = false;
      setMode(slot, "given");
    }
  } catch (err) {
    delete state.uploads[slot];
    status.textContent = err.message; status.classList.add("bad"); input.value = "";
    if (slot !== "reference") {
      document.querySelector(`input[name=mode-${slot}][value=given]`).disabled = true;
      if (mode(slot) === "given") setMode(slot, "generate");
    }
  }
  updateForm();
}

function updateForm() {
  const given = state.info.stems.filter((s) => mode(s) === "given");
  $("#seconds").disabled = given.length > 0;
  $("#length-note").textContent = given.length > 0
    ? `(follows the given stems: ${fmtTime(Math.max(...given.map((s) => state.uploads[s].seconds)))})`
    : `(one model segment is ${state.info.segment_seconds.toFixed(2)} s; longer pieces use windowed long-form)`;
  const cond = document.querySelector("input[name=cond]:checked").value;
  $("#prompt").disabled = !state.info.conditional || cond !== "prompt";
  $("#reference").disabled = !state.info.conditional || cond !== "reference";
  const nothingToDo = !state.info.stems.some((s) => mode(s) === "generate");
  const busy = state.job !== null;
  $("#generate-btn").disabled = busy || nothingToDo;
  $("#generate-btn").title = nothingToDo ? "choose at least one stem to generate" : "";
  $("#cancel-btn").disabled = !busy;
}

function payload() {
  const stems = state.info.stems;
  const cond = document.querySelector("input[name=cond]:checked").value;
  const body = {
    generate: stems.filter((s) => mode(s) === "generate"), given: stems.filter((s) => mode(s) === "given"),
    sampler: $("#sampler").value, steps: Number($("#steps").value), seed: Number($("#seed").value),
    guidance: $("#guidance").value === "" ? null : Number($("#guidance").value),
  };
  if (body.given.length === 0 && $("#seconds").value !== "") body.seconds = Number($("#seconds").value);
  if (state.info.conditional && cond === "prompt") body.prompt = $("#prompt").value;
  if (state.info.conditional && cond === "reference") body.use_reference = true;
  return body;
}

// ---------------------------------------------------------------- jobs

async function startJob() {
  showError("");
  stopMix();
  try {
    const status = await api("POST", `/api/sessions/${state.session}/jobs`, payload());
    state.job = status.id;
    updateForm();
    renderStatus(status);
    poll();
  } catch (err) { showError(err.message); }
}

async function cancelJob() {
  if (!state.job) return;
  try { renderStatus(await api("POST", `/api/jobs/${state.job}/cancel`)); } catch (err) { showError(err.message); }
}

function renderStatus(s) {
  if (s.state === "queued") {
    setStatus(s.queue_position > 1
      ? `Queued: position ${s.queue_position} of ${s.queue_length} (another generation is running)`
      : "Queued: next in line…", 0);
  } else if (s.state === "running") setStatus(`Running: ${s.phase} (${Math.round(100 * s.progress)} %)`, s.progress);
  else if (s.state === "done") setStatus(`Done in ${s.elapsed_s.toFixed(1)} s.`, 1);
  else if (s.state === "cancelled") setStatus("Cancelled.", 0);
  else if (s.state === "failed") { setStatus("Failed.", 0); showError(`Generation failed: ${s.error}`); }
}

async function poll() {
  if (state.polling) return;
  state.polling = true;
  let errors = 0;
  while (state.job) {
    try {
      const s = await api("GET", `/api/jobs/${state.job}`);
      errors = 0;
      renderStatus(s);
      if (["done", "failed", "cancelled"].includes(s.state)) {
        const id = state.job; state.job = null; updateForm();
        if (s.state === "done") showResults(id, s.result);
        break;
      }
    } catch (err) {
      if (++errors >= MAX_POLL_ERRORS || err.status === 404) {
        showError(`Lost track of the job: ${err.message}`); state.job = null; updateForm(); break;
      }
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  state.polling = false;
}

// ---------------------------------------------------------------- results + mixer

function showResults(jobId, result) {
  const base = `/api/jobs/${jobId}`;
  state.result = { jobId, base, stems: result.stems.map((s) => s.name) };
  state.buffers = {}; state.muted.clear(); state.solo.clear();
  const rows = $("#result-rows");
  rows.replaceChildren();
  for (const { name, role } of result.stems) {
    const button = (cls, set, label) =>
      el("button", { type: "button", class: cls, title: cls, onclick: () => toggle(set, name) }, label);
    const mute = button("mute", state.muted, "M"), solo = button("solo", state.solo, "S");
    rows.append(el("div", { class: "result-row", id: `result-${name}`, "data-stem": name },
      el("div", { class: "result-head" },
        el("span", { class: "track-name" }, dot(name), name),
        el("span", { class: `badge ${role}` }, role), mute, solo,
        el("audio", { class: "stem-player", controls: true, preload: "metadata", src: `${base}/audio/${name}.wav` }),
        el("a", { href: `${base}/audio/${name}.wav`, download: `${name}.wav` }, `${name}.wav`)),
      el("img", { src: `${base}/picture/${name}.png`, alt: `waveform and spectrogram of ${name}` })));
  }
  $("#mix-player").src = `${base}/audio/mix.wav`;
  $("#mix-link").href = `${base}/audio/mix.wav`;
  $("#zip-link").href = `${base}/stems.zip`;
  $("#result-note").textContent = `${fmtTime(result.seconds)} at ${result.sample_rate / 1000} kHz` +
    (result.windows > 1 ? `, long-form over ${result.windows} windows` : "") +
    ". Given stems are your uploads, unchanged.";
  $("#results").hidden = false;
  applyMix();
}

function toggle(set, name) { if (set.has(name)) set.delete(name); else set.add(name); applyMix(); }
function audible(name) { return state.solo.size ? state.solo.has(name) : !state.muted.has(name); }

function applyMix() {
  if (!state.result) return;
  for (const name of state.result.stems) {
    const row = $(`#result-${name}`);
    row.querySelector(".mute").classList.toggle("on", state.muted.has(name));
    row.querySelector(".solo").classList.toggle("on", state.solo.has(name));
    row.classList.toggle("muted", !audible(name));
    const gain = state.gains[name];
    if (gain) gain.gain.setTargetAtTime(audible(name) ? 1 : 0, state.ctx.currentTime, 0.01);
  }
  const chosen = state.result.stems.filter(audible);
  const remix = $("#remix-link");
  if (chosen.length) {
    remix.href = `${state.result.base}/remix.wav?stems=${chosen.join(",")}`;
    remix.removeAttribute("aria-disabled");
  } else {
    remix.removeAttribute("href");
    remix.setAttribute("aria-disabled", "true");
  }
  remix.textContent = `current mix (${chosen.length ? chosen.join(" + ") : "nothing audible"})`;
}

async function loadBuffers() {
  const { base, stems } = state.result;
  await Promise.all(stems.filter((n) => !state.buffers[n]).map(async (name) => {
    const data = await (await fetch(`${base}/audio/${name}.wav`)).arrayBuffer();
    state.buffers[name] = await state.ctx.decodeAudioData(data);
  }));
}

async function playMix() {
  if (!state.result) return;
  stopMix();
  state.ctx = state.ctx || new AudioContext();
  state.ctx.resume().catch(() => {});  // not awaited: a suspended context starts the scheduled sources later
  try { await loadBuffers(); } catch (err) { showError(`Could not decode the stems: ${err.message}`); return; }
  const at = state.ctx.currentTime + 0.05;
  state.gains = {};
  for (const name of state.result.stems) {
    const gain = state.ctx.createGain();
    gain.gain.value = audible(name) ? 1 : 0;
    gain.connect(state.ctx.destination);
    const src = state.ctx.createBufferSource();
    src.buffer = state.buffers[name];
    src.connect(gain);
    src.start(at);
    src.onended = () => { if (state.sources[0] === src) stopMix(); };
    state.sources.push(src); state.gains[name] = gain;
  }
  state.startedAt = at;
  tick();
}

function stopMix() {
  for (const src of state.sources) { src.onended = null; try { src.stop(); } catch (_) { /* not started */ } }
  state.sources = []; state.gains = {};
}

function tick() {
  if (!state.sources.length) return;
  $("#clock").textContent = fmtTime(Math.max(0, state.ctx.currentTime - state.startedAt));
  requestAnimationFrame(tick);
}

// ---------------------------------------------------------------- start-up

async function init() {
  try {
    state.info = await api("GET", "/api/info");
    state.session = (await api("POST", "/api/sessions")).session;
  } catch (err) { showError(`The studio is not reachable: ${err.message}`); return; }
  const info = state.info;
  $("#model-info").textContent = `Model ${info.model}: stems ${info.stems.join(", ")} · ` +
    `${info.sample_rate / 1000} kHz · segment ${info.segment_seconds.toFixed(2)} s · ` +
    (info.conditional ? "conditional (CLAP)" : "unconditional");
  buildStemRows();
  for (const s of info.samplers) {
    $("#sampler").append(el("option", { value: s, selected: s === info.defaults.sampler }, s));
  }
  $("#steps").value = info.defaults.steps; $("#steps").max = info.max_steps;
  $("#seed").value = info.defaults.seed; $("#seconds").max = info.max_seconds;
  $("#seconds").placeholder = info.segment_seconds.toFixed(2);
  $("#guidance").value = info.defaults.guidance;
  if (!info.conditional) {
    $("#conditioning").classList.add("disabled");
    for (const r of document.querySelectorAll("input[name=cond]")) r.disabled = r.value !== "none";
    $("#guidance").disabled = true;
    $("#cond-note").textContent = "This model is unconditional: no text prompt, reference clip or guidance.";
  } else {
    $("#cond-note").textContent = "Optional. With given stems and no prompt, the model is conditioned on their mix. " +
      "A prompt or reference sets guidance to 2 (the paper's value); change it freely.";
  }
  for (const r of document.querySelectorAll("input[name=cond]")) {
    r.addEventListener("change", () => {
      $("#guidance").value = r.value === "none" ? info.defaults.guidance : info.defaults.guidance_conditioned;
      updateForm();
    });
  }
  $("#reference").addEventListener("change", (e) => upload("reference", e.target));
  $("#dice").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * info.max_seed); });
  $("#generate-btn").addEventListener("click", startJob);
  $("#cancel-btn").addEventListener("click", cancelJob);
  $("#play-btn").addEventListener("click", playMix);
  $("#stop-btn").addEventListener("click", stopMix);
  window.addEventListener("pagehide", () => navigator.sendBeacon(`/api/sessions/${state.session}/end`));
  updateForm();
  document.body.dataset.ready = "true";
}

init();
