// Building the page. Everything that comes from the server (event data above all, which any
// writer controls) becomes a text node or an attribute set with setAttribute: never markup.

const SVG = "http://www.w3.org/2000/svg";

// h("tag.class", {attr: value, onclick: fn}, ...children): an element. Strings and numbers
// become text nodes; null, undefined and false children are skipped; arrays are flattened.
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "href") {
      // Only the console's own pages: a link never takes a scheme from data.
      el.setAttribute("href", String(v).startsWith("#") ? String(v) : "#/");
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// A hash link to a console page: path segments are percent-encoded one by one.
export function link(text, segments, query) {
  return h("a", { href: route(segments, query) }, text);
}

export function route(segments, query) {
  let r = "#/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return qs ? r + "?" + qs : r;
}

export function table(headers, rows, empty) {
  if (!rows.length) return h("p.muted", {}, empty || "Nothing here.");
  const head = h("tr", {}, headers.map((x) => {
    const [label, cls] = Array.isArray(x) ? x : [x, null];
    return h("th", { scope: "col", class: cls }, label);
  }));
  return h("div.table-wrap", {}, h("table", {}, h("thead", {}, head), h("tbody", {}, rows)));
}

export function card(label, value, extra) {
  return h("div.card", {}, h("div.label", {}, label), h("div.value", {}, value), extra || null);
}

export function kv(pairs) {
  return h("dl.kv", {}, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// A small line chart of `values` (the last ones), scaled to its own maximum.
export function sparkline(values, label) {
  const w = 120;
  const ht = 40;
  const max = Math.max(1, ...values);
  const n = Math.max(values.length - 1, 1);
  const pts = values.map((v, i) => `${((i / n) * w).toFixed(1)},${(ht - 2 - (v / max) * (ht - 4)).toFixed(1)}`);
  return svg("svg", { viewBox: `0 0 ${w} ${ht}`, preserveAspectRatio: "none", role: "img", "aria-label": label },
    svg("line", { x1: 0, y1: ht - 1, x2: w, y2: ht - 1 }),
    values.length > 1 ? svg("polyline", { points: pts.join(" ") }) : null);
}

export function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtRate(n) {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  return (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1)) + "/s";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return (u === 0 ? v : v.toFixed(1)) + " " + units[u];
}

export function fmtDuration(secs) {
  const d = Math.floor(secs / 86400);
  const hrs = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d) return `${d}d ${hrs}h`;
  if (hrs) return `${hrs}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// One line of an event's data for a table cell.
export function preview(ev) {
  if (ev.data !== undefined) {
    const s = JSON.stringify(ev.data);
    return s.length > 160 ? s.slice(0, 160) + "…" : s;
  }
  if (ev.data_base64 !== undefined) return `(${ev.content_type}, base64)`;
  return "";
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}
