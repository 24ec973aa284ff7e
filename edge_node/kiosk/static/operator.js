// The operator page: fetches /operator/api/summary (same Basic credentials as the page) and draws
// counts per class, the prediction mix over time (stacked SVG bars) and the recent clips.
"use strict";

const COLORS = {
  happiness: "#f5c542", sadness: "#4a90e2", anger: "#e5484d", neutral: "#a0a7b1",
  fear: "#9b7bf0", disgust: "#3fb950", surprise: "#ff8c42", contempt: "#d16ba5",
};
const FALLBACK = ["#5aa9ff", "#f08c5a", "#64d2a4", "#c78bff", "#ffd166", "#ef6f8d"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const colorOf = (name, i) => COLORS[name] || FALLBACK[i % FALLBACK.length];

function el(tag, attrs = {}, text = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }

function drawCounts(data) {
  const ul = $("counts");
  ul.replaceChildren();
  const max = Math.max(1, ...Object.values(data.counts));
  data.classes.forEach((name, i) => {
    const n = data.counts[name] || 0;
    const li = el("li", { "data-cls": name, "data-n": String(n) });
    li.style.setProperty("--c", colorOf(name, i));
    li.append(el("span", {}, name));
    const track = el("span", { class: "track" });
    const fill = el("span", { class: "fill" });
    fill.style.display = "block";
    fill.style.width = `${(100 * n) / max}%`;
    track.append(fill);
    li.append(track, el("span", { class: "n" }, String(n)));
    ul.append(li);
  });
  $("total").textContent = `(${data.total} in all)`;
}

function drawChart(data) {
  const box = $("chart");
  box.replaceChildren();
  const buckets = data.timeline.buckets;
  if (!buckets.length) {
    box.append(el("p", { class: "muted" }, "No clips yet."));
    $("chart-legend").replaceChildren();
    return;
  }
  // A continuous time axis: hours (or days) without clips are empty slots, at most MAX_SLOTS.
  const MAX_SLOTS = 200;
  const bs = data.timeline.bucket_s;
  const first = Math.max(buckets[0].t, buckets[buckets.length - 1].t - (MAX_SLOTS - 1) * bs);
  const byT = new Map(buckets.map((b) => [b.t, b]));
  const slots = [];
  for (let t = first; t <= buckets[buckets.length - 1].t + 1e-6; t += bs) slots.push(byT.get(t) || { t, counts: {} });
  const W = Math.max(300, box.clientWidth), H = 240, left = 34, bottom = 22;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "prediction mix over time" }, null, SVG);
  const slot = (W - left) / slots.length;
  const barW = Math.max(2, Math.min(slot * 0.8, 48));
  slots.forEach((b, i) => {
    const total = Object.values(b.counts).reduce((a, n) => a + n, 0) || 1;
    let y = H - bottom;
    data.classes.forEach((name, j) => {
      const h = ((H - bottom - 6) * (b.counts[name] || 0)) / total;
      if (h <= 0) return;
      y -= h;
      const rect = el("rect", { x: left + i * slot, y, width: barW, height: h, fill: colorOf(name, j) }, null, SVG);
      rect.append(el("title", {}, `${fmtTime(b.t)} ${name}: ${b.counts[name]}`, SVG));
      svg.append(rect);
    });
  });
  const step = Math.max(1, Math.ceil(slots.length / 8));
  for (let i = 0; i < slots.length; i += step) {
    const label = new Date(slots[i].t * 1000);
    const text = bs >= 86400 ? label.toLocaleDateString() : label.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(el("text", { x: left + i * slot, y: H - 6, class: "axis" }, text, SVG));
  }
  svg.append(el("text", { x: 0, y: 12, class: "axis" }, "100%", SVG));
  box.append(svg);
  const legend = $("chart-legend");
  legend.replaceChildren();
  data.classes.forEach((name, j) => {
    const item = el("span");
    const key = el("i");
    key.style.background = colorOf(name, j);
    item.append(key, document.createTextNode(name));
    legend.append(item);
  });
}

function drawRecent(data) {
  const body = $("recent");
  body.replaceChildren();
  if (!data.recent.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "6", class: "muted" }, "No clips stored."));
    body.append(tr);
  }
  for (const clip of data.recent) {
    const tr = el("tr");
    const len = clip.start && clip.end ? `${(clip.end - clip.start).toFixed(1)} s` : "–";
    const conf = clip.confidence === null || clip.confidence === undefined ? "–" : `${Math.round(clip.confidence * 100)}%`;
    tr.append(el("td", {}, String(clip.id ?? "–")), el("td", {}, fmtTime(clip.start)), el("td", {}, len),
      el("td", {}, String(clip.frames ?? "–")), el("td", { class: "cls" }, clip.prediction || "–"), el("td", {}, conf));
    body.append(tr);
  }
}

async function refresh() {
  const bucket = $("bucket").value;
  try {
    const res = await fetch(`/operator/api/summary?bucket_s=${bucket}&limit=25`, { cache: "no-store" });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
    $("error").hidden = true;
    drawCounts(data);
    drawChart(data);
    drawRecent(data);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("error").textContent = `Could not load the clip database: ${e.message}`;
    $("error").hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("bucket").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, 15000);
});
