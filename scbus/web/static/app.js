// The scbus status page: polls /page.json and redraws. No libraries, nothing fetched
// from elsewhere; every value is written as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const PLOT_W = 160, PLOT_H = 34, PLOT_SECONDS = 300;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fmtNumber(v, digits) {
  if (v === null || v === undefined) return "–";
  return Number(v).toFixed(digits);
}

function fmtSeconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1000).toFixed(1) + " ms";
  if (v < 120) return v.toFixed(2) + " s";
  return (v / 60).toFixed(1) + " min";
}

function fmtAge(at, now) {
  const s = Math.max(0, now - at);
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function token() { return sessionStorage.getItem("scbus-token") || ""; }

// A small area plot of one column of an app's samples over the last minutes.
function plot(rows, column, kind, now) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "plot " + kind);
  svg.setAttribute("width", PLOT_W);
  svg.setAttribute("height", PLOT_H);
  svg.setAttribute("viewBox", `0 0 ${PLOT_W} ${PLOT_H}`);
  const points = rows.filter(r => r[column] !== null && now - r[0] <= PLOT_SECONDS);
  const top = Math.max(...points.map(r => r[column]), 0);
  // The time axis grows with the data from one minute up to PLOT_SECONDS.
  const span = Math.min(PLOT_SECONDS, Math.max(60, rows.length ? now - rows[0][0] : 0));
  const x = t => PLOT_W - ((now - t) / span) * PLOT_W;
  const y = v => PLOT_H - 2 - (top > 0 ? (v / top) * (PLOT_H - 12) : 0);
  if (points.length > 1) {
    const line = points.map(r => `${x(r[0]).toFixed(1)},${y(r[column]).toFixed(1)}`).join(" ");
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", `${x(points[0][0]).toFixed(1)},${PLOT_H} ${line} ${x(points[points.length - 1][0]).toFixed(1)},${PLOT_H}`);
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("class", "line");
    path.setAttribute("points", line);
    svg.append(area, path);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", 3);
  label.setAttribute("y", 9);
  label.textContent = points.length > 1
    ? "max " + (kind === "lag" ? fmtSeconds(top) : fmtNumber(top, 1) + "/s")
    : "collecting…";
  svg.append(label);
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${kind}, last ${Math.round(span)} s`;
  svg.append(title);
  return svg;
}

async function post(path) {
  const result = document.getElementById("action-result");
  try {
    const response = await fetch(path, { method: "POST", headers: { "Authorization": "Bearer " + token() } });
    const body = await response.json();
    result.textContent = response.ok ? "done: " + path : (body.error || response.statusText);
  } catch (e) {
    result.textContent = "failed: " + e;
  }
  refresh();
}

function actionButton(label, path, writable, testid) {
  const button = el("button", { type: "button", "data-testid": testid }, label);
  button.disabled = !writable || !token();
  button.title = !writable ? "writing endpoints are off ([http] token_env)" : (!token() ? "enter the operator token first" : "");
  button.addEventListener("click", () => post(path));
  return button;
}

function drawApps(page) {
  const body = document.querySelector("#apps tbody");
  body.replaceChildren();
  for (const app of page.apps) {
    const rows = page.series[app.name] || [];
    const last = rows.length ? rows[rows.length - 1] : [0, null, null, null, null];
    const state = app.paused ? "paused" : "consuming";
    const backlog = app.queued === null ? null : app.queued + app.in_flight;
    const action = app.paused
      ? actionButton("resume", `/apps/${encodeURIComponent(app.name)}/resume`, page.writable, "resume-" + app.name)
      : actionButton("pause", `/apps/${encodeURIComponent(app.name)}/pause`, page.writable, "pause-" + app.name);
    body.append(el("tr", { "data-app": app.name },
      el("td", {}, el("strong", {}, app.name)),
      el("td", {}, el("span", { class: "state " + (app.paused ? "paused" : "") }, state)),
      el("td", { class: "num rate" }, fmtNumber(last[1], 1)),
      el("td", { class: "num handled" }, app.handled),
      el("td", { class: "num idle-runs" }, app.idle_runs ?? 0),
      el("td", { class: "num errors" + (app.errors ? " some" : "") }, app.errors),
      el("td", { class: "num error-rate" + (last[4] ? " some" : "") }, fmtNumber(last[4], 2)),
      el("td", { class: "num" }, `${app.in_flight}/${app.max_in_flight}`),
      el("td", { class: "num backlog" }, backlog === null ? "?" : backlog),
      el("td", { class: "num" }, fmtSeconds(last[2])),
      el("td", { class: "num" }, fmtSeconds(app.heartbeat_lag)),
      el("td", {}, plot(rows, 1, "throughput", page.now)),
      el("td", {}, plot(rows, 2, "lag", page.now)),
      el("td", {}, action),
    ));
  }
}

function drawErrors(page) {
  const box = document.getElementById("errors");
  document.getElementById("error-count").textContent = page.errors.length ? `(${page.errors.length} kept)` : "";
  if (!page.errors.length) { box.replaceChildren(el("p", { class: "muted" }, "none")); return; }
  const open = new Set([...box.querySelectorAll("details[open]")].map(d => d.dataset.id));
  box.replaceChildren(...page.errors.map(error => {
    const frames = (error.traceback || []).map(f => `  ${f.file}:${f.line} in ${f.function}\n    ${f.source}`).join("\n");
    const lines = (error.log || []).map(r => `${r.level} ${r.logger}: ${r.message}`).join("\n");
    const details = el("details", { "data-id": error.id },
      el("summary", {}, "traceback, log lines and message"),
      el("pre", {}, (frames || "(no frames from the app)") + `\n${error.error_type}: ${error.error}`),
      el("pre", {}, lines || "(no log lines)"),
      el("pre", {}, JSON.stringify(error.message, null, 1)));
    details.open = open.has(error.id);
    return el("div", { class: "error" },
      el("span", { class: "what" }, `${error.app}: ${error.error_type}: ${error.error}`),
      el("span", { class: "when" }, `${fmtAge(error.at, page.now)} · ${error.handler || ""}`),
      details);
  }));
}

function drawSetAside(page, kind) {
  const entries = page.set_aside[kind] || [];
  const total = page.set_aside_total[kind] || 0;
  document.getElementById(kind + "-count").textContent = page.set_aside_errors[kind]
    ? `(cannot list: ${page.set_aside_errors[kind]})` : `(${total})`;
  const body = document.querySelector(`#${kind} tbody`);
  if (!entries.length) { body.replaceChildren(el("tr", {}, el("td", { class: "muted" }, "none"))); return; }
  body.replaceChildren(...entries.map(e => el("tr", { "data-id": e.id },
    el("td", {}, e.id),
    el("td", {}, e.type || "?"),
    el("td", {}, e.app || ""),
    el("td", {}, e.reason),
    el("td", { class: "muted" }, e.at ? fmtAge(e.at, page.now) : ""),
    el("td", { class: "body" }, e.body),
    el("td", {}, actionButton("replay", `/set-aside/${kind}/${encodeURIComponent(e.id)}/replay`, page.writable, "replay-" + e.id)),
  )));
}

