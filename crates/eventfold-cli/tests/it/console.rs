//! The web console at `/` in a real browser: Debian's headless `chromium` (at
//! `EVENTFOLD_CHROMIUM`, or `/usr/bin/chromium`) driven over the DevTools protocol by
//! `chromiumoxide`, against a real `eventfold serve`. Every page loads without a console error
//! (exceptions, `console.error`, failed loads and Content-Security-Policy violations all count);
//! an event appended over HTTP shows in the live tail; a parked event replayed from the console
//! is delivered again; with tokens the console asks for one, works with it and explains a 403.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/console-screenshots/`. Without chromium the tests are
//! skipped with the reason printed, and fail instead under `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::{Page, ScreenshotParams};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::server::{Server, client, send};

/// How long a page may take to show what a test waits for before the test fails.
const WAIT: Duration = Duration::from_secs(15);

/// The browser, or `None` (skip) when there is none and the environment does not require it.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("EVENTFOLD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!(
            "EVENTFOLD_REQUIRE_SERVICES=1 but there is no browser at {} (install Debian's chromium, or set EVENTFOLD_CHROMIUM)",
            path.display()
        );
    }
    eprintln!(
        "skipped: no browser at {} (install Debian's chromium, or set EVENTFOLD_CHROMIUM)",
        path.display()
    );
    None
}

