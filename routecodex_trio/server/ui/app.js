// routecodex dashboard: plain JavaScript, no library, nothing loaded from the network.
//
// Data comes from the gateway itself: the live feed /ui/events (server-sent events read
// through fetch, because EventSource cannot send the admin key as a header) and
// /ui/api/state, polled every two seconds while the tab is open. Every value from the
// gateway is written with textContent, never as HTML.
"use strict";

const KEY_STORAGE = "routecodex.adminKey";
const MAX_ROWS_DEFAULT = 500;
const POLL_MS = 2000;
const COLORS = ["#2f7ed8", "#8bbc21", "#910000", "#1aadce", "#492970", "#f28f43", "#77a1e5", "#c42525", "#a6c96a"];
const STATUS_COLORS = { "2xx": "#3a9d23", "429": "#e0a800", "4xx": "#f28f43", "5xx": "#c42525", "other": "#777" };

const state = {
  maxRows: MAX_ROWS_DEFAULT,
  rows: [],            // newest first
  seen: new Set(),     // seq numbers already shown
  selected: null,
  feedAbort: null,
  pollTimer: null,
  lastState: null,
  paused: false,
  authFailed: false,
};

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function adminHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "x-api-key": key } : {};
}

async function api(path, options) {
  const init = Object.assign({}, options || {});
  init.headers = Object.assign({}, init.headers || {}, adminHeaders());
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401 || response.status === 403) {
    needLogin(errorText(body) || `HTTP ${response.status}`);
    throw new Error("not authorized");
  }
  return { status: response.status, body };
}

function errorText(body) {
  if (!body) return "";
  if (body.error && typeof body.error === "object") return body.error.message || "";
  if (typeof body.error === "string") return body.error;
  return "";
}

// -- login ---------------------------------------------------------------------------------

function needLogin(message) {
  state.authFailed = true;
  stopAll();
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = sessionStorage.getItem(KEY_STORAGE) || message.includes("admin")
    ? message : "";
  $("login-key").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("login-key").value.trim());
  $("login-key").value = "";
  start();
});

// -- views ---------------------------------------------------------------------------------

function currentView() {
  const name = (location.hash || "#requests").slice(1);
  return ["requests", "targets", "engines", "charts", "config"].includes(name) ? name : "requests";
}

function showView() {
  const view = currentView();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.view === view);
  if (view === "config") loadConfig();
  if (view === "charts" && state.lastState) drawCharts(state.lastState.charts);
}
window.addEventListener("hashchange", showView);

// -- live requests -------------------------------------------------------------------------

