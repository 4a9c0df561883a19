// The console: a hash router over the pages, the token prompt and the error banner.

import * as api from "./api.js";
import { h, clear } from "./dom.js";
import * as overview from "./overview.js";
import * as streams from "./streams.js";
import * as all from "./all.js";
import * as groups from "./groups.js";

const pages = {
  "": ["overview", overview.render],
  streams: ["streams", streams.renderList],
  stream: ["streams", streams.renderStream],
  event: ["streams", streams.renderEvent],
  correlation: ["streams", streams.renderCorrelation],
  all: ["all", all.renderAll],
  tail: ["tail", all.renderTail],
  groups: ["groups", groups.renderList],
  group: ["groups", groups.renderGroup],
  "new-group": ["groups", groups.renderNew],
};

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let cleanup = null;
let generation = 0;

// The route of the hash: path segments (decoded) and query.
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [p, q] = raw.split("?", 2);
  const segments = p ? p.split("/").map((s) => { try { return decodeURIComponent(s); } catch { return s; } }) : [];
  return { segments, query: new URLSearchParams(q || "") };
}

function showBanner(parts, kind) {
  clear(banner);
  banner.className = kind || "";
  banner.append(...parts);
  banner.hidden = false;
}

function hideBanner() {
  banner.hidden = true;
  clear(banner);
}

// What an error means, in the banner. A 403 names the right the request needed.
export function showError(err) {
  if (err instanceof api.ApiError) {
    if (err.status === 401) {
      api.setToken(null, false);
      renderTokenForm(err.message);
      return;
    }
    if (err.status === 403) {
      showBanner([
        h("p", {}, h("strong", {}, "Forbidden (403): "), err.message),
        h("p", {}, "The token you gave is known to the server, but it does not allow this. ",
          "A token has rights (read: view streams, $all, groups and metrics; write: append; ",
          "admin: change stream metadata, delete streams, create, change and delete groups, replay parked events) ",
          "and may be limited to stream prefixes: such a token cannot read $all unfiltered, the overview or the consumer groups, which span every stream."),
        h("p", {}, h("button.secondary", { type: "button", onclick: () => renderTokenForm() }, "Use another token")),
      ]);
      return;
    }
    showBanner([h("p", {}, h("strong", {}, `${err.status} ${err.code}: `), err.message)]);
    return;
  }
  showBanner([h("p", {}, h("strong", {}, "Cannot reach the server: "), String(err && err.message ? err.message : err))]);
}

function updateTokenState() {
  const state = document.getElementById("token-state");
  const button = document.getElementById("token-button");
  if (!api.config.auth) {
    state.textContent = "no token needed";
    button.hidden = true;
    return;
  }
  state.textContent = api.hasToken() ? "token set" : "no token";
  button.hidden = false;
  button.textContent = api.hasToken() ? "Change token" : "Enter token";
}

function renderTokenForm(problem) {
  stopPage();
  hideBanner();
  clear(main);
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const keep = h("input", { type: "checkbox", id: "keep", checked: true });
  const form = h("form.login", { id: "token-form" },
    h("h1", {}, "This server needs a token"),
    h("p", {}, "Every request to this eventfold server needs a bearer token (started with --auth-token or --tokens-file). ",
      "The console sends it in the Authorization header only; it never goes into a URL."),
    problem ? h("p.error-text", { role: "alert" }, problem) : null,
    h("label", { for: "token" }, "Token", input),
    h("label.check", { for: "keep" }, keep, " Keep it for this browser tab (sessionStorage; gone when the tab closes)"),
    h("div.bar", {},
      h("button", { type: "submit" }, "Use token"),
      api.hasToken() ? h("button.secondary", { type: "button", onclick: () => { api.setToken(null, false); renderTokenForm(); updateTokenState(); } }, "Forget token") : null));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    api.setToken(input.value.trim(), keep.checked);
    updateTokenState();
    renderRoute();
  });
  main.append(form);
  updateTokenState();
  input.focus();
}

function stopPage() {
  generation++;
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup must not stop navigation */ }
    cleanup = null;
  }
}

function renderRoute() {
  stopPage();
  hideBanner();
  const { segments, query } = parseHash();
  const [name, render] = pages[segments[0] || ""] || pages[""];
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (api.config.auth && !api.hasToken()) {
    renderTokenForm();
    return;
  }
  clear(main);
  const mine = generation;
  const ctx = {
    showError,
    // Whether this page is still the one shown (async work checks before it renders).
    current: () => mine === generation,
    onCleanup: (fn) => { const prev = cleanup; cleanup = () => { if (prev) prev(); fn(); }; },
  };
  Promise.resolve(render(main, segments.slice(1), query, ctx)).catch((e) => { if (ctx.current()) showError(e); });
}

document.addEventListener("keydown", (e) => {
  // "/" focuses the page's search box, as on many consoles.
  if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
    const search = main.querySelector("input[type=search], input");
    if (search) { e.preventDefault(); search.focus(); }
  }
});

document.getElementById("token-button").addEventListener("click", () => renderTokenForm());
window.addEventListener("hashchange", () => { renderRoute(); main.focus({ preventScroll: true }); });

api.loadConfig().then(() => {
  updateTokenState();
  renderRoute();
}).catch(showError);