function draw(page) {
  document.title = `scbus · ${page.bus}`;
  document.getElementById("bus-name").textContent = page.bus;
  document.getElementById("process").textContent = `${page.process} · ${page.version}`;
  const connected = document.getElementById("connected");
  connected.textContent = (page.connected ? "connected" : "disconnected")
    + (page.send_buffer ? ` · ${page.send_buffer} waiting to be sent` : "");
  connected.className = "badge " + (page.connected ? "ok" : "bad");
  document.getElementById("uptime").textContent = page.uptime === null ? "" : `up ${fmtNumber(page.uptime / 60, 1)} min`;
  document.getElementById("updated").textContent = "updated " + new Date(page.now * 1000).toLocaleTimeString();
  document.getElementById("sample-every").textContent = page.sample_every;
  document.getElementById("token-note").textContent = page.writable
    ? "Replay, pause and resume need the bearer token; it is kept in this tab only."
    : page.token_env
      ? `Writing endpoints are off: ${page.token_env} (the [http] token_env) is not set in the bus's environment; set it and restart the bus.`
      : "Writing endpoints are off: set [http] token_env to an environment variable holding the token, and restart the bus.";
  document.getElementById("token-form").hidden = !page.writable;
  drawApps(page);
  drawErrors(page);
  drawSetAside(page, "unrouted");
  drawSetAside(page, "dead");
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const response = await fetch("/page.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`/page.json answered ${response.status}`);
    draw(await response.json());
    problem.hidden = true;
  } catch (e) {
    problem.textContent = "Cannot reach the bus: " + e.message;
    problem.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", event => {
    event.preventDefault();
    sessionStorage.setItem("scbus-token", input.value.trim());
    refresh();
  });
  refresh();
  setInterval(refresh, POLL_MS);
});
