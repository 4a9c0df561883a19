// Consumer groups: the list with lag, in-flight, consumers and rates; one group with its
// consumers and parked events (replay all or the oldest); create, edit and delete.

import * as api from "./api.js";
import { h, link, route, table, kv, fmtInt, fmtRate, preview, clear } from "./dom.js";

const PERIOD_MS = 2000;

function filterText(f) {
  if (!f) return "every event";
  const parts = [];
  if (f.stream) parts.push("stream " + f.stream);
  if (f.category) parts.push("category " + f.category);
  if (f.stream_prefix) parts.push("streams " + f.stream_prefix + "…");
  if (f.types && f.types.length) parts.push("types " + f.types.join(", "));
  return parts.length ? parts.join("; ") : "every event";
}

// Polls `load` every two seconds while the page is shown, rendering into `into`.
function poll(ctx, into, load) {
  let timer = null;
  let prev = null;
  async function loop() {
    try {
      const data = await load();
      if (!ctx.current()) return;
      const now = performance.now();
      clear(into);
      into.append(data.render(prev ? { dt: (now - prev.at) / 1000, before: prev.data } : null));
      prev = { at: now, data };
    } catch (e) {
      if (ctx.current()) ctx.showError(e);
      return;
    }
    if (ctx.current()) timer = setTimeout(loop, PERIOD_MS);
  }
  ctx.onCleanup(() => clearTimeout(timer));
  return loop();
}

export async function renderList(main, _segments, _query, ctx) {
  const body = h("div", {}, h("p.muted", {}, "Loading…"));
  main.append(h("h1", {}, "Consumer groups"),
    h("div.bar", {}, h("a", { href: route(["new-group"]), id: "new-group" }, "＋ New group")), body);
  await poll(ctx, body, async () => {
    const [list, totals] = await Promise.all([api.get("/subscriptions"), api.metricTotals()]);
    const groups = list.subscriptions;
    return {
      totals,
      render: (since) => table(
        ["Group", ["Filter", "hide-narrow"], ["Lag", "num"], ["In flight", "num"], ["Parked", "num"], ["Consumers", "num"], ["Delivered", "num"], ["Acked", "num"]],
        groups.map((g) => {
          const t = totals.byGroup[g.group];
          const b = since && since.before.totals.byGroup[g.group];
          const rate = (k) => (t && b ? fmtRate(Math.max(0, (t[k] - b[k]) / since.dt)) : "—");
          const live = (g.consumers || []).filter((c) => c.live).length;
          return h("tr", {},
            h("td.wrap", {}, link(g.group, ["group", g.group])),
            h("td.hide-narrow", {}, filterText(g.filter)),
            h("td.num", {}, fmtInt(g.lag)), h("td.num", {}, fmtInt(g.in_flight)),
            h("td.num", {}, g.parked ? link(fmtInt(g.parked), ["group", g.group]) : "0"),
            h("td.num", {}, `${live}/${(g.consumers || []).length}`),
            h("td.num", {}, rate("delivered")), h("td.num", {}, rate("acked")));
        }),
        "No consumer groups yet. Create one with “New group”, or: eventfold group create billing --category order"),
    };
  });
}

