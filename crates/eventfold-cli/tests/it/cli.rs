//! The client commands of the `eventfold` binary (append, read, tail, info, delete, export,
//! import), run as processes against real server processes.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::Server;

/// What one run of `eventfold` left.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The stdout lines parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.status, 0, "{self:?}");
        self
    }
}

fn cmd(server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventfold"));
    c.args(args)
        .env("EVENTFOLD_SERVER", server)
        .env_remove("EVENTFOLD_TOKEN")
        .env("EVENTFOLD_LOG", "warn");
    c
}

/// Runs `eventfold ARGS` against `server`, with `stdin` as its input.
fn eventfold(server: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = cmd(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eventfold");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for eventfold");
    Run {
        status: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--durability", "none", "--heartbeat-secs", "1"];
    args.extend_from_slice(extra);
    let server = Server::start(dir.path(), &args);
    (dir, server)
}

/// An event without what the target server assigns (revision, position, timestamp).
fn portable(mut e: Value) -> Value {
    let m = e.as_object_mut().expect("an event object");
    for k in ["revision", "position", "timestamp"] {
        m.remove(k);
    }
    e
}

#[test]
fn append_then_read_as_text_and_json() {
    let (_d, s) = start(&[]);
    let u = &s.url;
    let r = eventfold(
        u,
        &[
            "append",
            "order-1",
            "--type",
            "order.placed",
            "--data",
            r#"{"total": 9.5}"#,
            "--expected-revision",
            "no-stream",
        ],
        "",
    )
    .ok();
    assert!(
        r.stdout.contains("appended 1 event to order-1: revision 0"),
        "{r:?}"
    );
    // A batch on stdin, with --json.
    let batch = r#"[{"type": "order.paid", "data": {"ok": true}, "metadata": {"correlation_id": "req_1"}},
                    {"type": "blob", "content_type": "application/octet-stream", "data_base64": "AAEC"}]"#;
    let r = eventfold(
        u,
        &["append", "order-1", "--expected-revision", "0", "--json"],
        batch,
    )
    .ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(v["first_revision"], 1);
    assert_eq!(v["last_revision"], 2);
    assert_eq!(v["idempotent_replay"], false);

    let text = eventfold(u, &["read", "order-1"], "").ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("order-1#0") && lines[0].contains("order.placed"),
        "{text}"
    );
    assert!(lines[0].ends_with(r#"{"total":9.5}"#), "{text}");
    assert!(
        lines[2].contains("<3 bytes of application/octet-stream>"),
        "{text}"
    );

    let events = eventfold(u, &["read", "order-1", "--json"], "")
        .ok()
        .json_lines();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["type"], "order.paid");
    assert_eq!(events[1]["metadata"]["correlation_id"], "req_1");
    assert_eq!(events[2]["data_base64"], "AAEC");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
    }
    // Backwards with a limit, and $all with a type filter.
    let back = eventfold(
        u,
        &["read", "order-1", "--backwards", "--limit", "2", "--json"],
        "",
    )
    .ok()
    .json_lines();
    assert_eq!(
        back.iter()
            .map(|e| e["revision"].clone())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    // As of a time: the first event's commit time keeps it and any event committed with it.
    let t0 = events[0]["timestamp"]
        .as_str()
        .expect("a timestamp")
        .to_owned();
    let upto: Vec<Value> = events
        .iter()
        .filter(|e| e["timestamp"].as_str().is_some_and(|t| t <= t0.as_str()))
        .map(|e| e["revision"].clone())
        .collect();
    assert!(
        upto.len() < events.len(),
        "the last batch is later: {events:?}"
    );
    for args in [
        &["read", "order-1", "--until", &t0, "--json"][..],
        &["read", "$all", "--until", &t0, "--json"],
        &["read", "order-1", "--until", &t0, "--cloudevents"],
    ] {
        let got = eventfold(u, args, "").ok().json_lines();
        let revisions: Vec<Value> = got
            .iter()
            .map(|e| {
                if e["revision"].is_null() {
                    json!(
                        e["eventfoldrevision"]
                            .as_str()
                            .expect("a revision")
                            .parse::<u64>()
                            .expect("a number")
                    )
                } else {
                    e["revision"].clone()
                }
            })
            .collect();
        assert_eq!(revisions, upto, "{args:?}");
    }
    let r = eventfold(u, &["read", "order-1", "--until", "yesterday"], "");
    assert!(r.status == 2 && r.stderr.contains("RFC 3339"), "{r:?}");
    let paid = eventfold(u, &["read", "$all", "--type", "order.paid", "--json"], "")
        .ok()
        .json_lines();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["stream"], "order-1");
    // As CloudEvents (the server's batches, page after page), of a stream and of $all.
    let ce = eventfold(u, &["read", "order-1", "--cloudevents", "--limit", "2"], "")
        .ok()
        .json_lines();
    assert_eq!(ce.len(), 2);
    assert_eq!(ce[0]["specversion"], "1.0");
    assert_eq!(ce[0]["source"], "/streams/order-1");
    assert_eq!(ce[0]["data"]["total"], 9.5);
    assert_eq!(ce[1]["type"], "order.paid");
    assert_eq!(ce[1]["eventfoldrevision"], "1");
    let ce = eventfold(u, &["read", "$all", "--cloudevents", "--type", "blob"], "")
        .ok()
        .json_lines();
    assert_eq!(ce.len(), 1);
    assert_eq!(ce[0]["data_base64"], "AAEC");
    // Type patterns: on $all (the server filters) and on a stream (the CLI filters).
    for target in ["$all", "order-1"] {
        let orders = eventfold(u, &["read", target, "--type", "order.*", "--json"], "")
            .ok()
            .json_lines();
        assert_eq!(
            orders.iter().map(|e| e["type"].clone()).collect::<Vec<_>>(),
            ["order.placed", "order.paid"],
            "{target}"
        );
    }
    let ce = eventfold(
        u,
        &["read", "order-1", "--cloudevents", "--type", "order.*"],
        "",
    )
    .ok()
    .json_lines();
    assert_eq!(
        ce.iter().map(|e| e["type"].clone()).collect::<Vec<_>>(),
        ["order.placed", "order.paid"],
        "a stream read as CloudEvents, filtered by a pattern on the CLI's side"
    );
    let r = eventfold(u, &["read", "$all", "--type", "order.*x"], "");
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains("order.*x") && r.stderr.contains("`*x`"),
        "{r:?}"
    );
}

