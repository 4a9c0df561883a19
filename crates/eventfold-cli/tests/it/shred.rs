//! Crypto-shredding with real server processes and real files: an event's data about a data
//! subject (`"$subject"` in its metadata) is never on disk in the clear; deleting the
//! subject's key (`DELETE /subjects/{subject}/key`, admin only) leaves every read path
//! returning the events with their data redacted and a marker, the key's bytes in no file of
//! the data directory, across a restart; a backup carries the keys and its restore reads them.

use std::path::Path;
use std::time::Duration;

use eventfold_client::Client;
use eventfold_core::{
    EventStore, EventType, ExpectedRevision, Metadata, NewEvent, ReadAll, ReadStream,
    RecordedEvent, StreamName,
};
use eventfold_protocol::groups::{GroupFilterBody, GroupSettings, StartFrom};

use crate::server::{Server, client, eventfold, files_holding, send};

const ADMIN: &str = "root-token-000001";
const WRITER: &str = "writer-token-00001";

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid")
}

/// An event about `subject` whose data holds `marker`.
fn about(subject: &str, marker: &str) -> NewEvent {
    let mut m = Metadata::new();
    m.insert("$subject".into(), subject.into());
    NewEvent::json(
        EventType::new("user.registered").expect("valid"),
        &serde_json::json!({"name": marker, "email": format!("{marker}@example.com")}),
    )
    .with_metadata(m)
}

/// The key bytes of `subject` in the key file (the file's own parser), newest generation.
fn key_of(data: &Path, subject: &str) -> Option<[u8; 32]> {
    let path = data.join("keys").join(eventfold_shred::KEYS_FILE);
    let bytes = std::fs::read(&path).expect("read the key file");
    let (records, _) = eventfold_shred::parse_key_file(&path, &bytes).expect("parse");
    records.into_iter().rev().find_map(|r| match r {
        eventfold_shred::KeyRecord::Key {
            subject: s, key, ..
        } if s.as_str() == subject => Some(*key.bytes()),
        _ => None,
    })
}

fn redacted(e: &RecordedEvent) -> bool {
    e.data.is_empty() && e.metadata.get_str("$redacted") == Some("subject-key-deleted")
}

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!("[[tokens]]\ntoken = \"{WRITER}\"\nrights = [\"read\", \"write\"]\n"),
    )
    .expect("write tokens file");
    path.to_str().expect("utf-8").to_owned()
}

/// An open NDJSON subscription.
struct Subscription {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Subscription {
    async fn open(url: &str) -> Subscription {
        let resp = client()
            .get(url)
            .bearer_auth(ADMIN)
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .expect("subscribe");
        assert_eq!(resp.status().as_u16(), 200);
        Subscription {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next `n` events (heartbeat lines skipped).
    async fn events(&mut self, n: usize) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let v: serde_json::Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v.get("id").is_some() {
                    out.push(
                        serde_json::from_value::<eventfold_protocol::WireEvent>(v)
                            .expect("an event")
                            .into_recorded()
                            .expect("valid"),
                    );
                }
            }
            if out.len() >= n {
                break;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.resp.chunk())
                .await
                .expect("a chunk within 20 s")
                .expect("read")
                .expect("the subscription goes on");
            self.buf.extend_from_slice(&chunk);
        }
        out
    }
}

/// The first `n` events of a new subscription as Server-Sent Events.
async fn sse_events(url: &str, n: usize) -> Vec<RecordedEvent> {
    let mut resp = client()
        .get(url)
        .bearer_auth(ADMIN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status().as_u16(), 200);
    let (mut text, mut out) = (String::new(), Vec::new());
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("a chunk within 20 s")
            .expect("read")
            .expect("the subscription goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = text.find('\n') {
            let line: String = text.drain(..=i).collect();
            if let Some(json) = line.trim_end().strip_prefix("data: ")
                && let Ok(w) = serde_json::from_str::<eventfold_protocol::WireEvent>(json)
            {
                out.push(w.into_recorded().expect("valid"));
            }
        }
    }
    out
}