export async function renderGroup(main, segments, _query, ctx) {
  const name = segments[0] || "";
  const figures = h("div", {}, h("p.muted", {}, "Loading…"));
  const parked = h("div", { id: "parked" });
  const settings = h("div", {});
  const msg = h("p", { role: "status", id: "group-message" });
  main.append(h("h1", {}, "Group ", h("span.mono", {}, name)),
    h("div.bar", {}, h("a.button", { href: route(["new-group"], { edit: name }) }, "Edit"), deleteButton(name, ctx)), msg, figures,
    h("h2", {}, "Parked events"), parked, h("h2", {}, "Settings"), settings);

  async function loadParked() {
    const page = await api.get(api.path(["subscriptions", name, "parked"], { limit: 50 }));
    if (!ctx.current()) return;
    clear(parked);
    const replay = async (max) => {
      try {
        const r = await api.call("POST", api.path(["subscriptions", name, "parked", "replay"]), max ? { max } : {});
        msg.textContent = `${r.replayed} parked event${r.replayed === 1 ? "" : "s"} sent to the consumers again.`;
        await loadParked();
      } catch (e) { ctx.showError(e); }
    };
    if (page.parked.length) {
      parked.append(h("div.bar", {},
        h("button", { type: "button", id: "replay-all", onclick: () => replay(null) }, "Replay all"),
        h("span.muted", {}, "Replay delivers parked events again, oldest first (needs an admin token).")));
    }
    parked.append(table(["Event", "Type", ["Reason", "wrap"], ["Attempts", "num"], ["Parked at", "hide-narrow"], ["Data", "preview"], ""],
      page.parked.map((p, i) => h("tr", {},
        h("td.wrap", {}, link(`${p.event.stream}@${p.event.revision}`, ["event", p.event.stream, p.event.revision])),
        h("td.wrap", {}, p.event.type),
        h("td.wrap", {}, p.reason || "—"),
        h("td.num", {}, fmtInt(p.attempts)),
        h("td.hide-narrow.mono", {}, p.parked_at),
        h("td.preview", {}, preview(p.event)),
        // The API replays oldest first: only the first row can be replayed on its own.
        h("td", {}, i === 0 ? h("button.secondary.replay-one", { type: "button", onclick: () => replay(1) }, "Replay this") : null))),
      "Nothing parked."));
    if (page.next !== null) parked.append(h("p.muted", {}, "More parked events follow; replay these first or use eventfold group parked."));
  }

  await Promise.all([
    poll(ctx, figures, async () => {
      const [g, totals] = await Promise.all([api.get(api.path(["subscriptions", name])), api.metricTotals()]);
      return {
        totals,
        render: (since) => {
          const t = totals.byGroup[name];
          const b = since && since.before.totals.byGroup[name];
          const rate = (k) => (t && b ? fmtRate(Math.max(0, (t[k] - b[k]) / since.dt)) : "—");
          return h("div", {},
            h("div.cards", {},
              h("div.card", {}, h("div.label", {}, "Lag"), h("div.value", { id: "group-lag" }, fmtInt(g.lag))),
              h("div.card", {}, h("div.label", {}, "In flight"), h("div.value", {}, fmtInt(g.in_flight))),
              h("div.card", {}, h("div.label", {}, "Parked"), h("div.value", { id: "group-parked" }, fmtInt(g.parked))),
              h("div.card", {}, h("div.label", {}, "Delivered"), h("div.value", {}, rate("delivered")), h("div.muted", {}, `${fmtInt(g.delivered_total)} since start`)),
              h("div.card", {}, h("div.label", {}, "Acked"), h("div.value", {}, rate("acked")), h("div.muted", {}, `${fmtInt(g.acked_total)} since start`)),
              h("div.card", {}, h("div.label", {}, "Retried"), h("div.value", {}, fmtInt(g.retried_total)), h("div.muted", {}, `${fmtInt(g.parked_total)} parked since start`))),
            h("h2", {}, "Consumers"),
            table(["Consumer", "Live", ["In flight", "num"], ["Push streams", "num"]],
              (g.consumers || []).map((c) => h("tr", {}, h("td.wrap", {}, c.name), h("td", {}, c.live ? "yes" : "no"),
                h("td.num", {}, fmtInt(c.in_flight)), h("td.num", {}, fmtInt(c.push_streams)))),
              "No consumer has pulled yet."),
            setSettings(settings, kv([["Filter", filterText(g.filter)], ["Start", String(g.start_position)], ["Checkpoint", fmtInt(g.checkpoint)],
              ["Strategy", g.strategy], g.strategy === "pinned" ? ["Pinned by", pinByText(g.pin_by)] : null, ["Max deliveries", fmtInt(g.max_deliveries)], ["Ack timeout", `${fmtInt(g.ack_timeout_ms)} ms`],
              ["Retry backoff", g.retry_backoff ? `${g.retry_backoff.initial_ms} ms × ${g.retry_backoff.multiplier}, at most ${g.retry_backoff.max_ms} ms` : "—"],
              ["Max in flight", fmtInt(g.max_in_flight)],
              g.max_in_flight_per_consumer ? ["Max in flight per consumer", fmtInt(g.max_in_flight_per_consumer)] : null])));
        },
      };
    }),
    loadParked(),
  ]);
}

// What a pinned group keeps in order: "stream", or { metadata: field }.
function pinByText(p) {
  return p && p.metadata ? `metadata field ${p.metadata} (else the stream)` : "stream";
}

// Shows `content` in `box` (the settings live below the parked events); nothing in its place.
function setSettings(box, content) {
  clear(box);
  box.append(content);
  return null;
}

function deleteButton(name, ctx) {
  const confirmBox = h("span", { hidden: true },
    h("button.danger", { type: "button", id: "group-delete-confirm", onclick: async () => {
      try {
        await api.call("DELETE", api.path(["subscriptions", name]));
        location.hash = route(["groups"]);
      } catch (e) { ctx.showError(e); }
    } }, `Yes, delete ${name} with its acks and parked events`), " ",
    h("button.secondary", { type: "button", onclick: () => { confirmBox.hidden = true; } }, "Cancel"));
  return h("span", {}, h("button.danger", { type: "button", id: "group-delete", onclick: () => { confirmBox.hidden = false; } }, "Delete…"), " ", confirmBox);
}

