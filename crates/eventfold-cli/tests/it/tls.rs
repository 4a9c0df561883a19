//! `eventfold serve --tls-cert --tls-key`: HTTPS with a self-signed certificate, the Rust
//! client trusting it, plain HTTP refused, bad TLS settings refused at start-up.

use std::process::{Command, Stdio};

use eventfold_client::Client;
use eventfold_core::{
    EventStore as _, EventType, ExpectedRevision, NewEvent, ReadStream, StreamName,
};

use crate::server::Server;

/// A self-signed certificate for localhost/127.0.0.1, written as PEM files into `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    let cert_pem = ck.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key, cert_pem)
}

#[tokio::test]
async fn https_serves_the_api_to_a_client_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, cert_pem) = self_signed(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--durability",
            "none",
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let client = Client::new(&server.url, None)
        .expect("client")
        .with_root_certificate(cert_pem.as_bytes())
        .expect("trust the certificate");
    let stream = StreamName::new("tls-1").expect("name");
    let ev = NewEvent::json(
        EventType::new("tls.tested").expect("type"),
        &serde_json::json!({"secure": true}),
    );
    client
        .append(&stream, ExpectedRevision::NoStream, vec![ev])
        .await
        .expect("append over HTTPS");
    let page = client
        .read_stream(&stream, ReadStream::forward(10))
        .await
        .expect("read over HTTPS");
    assert_eq!(page.events.len(), 1);

    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = Client::new(&server.url, None).expect("client");
    let err = untrusting
        .read_stream(&stream, ReadStream::forward(10))
        .await
        .expect_err("an unknown certificate must not be trusted");
    assert_eq!(err.code(), "unavailable", "{err}");

    // Plain HTTP on the TLS port gets no HTTP answer; the server keeps serving HTTPS.
    let plain = server.url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/health/live"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(
        r.is_err() || !r.as_ref().is_ok_and(|r| r.status().is_success()),
        "plain HTTP must not be served on the TLS port: {r:?}"
    );
    let page = client
        .read_stream(&stream, ReadStream::forward(10))
        .await
        .expect("still serving HTTPS");
    assert_eq!(page.events.len(), 1);

    // The command line trusts the certificate with --ca-cert, and refuses without it.
    let cli = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(["info", "tls-1", "--json", "--server", &server.url])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run eventfold info")
    };
    let out = cli(&["--ca-cert", cert.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON info");
    assert_eq!(info["stream"], "tls-1", "{info}");
    let out = cli(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an untrusted certificate is a connection error"
    );
    assert!(server.terminate().success());
}

/// Runs `eventfold serve` with `args` expecting a refusal at start-up; returns its stderr.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run eventfold serve");
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused");
    assert!(
        !dir.path().join("data").exists(),
        "{args:?}: the store must not be created when TLS settings are wrong"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_tls_settings_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = self_signed(dir.path());
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let missing = dir.path().join("nope.pem");
    let missing = missing.to_str().expect("utf-8");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let garbage = garbage.to_str().expect("utf-8");

    let e = refused(&["--tls-cert", cert]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = refused(&["--tls-cert", missing, "--tls-key", key]);
    assert!(
        e.contains("cannot read the TLS certificate") && e.contains("nope.pem"),
        "{e}"
    );
    let e = refused(&["--tls-cert", garbage, "--tls-key", key]);
    assert!(e.contains("holds no certificate"), "{e}");
    let e = refused(&["--tls-cert", cert, "--tls-key", garbage]);
    assert!(e.contains("cannot read a private key"), "{e}");
    // A key that is not the certificate's.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let (_, other_key, _) = self_signed(&other);
    let e = refused(&[
        "--tls-cert",
        cert,
        "--tls-key",
        other_key.to_str().expect("utf-8"),
    ]);
    assert!(e.contains("does not fit the certificate"), "{e}");
}