/// The first `n` events of a new subscription.
async fn subscribed(url: &str, n: usize) -> Vec<RecordedEvent> {
    Subscription::open(url).await.events(n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subjects_data_is_sealed_on_disk_and_erased_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let tokens = tokens_file(dir.path());
    let args = ["--auth-token", ADMIN, "--tokens-file", tokens.as_str()];
    let server = Server::start(&data, &args);
    let c = Client::new(&server.url, Some(ADMIN.into())).expect("client");
    let settings = GroupSettings {
        filter: GroupFilterBody {
            stream_prefix: Some("user-".into()),
            ..GroupFilterBody::default()
        },
        start: Some(StartFrom::Start),
        ..GroupSettings::default()
    };
    c.put_group("mailer", &settings).await.expect("group");

    let (ada, grace) = ("Ada-7f3e9c1b5d", "Grace-2a8b4c6e0f");
    c.append(
        &name("user-7"),
        ExpectedRevision::Any,
        vec![about("user-7", ada), about("user-7", ada)],
    )
    .await
    .expect("append");
    c.append(
        &name("user-8"),
        ExpectedRevision::Any,
        vec![about("user-8", grace)],
    )
    .await
    .expect("append");

    // Reads give the plaintext; no file of the data directory holds it (keys included).
    let read = c
        .read_stream(&name("user-7"), ReadStream::forward(10))
        .await
        .expect("read");
    assert_eq!(read.events[0].data_json().expect("json")["name"], ada);
    assert_eq!(
        files_holding(&data, ada.as_bytes()),
        Vec::<String>::new(),
        "the plaintext is on disk"
    );
    let key = key_of(&data, "user-7").expect("user-7 has a key");
    assert!(
        !files_holding(&data, &key).is_empty(),
        "the key is in the key file before the deletion"
    );

    // Only an admin deletes a key.
    let url = |s: &str| format!("{}/subjects/{s}/key", server.url);
    let http = client();
    assert_eq!(send(http.delete(url("user-7"))).await.0, 401);
    let (status, body) = send(http.delete(url("user-7")).bearer_auth(WRITER)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(
        key_of(&data, "user-7").is_some(),
        "a refused delete deleted the key"
    );
    let (status, body) = send(http.delete(url("nobody")).bearer_auth(ADMIN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("subject_key_not_found"))
    );
    assert_eq!(
        send(http.delete(url("user-7")).bearer_auth(ADMIN)).await.0,
        204
    );
    assert_eq!(
        send(http.delete(url("user-7")).bearer_auth(ADMIN)).await.0,
        204,
        "deleting again changes nothing"
    );

    // The key's bytes are in no file; every read path redacts, no error.
    assert_eq!(files_holding(&data, &key), Vec::<String>::new());
    let check = |events: &[RecordedEvent]| {
        let mine: Vec<&RecordedEvent> = events
            .iter()
            .filter(|e| e.stream.as_str() == "user-7")
            .collect();
        assert_eq!(mine.len(), 2);
        assert!(mine.iter().all(|e| redacted(e)), "{mine:?}");
        let other = events
            .iter()
            .find(|e| e.stream.as_str() == "user-8")
            .expect("user-8");
        assert_eq!(other.data_json().expect("json")["name"], grace);
    };
    let stream = c
        .read_stream(&name("user-7"), ReadStream::forward(10))
        .await
        .expect("read a redacted stream")
        .events;
    let other = c
        .read_stream(&name("user-8"), ReadStream::forward(10))
        .await
        .expect("read")
        .events;
    check(&[stream, other].concat());
    check(
        &c.read_all(ReadAll::forward(100))
            .await
            .expect("read $all")
            .events,
    );
    check(&subscribed(&format!("{}/all/subscribe?from=start", server.url), 3).await);
    let sse = sse_events(
        &format!("{}/streams/user-7/subscribe?from=start", server.url),
        2,
    )
    .await;
    assert!(sse.iter().all(redacted), "SSE: {sse:?}");
    let delivered = c
        .group_pull("mailer", "c1", 10, Duration::from_millis(500))
        .await
        .expect("pull");
    check(
        &delivered
            .iter()
            .map(|d| d.event.clone())
            .collect::<Vec<_>>(),
    );

    // A new event about the subject gets a new key and reads; the old ones stay redacted,
    // also after a restart.
    c.append(
        &name("user-7"),
        ExpectedRevision::Any,
        vec![about("user-7", "back")],
    )
    .await
    .expect("append after the deletion");
    drop(c);
    assert!(server.terminate().success());
    let server = Server::start(&data, &args);
    let c = Client::new(&server.url, Some(ADMIN.into())).expect("client");
    let read = c
        .read_stream(&name("user-7"), ReadStream::forward(10))
        .await
        .expect("read after the restart")
        .events;
    assert!(redacted(&read[0]) && redacted(&read[1]), "{read:?}");
    assert_eq!(read[2].data_json().expect("json")["name"], "back");
    assert_eq!(files_holding(&data, &key), Vec::<String>::new());
    assert_eq!(files_holding(&data, ada.as_bytes()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_carries_the_keys_and_its_restore_reads_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let c = Client::new(&server.url, None).expect("client");
    c.append(
        &name("user-1"),
        ExpectedRevision::Any,
        vec![about("user-1", "Lin-4d2e")],
    )
    .await
    .expect("append");
    c.append(
        &name("user-2"),
        ExpectedRevision::Any,
        vec![about("user-2", "Kay-9b1f")],
    )
    .await
    .expect("append");
    // The command line forgets a subject; one it never saw is refused (exit status 1).
    let forget = |subject: &str| {
        let (url, subject) = (server.url.clone(), subject.to_owned());
        tokio::task::spawn_blocking(move || {
            eventfold(&[
                "subject".as_ref(),
                "forget".as_ref(),
                subject.as_ref(),
                "--server".as_ref(),
                url.as_ref(),
            ])
        })
    };
    let out = forget("user-2").await.expect("forget task");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deleted the key"),
        "{out:?}"
    );
    let out = forget("nobody").await.expect("forget task");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("subject_key_not_found"),
        "{out:?}"
    );
    let archive = dir.path().join("backup.tar");
    let out = {
        let (url, archive) = (server.url.clone(), archive.clone());
        tokio::task::spawn_blocking(move || {
            eventfold(&[
                "backup".as_ref(),
                "--server".as_ref(),
                url.as_ref(),
                "--out".as_ref(),
                archive.as_os_str(),
            ])
        })
        .await
        .expect("backup task")
    };
    assert!(out.status.success(), "{out:?}");
    drop(server);

    let restored = dir.path().join("restored");
    let out = eventfold(&[
        "restore".as_ref(),
        archive.as_os_str(),
        restored.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("subject keys in") && report.contains("ok: 1 key records, 1 forgotten"),
        "restore verifies the key file: {report}"
    );
    let keys = restored.join("keys").join(eventfold_shred::KEYS_FILE);
    assert!(keys.exists());
    let server = Server::start(&restored, &[]);
    let c = Client::new(&server.url, None).expect("client");
    let one = c
        .read_stream(&name("user-1"), ReadStream::forward(10))
        .await
        .expect("read the restored subject's data")
        .events;
    assert_eq!(one[0].data_json().expect("json")["name"], "Lin-4d2e");
    let two = c
        .read_stream(&name("user-2"), ReadStream::forward(10))
        .await
        .expect("read")
        .events;
    assert!(
        redacted(&two[0]),
        "a key deleted before the backup stays deleted: {two:?}"
    );
    drop(server);

    // A damaged key file is found by `eventfold verify`, named, exit status 1.
    let mut bytes = std::fs::read(&keys).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&keys, &bytes).expect("write");
    let out = eventfold(&["verify".as_ref(), restored.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("damaged") && report.contains(&keys.display().to_string()),
        "{report}"
    );
}

/// On PostgreSQL there is no key store yet: an event naming a subject is refused (never
/// stored in the clear) and the route says shredding is unavailable; other events go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_subjects_rather_than_storing_them_in_the_clear() {
    let Some(db) = eventfold_store_postgres::testing::TestDb::create().await else {
        return;
    };
    let url = db.url();
    let s = Server::start_with(&[std::ffi::OsStr::new("--store"), std::ffi::OsStr::new(&url)]);
    let c = client();
    let (st, v) = send(
        c.post(format!("{}/streams/user-1", s.url)).json(&serde_json::json!([
            {"type": "user.registered", "data": {"name": "Ada"}, "metadata": {"$subject": "user-1"}}
        ])),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_subject")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("PostgreSQL"),
        "{v}"
    );
    let (st, v) = send(c.delete(format!("{}/subjects/user-1/key", s.url))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (501, Some("shredding_unavailable")),
        "{v}"
    );
    let (st, v) = send(
        c.post(format!("{}/streams/user-1", s.url))
            .json(&serde_json::json!([{"type": "user.registered", "data": {"n": 1}}])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    drop(s);
    drop(db);
}

/// A subscriber that joins the live hub after a deletion never gets the decrypted events the
/// hub's ring held from before it: the deletion empties the ring (and the encoded lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_hub_does_not_serve_erased_data_from_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--auth-token", ADMIN]);
    let c = Client::new(&server.url, Some(ADMIN.into())).expect("client");
    let all = format!("{}/all/subscribe?from=start", server.url);
    // A live subscriber from an empty log: the hub follows the log from position 0.
    let mut first = Subscription::open(&all).await;
    c.append(
        &name("user-7"),
        ExpectedRevision::Any,
        vec![about("user-7", "Ada-1c2d"), about("user-7", "Ada-1c2d")],
    )
    .await
    .expect("append");
    c.append(
        &name("user-8"),
        ExpectedRevision::Any,
        vec![about("user-8", "Grace-3e4f")],
    )
    .await
    .expect("append");
    let live = first.events(3).await;
    assert_eq!(live[0].data_json().expect("json")["name"], "Ada-1c2d");
    let (status, _) = send(
        client()
            .delete(format!("{}/subjects/user-7/key", server.url))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 204);
    for attempt in 0..3 {
        let events = subscribed(&all, 3).await;
        assert!(
            redacted(&events[0]) && redacted(&events[1]),
            "attempt {attempt}: {events:?}"
        );
        assert_eq!(events[2].data_json().expect("json")["name"], "Grace-3e4f");
    }
    drop(first);
}
