//! `eventfold scavenge` against a running server: a hard-deleted stream's bytes leave the data
//! directory while the server serves, everything else reads as before (after a restart too),
//! `eventfold verify` accepts the store, and only an admin may start one.

use eventfold_client::Client;
use eventfold_core::{
    DeleteMode, EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StreamName,
};

use crate::server::{Server, files_holding, text};

/// Runs `eventfold` with string arguments.
fn run(args: &[&str]) -> std::process::Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::server::eventfold(&args)
}

/// 1 MiB segments, so that a few MiB of events seal several.
const SMALL_SEGMENTS: &[&str] = &[
    "--segment-bytes",
    "1048576",
    "--batch-bytes-max",
    "65536",
    "--batch-events-max",
    "100",
];

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid")
}

fn events(marker: &str, from: u64, n: u64) -> Vec<NewEvent> {
    (from..from + n)
        .map(|i| {
            NewEvent::json(
                EventType::new("noted").expect("valid"),
                &serde_json::json!({"note": format!("{marker}-{i}"), "pad": "x".repeat(4_000)}),
            )
        })
        .collect()
}

async fn everything(client: &Client, streams: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in streams {
        match client
            .read_stream(&name(s), ReadStream::forward(10_000))
            .await
        {
            Ok(slice) => out.extend(slice.events.iter().map(|e| {
                format!(
                    "{} r{} p{} {} {}",
                    e.stream,
                    e.revision.0,
                    e.position.0,
                    e.id,
                    String::from_utf8_lossy(&e.data)
                )
            })),
            Err(e) => out.push(format!("{s}: {}", e.code())),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_erases_a_hard_deleted_streams_bytes_from_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, SMALL_SEGMENTS);
    let client = Client::new(&server.url, None).expect("client");
    for b in 0..20 {
        client
            .append(
                &name("customer-7"),
                ExpectedRevision::Any,
                events("PERSONAL-NOTE-OF-CUSTOMER-7", b * 10, 10),
            )
            .await
            .expect("append");
        client
            .append(
                &name("order-1"),
                ExpectedRevision::Any,
                events("order", b * 10, 10),
            )
            .await
            .expect("append");
    }
    client
        .delete_stream(&name("customer-7"), ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    // Seal the segments holding the customer's events.
    for b in 0..40 {
        client
            .append(
                &name("order-2"),
                ExpectedRevision::Any,
                events("fill", b * 10, 10),
            )
            .await
            .expect("append");
    }
    let streams = ["customer-7", "order-1", "order-2"];
    let before = everything(&client, &streams).await;
    let needle = b"PERSONAL-NOTE-OF-CUSTOMER-7";
    assert!(
        !files_holding(&data, needle).is_empty(),
        "the deleted events are on disk before the scavenge (or the test proves nothing)"
    );

    let out = run(&["scavenge", "--server", &server.url]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("scavenge finished") && said.contains("200 events removed"),
        "{}",
        text(&out)
    );
    let found = files_holding(&data, needle);
    assert!(
        found.is_empty(),
        "the deleted stream's bytes are still in {found:?}"
    );
    assert_eq!(everything(&client, &streams).await, before);
    let out = run(&["scavenge", "--status", "--json", "--server", &server.url]);
    assert!(out.status.success(), "{}", text(&out));
    let status: eventfold_protocol::scavenge::ScavengeStatus =
        serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(
        status.state,
        eventfold_protocol::scavenge::ScavengeState::Finished
    );
    assert_eq!(status.report.events_removed, 200);
    assert!(status.report.bytes_reclaimed >= 200 * 4_000, "{status:?}");

    assert!(server.terminate().success());
    let out = run(&["verify", data.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let server = Server::start(&data, SMALL_SEGMENTS);
    let client = Client::new(&server.url, None).expect("client");
    assert_eq!(everything(&client, &streams).await, before);
}

#[tokio::test]
async fn only_an_admin_starts_or_follows_a_scavenge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        r#"
[[tokens]]
token = "writer-everything-01"
rights = ["read", "write"]

[[tokens]]
token = "orders-admin-000001"
prefixes = ["order-"]
rights = ["read", "write", "admin"]
"#,
    )
    .expect("write tokens file");
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--auth-token",
            "root-token-000001",
            "--tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    let c = crate::server::client();
    let url = format!("{}/scavenge", server.url);
    for post in [false, true] {
        let st = |t: Option<&str>| {
            let rb = if post { c.post(&url) } else { c.get(&url) };
            let rb = match t {
                Some(t) => rb.bearer_auth(t),
                None => rb,
            };
            async move { rb.send().await.expect("request").status().as_u16() }
        };
        assert_eq!(st(None).await, 401);
        assert_eq!(st(Some("writer-everything-01")).await, 403);
        assert_eq!(st(Some("orders-admin-000001")).await, 403);
    }
    let idle = c
        .get(&url)
        .bearer_auth("root-token-000001")
        .send()
        .await
        .expect("request");
    assert_eq!(idle.status().as_u16(), 200);
    let idle: serde_json::Value = idle.json().await.expect("json");
    assert_eq!(idle["state"], "idle");
    let started = c
        .post(&url)
        .bearer_auth("root-token-000001")
        .send()
        .await
        .expect("request");
    assert_eq!(started.status().as_u16(), 202);
}