#[test]
fn refusals_exit_1_and_usage_or_connection_errors_exit_2() {
    let (_d, s) = start(&[]);
    let u = &s.url;
    let append = ["append", "order-1", "--type", "t", "--data", "1"];
    eventfold(u, &append, "").ok();
    let r = eventfold(
        u,
        &[&append[..], &["--expected-revision", "no-stream"]].concat(),
        "",
    );
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
    assert!(
        r.stderr.contains("expected revision no-stream") && r.stderr.contains("is at revision 0"),
        "{r:?}"
    );
    let r = eventfold(u, &["read", "nothing-here"], "");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{r:?}");
    // Usage: data that is not JSON, a reserved stream name.
    let r = eventfold(
        u,
        &["append", "order-1", "--type", "t", "--data", "{no"],
        "",
    );
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("not JSON"), "{r:?}");
    let r = eventfold(u, &["append", "$x", "--type", "t", "--data", "1"], "");
    assert_eq!(r.status, 2, "{r:?}");
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let r = eventfold(
        &format!("http://127.0.0.1:{port}"),
        &["info", "order-1"],
        "",
    );
    assert_eq!(r.status, 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
    assert!(
        r.stderr.contains("cannot reach the server")
            && r.stderr.contains("--server")
            && r.stderr.to_lowercase().contains("refused"),
        "{r:?}"
    );
}

