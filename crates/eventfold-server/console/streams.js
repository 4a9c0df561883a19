// Streams: the list (by prefix or category), a stream's events page by page, one event with
// its metadata, the events sharing a correlation id, and a stream's metadata and deletion.

import * as api from "./api.js";
import { h, link, route, table, kv, preview, fmtInt, clear } from "./dom.js";

const PAGE = 25;
// How many of the newest events of $all a correlation search reads before it stops.
const CORRELATION_SCAN = 10000;

export async function renderList(main, _segments, query, ctx) {
  const mode = query.get("by") === "category" ? "category" : "prefix";
  const q = query.get("q") || "";
  const after = query.get("after") || "";
  const input = h("input", { type: "search", id: "stream-search", name: "q", value: q, placeholder: "order-", "aria-label": "Search streams" });
  const by = h("select", { id: "stream-by", "aria-label": "Search by" },
    h("option", { value: "prefix", selected: mode === "prefix" }, "name prefix"),
    h("option", { value: "category", selected: mode === "category" }, "category"));
  const form = h("form.bar", { role: "search" },
    h("label", { for: "stream-search" }, "Search", input),
    h("label", { for: "stream-by" }, "By", by),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = route(["streams"], { q: input.value.trim(), by: by.value === "category" ? "category" : "" });
  });
  const results = h("div", {}, h("p.muted", {}, "Loading…"));
  main.append(h("h1", {}, "Streams"), form, results);
  // A category `c` is the stream `c` and the streams `c-…`: list by prefix, keep those.
  const page = await api.get(api.path(["streams"], { prefix: q, after, limit: 100 }));
  if (!ctx.current()) return;
  const names = mode === "category" && q ? page.streams.filter((s) => s === q || s.startsWith(q + "-")) : page.streams;
  clear(results);
  results.append(table(["Stream", ["Category", "hide-narrow"]],
    names.map((s) => h("tr", {}, h("td.wrap", {}, link(s, ["stream", s])), h("td.hide-narrow", {}, s.split("-")[0]))),
    q ? "No stream matches." : "No streams yet. Append one with: eventfold append order-1 --type order.placed --data '{}'"));
  results.append(h("div.pager", {},
    after ? link("First page", ["streams"], { q, by: mode === "category" ? "category" : "" }) : null,
    page.next ? link("Next page", ["streams"], { q, by: mode === "category" ? "category" : "", after: page.next }) : null));
}

function eventRows(events, withStream) {
  return events.map((e) => h("tr", {},
    withStream ? h("td.wrap", {}, link(e.stream, ["stream", e.stream])) : null,
    h("td.num", {}, link(String(e.revision), ["event", e.stream, e.revision])),
    withStream ? null : h("td.num.hide-narrow", {}, fmtInt(e.position)),
    h("td.wrap", {}, e.type),
    h("td.hide-narrow.mono", {}, e.timestamp.replace("T", " ").replace(/\.\d+Z$/, "Z")),
    h("td.preview", {}, preview(e))));
}

export async function renderStream(main, segments, query, ctx) {
  const name = segments[0] || "";
  const dir = query.get("dir") === "forward" ? "forward" : "backward";
  const from = query.get("from") || (dir === "forward" ? "start" : "end");
  main.append(h("h1", {}, "Stream ", h("span.mono", {}, name)));
  const [info, page] = await Promise.all([
    api.get(api.path(["streams", name, "info"])),
    api.get(api.path(["streams", name], { from, direction: dir, limit: PAGE })),
  ]);
  if (!ctx.current()) return;
  const events = [...page.events].sort((a, b) => a.revision - b.revision);
  const first = events.length ? events[0].revision : null;
  const lastRev = events.length ? events[events.length - 1].revision : null;
  const oldestShown = first === null || first === 0 || (dir === "backward" && page.next === null);
  const newestShown = lastRev === null || lastRev >= info.last_revision;
  main.append(
    kv([["Events", fmtInt(info.event_count)], ["Last revision", fmtInt(info.last_revision)],
      ["Last position", fmtInt(info.last_position)], ["Category", name.split("-")[0]]]),
    h("div.pager", {},
      h("a", { href: route(["stream", name], { from: "start", dir: "forward" }) }, "⇤ Oldest"),
      oldestShown ? h("span.muted", {}, "◀ Older") : link("◀ Older", ["stream", name], { from: first - 1, dir: "backward" }),
      newestShown ? h("span.muted", {}, "Newer ▶") : link("Newer ▶", ["stream", name], { from: lastRev + 1, dir: "forward" }),
      h("a", { href: route(["stream", name]) }, "Newest ⇥"),
      h("span.muted", {}, events.length ? `revisions ${first}–${lastRev}` : "")),
    table(["Rev", ["Position", "hide-narrow"], "Type", ["Time (UTC)", "hide-narrow"], ["Data", "preview"]],
      eventRows(events, false), "No events to show here."));
  main.append(await metadataSection(name, info, ctx));
}