function fmtTime(unix) {
  const d = new Date(unix * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtNum(value) { return value === null || value === undefined ? "–" : String(value); }

function protocolText(row) {
  return row.upstream_protocol ? `${row.client_protocol} → ${row.upstream_protocol}` : row.client_protocol;
}

function statusClass(status) {
  if (status >= 500) return "s5"; if (status === 429) return "s429"; if (status >= 400) return "s4"; return "s2";
}

function rowNode(row) {
  const tr = el("tr", { "data-id": row.id, "data-seq": row.seq, class: statusClass(row.status),
                        onclick: () => selectRow(row.id) },
    el("td", { text: fmtTime(row.time) }),
    el("td", { text: row.endpoint }),
    el("td", { text: protocolText(row) }),
    el("td", { title: row.reason }, el("span", { class: "cat", text: row.category || "–" }),
       row.reason ? el("span", { class: "why", text: row.reason }) : null),
    el("td", { text: row.target || "–" }),
    el("td", { text: row.key || "–" }),
    el("td", { class: "status", text: String(row.status) }),
    el("td", { class: "num", text: fmtNum(row.input_tokens) }),
    el("td", { class: "num", text: fmtNum(row.output_tokens) }),
    el("td", { class: "num", text: fmtNum(row.cached_tokens) }),
    el("td", { class: "num", text: fmtNum(row.ttft_ms) }),
    el("td", { class: "num", text: fmtNum(row.total_ms) }),
  );
  if (row.id === state.selected) tr.classList.add("selected");
  return tr;
}

function addRow(row) {
  if (state.seen.has(row.seq)) return;
  state.seen.add(row.seq);
  state.rows.unshift(row);
  const body = $("requests").tBodies[0];
  if (!state.paused) body.insertBefore(rowNode(row), body.firstChild);
  while (state.rows.length > state.maxRows) {
    const old = state.rows.pop();
    state.seen.delete(old.seq);
    const node = body.querySelector(`tr[data-seq="${old.seq}"]`);
    if (node) node.remove();
  }
  $("rows-count").textContent = `${state.rows.length} requests (newest first, last ${state.maxRows})`;
}

function redrawRows() {
  const body = $("requests").tBodies[0];
  body.replaceChildren(...state.rows.map(rowNode));
}

$("pause").addEventListener("change", (event) => {
  state.paused = event.target.checked;
  if (!state.paused) redrawRows();
});

async function selectRow(id) {
  state.selected = id;
  for (const tr of $("requests").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === id);
  const { status, body } = await api(`/ui/api/requests/${encodeURIComponent(id)}`);
  const detail = $("detail");
  detail.hidden = false;
  if (status !== 200) {
    $("detail-title").textContent = errorText(body) || `HTTP ${status}`;
    $("detail-decision").replaceChildren();
    $("detail-stages").replaceChildren();
    return;
  }
  const r = body.request;
  $("detail-title").textContent = `${r.id} · ${r.status}`;
  const dl = $("detail-decision");
  dl.replaceChildren();
  const add = (name, value) => { dl.append(el("dt", { text: name }), el("dd", { text: value })); };
  add("endpoint", `${r.endpoint}${r.stream ? " (stream)" : ""}`);
  add("protocol", protocolText(r));
  add("category", r.category || "–");
  add("why", r.reason || "–");
  add("candidates", r.candidates.length ? r.candidates.join(" → ") : "–");
  add("answered by", r.target || "–");
  add("attempts", String(r.attempts));
  for (const f of r.failures) add(`failed: ${f.target}`, f.error);
  if (r.error) add("error", r.error);
  add("tokens in/out/cached", `${fmtNum(r.input_tokens)} / ${fmtNum(r.output_tokens)} / ${fmtNum(r.cached_tokens)}`);
  add("TTFT / total ms", `${fmtNum(r.ttft_ms)} / ${fmtNum(r.total_ms)}`);
  const stages = $("detail-stages");
  stages.replaceChildren();
  if (!body.stages.length) {
    stages.append(el("p", { class: "muted", text: r.snapshot
      ? "The snapshot files are gone (pruned or removed)."
      : "Snapshots are off ([snapshots] enabled = false): no stages were kept." }));
  }
  for (const stage of body.stages) {
    const text = stage.payload !== null ? JSON.stringify(stage.payload, null, 2) : (stage.text || "");
    stages.append(el("details", { class: "stage" },
      el("summary", { text: stage.file + (stage.truncated ? " (truncated)" : "") }),
      el("pre", { text })));
  }
}
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.selected = null; redrawRows(); });

function setFeed(on, title) {
  const dot = $("feed-state");
  dot.className = on ? "dot on" : "dot off";
  dot.title = title;
}

