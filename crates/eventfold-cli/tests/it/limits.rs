//! The server's bounds on connections and on the time a request's header may take, against a
//! real `eventfold serve` over raw TCP.

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
