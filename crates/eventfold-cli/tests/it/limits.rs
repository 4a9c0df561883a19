//! The server's bounds on connections, on the time a request's header and body may take, and on
//! the memory subscribers hold, against a real `eventfold serve` over raw TCP.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::Server;

/// How long a test waits for something that must happen (the bound the server was given is
/// far shorter): a server without the bound never gets there and the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

async fn connect(server: &Server) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (or `PATIENCE` runs out); what it sent.
async fn read_to_close(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut got))
        .await
        .ok()
        .map(|r| {
            r.ok();
            got
        })
}

/// Sends a whole `GET /health/live` and reads the status line of its answer.
async fn health(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A client that sends half a header and then nothing (slowloris) is disconnected once the
/// header read timeout passes, while other clients are served meanwhile.
#[tokio::test]
async fn a_client_that_trickles_its_header_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--durability", "none", "--header-read-timeout-secs", "1"],
    );
    let mut slow = connect(&server).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: te")
        .await
        .expect("write");
    let mut other = connect(&server).await;
    assert!(health(&mut other).await.starts_with("HTTP/1.1 200"));
    let closed = read_to_close(&mut slow).await;
    let answer = closed.expect("the trickling client was never disconnected");
    // hyper answers nothing (or a 408) before closing; never the health answer.
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
}

/// With `--max-connections 2`, two open connections take every slot: a third client's
/// request is not answered until one of them closes, then it is.
#[tokio::test]
async fn a_connection_beyond_the_bound_waits_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--durability", "none", "--max-connections", "2"],
    );
    let mut first = connect(&server).await;
    assert!(health(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = connect(&server).await;
    assert!(health(&mut second).await.starts_with("HTTP/1.1 200"));

    let mut third = connect(&server).await;
    third
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    // Coverage, not correctness, depends on this wait: a server without the bound answers in
    // well under a second, and the test fails here.
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served while two held every slot: {early:?}"
    );
    drop(first);
    let n = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(second);
}

/// Bad values of the new flags are refused with what to do.
#[test]
fn zero_connections_or_a_zero_timeout_are_refused() {
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--header-read-timeout-secs", "0"),
        ("--body-read-timeout-secs", "0"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .args([flag, value])
            .output()
            .expect("run eventfold");
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("at least 1"), "{err}");
    }
}

/// A client that sends a request's header and then trickles its body, a byte every 200 ms, is
/// answered `408 body_read_timeout` once the body read timeout passes and disconnected, while
/// other clients are served meanwhile. (Without the bound the 1,000-byte body would take
/// 200 s to arrive and the test fails waiting.)
#[tokio::test]
async fn a_client_that_trickles_its_body_is_answered_408_and_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--durability", "none", "--body-read-timeout-secs", "1"],
    );
    let mut slow = connect(&server).await;
    slow.write_all(
        b"POST /streams/slow-1 HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[",
    )
    .await
    .expect("write");
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut other = connect(&server).await;
    assert!(health(&mut other).await.starts_with("HTTP/1.1 200"));
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut got)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok(),
        "the trickling client was never answered nor disconnected: {answer:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"body_read_timeout\""), "{answer:?}");
}

