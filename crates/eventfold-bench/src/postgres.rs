//! PostgreSQL side by side: rows (a) and (b) into an events table with a unique
//! `(stream, revision)` and `synchronous_commit = on`. Each append is one transaction that
//! reads the stream's last revision, checks it against the expected one, then inserts.

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::engine::{BATCH_A, WRITERS_B};
use crate::measure::{Latencies, Measurement, event_data};

/// How long to wait for PostgreSQL to accept a connection before skipping its rows.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Streams row (a) cycles through, as for the engine.
const STREAMS_A: u64 = 1_000;

/// A connected PostgreSQL with a fresh events table for this run.
#[derive(Debug)]
pub struct Pg {
    config: Config,
    admin: Client,
    table: String,
    /// The server's version and its `fsync` / `synchronous_commit` settings, for the header.
    pub facts: String,
}

pub(crate) async fn connect(config: &Config) -> anyhow::Result<Client> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("warning: a PostgreSQL connection ended: {e}");
        }
    });
    client
        .batch_execute("SET synchronous_commit = on; SET client_min_messages = warning")
        .await
        .context("cannot set synchronous_commit = on")?;
    Ok(client)
}

impl Pg {
    /// Connects to `url` and creates this run's table.
    pub async fn connect(url: &str) -> anyhow::Result<Pg> {
        let mut config =
            Config::from_str(url).with_context(|| format!("bad PostgreSQL URL {url:?}"))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let admin = connect(&config).await?;
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await?
            .try_get(0)?;
        let fsync: String = admin.query_one("SHOW fsync", &[]).await?.try_get(0)?;
        let sync_commit: String = admin
            .query_one("SHOW synchronous_commit", &[])
            .await?
            .try_get(0)?;
        let table = format!("eventfold_bench_events_{}", std::process::id());
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (
                     stream   text   NOT NULL,
                     revision bigint NOT NULL,
                     position bigserial PRIMARY KEY,
                     type     text   NOT NULL,
                     data     bytea  NOT NULL,
                     metadata jsonb  NOT NULL,
                     UNIQUE (stream, revision)
                 );"
            ))
            .await
            .with_context(|| format!("cannot create the table {table}"))?;
        Ok(Pg {
            config,
            admin,
            table,
            facts: format!(
                "PostgreSQL {version}, fsync = {fsync}, synchronous_commit = {sync_commit}"
            ),
        })
    }

    /// Drops this run's table.
    pub async fn drop_table(&self) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table))
            .await
            .with_context(|| format!("cannot drop the table {}", self.table))
    }

    /// Row (a) on PostgreSQL: one connection, batches of [`BATCH_A`], one transaction each.
    pub async fn one_writer(&self, events: u64) -> anyhow::Result<Measurement> {
        let mut client = connect(&self.config).await?;
        let stmts = Statements::prepare(&client, &self.table).await?;
        let data = event_data();
        let datas: Vec<&[u8]> = (0..BATCH_A).map(|_| data.as_slice()).collect();
        let streams: Vec<String> = (0..STREAMS_A).map(|i| format!("bench_a-{i}")).collect();
        let mut last: Vec<Option<i64>> = vec![None; streams.len()];
        let batches = events.div_ceil(BATCH_A);
        let mut latencies = Latencies::new()?;
        let start = Instant::now();
        for b in 0..batches {
            let s = (b % STREAMS_A) as usize;
            let t = Instant::now();
            last[s] = Some(
                stmts
                    .append(&mut client, &streams[s], last[s], &datas)
                    .await?,
            );
            latencies.record_since(t);
        }
        Ok(Measurement {
            events: batches * BATCH_A,
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        })
    }

    /// Row (b) on PostgreSQL: [`WRITERS_B`] connections, one event per transaction, each
    /// writer on its own stream.
    pub async fn concurrent_writers(&self, events: u64) -> anyhow::Result<Measurement> {
        let per_writer = events.div_ceil(WRITERS_B).max(1);
        let mut clients = Vec::new();
        for _ in 0..WRITERS_B {
            let client = connect(&self.config)
                .await
                .with_context(|| format!("cannot open {WRITERS_B} connections"))?;
            let stmts = Statements::prepare(&client, &self.table).await?;
            clients.push((client, stmts));
        }
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (w, (mut client, stmts)) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                let stream = format!("bench_b-{w}");
                let data = event_data();
                let datas = [data.as_slice()];
                let mut latencies = Latencies::new()?;
                let mut last = None;
                for _ in 0..per_writer {
                    let t = Instant::now();
                    last = Some(stmts.append(&mut client, &stream, last, &datas).await?);
                    latencies.record_since(t);
                }
                anyhow::Ok(latencies)
            });
        }
        let latencies = crate::measure::join_writers(tasks, "a PostgreSQL writer task").await?;
        Ok(Measurement {
            events: per_writer * WRITERS_B,
            elapsed: start.elapsed(),
            latency: latencies.summary(),
        })
    }
}

/// The two statements of an append, prepared on one connection.
#[derive(Debug)]
struct Statements {
    last_revision: Statement,
    insert: Statement,
}

impl Statements {
    async fn prepare(client: &Client, table: &str) -> anyhow::Result<Statements> {
        Ok(Statements {
            last_revision: client
                .prepare(&format!(
                    "SELECT max(revision) FROM {table} WHERE stream = $1"
                ))
                .await
                .context("cannot prepare the revision check")?,
            insert: client
                .prepare(&format!(
                    "INSERT INTO {table} (stream, revision, type, data, metadata)
                     SELECT $1, $2::bigint + u.ord, 'bench.event', u.data, '{{}}'::jsonb
                     FROM unnest($3::bytea[]) WITH ORDINALITY AS u(data, ord)"
                ))
                .await
                .context("cannot prepare the insert")?,
        })
    }

    /// One append transaction: checks that the stream's last revision is `expected` (`None`:
    /// no stream), inserts `datas` after it, commits; returns the new last revision.
    async fn append(
        &self,
        client: &mut Client,
        stream: &str,
        expected: Option<i64>,
        datas: &[&[u8]],
    ) -> anyhow::Result<i64> {
        let tx = client
            .transaction()
            .await
            .context("cannot begin a transaction")?;
        let actual: Option<i64> = tx
            .query_one(&self.last_revision, &[&stream])
            .await
            .context("cannot read the stream's last revision")?
            .try_get(0)?;
        anyhow::ensure!(
            actual == expected,
            "wrong expected revision on {stream}: expected {expected:?}, found {actual:?}"
        );
        // Revisions start at 0: the first event goes at `last + 1`, ordinality starts at 1.
        let base = expected.unwrap_or(-1);
        tx.execute(&self.insert, &[&stream, &base, &datas])
            .await
            .with_context(|| format!("cannot insert into {stream}"))?;
        tx.commit().await.context("cannot commit")?;
        Ok(base + datas.len() as i64)
    }
}
