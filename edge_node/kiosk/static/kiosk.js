// The kiosk page: subscribes to /api/events (server-sent state), smooths the probabilities
// (exponential moving average, time constant TAU_S) so the bars do not flicker, shows the MJPEG
// preview with the face box, and sends pause / resume / forget me.
"use strict";

const TAU_S = 0.45; // smoothing time constant of the bars, seconds
const COLORS = {
  happiness: "#f5c542", sadness: "#4a90e2", anger: "#e5484d", neutral: "#a0a7b1",
  fear: "#9b7bf0", disgust: "#3fb950", surprise: "#ff8c42", contempt: "#d16ba5",
};
const FALLBACK = ["#5aa9ff", "#f08c5a", "#64d2a4", "#c78bff", "#ffd166", "#ef6f8d"];

const $ = (id) => document.getElementById(id);
const smooth = { clip: {}, frame: {} }; // class -> smoothed probability
const DISPLAY_NAMES = { vfer: "the video so far", ifer: "this frame", teacher: "the face model", ensemble: "the face models together" };
let classes = [];
let lastT = 0;
let latest = null;

function colorOf(name, i) { return COLORS[name] || FALLBACK[i % FALLBACK.length]; }

function buildBars(names) {
  classes = names.slice();
  const ul = $("bars");
  ul.replaceChildren();
  names.forEach((name, i) => {
    const li = document.createElement("li");
    li.className = "bar-row";
    li.dataset.cls = name;
    li.style.setProperty("--c", colorOf(name, i));
    li.innerHTML =
      '<span class="name"></span><span class="tracks">' +
      '<span class="track clip"><span class="fill"></span></span>' +
      '<span class="track frm"><span class="fill"></span></span></span><span class="pct">0%</span>';
    li.querySelector(".name").textContent = name;
    ul.appendChild(li);
  });
}

function ema(store, target, alpha) {
  for (const name of classes) {
    const prev = store[name] ?? 0;
    const x = Number(target?.[name] ?? 0);
    store[name] = prev + alpha * (x - prev);
  }
}

function render(state) {
  const names = state.model?.classes?.length ? state.model.classes
    : Object.keys(state.vfer_probs || state.ifer_probs || {});
  if (names.join() !== classes.join()) buildBars(names);

  const now = performance.now() / 1000;
  const dt = lastT ? Math.min(now - lastT, 2) : 1e9;
  lastT = now;
  const alpha = 1 - Math.exp(-dt / TAU_S);
  // the bars and the word follow the configured display (v, g, the teacher or the ensemble)
  const shown = state.display === "vfer" ? state.vfer_probs : state.display_probs;
  ema(smooth.clip, shown || state.vfer_probs, alpha);
  ema(smooth.frame, state.ifer_probs, alpha);

  // the word is the node's steady label (a moving average with hysteresis, edge_node/display.py),
  // else the argmax of the bars
  let best = state.emotion || null;
  if (best === null) {
    for (const name of classes) if (best === null || smooth.clip[name] > smooth.clip[best]) best = name;
  }
  for (const li of $("bars").children) {
    const name = li.dataset.cls;
    const c = smooth.clip[name] || 0, f = smooth.frame[name] || 0;
    li.dataset.clip = c.toFixed(4);
    li.dataset.frame = f.toFixed(4);
    li.querySelector(".clip .fill").style.transform = `scaleX(${c.toFixed(4)})`;
    li.querySelector(".frm .fill").style.transform = `scaleX(${f.toFixed(4)})`;
    li.querySelector(".pct").textContent = `${Math.round(c * 100)}%`;
    li.classList.toggle("top", state.face_present && name === best);
  }

  const face = !!state.face_present;
  document.body.classList.toggle("no-face", !face);
  const hasClip = Object.keys(state.vfer_probs || {}).length > 0;
  const emotion = face ? (hasClip && best ? best : state.emotion) : null;
  const el = $("emotion");
  el.textContent = emotion || (face ? "…" : "No face");
  el.dataset.emotion = emotion || "";
  el.style.setProperty("--emotion-color", emotion ? colorOf(emotion, classes.indexOf(emotion)) : "");
  const source = DISPLAY_NAMES[state.display] || "the video so far";
  $("hint").textContent = face ? (hasClip ? `from ${source}` : "reading…") : "Look at the camera";

  renderStatus(state);
  renderNotice(state);
  renderFaceBox(state);
}