// Create a group, or edit one (?edit=name): PUT /subscriptions/{group}.
export async function renderNew(main, _segments, query, ctx) {
  const editing = query.get("edit");
  const g = editing ? await api.get(api.path(["subscriptions", editing])) : null;
  if (!ctx.current()) return;
  const f = (g && g.filter) || {};
  const kind = f.stream ? "stream" : f.category ? "category" : f.stream_prefix ? "stream_prefix" : "";
  const input = (id, label, value, attrs) => h("label", { for: id }, label, h("input", { id, name: id, value: value === undefined || value === null ? "" : value, ...(attrs || {}) }));
  const form = h("form", { id: "group-form" },
    h("fieldset", {}, h("legend", {}, editing ? "Change the group" : "A new consumer group"),
      h("div.grid-form", {},
        input("g-name", "Name (letters, digits, - _ .)", editing || "", { required: true, maxlength: 128, readonly: !!editing }),
        h("label", { for: "g-kind" }, "Events from", h("select", { id: "g-kind" },
          h("option", { value: "", selected: kind === "" }, "every stream"),
          h("option", { value: "category", selected: kind === "category" }, "one category"),
          h("option", { value: "stream_prefix", selected: kind === "stream_prefix" }, "streams with a prefix"),
          h("option", { value: "stream", selected: kind === "stream" }, "one stream"))),
        input("g-value", "Category, prefix or stream", f.stream || f.category || f.stream_prefix || ""),
        input("g-types", "Only these event types (comma-separated)", (f.types || []).join(",")),
        editing ? null : h("label", { for: "g-start" }, "Start from", h("select", { id: "g-start" },
          h("option", { value: "end" }, "the end (new events only)"), h("option", { value: "start" }, "the start of $all"))),
        h("label", { for: "g-strategy" }, "Strategy", h("select", { id: "g-strategy" },
          h("option", { value: "round_robin", selected: !g || g.strategy === "round_robin" }, "round robin"),
          h("option", { value: "pinned", selected: g && g.strategy === "pinned" }, "pinned (a key to one consumer, in order)"))),
        input("g-pin-field", "Pinned: by metadata field (empty: by stream; fixed once pinned)", (g && g.pin_by && g.pin_by.metadata) || "", { maxlength: 128 }),
        input("g-max-deliveries", "Max deliveries before parking", g ? g.max_deliveries : 10, { type: "number", min: 1, max: 1000 }),
        input("g-ack-timeout", "Ack timeout (ms)", g ? g.ack_timeout_ms : 30000, { type: "number", min: 1 }),
        input("g-max-in-flight", "Max in flight", g ? g.max_in_flight : 1000, { type: "number", min: 1, max: 10000 }),
        input("g-backoff-initial", "Retry backoff initial (ms)", g ? g.retry_backoff.initial_ms : 100, { type: "number", min: 0 }),
        input("g-backoff-max", "Retry backoff max (ms)", g ? g.retry_backoff.max_ms : 60000, { type: "number", min: 0 }),
        input("g-backoff-multiplier", "Retry backoff multiplier", g ? g.retry_backoff.multiplier : 2, { type: "number", min: 1, step: "any" })),
      h("div.bar", {}, h("button", { type: "submit" }, editing ? "Save" : "Create group"),
        link("Cancel", editing ? ["group", editing] : ["groups"])),
      h("p.muted", {}, "Needs an admin token. The start applies only when the group is created.")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = (id) => form.querySelector("#" + id).value.trim();
    const name = v("g-name");
    const filter = {};
    if (v("g-kind")) filter[v("g-kind")] = v("g-value");
    const types = v("g-types").split(",").map((t) => t.trim()).filter(Boolean);
    if (types.length) filter.types = types;
    const body = {
      filter,
      strategy: v("g-strategy"),
      max_deliveries: Number(v("g-max-deliveries")),
      ack_timeout_ms: Number(v("g-ack-timeout")),
      max_in_flight: Number(v("g-max-in-flight")),
      retry_backoff: { initial_ms: Number(v("g-backoff-initial")), max_ms: Number(v("g-backoff-max")), multiplier: Number(v("g-backoff-multiplier")) },
    };
    // Only a pinned group has a key other than its stream; a pinned group's key cannot change.
    if (body.strategy === "pinned" && v("g-pin-field")) body.pin_by = { metadata: v("g-pin-field") };
    if (!editing) body.start = v("g-start");
    if (g && g.max_in_flight_per_consumer) body.max_in_flight_per_consumer = g.max_in_flight_per_consumer;
    try {
      await api.call("PUT", api.path(["subscriptions", name]), body);
      location.hash = route(["group", name]);
    } catch (err) { ctx.showError(err); }
  });
  main.append(h("h1", {}, editing ? "Edit group" : "New group"), form);
}
