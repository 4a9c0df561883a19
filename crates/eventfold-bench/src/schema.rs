//! `eventfold-bench schema`: what JSON Schema validation (`eventfold_schema::Validating`) costs
//! on the append path. The same realistic 256-byte JSON event (an `order.placed` with items)
//! appended without the decorator, through it with no schema for the type (what every
//! `eventfold serve` does until a schema is registered), and with a schema that checks every
//! event; in process on the embedded engine (CPU-bound batches without fsync, and 64 fsync'd
//! single-event writers) and over HTTP through `eventfold serve`. Side by side in one run, so
//! the ratios are what to read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventfold_core::{
    EventSchema, EventStore, EventType, ExpectedRevision, NewEvent, SchemaDocument, SchemaKey,
    StreamName,
};
use eventfold_engine::Durability;
use eventfold_schema::{Freshness, Validating};

use crate::machine::MachineFacts;
use crate::measure::{EVENT_DATA_BYTES, Latencies, Measurement};
use crate::table::{Table, count, nanos, rate, ratio};

/// Default `--events` of the CPU-bound rows (batches of [`BATCH`]); the fsync'd and HTTP rows
/// append a tenth of it.
pub const SCHEMA_EVENTS_DEFAULT: u64 = 200_000;
/// Events per append of the CPU-bound rows.
const BATCH: u64 = 100;
/// Concurrent single-event writers of the fsync'd and HTTP rows.
const WRITERS: u64 = 64;
/// Streams the one writer cycles through.
const STREAMS: u64 = 100;

/// How to run `eventfold-bench schema`.
#[derive(Debug, Clone)]
pub struct SchemaBenchOptions {
    /// Events of the CPU-bound rows; the fsync'd and HTTP rows append a tenth.
    pub events: u64,
    /// Scratch directory (a fresh one is made inside and removed at the end).
    pub dir: Option<PathBuf>,
    /// The `eventfold` binary of the HTTP rows; `None` with `skip_http`.
    pub eventfold_bin: Option<PathBuf>,
    /// Leave out the HTTP rows.
    pub skip_http: bool,
}

/// The benchmark's event: 256 bytes of JSON, an order with two items.
pub fn order_json() -> Vec<u8> {
    let mut v = serde_json::json!({
        "orderId": "ord_0001234567",
        "customerId": "cus_0000004711",
        "currency": "EUR",
        "items": [
            {"sku": "SKU-12345", "qty": 2, "price": 19.99},
            {"sku": "SKU-67890", "qty": 1, "price": 5.5}
        ],
        "total": 45.48,
        "placedAt": "2026-01-31T12:00:00Z",
        "channel": "web",
        "note": ""
    });
    let len = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
    v["note"] = serde_json::Value::String("x".repeat(EVENT_DATA_BYTES.saturating_sub(len)));
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The schema of [`order_json`]: what a service would write for it (required fields, types,
/// bounds, a pattern, no other properties).
pub fn order_schema() -> serde_json::Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "required": ["orderId", "customerId", "currency", "items", "total", "placedAt"],
        "properties": {
            "orderId": {"type": "string", "pattern": "^ord_[0-9]{10}$"},
            "customerId": {"type": "string", "minLength": 1, "maxLength": 64},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
                "type": "object", "additionalProperties": false, "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string", "minLength": 1},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0}}}},
            "total": {"type": "number", "minimum": 0},
            "placedAt": {"type": "string", "format": "date-time"},
            "channel": {"enum": ["web", "app", "store"]},
            "note": {"type": "string", "maxLength": 1000}
        }
    })
}

fn event_type() -> EventType {
    EventType::new("order.placed").expect("a valid type")
}

/// `n` events of the benchmark's shape.
fn batch(data: &[u8], n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            NewEvent::bytes(
                event_type(),
                eventfold_core::ContentType::json(),
                data.to_vec(),
            )
        })
        .collect()
}

/// Registers the benchmark's schema.
async fn register(store: &dyn EventStore) -> anyhow::Result<()> {
    let schema = EventSchema {
        key: SchemaKey::new(event_type(), 1),
        document: SchemaDocument::new(order_schema())?,
    };
    store
        .register_schema(schema)
        .await
        .context("cannot register the benchmark's schema")?;
    Ok(())
}