async function metadataSection(name, info, ctx) {
  const md = info.metadata || {};
  const num = (id, label, v) => h("label", { for: id }, label, h("input", { id, type: "number", min: 0, value: v === undefined || v === null ? "" : v }));
  const custom = h("textarea", { id: "md-custom", "aria-label": "custom metadata (JSON object)" });
  custom.value = md.custom ? JSON.stringify(md.custom, null, 2) : "";
  const msg = h("p", { role: "status" });
  const form = h("form", { id: "metadata-form" },
    h("fieldset", {}, h("legend", {}, "Stream metadata (needs an admin token)"),
      h("div.grid-form", {},
        num("md-max-count", "max-count (events kept)", md.max_count),
        num("md-max-age", "max-age (seconds)", md.max_age_seconds),
        num("md-truncate", "truncate before revision", md.truncate_before)),
      h("label", { for: "md-custom" }, "custom (JSON object, optional)", custom),
      h("div.bar", {}, h("button", { type: "submit" }, "Save metadata")), msg));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    for (const [id, key] of [["md-max-count", "max_count"], ["md-max-age", "max_age_seconds"], ["md-truncate", "truncate_before"]]) {
      const v = form.querySelector("#" + id).value.trim();
      if (v !== "") body[key] = Number(v);
    }
    if (custom.value.trim()) {
      try { body.custom = JSON.parse(custom.value); } catch (err) { msg.textContent = "custom is not JSON: " + err.message; return; }
    }
    try {
      await api.call("PUT", api.path(["streams", name, "metadata"]), body);
      msg.textContent = "Saved.";
    } catch (err) { ctx.showError(err); }
  });
  const hard = h("input", { type: "checkbox", id: "delete-hard" });
  const confirmBox = h("div.bar", { hidden: true },
    h("span", {}, "Delete ", h("strong", {}, name), "? "),
    h("button.danger", { type: "button", id: "delete-confirm", onclick: async () => {
      try {
        await api.call("DELETE", api.path(["streams", name], { hard: hard.checked ? "true" : "" }));
        location.hash = route(["streams"]);
      } catch (err) { ctx.showError(err); }
    } }, "Yes, delete"),
    h("button.secondary", { type: "button", onclick: () => { confirmBox.hidden = true; } }, "Cancel"));
  const del = h("fieldset", {}, h("legend", {}, "Delete the stream (needs an admin token)"),
    h("p.muted", {}, "A soft delete hides the events (appending again continues the revisions); a hard delete is a tombstone: the name can never be used again."),
    h("div.bar", {}, h("label.check", { for: "delete-hard" }, hard, " hard delete (tombstone)"),
      h("button.danger", { type: "button", id: "delete-stream", onclick: () => { confirmBox.hidden = false; } }, "Delete…")),
    confirmBox);
  if (!ctx.current()) return h("div");
  return h("div", {}, h("h2", {}, "Settings"), form, del);
}

export async function renderEvent(main, segments, _query, ctx) {
  const [stream, rev] = segments;
  const page = await api.get(api.path(["streams", stream], { from: rev, direction: "forward", limit: 1 }));
  if (!ctx.current()) return;
  const ev = page.events[0];
  if (!ev || String(ev.revision) !== String(rev)) {
    main.append(h("h1", {}, "Event not found"), h("p", {}, "Revision ", rev, " of ", link(stream, ["stream", stream]), " cannot be read (deleted, truncated or beyond max-count/max-age)."));
    return;
  }
  const md = ev.metadata || {};
  main.append(
    h("h1", {}, h("span.mono", {}, ev.type)),
    kv([["Stream", link(ev.stream, ["stream", ev.stream])], ["Revision", String(ev.revision)],
      ["Position", String(ev.position)], ["Id", h("span.mono", {}, ev.id)], ["Time", ev.timestamp],
      ["Content type", ev.content_type], ["Schema version", String(ev.schema_version)]]),
    h("div.pager", {},
      ev.revision > 0 ? link("◀ Previous event", ["event", ev.stream, ev.revision - 1]) : null,
      link("Next event ▶", ["event", ev.stream, ev.revision + 1])),
    h("h2", {}, "Data"),
    ev.data !== undefined
      ? h("pre", { id: "event-data" }, JSON.stringify(ev.data, null, 2))
      : h("pre", { id: "event-data" }, ev.data_base64 === undefined ? "(none)" : `${ev.content_type}, base64:\n${ev.data_base64}`),
    h("h2", {}, "Metadata"),
    Object.keys(md).length ? kv(Object.entries(md).map(([k, v]) => [k,
      (k === "correlation_id" || k === "causation_id") && typeof v === "string"
        ? h("span", {}, h("span.mono", {}, v), " ", link(k === "correlation_id" ? "events with this correlation id" : "events in this chain", ["correlation", k === "correlation_id" ? v : md.correlation_id || v]))
        : h("span.mono", {}, typeof v === "string" ? v : JSON.stringify(v))])) : h("p.muted", {}, "No metadata."),
    h("details", {}, h("summary", {}, "The event as JSON"), h("pre", {}, JSON.stringify(ev, null, 2))));
}

// The API has no index on metadata: read $all backward and keep the events whose
// correlation_id (or id, causation_id) matches, up to CORRELATION_SCAN events per search.
export async function renderCorrelation(main, segments, query, ctx) {
  const id = segments[0] || "";
  let from = query.get("from") || "end";
  main.append(h("h1", {}, "Correlation ", h("span.mono", {}, id)));
  const status = h("p.muted", { role: "status" }, "Searching…");
  main.append(status);
  const found = [];
  let scanned = 0;
  while (scanned < CORRELATION_SCAN && from !== null) {
    const page = await api.get(api.path(["all"], { from, direction: "backward", limit: 1000 }));
    if (!ctx.current()) return;
    scanned += page.events.length;
    for (const e of page.events) {
      const m = e.metadata || {};
      if (m.correlation_id === id || m.causation_id === id || e.id === id) found.push(e);
    }
    from = page.next;
    if (!page.events.length) break;
  }
  found.sort((a, b) => a.position - b.position);
  status.textContent = `${found.length} events found among the newest ${fmtInt(scanned)} read` +
    (from === null ? " (the whole log)." : ".");
  main.append(table(["Stream", "Rev", "Type", ["Time (UTC)", "hide-narrow"], ["Data", "preview"]], eventRows(found, true), "No events share it."));
  if (from !== null) main.append(h("div.pager", {}, link(`Search the next ${fmtInt(CORRELATION_SCAN)} older events`, ["correlation", id], { from })));
}
