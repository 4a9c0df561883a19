//! Every input of the server's fuzz corpora (`fuzz/corpus/<target>/` at the repository root),
//! replayed through the same entry points the fuzz targets call, without instrumentation: a
//! crash the fuzzer once found (and whose input was added to the corpus) stays fixed.

use std::path::Path;

use eventfold_server::fuzz;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");

#[test]
fn every_corpus_input_of_the_server_targets_runs_without_a_panic() {
    for target in fuzz::TARGETS {
        let dir = Path::new(CORPUS).join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            eprintln!("{target}: {}", path.display());
            fuzz::run(target, &data);
            inputs += 1;
        }
        assert!(inputs > 0, "the corpus of {target} is empty");
    }
}

#[test]
fn the_entry_points_parse_as_the_routes_do() {
    // Valid requests of every kind parse; the seeds are real requests.
    assert!(fuzz::append_body(None, br#"[{"type":"a","data":1}]"#));
    assert!(fuzz::append_body(
        Some("application/cloudevents+json; charset=utf-8"),
        br#"{"specversion":"1.0","id":"a","source":"s","type":"t"}"#
    ));
    assert!(!fuzz::append_body(Some("text/plain"), b"[]"));
    // A binary-mode CloudEvent: attributes in ce-* headers, whatever the body's media type.
    let binary: [(&[u8], &[u8]); 4] = [
        (b"ce-specversion", b"1.0"),
        (b"ce-id", b"a"),
        (b"ce-source", b"s"),
        (b"ce-type", b"t"),
    ];
    assert!(fuzz::append_request(&binary, b"{\"a\":1}"));
    assert!(!fuzz::append_request(&binary, b"{not json"));
    assert!(!fuzz::append_request(&binary[..3], b"{}"), "no ce-type");
    assert!(fuzz::append_request(
        &[(b"content-type", b"application/json")],
        br#"[{"type":"a","data":1}]"#
    ));
    assert_eq!(
        fuzz::append_lines(
            b"{\"stream\":\"a\",\"events\":[{\"type\":\"t\",\"data\":1}]}\n\n  \nnot json\n"
        ),
        1
    );
    // Every route with a request type takes a plain stream/group name and no query.
    let routes = fuzz::request("order-1", None);
    assert!(routes >= 15, "{routes} routes took a plain request");
    assert_eq!(fuzz::request("order-1", Some("a=%zz")), 0);
    assert!(fuzz::headers(b"7", b"", b""));
    assert!(!fuzz::headers(b"seven", b"", b""));
    // Settings, replay and metadata take an empty object; pull, ack and nack need fields.
    assert!(fuzz::json_bodies(b"{}") >= 3);
}
