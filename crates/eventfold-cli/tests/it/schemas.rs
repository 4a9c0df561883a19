//! JSON Schemas with real processes: `eventfold schema put|list|get`, the append refused by the
//! server that `eventfold serve` runs with validation on, a restart that keeps the schemas, and
//! `eventfold export`/`import` carrying them to another server.

use std::ffi::OsStr;

use crate::server::{Server, eventfold, text};

const SCHEMA: &str =
    r#"{"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}"#;

fn run(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(OsStr::new("--server"));
    all.push(OsStr::new(&server.url));
    eventfold(&all)
}

#[test]
fn schemas_are_kept_enforced_and_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("order-placed.schema.json");
    std::fs::write(&file, SCHEMA).expect("schema file");
    let file = file.to_str().expect("a UTF-8 path");
    let data = dir.path().join("a");
    let a = Server::start(&data, &["--durability", "none"]);

    let out = run(&a, &["schema", "put", "order.placed", "1", file]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("registered"),
        "{}",
        text(&out)
    );
    let out = run(&a, &["schema", "put", "order.placed", "1", file]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing changed"),
        "{}",
        text(&out)
    );
    std::fs::write(dir.path().join("other.json"), r#"{"type": "object"}"#).expect("file");
    let other = dir.path().join("other.json");
    let out = run(
        &a,
        &[
            "schema",
            "put",
            "order.placed",
            "1",
            other.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("new schema version"),
        "{}",
        text(&out)
    );
    let out = run(&a, &["schema", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "order.placed  1",
        "{}",
        text(&out)
    );
    let out = run(&a, &["schema", "get", "order.placed", "1", "--json"]);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(SCHEMA).unwrap()
    );

    let append = |server: &Server, data: &str| {
        run(
            server,
            &[
                "append",
                "order-1",
                "--type",
                "order.placed",
                "--data",
                data,
            ],
        )
    };
    let out = append(&a, r#"{"total": "lots"}"#);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/total"),
        "{}",
        text(&out)
    );
    assert!(append(&a, r#"{"total": 3}"#).status.success());

    // A restart keeps them.
    a.terminate();
    let a = Server::start(&data, &["--durability", "none"]);
    assert_eq!(append(&a, r#"{"total": "lots"}"#).status.code(), Some(1));

    // An export carries them; the import registers them on the target.
    let export = dir.path().join("move.ndjson");
    let export = export.to_str().expect("utf-8");
    let out = run(&a, &["export", "--out", export]);
    assert!(out.status.success(), "{}", text(&out));
    let b = Server::start(&dir.path().join("b"), &["--durability", "none"]);
    let out = run(&b, &["import", export]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&b, &["schema", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        listed,
        serde_json::json!({"schemas": [{"event_type": "order.placed", "schema_version": 1}]})
    );
    let out = append(&b, r#"{"total": "lots"}"#);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
