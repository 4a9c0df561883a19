//! Moving a store with `eventfold export` and `eventfold import` between real server
//! processes: events keep their ids, revisions and timestamps, streams their metadata and
//! deletes, so reads and temporal loads (`Repository::load_as_of`) on the target answer as on
//! the source.

use std::sync::Arc;

use eventfold::client::Client;
use eventfold::core::{
    DeleteMode, EventStore, EventType, ExpectedRevision, ListStreams, NewEvent, Position, ReadAll,
    ReadStream, RecordedEvent, StoreError, StreamMetadata, StreamName,
};
use eventfold::{Aggregate, Context, DomainEvent, Repository};
use serde::{Deserialize, Serialize};

use crate::server::Server;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Added {
    n: u64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "tally.")]
enum TallyEvent {
    Added(Added),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

impl Aggregate for Tally {
    const CATEGORY: &'static str = "tally";
    type Event = TallyEvent;
    type Command = u64;
    type Error = std::convert::Infallible;

    fn apply(&mut self, TallyEvent::Added(a): &TallyEvent) {
        self.total += a.n;
    }

    fn handle(&self, n: u64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Added(Added { n })])
    }
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("a valid stream name")
}

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::json(
                EventType::new("thing.happened").expect("a valid type"),
                &serde_json::json!({ "i": i }),
            )
        })
        .collect()
}

async fn append(store: &dyn EventStore, stream: &str, n: u64) {
    store
        .append(&name(stream), ExpectedRevision::Any, events(n))
        .await
        .expect("append");
}