/// One writer, batches of [`BATCH`] over [`STREAMS`] streams, each append awaited.
async fn one_writer(
    store: &dyn EventStore,
    prefix: &str,
    events: u64,
) -> anyhow::Result<Measurement> {
    let data = order_json();
    let streams = (0..STREAMS)
        .map(|i| StreamName::new(format!("{prefix}-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let batches = events.div_ceil(BATCH);
    let mut latencies = Latencies::new()?;
    let start = Instant::now();
    for b in 0..batches {
        let s = &streams[(b % STREAMS) as usize];
        let events = batch(&data, BATCH);
        let t = Instant::now();
        store
            .append(s, ExpectedRevision::Any, events)
            .await
            .with_context(|| format!("append to {s} failed"))?;
        latencies.record_since(t);
    }
    Ok(Measurement {
        events: batches * BATCH,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// [`WRITERS`] tasks, one event per append, each awaiting its acknowledgement, each on its own
/// stream.
async fn concurrent_writers(
    store: Arc<dyn EventStore>,
    prefix: &str,
    events: u64,
) -> anyhow::Result<Measurement> {
    let per_writer = events.div_ceil(WRITERS).max(1);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let stream = StreamName::new(format!("{prefix}-{w}"))?;
        let data = order_json();
        tasks.spawn(async move {
            let mut latencies = Latencies::new()?;
            for _ in 0..per_writer {
                let events = batch(&data, 1);
                let t = Instant::now();
                store
                    .append(&stream, ExpectedRevision::Any, events)
                    .await
                    .with_context(|| format!("append to {stream} failed"))?;
                latencies.record_since(t);
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = crate::measure::join_writers(tasks, "a writer task").await?;
    Ok(Measurement {
        events: per_writer * WRITERS,
        elapsed: start.elapsed(),
        latency: latencies.summary(),
    })
}

/// The check alone: parse and validate the event's data `n` times; nanoseconds per event.
fn validation_alone(n: u64) -> anyhow::Result<f64> {
    let compiled = eventfold_schema::compile(&SchemaDocument::new(order_schema())?)?;
    let event = batch(&order_json(), 1).remove(0);
    anyhow::ensure!(
        compiled.check(&event).is_ok(),
        "the benchmark's event does not match its schema"
    );
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(compiled.check(std::hint::black_box(&event)))
            .map_err(|f| anyhow::anyhow!("validation failed: {}", f.reason))?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// The stores of one in-process row: the engine, and the engine under `Validating`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Plain,
    NoSchema,
    Schema(Freshness),
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Plain => "engine, no decorator",
            Setup::NoSchema => "Validating, no schema for the type",
            Setup::Schema(Freshness::Exclusive) => "Validating, schema checks every event",
            Setup::Schema(Freshness::Shared) => {
                "Validating (shared: reads the registry before each append), schema"
            }
        }
    }
}

const SETUPS: [Setup; 4] = [
    Setup::Plain,
    Setup::NoSchema,
    Setup::Schema(Freshness::Exclusive),
    Setup::Schema(Freshness::Shared),
];

/// Opens a fresh engine in `dir` wrapped as `setup` says, the schema registered if it says so.
async fn store_for(
    setup: Setup,
    dir: &Path,
    durability: Durability,
) -> anyhow::Result<(Arc<dyn EventStore>, eventfold_engine::Engine)> {
    let engine = crate::engine::open(dir, durability).await?;
    let store: Arc<dyn EventStore> = match setup {
        Setup::Plain => Arc::new(engine.clone()),
        Setup::NoSchema => Arc::new(Validating::exclusive(engine.clone())),
        Setup::Schema(f) => {
            let v = Validating::with_freshness(engine.clone(), f);
            register(&v).await?;
            Arc::new(v)
        }
    };
    Ok((store, engine))
}

/// Runs the benchmark and prints its table; the scratch directory is removed at the end.
pub async fn run_schema_bench(opts: SchemaBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.events >= 1_000, "--events must be at least 1000");
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => crate::default_base_dir()?,
    };
    let run_dir = base.join(format!("eventfold-bench-schema-{}", std::process::id()));
    crate::engine::remove_dir(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let facts = MachineFacts::gather(&run_dir);
    facts.print_header("eventfold-bench schema", &run_dir);
    println!(
        "  event:      order.placed, {} bytes of JSON; its schema: 2020-12, 8 properties, an items array of objects, 2 patterns",
        order_json().len()
    );
    let outcome = run_rows(&opts, &run_dir).await;
    let cleanup = crate::engine::remove_dir(&run_dir);
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir(&base);
    }
    let table = outcome?;
    println!();
    print!("{}", table.render());
    cleanup
}

async fn run_rows(opts: &SchemaBenchOptions, run_dir: &Path) -> anyhow::Result<Table> {
    let mut table = Table::new(
        vec![
            "row", "setup", "events", "events/s", "vs first", "p50", "p99",
        ],
        vec![0, 1],
    );
    let push = |table: &mut Table, row: &str, setup: &str, m: &Measurement, base: f64| {
        let (p50, p99) = m.latency.map_or(("-".into(), "-".into()), |l| {
            (nanos(l.p50_ns), nanos(l.p99_ns))
        });
        table.push(vec![
            row.into(),
            setup.into(),
            count(m.events),
            rate(m.events_per_s()),
            ratio(m.events_per_s() / base),
            p50,
            p99,
        ]);
    };
    let ns = validation_alone(opts.events)?;
    table.push(vec![
        "(0) check alone".into(),
        "parse the data + validate, one thread".into(),
        count(opts.events),
        rate(1e9 / ns),
        "-".into(),
        format!("{ns:.0} ns"),
        "-".into(),
    ]);
    eprintln!("(0) validation alone: {ns:.0} ns per event");
    let mut base = None;
    for (i, setup) in SETUPS.into_iter().enumerate() {
        let dir = run_dir.join(format!("a{i}"));
        let (store, engine) = store_for(setup, &dir, Durability::NoSyncUnsafe).await?;
        let m = one_writer(&*store, "bench_schema_a", opts.events).await?;
        drop(store);
        crate::engine::shutdown(engine).await?;
        crate::engine::remove_dir(&dir)?;
        let b = *base.get_or_insert(m.events_per_s());
        eprintln!("(a) {}: {:.0} events/s", setup.label(), m.events_per_s());
        push(
            &mut table,
            "(a) in-process, batches of 100, no fsync",
            setup.label(),
            &m,
            b,
        );
    }
    let mut base = None;
    for (i, setup) in SETUPS.into_iter().enumerate() {
        let dir = run_dir.join(format!("b{i}"));
        let (store, engine) = store_for(setup, &dir, Durability::Fsync).await?;
        let m = concurrent_writers(store.clone(), "bench_schema_b", opts.events / 10).await?;
        drop(store);
        crate::engine::shutdown(engine).await?;
        crate::engine::remove_dir(&dir)?;
        let b = *base.get_or_insert(m.events_per_s());
        eprintln!("(b) {}: {:.0} events/s", setup.label(), m.events_per_s());
        push(
            &mut table,
            "(b) in-process, 64 writers x 1 event, fsync",
            setup.label(),
            &m,
            b,
        );
    }
    if opts.skip_http {
        println!("  (c) over HTTP: skipped (--skip-http)");
        return Ok(table);
    }
    let bin = crate::eventfold_bin(opts.eventfold_bin.as_deref())?;
    let dir = run_dir.join("c");
    std::fs::create_dir_all(&dir)?;
    let (server, url) = crate::http::process::spawn_eventfold(&bin, &dir, None).await?;
    let client = eventfold_client::Client::new(&url, None)?;
    let store: Arc<dyn EventStore> = Arc::new(client);
    let before = concurrent_writers(store.clone(), "bench_schema_c1", opts.events / 10).await?;
    eprintln!("(c) no schema: {:.0} events/s", before.events_per_s());
    push(
        &mut table,
        "(c) HTTP, 64 writers x 1 event, fsync",
        "eventfold serve, no schema for the type",
        &before,
        before.events_per_s(),
    );
    register(&*store).await?;
    let after = concurrent_writers(store.clone(), "bench_schema_c2", opts.events / 10).await?;
    eprintln!("(c) schema: {:.0} events/s", after.events_per_s());
    push(
        &mut table,
        "(c) HTTP, 64 writers x 1 event, fsync",
        "eventfold serve, schema checks every event",
        &after,
        before.events_per_s(),
    );
    drop(store);
    drop(server);
    // Let the killed server's files go before the directory is removed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(table)
}
