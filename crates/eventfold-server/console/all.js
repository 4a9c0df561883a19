// $all: the global log with the API's filters (type, category, stream_prefix), page by page,
// and a live tail that can be paused (NDJSON over fetch, resumed with Last-Event-ID).

import * as api from "./api.js";
import { h, link, route, table, preview, fmtInt, clear } from "./dom.js";

const PAGE = 50;
// Rows the live tail keeps on screen; older ones are dropped.
const TAIL_ROWS = 200;

function filtersOf(query) {
  return { type: query.get("type") || "", category: query.get("category") || "", stream_prefix: query.get("stream_prefix") || "" };
}

function filterForm(page, f) {
  const field = (id, label, value, placeholder) => h("label", { for: id }, label,
    h("input", { id, name: id, value, placeholder, type: id === "f-type" ? "search" : "text" }));
  const form = h("form.bar", { role: "search", id: "filter-form" },
    field("f-type", "Event types (comma-separated)", f.type, "order.placed,order.paid"),
    field("f-category", "Category", f.category, "order"),
    field("f-prefix", "Stream prefix", f.stream_prefix, "order-1"),
    h("button", { type: "submit" }, "Apply"),
    h("a", { href: route([page]) }, "Clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = (id) => form.querySelector("#" + id).value.trim();
    location.hash = route([page], { type: v("f-type"), category: v("f-category"), stream_prefix: v("f-prefix") });
  });
  return form;
}

function row(e) {
  return h("tr", {},
    h("td.num", {}, fmtInt(e.position)),
    h("td.wrap", {}, link(e.stream, ["stream", e.stream])),
    h("td.num", {}, link(String(e.revision), ["event", e.stream, e.revision])),
    h("td.wrap", {}, e.type),
    h("td.hide-narrow.mono", {}, e.timestamp.replace("T", " ").replace(/\.\d+Z$/, "Z")),
    h("td.preview", {}, preview(e)));
}

const HEADERS = [["Position", "num"], "Stream", ["Rev", "num"], "Type", ["Time (UTC)", "hide-narrow"], ["Data", "preview"]];

export async function renderAll(main, _segments, query, ctx) {
  const f = filtersOf(query);
  const dir = query.get("dir") === "forward" ? "forward" : "backward";
  const from = query.get("from") || (dir === "forward" ? "start" : "end");
  main.append(h("h1", {}, "$all"), h("p.muted", {}, "Every event in commit order. ", link("Follow it live", ["tail"], f), "."), filterForm("all", f));
  const page = await api.get(api.path(["all"], { ...f, from, direction: dir, limit: PAGE }));
  if (!ctx.current()) return;
  const events = [...page.events].sort((a, b) => b.position - a.position);
  const hi = events.length ? events[0].position : null;
  const lo = events.length ? events[events.length - 1].position : null;
  const olderFrom = dir === "backward" ? page.next : (lo === null || lo === 0 ? null : lo - 1);
  const newerFrom = dir === "forward" ? page.next : (from === "end" || hi === null ? null : hi + 1);
  main.append(
    h("div.pager", {},
      link("Newest", ["all"], f),
      newerFrom !== null ? link("◀ Newer", ["all"], { ...f, from: newerFrom, dir: "forward" }) : h("span.muted", {}, "◀ Newer"),
      olderFrom !== null ? link("Older ▶", ["all"], { ...f, from: olderFrom, dir: "backward" }) : h("span.muted", {}, "Older ▶"),
      link("Oldest", ["all"], { ...f, from: "start", dir: "forward" })),
    table(HEADERS, events.map(row), "No events match."));
}

export async function renderTail(main, _segments, query, ctx) {
  const f = filtersOf(query);
  const status = h("span.status", { id: "tail-status", role: "status" }, h("span.dot", {}), "connecting…");
  const count = h("span.muted", { id: "tail-count" }, "");
  const button = h("button", { type: "button", id: "tail-toggle" }, "Pause");
  const tbody = h("tbody", { id: "tail-rows" });
  const empty = h("p.muted", { id: "tail-empty" }, "Waiting for new events (the tail starts at the end of the log)…");
  main.append(h("h1", {}, "Live tail of $all"), filterForm("tail", f),
    h("div.bar", {}, button, status, count),
    empty,
    h("div.table-wrap", {}, h("table", {}, h("thead", {}, h("tr", {}, HEADERS.map((x) => {
      const [label, cls] = Array.isArray(x) ? x : [x, null];
      return h("th", { scope: "col", class: cls }, label);
    }))), tbody)));

  let controller = null;
  let lastPosition = null;
  let received = 0;
  let paused = false;

  function setStatus(text, live) {
    clear(status);
    status.append(h(live ? "span.dot.live" : "span.dot", {}), text);
  }

  async function start() {
    controller = new AbortController();
    const mine = controller;
    let closing = null;
    setStatus("connecting…", false);
    try {
      await api.follow(api.path(["all", "subscribe"], { ...f, from: lastPosition === null ? "end" : "" }), {
        signal: mine.signal,
        lastId: lastPosition,
        onOpen: () => setStatus("live", true),
        onEvent: (e) => {
          lastPosition = e.position;
          received++;
          empty.hidden = true;
          tbody.prepend(row(e));
          while (tbody.childElementCount > TAIL_ROWS) tbody.lastElementChild.remove();
          count.textContent = `${fmtInt(received)} events received`;
        },
        onClosing: (c) => { closing = c; },
      });
      if (!mine.signal.aborted) {
        setStatus(closing ? `ended by the server (${closing.message || closing.code}); press Resume to reconnect` : "ended; press Resume to reconnect", false);
        paused = true;
        button.textContent = "Resume";
      }
    } catch (e) {
      if (mine.signal.aborted) return;
      setStatus("disconnected", false);
      paused = true;
      button.textContent = "Resume";
      if (ctx.current()) ctx.showError(e);
    }
  }

  button.addEventListener("click", () => {
    if (paused) {
      paused = false;
      button.textContent = "Pause";
      start();
    } else {
      paused = true;
      button.textContent = "Resume";
      if (controller) controller.abort();
      setStatus("paused: new events wait on the server and arrive on resume", false);
    }
  });
  ctx.onCleanup(() => { if (controller) controller.abort(); });
  start();
}
