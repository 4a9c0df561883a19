//! `eventfold backup` of a running server while clients append, `eventfold restore` of the
//! archive, and a server on the restored directory: everything acknowledged before the backup
//! started is there (events, metadata, a hard delete's tombstone, a consumer group and what it
//! had acknowledged), `verify` accepts it, and bad archives are refused without a trace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventfold_client::Client;
use eventfold_core::{
    DeleteMode, EventId, EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StoreError,
    StreamMetadata, StreamName,
};
use eventfold_protocol::groups::{GroupFilterBody, GroupSettings, StartFrom};

use crate::server::{Server, eventfold, text};

/// 1 MiB segments (and batch limits that fit them): the backup spans sealed segments with their
/// checkpoints and the active one.
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

fn event(i: u64) -> NewEvent {
    NewEvent::json(
        EventType::new("tick").expect("valid"),
        &serde_json::json!({"i": i, "pad": "x".repeat(4_000)}),
    )
}

/// Reads a whole stream: revision -> id.
async fn ids(client: &Client, stream: &str) -> BTreeMap<u64, EventId> {
    let slice = client
        .read_stream(&name(stream), ReadStream::forward(10_000))
        .await
        .expect("read");
    slice.events.iter().map(|e| (e.revision.0, e.id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_appends_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, SMALL_SEGMENTS);
    let client = Client::new(&server.url, None).expect("client");

    // Before the backup: events, metadata, a tombstone, a group that acknowledged some.
    let mut before: BTreeMap<String, BTreeMap<u64, EventId>> = BTreeMap::new();
    for s in 0..4u64 {
        let stream = format!("order-{s}");
        for b in 0..30u64 {
            let batch: Vec<NewEvent> = (0..5).map(|k| event(b * 5 + k)).collect();
            let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
            let r = client
                .append(&name(&stream), ExpectedRevision::Any, batch)
                .await
                .expect("append");
            for (k, id) in ids.into_iter().enumerate() {
                before
                    .entry(stream.clone())
                    .or_default()
                    .insert(r.first_revision.0 + k as u64, id);
            }
        }
    }
    let meta = StreamMetadata {
        max_count: Some(1_000),
        ..StreamMetadata::default()
    };
    client
        .set_metadata(&name("order-0"), meta.clone())
        .await
        .expect("metadata");
    client
        .append(&name("gone-1"), ExpectedRevision::Any, vec![event(0)])
        .await
        .expect("append");
    client
        .delete_stream(&name("gone-1"), ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    let settings = GroupSettings {
        filter: GroupFilterBody {
            stream_prefix: Some("order-".into()),
            ..GroupFilterBody::default()
        },
        start: Some(StartFrom::Start),
        ..GroupSettings::default()
    };
    client.put_group("billing", &settings).await.expect("group");
    let mut acked = Vec::new();
    while acked.len() < 100 {
        let ds = client
            .group_pull("billing", "c1", 50, Duration::from_millis(500))
            .await
            .expect("pull");
        let dids: Vec<String> = ds.iter().map(|d| d.delivery_id.clone()).collect();
        let settled = client.group_ack("billing", &dids).await.expect("ack");
        assert_eq!(settled.acked.len(), ds.len());
        acked.extend(ds.iter().map(|d| d.event.id));
    }

    // Appends go on during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<u64>> = Arc::default();
    let writer = {
        let (client, stop, during) = (client.clone(), stop.clone(), during.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                client
                    .append(&name("busy-1"), ExpectedRevision::Any, vec![event(i)])
                    .await
                    .expect("append during the backup");
                i += 1;
                *during.lock().expect("lock") = i;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(
        *during.lock().expect("lock") > 0,
        "no append ran during the backup"
    );
    assert!(!dir.path().join("backup.tar.part").exists());
    let manifest: eventfold_protocol::backup::BackupManifest = {
        let f = std::fs::File::open(&archive).expect("archive");
        let mut tar = tar::Archive::new(f);
        let first = tar
            .entries()
            .expect("entries")
            .next()
            .expect("entry")
            .expect("ok");
        serde_json::from_reader(first).expect("manifest")
    };
    let events = manifest
        .stores
        .iter()
        .find(|s| s.dir.is_empty())
        .expect("events");
    let segments = events
        .files
        .iter()
        .filter(|f| f.name.ends_with(".seg"))
        .count();
    assert!(
        segments >= 3,
        "the backup should span sealed segments: {manifest:?}"
    );
    assert!(
        manifest.stores.iter().any(|s| s.dir == "groups"),
        "the groups' state is in the backup: {manifest:?}"
    );
    drop(server);

    // Restore into a new directory: verify runs and passes.
    let restored = dir.path().join("restored");
    let out = eventfold(&[
        "restore".as_ref(),
        archive.as_os_str(),
        restored.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("restored"), "{report}");
    assert!(report.contains("consumer-group state in"), "{report}");

    let server = Server::start(&restored, SMALL_SEGMENTS);
    let client = Client::new(&server.url, None).expect("client");
    for (stream, want) in &before {
        let got = ids(&client, stream).await;
        for (rev, id) in want {
            assert_eq!(got.get(rev), Some(id), "{stream}@{rev} after the restore");
        }
    }
    let info = client.stream_info(&name("order-0")).await.expect("info");
    assert_eq!(info.metadata.max_count, Some(1_000), "metadata restored");
    match client
        .read_stream(&name("gone-1"), ReadStream::forward(10))
        .await
    {
        Err(StoreError::StreamDeleted { .. }) => {}
        other => panic!("the tombstone was not restored: {other:?}"),
    }
    // The group exists with its acknowledgements: an acked event is not delivered again.
    let g = client.group_info("billing").await.expect("group restored");
    assert!(g.acked_total >= 100 || g.checkpoint > 0, "{g:?}");
    let mut again = Vec::new();
    loop {
        let ds = client
            .group_pull("billing", "c2", 200, Duration::from_millis(300))
            .await
            .expect("pull");
        if ds.is_empty() {
            break;
        }
        let dids: Vec<String> = ds.iter().map(|d| d.delivery_id.clone()).collect();
        client.group_ack("billing", &dids).await.expect("ack");
        again.extend(ds.iter().map(|d| d.event.id));
    }
    for id in &acked {
        assert!(
            !again.contains(id),
            "event {id}, acknowledged before the backup, was delivered again after the restore"
        );
    }
    assert_eq!(
        again.len() + acked.len(),
        before.values().map(BTreeMap::len).sum::<usize>(),
        "every other order event is still delivered once"
    );
    // And the restored store takes appends.
    client
        .append(&name("order-0"), ExpectedRevision::Any, vec![event(9)])
        .await
        .expect("append after the restore");
}

fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw so that `..` survives (the builder's path setters refuse it).
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *bytes).expect("append");
    }
    b.into_inner().expect("tar")
}

fn manifest(files: &[(&str, &str, u64)]) -> Vec<u8> {
    let mut stores: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for (dir, name, bytes) in files {
        stores
            .entry(dir)
            .or_default()
            .push(serde_json::json!({"name": name, "bytes": bytes}));
    }
    serde_json::to_vec(&serde_json::json!({
        "format": 1, "eventfold_version": "0.1.0", "created_at": "2026-12-03T00:00:00Z",
        "stores": stores.into_iter().map(|(dir, files)| serde_json::json!({
            "dir": dir, "next_position": 0, "events": 0, "files": files})).collect::<Vec<_>>()
    }))
    .expect("json")
}

fn restore_fails(dir: &Path, archive: &[u8], why: &str) {
    let path = dir.join("bad.tar");
    std::fs::write(&path, archive).expect("write archive");
    let target = dir.join("target");
    let out = eventfold(&["restore".as_ref(), path.as_os_str(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bad.tar")],
        "files left behind"
    );
    assert!(!dir.parent().expect("parent").join("evil.seg").exists());
}

#[test]
fn bad_archives_are_refused_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("work");
    std::fs::create_dir(&dir).expect("mkdir");
    let seg = b"not really a segment";
    let m = manifest(&[("", "0000000000.seg", seg.len() as u64)]);
    restore_fails(
        &dir,
        b"this is not a tar archive at all, just some bytes",
        "not a usable eventfold backup",
    );
    restore_fails(
        &dir,
        &tar_with(&[("0000000000.seg", seg)]),
        "not the manifest",
    );
    restore_fails(
        &dir,
        &tar_with(&[("eventfold-backup.json", &m), ("../evil.seg", seg)]),
        "is not a file of an eventfold backup",
    );
    restore_fails(
        &dir,
        &tar_with(&[("eventfold-backup.json", &m), ("LOCK", b"")]),
        "is not a file of an eventfold backup",
    );
    restore_fails(
        &dir,
        &tar_with(&[("eventfold-backup.json", &m)]),
        "cut short",
    );
    restore_fails(
        &dir,
        &tar_with(&[("eventfold-backup.json", &m), ("0000000000.seg", b"short")]),
        "where the manifest says",
    );
    let newer = String::from_utf8(m.clone())
        .expect("utf-8")
        .replace("\"format\":1", "\"format\":99");
    restore_fails(
        &dir,
        &tar_with(&[("eventfold-backup.json", newer.as_bytes())]),
        "restore it with a newer eventfold",
    );
    // A directory that is not empty is never restored into.
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::write(full.join("keep.txt"), b"mine").expect("write");
    let path = dir.join("bad.tar");
    let out = eventfold(&["restore".as_ref(), path.as_os_str(), full.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read(full.join("keep.txt")).expect("kept"), b"mine");
}

#[tokio::test]
async fn a_backup_needs_admin_on_every_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        r#"
[[tokens]]
token = "reader-everything-01"
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
    let url = format!("{}/backup", server.url);
    let st = |t: Option<&str>| {
        let rb = c.get(&url);
        let rb = match t {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        async move { rb.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(st(None).await, 401);
    assert_eq!(st(Some("reader-everything-01")).await, 403);
    assert_eq!(st(Some("orders-admin-000001")).await, 403);
    let resp = c
        .get(&url)
        .bearer_auth("root-token-000001")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        eventfold_protocol::backup::BACKUP_MEDIA_TYPE
    );
    let body = resp.bytes().await.expect("body");
    let mut archive = tar::Archive::new(&body[..]);
    let first = archive
        .entries()
        .expect("entries")
        .next()
        .expect("an entry")
        .expect("readable");
    assert_eq!(
        first.path().expect("path").to_str(),
        Some(eventfold_protocol::backup::MANIFEST_NAME)
    );
}