/// A headless chromium with one page, and what its console reported.
struct Chrome {
    browser: Browser,
    page: Page,
    problems: Arc<Mutex<Vec<String>>>,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chrome {
    async fn launch(exe: PathBuf, name: &str) -> Chrome {
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .no_sandbox()
            .user_data_dir(profile.path())
            .viewport(Viewport {
                width: 1280,
                height: 860,
                ..Viewport::default()
            })
            .window_size(1280, 860)
            .launch_timeout(Duration::from_secs(30))
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page("about:blank").await.expect("a page");
        let problems = Arc::new(Mutex::new(Vec::new()));
        let mut entries = page
            .event_listener::<EventEntryAdded>()
            .await
            .expect("log events");
        let mut exceptions = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("exception events");
        let mut calls = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .expect("console events");
        let p = problems.clone();
        tokio::spawn(async move {
            while let Some(e) = entries.next().await {
                if e.entry.level == LogEntryLevel::Error {
                    p.lock().unwrap().push(format!(
                        "log: {} ({})",
                        e.entry.text,
                        e.entry.url.clone().unwrap_or_default()
                    ));
                }
            }
        });
        let p = problems.clone();
        tokio::spawn(async move {
            while let Some(e) = exceptions.next().await {
                let d = &e.exception_details;
                p.lock().unwrap().push(format!(
                    "exception: {} {:?} at {}:{}",
                    d.text,
                    d.exception.as_ref().and_then(|x| x.description.clone()),
                    d.line_number,
                    d.column_number
                ));
            }
        });
        let p = problems.clone();
        tokio::spawn(async move {
            while let Some(e) = calls.next().await {
                if matches!(
                    e.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let args: Vec<String> = e
                        .args
                        .iter()
                        .map(|a| {
                            format!(
                                "{:?}",
                                a.value.clone().or(a.description.clone().map(Value::String))
                            )
                        })
                        .collect();
                    p.lock()
                        .unwrap()
                        .push(format!("console.error: {}", args.join(" ")));
                }
            }
        });
        page.enable_log().await.expect("enable the log domain");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("console-screenshots")
            .join(name);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Chrome {
            browser,
            page,
            problems,
            shots,
            _profile: profile,
        }
    }

    /// The console problems so far (and forgets them).
    fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut *self.problems.lock().unwrap())
    }

    async fn eval(&self, js: &str) -> Value {
        self.page
            .evaluate(js)
            .await
            .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
            .into_value()
            .unwrap_or(Value::Null)
    }

    /// Waits until `js` is true in the page; fails with a screenshot after [`WAIT`].
    async fn wait_for(&self, js: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.eval(&format!("!!({js})")).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let shot = self.shot("timeout").await;
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "waited {WAIT:?} for {what} ({js}); screenshot {}; console problems {:?}; page text:\n{}",
                    shot.display(),
                    self.take_problems(),
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Goes to a console page by its hash and waits until `ready` is true.
    async fn show(&self, hash: &str, ready: &str) {
        self.eval(&format!("location.hash = {}", json!(hash))).await;
        self.wait_for(ready, hash).await;
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        self.page
            .save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
            .await
            .expect("screenshot");
        path
    }

    async fn click(&self, selector: &str) {
        self.page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Focuses `selector` by a click and types `text` into it, as a user would; returns the
    /// element (to press a key in it).
    async fn type_into(&self, selector: &str, text: &str) -> chromiumoxide::Element {
        let input = self
            .page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"));
        input.click().await.expect("focus");
        input.type_str(text).await.expect("type");
        input
    }

    fn assert_no_problems(&self, when: &str) {
        let p = self.take_problems();
        assert!(p.is_empty(), "console problems {when}: {p:#?}");
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
    }
}

async fn append(url: &str, stream: &str, events: Value) -> Value {
    let (status, body) = send(
        client()
            .post(format!("{url}/streams/{stream}"))
            .json(&events),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Every page without a console error (a hostile event included, shown as text), the live tail
/// (pause and resume lose nothing), and a parked event replayed from the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_every_page_follows_the_tail_and_replays_parked_events() {
    let Some(exe) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--durability", "none"]);
    let url = server.url.clone();
    for i in 1..=3 {
        append(&url, &format!("order-{i}"), json!([
            {"type": "order.placed", "data": {"orderId": format!("ord_{i}"), "total": 99.5, "items": [{"sku": "A-1", "qty": 2}]},
             "metadata": {"correlation_id": format!("req_{i}"), "source": "shop"}},
            {"type": "order.paid", "data": {"orderId": format!("ord_{i}")}, "metadata": {"correlation_id": format!("req_{i}"), "causation_id": "cmd_1"}}
        ])).await;
    }
    // Attacker-controlled text everywhere the console renders an event.
    append(
        &url,
        "user-<b>x",
        json!([{"type": "<img src=x onerror=alert(1)>",
        "data": {"name": "<script>alert(1)</script>"}, "metadata": {"correlation_id": "req_1"}}]),
    )
    .await;
    let (status, body) =
        send(client().put(format!("{url}/subscriptions/billing")).json(
            &json!({"filter": {"category": "order"}, "start": "start", "max_deliveries": 1}),
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    // One delivery nacked with max_deliveries 1: parked.
    let (_, pulled) = send(
        client()
            .post(format!("{url}/subscriptions/billing/pull"))
            .json(&json!({"consumer": "worker-1", "max": 1, "wait_ms": 5000})),
    )
    .await;
    let first = &pulled["deliveries"][0];
    assert_eq!(first["event"]["stream"], "order-1", "{pulled}");
    let (status, body) = send(client().post(format!("{url}/subscriptions/billing/nack")).json(
        &json!({"delivery_ids": [first["delivery_id"]], "action": "retry", "reason": "the payment gateway timed out"}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");

    let chrome = Chrome::launch(exe, "no-auth").await;
    chrome
        .page
        .goto(format!("{url}/"))
        .await
        .expect("open the console");
    chrome
        .wait_for("document.querySelector('#overview-cards')", "the overview")
        .await;
    // A second sample gives the rates.
    chrome
        .wait_for(
            "document.querySelector('#overview-cards polyline')",
            "a chart",
        )
        .await;
    chrome.shot("overview").await;
    let index = client().get(format!("{url}/")).send().await.expect("GET /");
    let csp = index
        .headers()
        .get("content-security-policy")
        .expect("a CSP header");
    assert!(
        csp.to_str().expect("ascii").contains("script-src 'self'"),
        "{csp:?}"
    );

    chrome
        .show(
            "#/streams",
            "document.querySelector('main table a[href=\"#/stream/order-1\"]')",
        )
        .await;
    chrome.shot("streams").await;
    chrome
        .show(
            "#/stream/order-1",
            "document.querySelector('#metadata-form') && document.querySelector('main table')",
        )
        .await;
    chrome.shot("stream").await;
    chrome
        .show("#/event/order-1/0", "document.querySelector('#event-data')")
        .await;
    let data = chrome
        .eval("document.querySelector('#event-data').textContent")
        .await;
    assert!(
        data.as_str()
            .unwrap_or_default()
            .contains("\"orderId\": \"ord_1\""),
        "{data}"
    );
    chrome.shot("event").await;
    chrome
        .show(
            "#/correlation/req_1",
            "document.querySelector('main [role=status]').textContent.includes('found')",
        )
        .await;
    let rows = chrome
        .eval("document.querySelectorAll('main tbody tr').length")
        .await;
    assert_eq!(
        rows,
        json!(3),
        "order-1's two events and the user event share req_1"
    );
    chrome.shot("correlation").await;
    // The hostile event: its type and data are text, no element came out of them.
    chrome
        .show(
            &format!("#/event/{}/0", "user-%3Cb%3Ex"),
            "document.querySelector('#event-data')",
        )
        .await;
    let h1 = chrome
        .eval("document.querySelector('main h1').textContent")
        .await;
    assert_eq!(h1, json!("<img src=x onerror=alert(1)>"));
    assert_eq!(
        chrome
            .eval("document.querySelectorAll('main img, main script, main b').length")
            .await,
        json!(0)
    );
    chrome
        .show(
            "#/all",
            "document.querySelectorAll('main tbody tr').length === 7",
        )
        .await;
    chrome.shot("all").await;
    chrome
        .show(
            "#/all?category=order",
            "document.querySelectorAll('main tbody tr').length === 6",
        )
        .await;
    chrome
        .show(
            "#/groups",
            "document.querySelector('main table a[href=\"#/group/billing\"]')",
        )
        .await;
    chrome.shot("groups").await;
    chrome
        .show("#/new-group", "document.querySelector('#group-form')")
        .await;
    chrome.shot("new-group").await;
    chrome.assert_no_problems("while showing the pages");

    // The live tail: an event appended over HTTP shows up.
    chrome
        .show(
            "#/tail",
            "document.querySelector('#tail-status').textContent === 'live'",
        )
        .await;
    let sent = Instant::now();
    append(
        &url,
        "order-9",
        json!([{"type": "order.placed", "data": {"n": 1}}]),
    )
    .await;
    chrome
        .wait_for(
            "document.querySelector('#tail-rows a[href=\"#/stream/order-9\"]')",
            "the appended event in the tail",
        )
        .await;
    eprintln!(
        "live tail: the event appended over HTTP showed after {:?} (append answered, then polled every 25 ms)",
        sent.elapsed()
    );
    // Paused, events wait on the server; resumed, they arrive once each, in order.
    chrome.click("#tail-toggle").await;
    chrome
        .wait_for(
            "document.querySelector('#tail-status').textContent.startsWith('paused')",
            "paused",
        )
        .await;
    append(&url, "order-9", json!([{"type": "order.shipped", "data": {"n": 2}}, {"type": "order.closed", "data": {"n": 3}}])).await;
    chrome.click("#tail-toggle").await;
    chrome
        .wait_for(
            "document.querySelectorAll('#tail-rows tr').length === 3",
            "three events in the tail",
        )
        .await;
    let types = chrome.eval("[...document.querySelectorAll('#tail-rows tr td:nth-child(4)')].map(td => td.textContent)").await;
    assert_eq!(
        types,
        json!(["order.closed", "order.shipped", "order.placed"])
    );
    chrome.shot("tail").await;
    chrome.assert_no_problems("in the live tail");

    // The parked event, replayed from the console, is delivered again.
    chrome
        .show(
            "#/group/billing",
            "document.querySelector('#replay-all') && document.querySelector('#parked td')",
        )
        .await;
    let reason = chrome
        .eval("document.querySelector('#parked tbody tr td:nth-child(3)').textContent")
        .await;
    assert_eq!(reason, json!("the payment gateway timed out"));
    chrome.shot("group-parked").await;
    chrome.click("#parked .replay-one").await;
    chrome.wait_for("document.querySelector('#group-message').textContent.startsWith('1 parked event sent')", "the replay").await;
    let (_, again) = send(
        client()
            .post(format!("{url}/subscriptions/billing/pull"))
            .json(&json!({"consumer": "worker-2", "max": 10, "wait_ms": 5000})),
    )
    .await;
    let ids: Vec<&Value> = again["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| &d["event"]["id"])
        .collect();
    assert!(
        ids.contains(&&first["event"]["id"]),
        "the replayed event is delivered again: {again}"
    );
    chrome
        .wait_for(
            "document.querySelector('#parked').textContent.includes('Nothing parked')",
            "no parked event",
        )
        .await;
    chrome.assert_no_problems("replaying");

    // A phone.
    chrome
        .page
        .execute(SetDeviceMetricsOverrideParams::new(390, 844, 2.0, true))
        .await
        .expect("phone size");
    chrome
        .show("#/", "document.querySelector('#overview-cards')")
        .await;
    chrome.shot("phone-overview").await;
    chrome
        .show("#/event/order-1/0", "document.querySelector('#event-data')")
        .await;
    chrome.shot("phone-event").await;
    chrome.assert_no_problems("on a phone");
    chrome.close().await;
}

/// With tokens, the console asks for one before its first request, sends it in a header (never
/// in a URL), and explains a 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_console_asks_for_one_and_explains_a_403() {
    let Some(exe) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[[tokens]]\ntoken = \"admin-secret-1\"\nrights = [\"read\", \"write\", \"admin\"]\n\n[[tokens]]\ntoken = \"reader-secret-1\"\nrights = [\"read\"]\n").expect("tokens file");
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--durability",
            "none",
            "--tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    let url = server.url.clone();
    let (status, _) = send(client().get(format!("{url}/stats"))).await;
    assert_eq!(status, 401);

    let chrome = Chrome::launch(exe, "auth").await;
    chrome
        .page
        .goto(format!("{url}/"))
        .await
        .expect("open the console");
    chrome
        .wait_for("document.querySelector('#token-form')", "the token prompt")
        .await;
    chrome.shot("token-prompt").await;
    // Typed with the keyboard, sent with Enter.
    let input = chrome.type_into("#token", "reader-secret-1").await;
    input.press_key("Enter").await.expect("enter");
    chrome
        .wait_for(
            "document.querySelector('#overview-cards')",
            "the overview with the token",
        )
        .await;
    let href = chrome.eval("location.href").await;
    assert!(
        !href.as_str().unwrap_or_default().contains("secret"),
        "the token is in the URL: {href}"
    );
    chrome.shot("overview-with-token").await;
    chrome.assert_no_problems("with a token");

    // The reader may not create a group: the console says why.
    chrome
        .show("#/new-group", "document.querySelector('#group-form')")
        .await;
    chrome.type_into("#g-name", "billing").await;
    chrome.click("#group-form button[type=submit]").await;
    chrome
        .wait_for(
            "!document.querySelector('#banner').hidden",
            "the 403 banner",
        )
        .await;
    let banner = chrome
        .eval("document.querySelector('#banner').textContent")
        .await;
    let banner = banner.as_str().unwrap_or_default();
    assert!(
        banner.contains("Forbidden (403)") && banner.contains("admin"),
        "{banner}"
    );
    chrome.shot("forbidden").await;
    // The refused request is the only problem the console reported (the browser logs it).
    let problems = chrome.take_problems();
    assert!(problems.iter().all(|p| p.contains("403")), "{problems:#?}");

    // Another token, from the banner: the admin's works.
    chrome.click("#banner button").await;
    chrome
        .wait_for(
            "document.querySelector('#token-form')",
            "the token prompt again",
        )
        .await;
    let input = chrome.type_into("#token", "admin-secret-1").await;
    input.press_key("Enter").await.expect("enter");
    chrome
        .show("#/new-group", "document.querySelector('#group-form')")
        .await;
    chrome.type_into("#g-name", "billing").await;
    chrome.click("#group-form button[type=submit]").await;
    chrome
        .wait_for(
            "location.hash === '#/group/billing' && document.querySelector('#group-lag')",
            "the new group",
        )
        .await;
    // The admin edits a stream's metadata and deletes the stream.
    let (status, body) = send(
        client()
            .post(format!("{url}/streams/order-1"))
            .bearer_auth("admin-secret-1")
            .json(&json!([{"type": "a", "data": {}}, {"type": "b", "data": {}}])),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    chrome
        .show(
            "#/stream/order-1",
            "document.querySelector('#metadata-form')",
        )
        .await;
    chrome.type_into("#md-max-count", "1").await;
    chrome.click("#metadata-form button[type=submit]").await;
    chrome
        .wait_for(
            "document.querySelector('#metadata-form [role=status]').textContent === 'Saved.'",
            "the metadata saved",
        )
        .await;
    let (_, md) = send(
        client()
            .get(format!("{url}/streams/order-1/metadata"))
            .bearer_auth("admin-secret-1"),
    )
    .await;
    assert_eq!(md["max_count"], 1, "{md}");
    chrome.click("#delete-stream").await;
    chrome.click("#delete-confirm").await;
    chrome
        .wait_for(
            "location.hash === '#/streams'",
            "the streams after the delete",
        )
        .await;
    let (status, _) = send(
        client()
            .get(format!("{url}/streams/order-1"))
            .bearer_auth("admin-secret-1"),
    )
    .await;
    assert_eq!(status, 404, "the stream is deleted");
    chrome.assert_no_problems("as the admin");
    let (status, _) = send(
        client()
            .get(format!("{url}/subscriptions/billing"))
            .bearer_auth("admin-secret-1"),
    )
    .await;
    assert_eq!(status, 200);
    chrome.close().await;
}
