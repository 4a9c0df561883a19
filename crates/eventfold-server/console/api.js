// The HTTP API, as the console calls it. The token lives in memory, and in sessionStorage
// (this tab only, gone when it closes) when the user asks; it goes out only in the
// Authorization header, never in a URL.

const KEY = "eventfold.token";
let token = null;
try { token = sessionStorage.getItem(KEY); } catch { token = null; }

export const config = { auth: false, version: "" };
export function hasToken() { return token !== null && token !== ""; }

export function setToken(value, keep) {
  token = value || null;
  try {
    if (token && keep) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage refused: the token stays in memory */ }
}

export async function loadConfig() {
  const r = await fetch("/console/config.json", { cache: "no-store" });
  Object.assign(config, await r.json());
  return config;
}

// An error answer of the API: status, code and the server's own sentence.
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  if (token) h.set("Authorization", "Bearer " + token);
  return h;
}

async function errorOf(r) {
  let body = null;
  try { body = await r.json(); } catch { body = null; }
  const e = body && body.error ? body.error : {};
  return new ApiError(r.status, e.code || "http_" + r.status, e.message || r.statusText || "request failed", body);
}

// A request; the parsed JSON answer (null for 204). Throws ApiError for an error answer.
export async function call(method, path, body, extraHeaders) {
  const init = { method, headers: headers(extraHeaders), cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers.set("Content-Type", "application/json");
  }
  const r = await fetch(path, init);
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.includes("json") ? r.json() : r.text();
}

export const get = (path) => call("GET", path);

// A path with its query: segments percent-encoded, empty parameters left out.
export function path(segments, query) {
  let p = "/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return qs ? p + "?" + qs : p;
}

// Follows an NDJSON subscription with fetch (EventSource cannot send the Authorization
// header): calls onOpen once the answer starts, onEvent for each event, and resolves when it
// ends; `signal` aborts it. `lastId` resumes right after that position.
export async function follow(p, { signal, lastId, onOpen, onEvent, onClosing }) {
  const extra = { Accept: "application/x-ndjson" };
  if (lastId !== null && lastId !== undefined) extra["Last-Event-ID"] = String(lastId);
  const r = await fetch(p, { headers: headers(extra), signal, cache: "no-store" });
  if (!r.ok) throw await errorOf(r);
  onOpen();
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue; // a heartbeat
      const msg = JSON.parse(line);
      if (msg.closing || msg.error) onClosing(msg.closing || msg.error);
      else onEvent(msg);
    }
  }
}

// The counters of /metrics we chart, summed over their labels.
export async function metricTotals() {
  const text = await call("GET", "/metrics");
  const want = {
    eventfold_events_appended_total: "appended",
    eventfold_events_failed_total: "failed",
    eventfold_subscription_deliveries_total: "sub_deliveries",
    eventfold_consumer_group_delivered_total: "group_delivered",
    eventfold_consumer_group_acked_total: "group_acked",
    eventfold_events_read_total: "read",
  };
  const out = { appended: 0, failed: 0, sub_deliveries: 0, group_delivered: 0, group_acked: 0, read: 0, byGroup: {} };
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)/.exec(line);
    if (!m) continue;
    const key = want[m[1]];
    if (!key) continue;
    const v = Number(m[3]);
    out[key] += v;
    const g = m[2] && /group="((?:[^"\\]|\\.)*)"/.exec(m[2]);
    if (g && (key === "group_delivered" || key === "group_acked")) {
      const slot = out.byGroup[g[1]] || (out.byGroup[g[1]] = { delivered: 0, acked: 0 });
      slot[key === "group_delivered" ? "delivered" : "acked"] += v;
    }
  }
  return out;
}