/// Tags, reads by query and conditional appends from the command line.
#[test]
fn tags_queries_and_conditional_appends() {
    let (_d, s) = start(&[]);
    let u = &s.url;
    let r = eventfold(
        u,
        &[
            "append",
            "course-c1",
            "--type",
            "CourseDefined",
            "--data",
            r#"{"capacity":1}"#,
            "--tag",
            "course:c1",
            "--json",
        ],
        "",
    )
    .ok();
    let defined: Value = serde_json::from_str(&r.stdout).expect("JSON");
    eventfold(
        u,
        &["append", "noise-1", "--type", "Noise", "--data", "{}"],
        "",
    )
    .ok();
    // Text lines show the tags; --tag and --query select by them.
    let r = eventfold(u, &["read", "$all"], "").ok();
    assert!(r.stdout.contains("[course:c1]"), "{r:?}");
    let by_tag = eventfold(u, &["read", "$all", "--tag", "course:c1", "--json"], "").ok();
    let events = by_tag.json_lines();
    assert_eq!(events.len(), 1, "{by_tag:?}");
    assert_eq!(events[0]["tags"], json!(["course:c1"]));
    let q = r#"{"items":[{"types":["CourseDefined","StudentSubscribed"],"tags":["course:c1"]}]}"#;
    let by_query = eventfold(u, &["read", "$all", "--query", q, "--json"], "").ok();
    assert_eq!(by_query.json_lines().len(), 1);
    let r = eventfold(u, &["read", "course-c1", "--tag", "course:c1"], "");
    assert_eq!(r.status, 2, "a stream read takes no query: {r:?}");
    let r = eventfold(u, &["read", "$all", "--query", "course:c1"], "");
    assert_eq!(r.status, 2, "not a query: {r:?}");
    // A conditional append after the last matching position passes; the same again fails.
    let after = defined["last_position"].to_string();
    let subscribe = |student: &str| {
        eventfold(
            u,
            &[
                "append",
                "subscription-c1",
                "--type",
                "StudentSubscribed",
                "--data",
                "{}",
                "--tag",
                "course:c1",
                "--tag",
                &format!("student:{student}"),
                "--fail-if",
                q,
                "--after",
                &after,
                "--json",
            ],
            "",
        )
    };
    let won = subscribe("s1").ok();
    let won: Value = serde_json::from_str(&won.stdout).expect("JSON");
    let lost = subscribe("s2");
    assert_eq!(lost.status, 1, "{lost:?}");
    assert!(
        lost.stderr
            .contains(&format!("position {}", won["first_position"])),
        "{lost:?}"
    );
    let r = eventfold(u, &["read", "subscription-c1", "--json"], "").ok();
    assert_eq!(r.json_lines().len(), 1, "the refused append wrote nothing");
    let r = eventfold(
        u,
        &[
            "append", "x-1", "--after", "1", "--type", "t", "--data", "1",
        ],
        "",
    );
    assert_eq!(r.status, 2, "--after needs --fail-if: {r:?}");
}

#[test]
fn info_and_delete() {
    let (_d, s) = start(&[]);
    let u = &s.url;
    for _ in 0..3 {
        eventfold(
            u,
            &["append", "cart-7", "--type", "item.added", "--data", "{}"],
            "",
        )
        .ok();
    }
    let r = eventfold(u, &["info", "cart-7"], "").ok();
    assert!(r.stdout.contains("last revision  2"), "{r:?}");
    let v: Value =
        serde_json::from_str(&eventfold(u, &["info", "cart-7", "--json"], "").ok().stdout)
            .expect("JSON info");
    assert_eq!(v["stream"], "cart-7");
    assert_eq!(v["last_revision"], 2);
    assert_eq!(v["event_count"], 3);

    let r = eventfold(u, &["delete", "cart-7", "--expected-revision", "1"], "");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("is at revision 2"), "{r:?}");
    eventfold(u, &["delete", "cart-7", "--expected-revision", "2"], "").ok();
    let r = eventfold(u, &["info", "cart-7"], "");
    assert_eq!(r.status, 1, "{r:?}");
    // Soft: appending again continues the revisions.
    let r = eventfold(
        u,
        &["append", "cart-7", "--type", "t", "--data", "1", "--json"],
        "",
    )
    .ok();
    assert!(r.stdout.contains(r#""first_revision":3"#), "{r:?}");

    let r = eventfold(u, &["delete", "cart-7", "--hard", "--json"], "").ok();
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).expect("JSON"),
        json!({"stream": "cart-7", "deleted": "hard"})
    );
    let r = eventfold(u, &["append", "cart-7", "--type", "t", "--data", "1"], "");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("hard-deleted"), "{r:?}");
}