function ago(iso) {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return "never";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 90) return "just now";
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function renderStatus(state) {
  const m = state.model || {};
  const version = m.head_version ? m.head_version : "–";
  const kind = m.personalized ? "personalized" : "central";
  $("model").textContent = `${version} · round ${m.federation_round ?? 0} · ${kind}`;
  const f = state.federation || {};
  let fed = "off";
  if (f.enabled) {
    fed = f.connected ? "connected" : "offline";
    if (f.last_round !== null && f.last_round !== undefined) fed += ` · round ${f.last_round}`;
  }
  $("federation").textContent = fed;
  $("adapted").textContent = ago(state.last_adaptation);
  $("rec").hidden = !(state.recording && !state.paused);
  $("paused").hidden = !state.paused;
  const left = Math.ceil(state.forget_pause_s || 0);
  // after "forget me" recording stays off for a while: say for how long
  $("paused").textContent = left > 0 ? `Recording paused · resumes in ${left} s` : "Recording paused";
  $("pause-btn").disabled = left > 0;
  $("pause-btn").textContent = state.paused ? "Resume recording" : "Pause recording";
  $("pause-btn").dataset.paused = state.paused ? "1" : "0";
}

// The operator's notice (node.yaml deployment.notice / deployment.operator) replaces the built-in
// text; the operator's name is added either way. Text only, never markup.
let builtInNotice = null;
function renderNotice(state) {
  const n = state.notice || {};
  const el = $("consent");
  if (builtInNotice === null) builtInNotice = el.innerHTML;
  if (!n.text && !n.operator && !n.privacy) return;
  const key = JSON.stringify(n);
  if (el.dataset.notice === key) return;
  el.dataset.notice = key;
  if (n.text) el.textContent = n.text; else el.innerHTML = builtInNotice;
  if (n.operator) {
    const who = document.createElement("span");
    who.className = "operator";
    who.textContent = ` Run by ${n.operator}.`;
    el.appendChild(who);
  }
  if (n.privacy) {
    // adaptation.privacy: epsilon per night and over the window, in plain words (server-made)
    const dp = document.createElement("span");
    dp.className = "privacy";
    dp.textContent = ` ${n.privacy}`;
    el.appendChild(dp);
  }
}

function renderFaceBox(state) {
  const box = $("facebox");
  const size = state.frame_size;
  if (!state.face_present || !state.face_box || !size || !size[0] || !size[1]) {
    box.hidden = true;
    return;
  }
  const [x, y, w, h] = state.face_box;
  box.hidden = false;
  box.style.left = `${(100 * x) / size[0]}%`;
  box.style.top = `${(100 * y) / size[1]}%`;
  box.style.width = `${(100 * w) / size[0]}%`;
  box.style.height = `${(100 * h) / size[1]}%`;
}

// Keep the preview frame at the camera's aspect ratio, as large as its panel allows.
function fitFrame() {
  const size = latest?.frame_size;
  const panel = $("preview-box");
  const frame = $("frame");
  if (!size || !size[0] || !size[1]) {
    frame.style.width = "100%";
    frame.style.height = "100%";
    return;
  }
  const pw = panel.clientWidth, ph = panel.clientHeight;
  const scale = Math.min(pw / size[0], ph / size[1]);
  frame.style.width = `${Math.floor(size[0] * scale)}px`;
  frame.style.height = `${Math.floor(size[1] * scale)}px`;
}

function startPreview() {
  const img = $("preview");
  img.onload = () => { $("no-preview").hidden = true; };
  img.onerror = () => {
    $("no-preview").hidden = false;
    setTimeout(() => { img.src = `/preview.mjpg?t=${Date.now()}`; }, 3000);
  };
  img.src = "/preview.mjpg";
}

function startEvents() {
  const es = new EventSource("/api/events");
  es.onmessage = (ev) => {
    $("conn").hidden = true;
    const state = JSON.parse(ev.data);
    const resize = JSON.stringify(state.frame_size) !== JSON.stringify(latest?.frame_size);
    latest = state;
    if (resize) fitFrame();
    render(state);
  };
  es.onerror = () => { $("conn").hidden = false; };
}

let toastTimer = null;
function toast(text, ms = 4000) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  if (ms) toastTimer = setTimeout(() => { el.hidden = true; }, ms);
}

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function wireControls() {
  $("pause-btn").addEventListener("click", async () => {
    const paused = $("pause-btn").dataset.paused === "1";
    try {
      const data = await post(paused ? "/api/resume" : "/api/pause");
      if (latest) render({ ...latest, paused: data.paused });
      toast(data.paused ? "Recording paused" : "Recording resumed", 2000);
    } catch (e) { toast(`Could not change recording: ${e.message}`); }
  });
  const dialog = $("confirm");
  $("forget-btn").addEventListener("click", () => dialog.showModal());
  $("confirm-cancel").addEventListener("click", () => dialog.close());
  $("confirm-ok").addEventListener("click", async () => {
    dialog.close();
    toast("Deleting every clip…", 0);
    try {
      await post("/api/forget", { confirm: true });
      document.body.dataset.forgotten = "1";
      toast(
        "Done: every clip on this device and the model personalized from them were deleted. " +
        "Recording is paused for a while. An update already sent cannot be recalled: " +
        "it is averaged into the fleet's model.", 10000);
    } catch (e) { toast(`Could not delete: ${e.message}`, 8000); }
  });
}

window.addEventListener("resize", fitFrame);
document.addEventListener("DOMContentLoaded", () => {
  wireControls();
  startEvents();
  startPreview();
});
