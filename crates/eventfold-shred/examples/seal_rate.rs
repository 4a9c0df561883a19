//! What sealing and opening cost per event, without a disk: 100,000 events of about 930 bytes
//! (100 subjects, batches of 100) appended to and read back from the in-memory store, plain and
//! through `Shredding`. `cargo run --release -p eventfold-shred --example seal_rate`
use std::sync::Arc;
use std::time::Instant;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, Limits, Metadata, NewEvent, ReadAll, StreamName,
};
use eventfold_memory::MemoryStore;
use eventfold_shred::{FileKeys, Shredding, sealed_limits};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for shred in [false, true] {
        let raw = MemoryStore::with_limits(sealed_limits(Limits::DEFAULT));
        let keys = FileKeys::open(dir.path()).unwrap();
        let store: Arc<dyn EventStore> = if shred {
            Arc::new(Shredding::new(raw, Arc::new(keys), Limits::DEFAULT))
        } else {
            Arc::new(raw)
        };
        let data = serde_json::json!({"name": "x".repeat(900)});
        let n = 100_000u64;
        let t = Instant::now();
        for b in 0..n / 100 {
            let s = StreamName::new(format!("user-{}", b % 100)).unwrap();
            let batch = (0..100)
                .map(|_| {
                    let mut m = Metadata::new();
                    m.insert("$subject".into(), format!("user-{}", b % 100).into());
                    NewEvent::json(EventType::new("t").unwrap(), &data).with_metadata(m)
                })
                .collect();
            store
                .append(&s, ExpectedRevision::Any, batch)
                .await
                .unwrap();
        }
        let append = t.elapsed();
        let t = Instant::now();
        let mut read = 0;
        let mut from = eventfold_core::ReadFrom::Start;
        loop {
            let mut r = ReadAll::forward(1000);
            r.from = from;
            let slice = store.read_all(r).await.unwrap();
            read += slice.events.len();
            match slice.next {
                Some(p) => from = eventfold_core::ReadFrom::At(p),
                None => break,
            }
        }
        let reading = t.elapsed();
        println!(
            "shred={shred}: {n} events of ~930 B appended in {append:?} ({:.0}/s), {read} read in {reading:?} ({:.0}/s)",
            n as f64 / append.as_secs_f64(),
            read as f64 / reading.as_secs_f64()
        );
    }
}