#[test]
fn tail_prints_an_event_appended_after_it_started() {
    let (_d, s) = start(&[]);
    let u = &s.url;
    eventfold(
        u,
        &["append", "feed-1", "--type", "first", "--data", "1"],
        "",
    )
    .ok();
    let mut tail = cmd(u, &["tail", "feed-1", "--from", "start", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tail");
    let stdout = tail.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("tail printed no {what} event within 10 s"));
        serde_json::from_str(&line).expect("an NDJSON event")
    };
    // The history first: once it is printed, the subscription is live.
    assert_eq!(next("history")["type"], "first");
    eventfold(
        u,
        &["append", "feed-1", "--type", "second", "--data", "2"],
        "",
    )
    .ok();
    let live = next("live");
    assert_eq!(live["type"], "second");
    assert_eq!(live["revision"], 1);
    assert!(
        tail.try_wait().expect("poll tail").is_none(),
        "tail keeps following"
    );
    tail.kill().expect("kill tail");
    tail.wait().expect("reap tail");
}

/// Writes a few interleaved streams, with JSON and binary data and metadata.
fn fill(url: &str) {
    for i in 0..4 {
        for stream in ["order-1", "order-2", "invoice-9"] {
            let data = format!(r#"{{"n": {i}, "stream": "{stream}"}}"#);
            let meta = format!(r#"{{"correlation_id": "c{i}"}}"#);
            eventfold(
                url,
                &[
                    "append",
                    stream,
                    "--type",
                    "e",
                    "--data",
                    &data,
                    "--metadata",
                    &meta,
                ],
                "",
            )
            .ok();
        }
    }
    let batch = r#"[{"type": "bin", "content_type": "application/octet-stream", "data_base64": "AAEC", "schema_version": 3},
                    {"type": "two", "data": [1, 2]}]"#;
    eventfold(url, &["append", "order-2"], batch).ok();
}

#[test]
fn export_then_import_into_a_fresh_server_gives_the_same_events() {
    let (dir, a) = start(&[]);
    fill(&a.url);
    let file = dir.path().join("export.ndjson");
    let file = file.to_str().expect("utf-8 path");
    let r = eventfold(&a.url, &["export", "--out", file], "").ok();
    assert!(
        r.stdout.contains("exported 14 events of 3 streams"),
        "{r:?}"
    );
    assert!(
        !std::path::Path::new(&format!("{file}.part")).exists(),
        "the .part file is renamed"
    );
    // Exporting to stdout gives the same lines.
    let to_stdout = eventfold(&a.url, &["export", "--quiet"], "").ok();
    assert_eq!(
        to_stdout.stdout,
        std::fs::read_to_string(file).expect("read the export")
    );
    let one = eventfold(&a.url, &["export", "--stream", "order-2"], "")
        .ok()
        .json_lines();
    // The header, then the events.
    assert_eq!(one[0], json!({"eventfold_export": 2}));
    assert_eq!(one.len(), 1 + 6);

    let (_d2, b) = start(&[]);
    let r = eventfold(&b.url, &["import", file, "--json"], "").ok();
    let summary = serde_json::from_str::<Value>(&r.stdout).expect("JSON summary");
    assert_eq!(
        [
            &summary["written"],
            &summary["skipped"],
            &summary["streams"]
        ],
        [14, 0, 3]
    );
    let source = eventfold(&a.url, &["read", "$all", "--json"], "")
        .ok()
        .json_lines();
    let copy = eventfold(&b.url, &["read", "$all", "--json"], "")
        .ok()
        .json_lines();
    assert_eq!(copy.len(), 14);
    // Ids, types, data, metadata and the order (hence each stream's order) are kept; the
    // revisions too, the streams being new.
    for (x, y) in source.iter().zip(&copy) {
        assert_eq!(x["revision"], y["revision"]);
        assert_eq!(portable(x.clone()), portable(y.clone()));
    }
}

#[test]
fn import_again_or_after_an_interruption_writes_nothing_twice() {
    let (dir, a) = start(&[]);
    fill(&a.url);
    let full = eventfold(&a.url, &["export", "--quiet"], "").ok().stdout;
    let lines: Vec<&str> = full.lines().collect();
    // An interrupted import: the header and the first 5 events only.
    let head = dir.path().join("head.ndjson");
    std::fs::write(&head, format!("{}\n", lines[..6].join("\n"))).expect("write");
    let all = dir.path().join("all.ndjson");
    std::fs::write(&all, &full).expect("write");
    let (head, all) = (head.to_str().expect("utf-8"), all.to_str().expect("utf-8"));

    let (_d2, b) = start(&[]);
    let summary = |file: &str| -> Value {
        serde_json::from_str(
            &eventfold(&b.url, &["import", file, "--json"], "")
                .ok()
                .stdout,
        )
        .expect("JSON summary")
    };
    assert_eq!(summary(head)["written"], 5);
    let v = summary(all);
    assert_eq!(
        (v["written"].clone(), v["skipped"].clone()),
        (json!(9), json!(5))
    );
    let v = summary(all);
    assert_eq!(
        (v["written"].clone(), v["skipped"].clone()),
        (json!(0), json!(14))
    );
    // From stdin too, with small batches.
    let r = eventfold(
        &b.url,
        &["import", "-", "--batch-events", "1", "--json"],
        &full,
    )
    .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).expect("JSON")["written"],
        0
    );
    let ids = |url: &str| -> Vec<Value> {
        eventfold(url, &["read", "$all", "--json"], "")
            .ok()
            .json_lines()
            .into_iter()
            .map(|e| e["id"].clone())
            .collect()
    };
    assert_eq!(ids(&b.url), ids(&a.url));

    // A stream holding events that are not from the file is refused, not mixed.
    let (_d3, c) = start(&[]);
    eventfold(
        &c.url,
        &["append", "order-2", "--type", "mine", "--data", "1"],
        "",
    )
    .ok();
    // Keeping the original timestamps, the first event older than that one is refused.
    let r = eventfold(&c.url, &["import", all], "");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("never decrease"), "{r:?}");
    // As an ordinary writer, the stream that holds another event is.
    let r = eventfold(&c.url, &["import", all, "--server-timestamps"], "");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.stderr.contains("order-2"), "{r:?}");
}

#[test]
fn token_is_sent_and_a_missing_or_wrong_one_is_explained() {
    let (_d, s) = start(&["--auth-token", "s3cret"]);
    let u = &s.url;
    let append = ["append", "order-1", "--type", "t", "--data", "1"];
    for extra in [&[][..], &["--token", "wrong"][..]] {
        let r = eventfold(u, &[&append[..], extra].concat(), "");
        assert_eq!(r.status, 1, "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
        assert!(
            r.stderr.contains("401") && r.stderr.contains("--token"),
            "{r:?}"
        );
    }
    eventfold(u, &[&append[..], &["--token", "s3cret"]].concat(), "").ok();
    // The token from the environment.
    let out = cmd(u, &["read", "order-1", "--json"])
        .env("EVENTFOLD_TOKEN", "s3cret")
        .output()
        .expect("run read");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// The server runs without transparent huge pages (`main`'s `no_transparent_huge_pages`): the
/// first touches of its growing heap zeroed 2 MiB each on the append path.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let (_dir, server) = start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("read the server's /proc status");
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "THP_enabled of the server: {thp:?}");
}