/// On `POST /appends` a client may wait between lines, but a line must arrive whole within the
/// body read timeout from its first byte: the lines before it are answered, the trickled one is
/// answered `body_read_timeout`, and the answer ends.
#[tokio::test]
async fn a_trickled_appends_line_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--durability", "none", "--body-read-timeout-secs", "1"],
    );
    let mut conn = connect(&server).await;
    let line = br#"{"stream":"pipe-1","events":[{"type":"t","data":1}]}"#;
    let mut head = b"POST /appends HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    head.extend_from_slice(format!("{:x}\r\n", line.len() + 1).as_bytes());
    head.extend_from_slice(line);
    head.extend_from_slice(b"\n\r\n");
    conn.write_all(&head).await.expect("write");
    let (mut reader, mut writer) = conn.into_split();
    let trickle = tokio::spawn(async move {
        // Idle between lines for longer than the timeout: allowed.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for b in br#"{"stream":"pipe-1","events":[{"type":"t","data":2}]}"#
            .iter()
            .cycle()
        {
            if writer
                .write_all(&[b'1', b'\r', b'\n', *b, b'\r', b'\n'])
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            // The answer's last chunk.
            if got.ends_with(b"\r\n0\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok(),
        "the trickled line was never cut off: {answer:?}"
    );
    assert!(
        answer.contains("\"appended\""),
        "the first line was appended: {answer:?}"
    );
    assert!(
        answer.contains("\"body_read_timeout\"") && answer.contains("\"line\":1"),
        "{answer:?}"
    );
}

/// Idle subscribers opened for the memory test (half SSE, half NDJSON).
const IDLE_SUBSCRIBERS: usize = 1_000;
/// Subscribers that stop reading (half SSE, half NDJSON), all on `$all` from the start.
const STALLED_SUBSCRIBERS: usize = 10;
/// Data bytes per event appended under them, and events per append: 1 MB per append.
const EVENT_DATA_BYTES: usize = 10_000;
const APPEND_EVENTS: usize = 100;
/// Appends of 1 MB under the stalled readers: 64 MB, each stalled reader's share of it being
/// twenty times its bound.
const APPENDS: usize = 64;
/// What an idle subscriber may cost the server: its connection's buffers (hyper reads into
/// 8 KiB and writes the answer's header and heartbeats), its task and its feed with the store's
/// subscription. Measured at about 20 KiB; a server that buffered per subscriber would exceed
/// it at once.
const IDLE_SUBSCRIBER_BYTES_MAX: u64 = 64 << 10;
/// What the engine's subscription of a reader that fell behind holds at most: one page
/// (`eventfold_engine`'s `PAGE_BYTES`, 256 KiB) plus the event that crosses it.
const ENGINE_PAGE_BYTES: u64 = 256 << 10;
/// Hyper's write buffer of one connection (its default `max_buf_size`, about 400 KiB), which it
/// fills before it stops asking the body for more.
const HYPER_WRITE_BUF_BYTES: u64 = 400 << 10;
/// Freed memory the allocator keeps for reuse rather than handing back (mimalloc keeps pages
/// of the append path; see `stalled_sse_readers_do_not_grow_server_memory`).
const ALLOCATOR_SLACK_BYTES: u64 = 32 << 20;

/// The most one stalled subscriber may hold: the engine's page, the chunk being written and
/// the one hyper holds (each at most `CHUNK_DATA_BYTES_MAX` plus the event that reaches it, and
/// the JSON around them, less than the data again), and hyper's buffer.
fn stalled_subscriber_bytes_max() -> u64 {
    let chunk = (eventfold_server::CHUNK_DATA_BYTES_MAX + EVENT_DATA_BYTES) as u64 * 2;
    ENGINE_PAGE_BYTES + EVENT_DATA_BYTES as u64 + 2 * chunk + HYPER_WRITE_BUF_BYTES
}

/// The server's resident memory, in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("read /proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// Raises this process's soft limit of open files to at least `want` (within the hard limit)
/// with util-linux's `prlimit` (the workspace forbids the unsafe `setrlimit` call); the server
/// started after it inherits it.
fn raise_open_files_limit(want: u64) {
    let pid = std::process::id().to_string();
    let soft = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--output",
            "SOFT,HARD",
            "--noheadings",
            "--raw",
        ])
        .output();
    let Ok(out) = soft else {
        println!("prlimit is not installed: the open files limit stays as it is");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let parse = |v: Option<&str>| match v {
        Some("unlimited") => Some(u64::MAX),
        v => v.and_then(|v| v.parse::<u64>().ok()),
    };
    let (Some(soft), Some(hard)) = (parse(it.next()), parse(it.next())) else {
        println!("cannot read the open files limit from prlimit: {text:?}");
        return;
    };
    if soft >= want {
        return;
    }
    let to = want.min(hard);
    let set = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={to}:")])
        .status();
    println!("raised the open files limit from {soft} to {to}: {set:?}");
}

/// Opens a subscription over raw TCP and reads its answer's header; the connection is then left
/// alone (an idle subscriber reads what comes; a stalled one never reads again).
async fn subscribe(server: &Server, path: &str, ndjson: bool) -> TcpStream {
    let mut conn = connect(server).await;
    let accept = if ndjson {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, conn.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(n, 1, "the server closed a subscription: {head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    conn
}

/// A thousand idle subscribers and ten that stopped reading leave the server's memory bounded
/// by what the constants allow each of them, while 64 MB are appended under them: with a copy
/// of the log per stalled reader it would grow by 640 MB. Prints the figures (recorded in
/// docs/reliability.md, "Resource limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_subscribers_leave_server_memory_bounded() {
    raise_open_files_limit(4096);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--durability", "none"]);
    let c = crate::server::client();
    let pad = "x".repeat(EVENT_DATA_BYTES - 20);
    let batch: Vec<serde_json::Value> = (0..APPEND_EVENTS)
        .map(|i| serde_json::json!({ "type": "big", "data": { "i": i, "pad": pad } }))
        .collect();
    let body = serde_json::to_vec(&batch).expect("json");
    let append = |stream: &'static str| {
        let (c, u, body) = (c.clone(), server.url.clone(), body.clone());
        async move {
            let r = c
                .post(format!("{u}/streams/{stream}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("append");
            assert_eq!(r.status(), 201);
        }
    };
    // Warm the append path up first: the allocator keeps what it freed (see the slack).
    for _ in 0..APPENDS / 4 {
        append("warm-1").await;
    }
    let base = rss_bytes(&server);

    let mut idle = Vec::with_capacity(IDLE_SUBSCRIBERS);
    for i in 0..IDLE_SUBSCRIBERS {
        idle.push(subscribe(&server, &format!("/streams/idle-{i}/subscribe"), i % 2 == 1).await);
    }
    let with_idle = rss_bytes(&server);

    let mut stalled = Vec::with_capacity(STALLED_SUBSCRIBERS);
    for i in 0..STALLED_SUBSCRIBERS {
        stalled.push(subscribe(&server, "/all/subscribe?from=start", i % 2 == 1).await);
    }
    for _ in 0..APPENDS {
        append("big-1").await;
    }
    let with_stalled = rss_bytes(&server);

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let idle_max = IDLE_SUBSCRIBERS as u64 * IDLE_SUBSCRIBER_BYTES_MAX;
    let stalled_max = eventfold_server::live::LIVE_BYTES_MAX as u64
        + STALLED_SUBSCRIBERS as u64 * stalled_subscriber_bytes_max()
        + ALLOCATOR_SLACK_BYTES;
    println!(
        "server RSS: {:.1} MiB at start (after {} MB of warm-up appends); {:.1} MiB with {IDLE_SUBSCRIBERS} idle subscribers (+{:.1} MiB, {:.1} KiB each; bound +{:.1} MiB); {:.1} MiB after {APPENDS} MB appended under {STALLED_SUBSCRIBERS} stalled subscribers (+{:.1} MiB; bound +{:.1} MiB)",
        mib(base),
        APPENDS / 4,
        mib(with_idle),
        mib(with_idle.saturating_sub(base)),
        with_idle.saturating_sub(base) as f64 / 1024.0 / IDLE_SUBSCRIBERS as f64,
        mib(idle_max),
        mib(with_stalled),
        mib(with_stalled.saturating_sub(with_idle)),
        mib(stalled_max),
    );
    assert!(
        with_idle.saturating_sub(base) <= idle_max,
        "{IDLE_SUBSCRIBERS} idle subscribers grew the server by {:.1} MiB (bound {:.1} MiB)",
        mib(with_idle.saturating_sub(base)),
        mib(idle_max)
    );
    assert!(
        with_stalled.saturating_sub(with_idle) <= stalled_max,
        "{STALLED_SUBSCRIBERS} stalled subscribers grew the server by {:.1} MiB (bound {:.1} MiB)",
        mib(with_stalled.saturating_sub(with_idle)),
        mib(stalled_max)
    );
    // Still serving, every subscriber still connected.
    let mut other = connect(&server).await;
    assert!(health(&mut other).await.starts_with("HTTP/1.1 200"));
    drop(stalled);
    drop(idle);
}