async function runFeed() {
  while (!state.authFailed) {
    const abort = new AbortController();
    state.feedAbort = abort;
    try {
      const response = await fetch("/ui/events", { headers: adminHeaders(), signal: abort.signal });
      if (response.status === 401 || response.status === 403) {
        let body = null; try { body = await response.json(); } catch (e) { /* not JSON */ }
        needLogin(errorText(body) || `HTTP ${response.status}`);
        return;
      }
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      setFeed(true, "live");
      await readEvents(response.body.getReader());
      setFeed(false, "reconnecting");
    } catch (error) {
      if (abort.signal.aborted) return;
      setFeed(false, `feed: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (!data.length) continue;
      const payload = JSON.parse(data.join("\n"));
      if (name === "request") addRow(payload);
      else if (name === "hello") state.maxRows = payload.rows || MAX_ROWS_DEFAULT;
      else if (name === "dropped") setFeed(false, "fell behind; reconnecting");
    }
  }
}

// -- polled state: targets, engines, charts --------------------------------------------------

async function poll() {
  try {
    const { status, body } = await api("/ui/api/state");
    if (status === 200) {
      state.lastState = body;
      $("error").hidden = true;
      renderGateway(body.gateway);
      renderTargets(body.targets);
      renderEngines(body.engines);
      if (currentView() === "charts") drawCharts(body.charts);
    }
  } catch (error) {
    if (state.authFailed) return;
    $("error").hidden = false;
    $("error").textContent = `cannot reach the gateway: ${error.message}`;
  }
  state.pollTimer = setTimeout(poll, POLL_MS);
}

function renderGateway(g) {
  $("gateway-line").textContent = `v${g.version} · pid ${g.pid} · ${g.in_flight} in flight` +
    (g.draining ? " · draining" : "") + ` · snapshots ${g.snapshots ? "on" : "off"}`;
  $("reload").disabled = !g.can_reload;
  $("config-source").textContent = g.config_source ? `from ${g.config_source}` : "not loaded from a file";
}

function renderTargets(targets) {
  const body = $("targets").tBodies[0];
  body.replaceChildren(...targets.map((t) => {
    const cooling = !t.healthy;
    const clear = el("button", { type: "button", class: "small", "data-target": t.target,
                                 onclick: () => clearCooldown(t.target) }, "clear cooldown");
    clear.disabled = !cooling && !t.consecutive_failures;
    return el("tr", { "data-target": t.target, class: cooling ? "cooling" : "" },
      el("td", { text: t.target }),
      el("td", {}, el("span", { class: cooling ? "badge bad" : "badge good", text: cooling ? "cooling down" : "healthy" })),
      el("td", { class: "num", text: cooling ? `${t.cooldown_remaining_s.toFixed(1)} s` : "–" }),
      el("td", { class: "reason", text: t.reason || "–" }),
      el("td", { class: "num", text: String(t.consecutive_failures) }),
      el("td", { class: "num", text: t.error_rate === null ? "–" : `${(t.error_rate * 100).toFixed(1)} % of ${t.attempts}` }),
      el("td", { class: "num", text: fmtNum(t.ttft_p50_ms) }),
      el("td", { class: "num", text: fmtNum(t.ttft_p95_ms) }),
      el("td", {}, clear));
  }));
}

async function clearCooldown(target) {
  await api("/ui/api/targets/clear", { method: "POST", headers: { "content-type": "application/json" },
                                       body: JSON.stringify({ target }) });
  clearTimeout(state.pollTimer); poll();
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderEngines(engines) {
  $("engines-empty").hidden = engines.length > 0;
  const box = $("engines");
  box.replaceChildren(...engines.map((e) => {
    const running = e.state !== "stopped";
    const start = el("button", { type: "button", class: "start", "data-engine": e.name,
                                 onclick: () => engineAction(e.name, "start") }, "start");
    const stop = el("button", { type: "button", class: "stop", "data-engine": e.name,
                                onclick: () => engineAction(e.name, "stop") }, "stop");
    start.disabled = running; stop.disabled = !running;
    const facts = el("dl", {});
    const add = (name, value) => facts.append(el("dt", { text: name }), el("dd", { text: value }));
    add("state", e.state);
    add("port", fmtNum(e.port));
    add("pid", fmtNum(e.pid));
    add("uptime", fmtDuration(e.uptime_s));
    add("last use", e.last_use ? new Date(e.last_use * 1000).toTimeString().slice(0, 8) : "–");
    add("in flight", String(e.in_flight));
    add("starts", String(e.starts));
    if (e.last_error) add("last error", e.last_error);
    if (e.retry_in_s) add("retry in", fmtDuration(e.retry_in_s));
    return el("article", { class: "engine", "data-engine": e.name, "data-state": e.state },
      el("h2", {}, e.name, " ", el("span", { class: `badge state-${e.state}`, text: e.state })),
      facts,
      el("div", { class: "buttons" }, start, stop),
      el("h3", { text: "last log lines" }),
      el("pre", { class: "log", text: e.log_lines.slice(-20).join("\n") || "(no output yet)" }));
  }));
}

async function engineAction(name, action) {
  for (const b of document.querySelectorAll(`button[data-engine="${CSS.escape(name)}"]`)) b.disabled = true;
  clearTimeout(state.pollTimer); poll();
  const { status, body } = await api(`/ui/api/engines/${encodeURIComponent(name)}/${action}`, { method: "POST" });
  if (status !== 200) { $("error").hidden = false; $("error").textContent = errorText(body) || `HTTP ${status}`; }
  clearTimeout(state.pollTimer); poll();
}

// -- charts (canvas, no library) ---------------------------------------------------------------

function drawChart(canvasId, legendId, times, series, unit) {
  const canvas = $(canvasId);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 56, right = 10, top = 10, bottom = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px sans-serif";
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = max > 0 ? niceCeil(max) : 1;
  const x = (i) => left + (i / Math.max(1, times.length - 1)) * (w - left - right);
  const y = (v) => top + (1 - v / max) * (h - top - bottom);
  ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(w - right, y(v)); ctx.stroke();
    ctx.fillText(`${formatAxis(v)}${unit}`, 2, y(v) + 4);
  }
  for (let i = 0; i < times.length; i += 60) {
    ctx.fillText(new Date(times[i] * 1000).toTimeString().slice(0, 5), x(i) - 14, h - 6);
  }
  series.forEach((s) => {
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      if (pen) ctx.lineTo(x(i), y(v)); else { ctx.moveTo(x(i), y(v)); pen = true; }
    });
    ctx.stroke();
    // A point with no neighbour draws no line: mark it, or a lone bucket would not show.
    ctx.fillStyle = s.color;
    s.values.forEach((v, i) => {
      const alone = (i === 0 || s.values[i - 1] === null) && (i === s.values.length - 1 || s.values[i + 1] === null);
      if (v !== null && alone) { ctx.beginPath(); ctx.arc(x(i), y(v), 3, 0, 2 * Math.PI); ctx.fill(); }
    });
  });
  const legend = $(legendId);
  legend.replaceChildren(...series.map((s) => {
    const swatch = el("i", {});
    swatch.style.background = s.color;  // CSSOM, allowed by the page's CSP (no inline styles)
    return el("span", {}, swatch, s.name);
  }));
  if (!series.length) legend.append(el("span", { class: "muted", text: "no data in the last hour" }));
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatAxis(v) { return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2); }

function drawCharts(charts) {
  drawChart("chart-requests", "legend-requests", charts.times,
    Object.entries(charts.requests_per_s).map(([name, values]) => ({ name, values, color: STATUS_COLORS[name] || "#777" })), "/s");
  drawChart("chart-ttft", "legend-ttft", charts.times, [
    { name: "p50", values: charts.ttft_ms.p50, color: "#2f7ed8" },
    { name: "p95", values: charts.ttft_ms.p95, color: "#c42525" }], " ms");
  drawChart("chart-tokens", "legend-tokens", charts.times,
    Object.entries(charts.tokens_per_s).map(([name, values], i) => ({ name, values, color: COLORS[i % COLORS.length] })), "/s");
}

// -- config ------------------------------------------------------------------------------------

async function loadConfig() {
  try {
    const { status, body } = await api("/ui/api/config");
    $("config").textContent = status === 200 ? JSON.stringify(body.config, null, 2) : (errorText(body) || `HTTP ${status}`);
  } catch (error) { /* login shown */ }
}

$("reload").addEventListener("click", async () => {
  const result = $("reload-result");
  result.textContent = "reloading…"; result.className = "";
  try {
    const { status, body } = await api("/ui/api/reload", { method: "POST" });
    if (status === 200 && body.reloaded) { result.textContent = body.summary; result.className = "ok"; }
    else {
      result.textContent = body && body.error ? [body.error, ...(body.problems || [])].join("; ") || `HTTP ${status}`
        : errorText(body) || `HTTP ${status}`;
      result.className = "error";
    }
  } catch (error) { result.textContent = error.message; result.className = "error"; }
  loadConfig();
});

// -- start ---------------------------------------------------------------------------------------

function stopAll() {
  if (state.feedAbort) state.feedAbort.abort();
  clearTimeout(state.pollTimer);
}

async function start() {
  stopAll();
  state.authFailed = false;
  try {
    const { status, body } = await api("/ui/api/state");
    if (status !== 200) throw new Error(errorText(body) || `HTTP ${status}`);
  } catch (error) {
    if (!state.authFailed) { $("error").hidden = false; $("error").textContent = error.message; }
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  showView();
  poll();
  runFeed();
}

start();
