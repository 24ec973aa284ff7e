// The fleet page: polls /api/fleet and renders it. Read-only; text only (no innerHTML from data).
"use strict";

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (cls) {
    const span = document.createElement("span");
    span.className = "state " + cls;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
}

function when(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return d.toLocaleString();
}

function ago(t, now) {
  if (!t) return "–";
  const s = Math.max(0, Math.round(now - t));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function render(data) {
  const now = data.generated_at;
  $("central").textContent = data.central_version === null ? "none yet" : "v" + data.central_version;
  $("finished").textContent = data.rounds_finished;
  $("submitted").textContent = data.submissions_total;
  $("stored").textContent = bytes(data.stored_bytes);

  const rej = Object.entries(data.rejections_total).sort((a, b) => b[1] - a[1]);
  const total = rej.reduce((s, [, n]) => s + n, 0);
  $("rej-total").textContent = total ? "(" + total + ")" : "(none)";
  const max = Math.max(1, ...rej.map(([, n]) => n));
  const list = $("rejections");
  list.replaceChildren();
  for (const [reason, n] of rej) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = reason;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * n / max).toFixed(1) + "%";
    track.appendChild(fill);
    const count = document.createElement("span");
    count.className = "n";
    count.textContent = n;
    li.append(name, track, count);
    list.appendChild(li);
  }

  const online = data.nodes.filter((n) => n.state === "online").length;
  $("node-count").textContent = "(" + online + " of " + data.nodes.length + " online)";
  const nodes = $("nodes");
  nodes.replaceChildren();
  for (const n of data.nodes) {
    const tr = document.createElement("tr");
    cell(tr, n.node_id);
    cell(tr, n.state, n.state);
    cell(tr, n.central_version === null ? "–" : "v" + n.central_version);
    cell(tr, n.round_id === null ? "–" : n.round_id);
    cell(tr, ago(n.last_seen, now));
    // the node's visit-level DP window: epsilon spent and left (– when it personalizes without DP)
    cell(tr, n.epsilon_spent == null ? "–" : n.epsilon_spent.toFixed(2) + " / " + n.epsilon_left.toFixed(2) + " left");
    nodes.appendChild(tr);
  }

  const rounds = $("rounds");
  rounds.replaceChildren();
  for (const r of data.rounds) {
    const tr = document.createElement("tr");
    const rejected = Object.values(r.rejections).reduce((s, n) => s + n, 0);
    cell(tr, r.round_id);
    cell(tr, r.state, r.state);
    cell(tr, "v" + r.base_version);
    cell(tr, r.result_version === null ? "–" : "v" + r.result_version);
    cell(tr, r.submissions);
    cell(tr, rejected);
    cell(tr, when(r.opened_at));
    cell(tr, r.closed_at ? Math.round(r.closed_at - r.opened_at) + " s" : "–");
    rounds.appendChild(tr);
  }
  $("updated").textContent = "updated " + new Date(now * 1000).toLocaleTimeString();
}

async function refresh() {
  try {
    const res = await fetch("/api/fleet", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    render(await res.json());
    $("error").hidden = true;
  } catch (err) {
    $("error").textContent = "Cannot read the fleet state: " + err.message;
    $("error").hidden = false;
  }
}

refresh();
setInterval(refresh, 5000);
