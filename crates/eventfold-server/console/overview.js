// The overview: the server's figures from GET /stats, rates from two samples of /metrics,
// the consumer groups' totals, refreshed every two seconds with small charts.

import * as api from "./api.js";
import { h, card, sparkline, fmtInt, fmtRate, fmtBytes, fmtDuration, link, table, clear } from "./dom.js";

const PERIOD_MS = 2000;
const SAMPLES = 60;

export async function render(main, _segments, _query, ctx) {
  const body = h("div", {});
  main.append(h("h1", {}, "Overview"), body);
  const history = { appended: [], delivered: [] };
  let last = null;
  let timer = null;

  async function tick() {
    const [stats, totals] = await Promise.all([api.get("/stats"), api.metricTotals()]);
    const groups = stats.groups === null ? null : (await api.get("/subscriptions")).subscriptions;
    if (!ctx.current()) return;
    const now = performance.now();
    const delivered = totals.sub_deliveries + totals.group_delivered;
    let rates = { appended: null, delivered: null };
    if (last) {
      const dt = (now - last.at) / 1000;
      rates = {
        appended: Math.max(0, (totals.appended - last.appended) / dt),
        delivered: Math.max(0, (delivered - last.delivered) / dt),
      };
      history.appended.push(rates.appended);
      history.delivered.push(rates.delivered);
      for (const k of Object.keys(history)) if (history[k].length > SAMPLES) history[k].shift();
    }
    last = { at: now, appended: totals.appended, delivered };
    clear(body);
    const g = groups || [];
    const sum = (f) => g.reduce((a, x) => a + (x[f] || 0), 0);
    const consumers = g.reduce((a, x) => a + (x.consumers || []).filter((c) => c.live).length, 0);
    body.append(
      h("div.cards", { id: "overview-cards" },
        card("Appends", fmtRate(rates.appended), sparkline(history.appended, "events appended per second, last two minutes")),
        card("Deliveries", fmtRate(rates.delivered), sparkline(history.delivered, "events delivered per second, last two minutes")),
        card("Events (log length)", stats.head_position === null ? "0" : fmtInt(stats.head_position + 1),
          h("div.muted", {}, stats.head_position === null ? "the log is empty" : `positions 0–${fmtInt(stats.head_position)}, metadata and deletes included`)),
        card("Stored", fmtBytes(stats.stored_bytes), h("div.muted", {}, stats.stored_bytes === null ? "not measured for this store" : "on disk, preallocated segments included")),
        card("Streams", fmtInt(stats.streams) + (stats.streams_complete ? "" : "+")),
        card("Subscribers", fmtInt(stats.subscriptions_active), h("div.muted", {}, "open SSE/NDJSON subscriptions")),
        card("Consumer groups", stats.groups === null ? "off" : fmtInt(stats.groups),
          groups ? h("div.muted", {}, `${consumers} live consumers`) : null),
        card("Group lag", groups ? fmtInt(sum("lag")) : "—", groups ? h("div.muted", {}, `${fmtInt(sum("in_flight"))} in flight, ${fmtInt(sum("parked"))} parked`) : null),
        card("Since start", fmtInt(totals.appended) + " appended", h("div.muted", {}, `${fmtInt(totals.failed)} failed, ${fmtInt(totals.read)} read`)),
        card("Server", "v" + stats.version, h("div.muted", {}, "up " + fmtDuration(stats.uptime_seconds) + (stats.auth ? ", tokens required" : ", no tokens"))),
      ));
    if (groups && groups.length) {
      body.append(h("h2", {}, "Consumer groups"), table(
        ["Group", ["Lag", "num"], ["In flight", "num"], ["Parked", "num"], ["Consumers", "num"]],
        groups.map((x) => h("tr", {},
          h("td.wrap", {}, link(x.group, ["group", x.group])),
          h("td.num", {}, fmtInt(x.lag)), h("td.num", {}, fmtInt(x.in_flight)),
          h("td.num", {}, fmtInt(x.parked)), h("td.num", {}, fmtInt((x.consumers || []).length))))));
    }
    body.append(h("p.muted", {}, "Rates are sampled from /metrics every two seconds while this page is open."));
  }

  async function loop() {
    try {
      await tick();
    } catch (e) {
      if (ctx.current()) ctx.showError(e);
      return; // stop polling after an error; navigating again retries
    }
    if (ctx.current()) timer = setTimeout(loop, PERIOD_MS);
  }
  ctx.onCleanup(() => clearTimeout(timer));
  await loop();
}
