//! Rows (i) to (iii), written once for every system: concurrent single-event appends, batched
//! appends, and reading everything back.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use super::cpu::{CpuUse, CpuWindow};
use super::driver::{PayloadTemplate, System};
use crate::measure::{Latencies, Measurement};

/// What a write row measured, and whether its time cap cut it short.
#[derive(Debug, Clone, Copy)]
pub struct WriteRow {
    pub m: Measurement,
    pub capped: bool,
    /// CPUs in use while the row ran.
    pub cpu: Option<CpuUse>,
}

/// Row (i): `clients` clients, each with its own connection, appending one event at a time and
/// waiting for each acknowledgement, `events` in all (or until `cap` passes). Latencies are per
/// append, closed-loop. Client `c` writes to stream `w{c}` through `systems[c % len]`: several
/// servers of one system share the clients evenly.
pub async fn concurrent_single(
    systems: &[&dyn System],
    clients: u64,
    events: u64,
    cap: Duration,
) -> anyhow::Result<WriteRow> {
    anyhow::ensure!(!systems.is_empty(), "no system to write to");
    let per_client = events.div_ceil(clients).max(1);
    let template = PayloadTemplate::new();
    let mut writers = Vec::new();
    for c in 0..clients {
        let sys = systems[(c % systems.len() as u64) as usize];
        writers.push(
            sys.writer(&format!("w{c}"))
                .await
                .with_context(|| format!("cannot open {clients} clients"))?,
        );
    }
    let cpu = CpuWindow::start();
    let start = Instant::now();
    let deadline = start + cap;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut w) in writers.into_iter().enumerate() {
        let template = template.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::new()?;
            let mut done = 0u64;
            while done < per_client && Instant::now() < deadline {
                let payload = template.make(0, c as u64 * per_client + done);
                let t = Instant::now();
                w.append(std::slice::from_ref(&payload)).await?;
                latencies.record_since(t);
                done += 1;
            }
            anyhow::Ok((done, latencies))
        });
    }
    let mut latencies = Latencies::new()?;
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (n, l) = joined.context("a client task failed")??;
        done += n;
        latencies.merge(&l)?;
    }
    Ok(WriteRow {
        m: Measurement {
            events: done,
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        },
        capped: done < per_client * clients,
        cpu: cpu.finish(),
    })
}

/// Row (ii): one client appending batches of `batch` events, each batch acknowledged before
/// the next, `events` in all (or until `cap` passes). Latencies are per batch.
pub async fn batched(
    sys: &dyn System,
    batch: u64,
    events: u64,
    cap: Duration,
) -> anyhow::Result<WriteRow> {
    let template = PayloadTemplate::new();
    let mut w = sys.writer("batches").await?;
    let batches = events.div_ceil(batch).max(1);
    let mut latencies = Latencies::new()?;
    let mut done = 0u64;
    let cpu = CpuWindow::start();
    let start = Instant::now();
    let deadline = start + cap;
    for b in 0..batches {
        if Instant::now() >= deadline {
            break;
        }
        let payloads: Vec<Bytes> = (0..batch)
            .map(|i| template.make(0, b * batch + i))
            .collect();
        let t = Instant::now();
        w.append(&payloads).await?;
        latencies.record_since(t);
        done += batch;
    }
    Ok(WriteRow {
        m: Measurement {
            events: done,
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        },
        capped: done < batches * batch,
        cpu: cpu.finish(),
    })
}

/// Row (iii): everything rows (i) and (ii) wrote, read back in order.
pub async fn read_back(sys: &dyn System, expected: u64) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let events = sys.read_back(expected).await?;
    Ok(Measurement {
        events,
        elapsed: start.elapsed(),
        latency: None,
    })
}