/// A store with metadata, a soft delete with events after it, a soft delete with nothing after,
/// a hard delete, and an aggregate whose events were committed at different times.
async fn fill(store: Arc<dyn EventStore>) {
    let tallies = Repository::<Tally>::new(store.clone());
    let ctx = Context::with_correlation_id("moving-test");
    let s = &*store;
    tallies.execute("t-1", 1, &ctx).await.expect("execute");
    append(s, "capped-1", 5).await;
    tallies.execute("t-1", 2, &ctx).await.expect("execute");
    s.set_metadata(
        &name("capped-1"),
        StreamMetadata {
            max_count: Some(2),
            custom: Some(serde_json::Map::from_iter([("owner".into(), "ops".into())])),
            ..StreamMetadata::default()
        },
    )
    .await
    .expect("set metadata");
    append(s, "trunc-1", 6).await;
    s.set_metadata(
        &name("trunc-1"),
        StreamMetadata {
            truncate_before: Some(eventfold::core::Revision(3)),
            ..StreamMetadata::default()
        },
    )
    .await
    .expect("set metadata");
    tallies.execute("t-1", 3, &ctx).await.expect("execute");
    append(s, "soft-1", 3).await;
    s.delete_stream(&name("soft-1"), ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    tallies.execute("t-1", 4, &ctx).await.expect("execute");
    append(s, "soft-1", 2).await;
    append(s, "gone-1", 2).await;
    s.delete_stream(&name("gone-1"), ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    // JSON data as written: key order and number spelling are the data's, and survive the move.
    s.append(
        &name("raw-1"),
        ExpectedRevision::NoStream,
        vec![NewEvent::bytes(
            EventType::new("raw.written").expect("a valid type"),
            eventfold::core::ContentType::json(),
            br#"{"b":1,"a":1.50,"c":[1e3,-0.0]}"#.to_vec(),
        )],
    )
    .await
    .expect("append");
    append(s, "hard-1", 2).await;
    s.delete_stream(&name("hard-1"), ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    tallies.execute("t-1", 5, &ctx).await.expect("execute");
    tallies.execute("t-1", 6, &ctx).await.expect("execute");
}

/// Runs `eventfold ARGS` against `server` (with `token`), returning status, stdout, stderr.
fn eventfold(server: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_eventfold"));
    c.args(args)
        .env("EVENTFOLD_SERVER", server)
        .env_remove("EVENTFOLD_TOKEN")
        .env("EVENTFOLD_LOG", "warn");
    if let Some(t) = token {
        c.env("EVENTFOLD_TOKEN", t);
    }
    let out = c.output().expect("run eventfold");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

fn import_summary(server: &str, file: &str) -> serde_json::Value {
    let (status, out, err) = eventfold(server, None, &["import", file, "--json"]);
    assert_eq!(status, 0, "{out}{err}");
    serde_json::from_str(&out).expect("a JSON summary")
}

/// An event as a reader sees it, without its position (the target gives positions).
fn unplaced(mut e: RecordedEvent) -> RecordedEvent {
    e.position = Position(0);
    e
}

async fn read_all_of(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<Vec<RecordedEvent>, StoreError> {
    store
        .read_stream(stream, ReadStream::forward(1000))
        .await
        .map(|s| s.events.into_iter().map(unplaced).collect())
}

async fn known_names(store: &dyn EventStore) -> Vec<StreamName> {
    store
        .list_streams(ListStreams {
            limit: 1000,
            ..ListStreams::default()
        })
        .await
        .expect("list streams")
        .streams
}

/// Every stream of `src` reads the same on `dst` (events, ids, revisions, timestamps,
/// metadata; positions aside), so do `$all` and a temporal load in the middle of `tally-t-1`;
/// the deleted streams are deleted alike.
async fn same_history(src: &Arc<dyn EventStore>, dst: &Arc<dyn EventStore>) {
    // Every stream the store knows, deleted ones too: the same next revision, tombstone and
    // metadata (hidden revisions arrive deleted, so `deleted_before` may differ; a tombstone's
    // revisions are not recreated: nothing can read or append them).
    let known = |store: Arc<dyn EventStore>| async move {
        let list = ListStreams {
            limit: 1000,
            ..ListStreams::default()
        };
        let page = store.list_known_streams(list).await.expect("known streams");
        page.streams
            .into_iter()
            .map(|k| {
                (
                    k.stream,
                    (!k.head.tombstoned).then_some(k.head.next_revision),
                    k.head.tombstoned,
                    k.metadata,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(known(src.clone()).await, known(dst.clone()).await);
    // Every stream reads the same: events, ids, revisions, timestamps, metadata.
    let names = known_names(&**src).await;
    assert_eq!(names, known_names(&**dst).await);
    assert!(names.contains(&name("soft-1")) && !names.contains(&name("gone-1")));
    for s in names.iter().chain([&name("gone-1"), &name("hard-1")]) {
        let (x, y) = (read_all_of(&**src, s).await, read_all_of(&**dst, s).await);
        match (&x, &y) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "stream {s}"),
            (Err(x), Err(y)) => assert_eq!(x.code(), y.code(), "stream {s}"),
            _ => panic!("stream {s}: {x:?} on the source, {y:?} on the target"),
        }
        if let (Ok(x), Ok(y)) = (src.stream_info(s).await, dst.stream_info(s).await) {
            assert_eq!(
                (x.last_revision, x.event_count, x.metadata),
                (y.last_revision, y.event_count, y.metadata),
                "stream {s}"
            );
        }
    }
    let raw = read_all_of(&**dst, &name("raw-1"))
        .await
        .expect("raw-1 reads");
    assert_eq!(
        String::from_utf8_lossy(&raw[0].data),
        r#"{"b":1,"a":1.50,"c":[1e3,-0.0]}"#
    );
    let soft = read_all_of(&**dst, &name("soft-1"))
        .await
        .expect("soft-1 reads");
    assert_eq!(
        soft.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        [3, 4]
    );
    let trunc = read_all_of(&**dst, &name("trunc-1"))
        .await
        .expect("trunc-1 reads");
    assert_eq!(trunc.first().map(|e| e.revision.0), Some(3));
    let capped = dst.get_metadata(&name("capped-1")).await.expect("metadata");
    assert_eq!(capped.max_count, Some(2));
    assert_eq!(
        capped.custom.as_ref().and_then(|c| c.get("owner")),
        Some(&serde_json::json!("ops"))
    );
    // The hard-deleted stream stays deleted: its name cannot be used again.
    let err = dst
        .append(&name("hard-1"), ExpectedRevision::Any, events(1))
        .await
        .expect_err("hard-1 is deleted");
    assert_eq!(err.code(), "stream_deleted", "{err}");

    // $all: the same events in the same order (positions aside).
    let all = |store: Arc<dyn EventStore>| async move {
        let page = store
            .read_all(ReadAll::forward(1000))
            .await
            .expect("read $all");
        page.events.into_iter().map(unplaced).collect::<Vec<_>>()
    };
    assert_eq!(all(src.clone()).await, all(dst.clone()).await);

    // A temporal load in the middle of t-1's history answers the same on both.
    let t1 = read_all_of(&**src, &name("tally-t-1")).await.expect("t-1");
    assert_eq!(t1.len(), 6);
    let middle = t1[2].timestamp;
    let (on_src, on_dst) = (
        Repository::<Tally>::new(src.clone())
            .load_as_of("t-1", middle)
            .await
            .expect("load"),
        Repository::<Tally>::new(dst.clone())
            .load_as_of("t-1", middle)
            .await
            .expect("load"),
    );
    assert_eq!(on_src.state, Tally { total: 1 + 2 + 3 });
    assert_eq!(
        (on_dst.state, on_dst.revision),
        (on_src.state, on_src.revision)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_store_reads_the_same_revisions_timestamps_metadata_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(&dir.path().join("a"), &["--durability", "none"]);
    let b = Server::start(&dir.path().join("b"), &["--durability", "none"]);
    let src: Arc<dyn EventStore> = Arc::new(Client::new(&a.url, None).expect("client"));
    let dst: Arc<dyn EventStore> = Arc::new(Client::new(&b.url, None).expect("client"));
    fill(src.clone()).await;

    let file = dir.path().join("move.ndjson");
    let file = file.to_str().expect("utf-8 path");
    let (status, out, err) = eventfold(&a.url, None, &["export", "--out", file]);
    assert_eq!(status, 0, "{out}{err}");
    let first = import_summary(&b.url, file);
    assert_eq!(first["written"], 6 + 2 + 3 + 2 + 1, "{first}");
    assert_eq!(first["deleted"], 2, "gone-1 soft, hard-1 hard: {first}");
    // Run again: nothing written twice, the deletes and metadata the same.
    let again = import_summary(&b.url, file);
    assert_eq!(
        (again["written"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(14)),
        "{again}"
    );

    same_history(&src, &dst).await;

    // The soft-deleted stream with nothing after continues at the same revision on both.
    for store in [&src, &dst] {
        let r = store
            .append(&name("gone-1"), ExpectedRevision::Any, events(1))
            .await
            .expect("append after a soft delete");
        assert_eq!(r.first_revision.0, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_timestamps_needs_an_admin_token_and_server_timestamps_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(&dir.path().join("a"), &["--durability", "none"]);
    let src: Arc<dyn EventStore> = Arc::new(Client::new(&a.url, None).expect("client"));
    append(&*src, "order-1", 3).await;
    let file = dir.path().join("move.ndjson");
    let file = file.to_str().expect("utf-8 path");
    let (status, out, err) = eventfold(&a.url, None, &["export", "--out", file]);
    assert_eq!(status, 0, "{out}{err}");

    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\ntoken = \"writer-secret-01\"\nrights = [\"read\", \"write\"]\n",
    )
    .expect("write tokens file");
    let c = Server::start(
        &dir.path().join("c"),
        &[
            "--durability",
            "none",
            "--auth-token",
            "admin-secret-0001",
            "--tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    // A writer may not set timestamps: refused, nothing written, and told what to do.
    let (status, out, err) = eventfold(&c.url, Some("writer-secret-01"), &["import", file]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(
        err.contains("admin") && err.contains("--server-timestamps"),
        "{err}"
    );
    let dst: Arc<dyn EventStore> =
        Arc::new(Client::new(&c.url, Some("admin-secret-0001".into())).expect("client"));
    assert!(
        read_all_of(&*dst, &name("order-1")).await.is_err(),
        "nothing written"
    );
    // The same over HTTP directly: the import route needs admin.
    let body = serde_json::json!({"first_revision": 0, "events": [{"id": "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d", "type": "t", "data": {}, "timestamp": "2020-01-01T00:00:00Z"}]});
    let status = crate::server::client()
        .post(format!("{}/streams/order-9/import", c.url))
        .bearer_auth("writer-secret-01")
        .json(&body)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status.as_u16(), 403);
    // With --server-timestamps a writer imports the events as an ordinary writer: the target's
    // clock, not the source's.
    let (status, out, err) = eventfold(
        &c.url,
        Some("writer-secret-01"),
        &["import", file, "--server-timestamps", "--json"],
    );
    assert_eq!(status, 0, "{out}{err}");
    let (x, y) = (
        read_all_of(&*src, &name("order-1")).await.expect("source"),
        read_all_of(&*dst, &name("order-1")).await.expect("target"),
    );
    assert_eq!(
        x.iter().map(|e| e.id).collect::<Vec<_>>(),
        y.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(
        y[0].timestamp > x[2].timestamp,
        "the target's own timestamps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_onto_postgres_and_back() {
    let Some(db) = eventfold_store_postgres::testing::TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(&dir.path().join("a"), &["--durability", "none"]);
    let url = db.url();
    let p = Server::start_with(&[std::ffi::OsStr::new("--store"), std::ffi::OsStr::new(&url)]);
    let e = Server::start(&dir.path().join("e"), &["--durability", "none"]);
    let client =
        |url: &str| -> Arc<dyn EventStore> { Arc::new(Client::new(url, None).expect("client")) };
    let (src, on_pg, back) = (client(&a.url), client(&p.url), client(&e.url));
    fill(src.clone()).await;
    let (to_pg, from_pg) = (
        dir.path().join("to-pg.ndjson"),
        dir.path().join("from-pg.ndjson"),
    );
    let (to_pg, from_pg) = (
        to_pg.to_str().expect("utf-8"),
        from_pg.to_str().expect("utf-8"),
    );
    for (from, file, to) in [(&a.url, to_pg, &p.url), (&p.url, from_pg, &e.url)] {
        let (status, out, err) = eventfold(from, None, &["export", "--out", file]);
        assert_eq!(status, 0, "{out}{err}");
        import_summary(to, file);
    }
    same_history(&src, &on_pg).await;
    same_history(&src, &back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stopped_inside_a_deleted_prefix_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(&dir.path().join("a"), &["--durability", "none"]);
    let b = Server::start(&dir.path().join("b"), &["--durability", "none"]);
    let src: Arc<dyn EventStore> = Arc::new(Client::new(&a.url, None).expect("client"));
    let dst: Arc<dyn EventStore> = Arc::new(Client::new(&b.url, None).expect("client"));
    let s = name("soft-1");
    append(&*src, "soft-1", 3).await;
    src.delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    append(&*src, "soft-1", 2).await;
    let file = dir.path().join("move.ndjson");
    let file = file.to_str().expect("utf-8 path");
    let (status, out, err) = eventfold(&a.url, None, &["export", "--out", file]);
    assert_eq!(status, 0, "{out}{err}");
    // What an import stopped after its first placeholder batch leaves: placeholders for
    // revisions 0 and 1 (of 0 to 2), not yet deleted.
    let first = read_all_of(&*src, &s).await.expect("source")[0].timestamp;
    let gap = EventType::new("eventfold.import.deleted").expect("a valid type");
    let placeholders = (0..2)
        .map(|_| (NewEvent::json(gap.clone(), &serde_json::json!({})), first))
        .collect();
    dst.append_imported(
        &s,
        ExpectedRevision::NoStream,
        eventfold::core::ImportBatch {
            first_revision: eventfold::core::Revision(0),
            events: placeholders,
        },
    )
    .await
    .expect("placeholders");
    let summary = import_summary(&b.url, file);
    assert_eq!(
        (
            summary["written"].as_u64(),
            summary["placeholders"].as_u64()
        ),
        (Some(2), Some(1)),
        "{summary}"
    );
    assert_eq!(
        read_all_of(&*src, &s).await.expect("source"),
        read_all_of(&*dst, &s).await.expect("target")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_the_first_format_still_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(&dir.path().join("a"), &["--durability", "none"]);
    let b = Server::start(&dir.path().join("b"), &["--durability", "none"]);
    let src: Arc<dyn EventStore> = Arc::new(Client::new(&a.url, None).expect("client"));
    let dst: Arc<dyn EventStore> = Arc::new(Client::new(&b.url, None).expect("client"));
    append(&*src, "order-1", 2).await;
    append(&*src, "order-1", 1).await;
    let (status, out, err) = eventfold(&a.url, None, &["export", "--quiet"]);
    assert_eq!(status, 0, "{out}{err}");
    // Format 1: the events only, no header.
    let old: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("eventfold_export"))
        .collect();
    assert_eq!(old.len(), 3);
    let file = dir.path().join("old.ndjson");
    std::fs::write(&file, format!("{}\n", old.join("\n"))).expect("write");
    let summary = import_summary(&b.url, file.to_str().expect("utf-8 path"));
    assert_eq!(summary["written"], 3, "{summary}");
    let s = name("order-1");
    assert_eq!(
        read_all_of(&*src, &s).await.expect("source"),
        read_all_of(&*dst, &s).await.expect("target")
    );
}
