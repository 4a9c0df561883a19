//! `eventfold serve`: configuration (flags > `EVENTFOLD_*` environment > TOML file > defaults),
//! the store (the embedded engine, or PostgreSQL with `--store postgres://…`), the server, and a
//! graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use eventfold_core::{EventStore, IdempotencyWindow, Limits};
use eventfold_engine::{Durability, Engine, EngineOptions};
use eventfold_schema::Validating;
use eventfold_server::{AppState, ServerLimits};
use eventfold_shred::{FileKeys, NoKeyStore, Shredding, SubjectKeys, sealed_limits};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};

/// The PostgreSQL schema holding the user's events.
pub(crate) const PG_EVENTS_SCHEMA: &str = "eventfold";
/// The PostgreSQL schema holding the consumer groups' state, beside the events.
const PG_GROUPS_SCHEMA: &str = "eventfold_groups";
/// How long the start waits for PostgreSQL before giving up.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the HTTP server on the embedded engine, or on PostgreSQL with `--store`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "EVENTFOLD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory of the embedded engine, created if missing [default: ./eventfold-data].
    #[arg(long, env = "EVENTFOLD_DATA")]
    pub data: Option<PathBuf>,
    /// Keep the events in PostgreSQL instead of the embedded engine:
    /// `postgres://user@host:port/database` (schemas `eventfold` and `eventfold_groups`, created
    /// when missing). Not together with --data.
    #[arg(long, env = "EVENTFOLD_STORE")]
    pub store: Option<String>,
    /// When an append is acknowledged: `fsync` (after fdatasync; survives power loss) or `none`
    /// (after the write reaches the OS; survives a crash of the process only) [default: fsync].
    /// Embedded engine only: an error with --store.
    #[arg(long, env = "EVENTFOLD_DURABILITY")]
    pub durability: Option<DurabilityArg>,
    /// A TOML file with any of these settings (keys as the long flags, with `_` for `-`).
    #[arg(long, env = "EVENTFOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest event, data plus metadata, in bytes [default: 1048576].
    #[arg(long, env = "EVENTFOLD_EVENT_BYTES_MAX")]
    pub event_bytes_max: Option<usize>,
    /// Most events in one append [default: 10000].
    #[arg(long, env = "EVENTFOLD_BATCH_EVENTS_MAX")]
    pub batch_events_max: Option<usize>,
    /// Most bytes in one append [default: 16777216].
    #[arg(long, env = "EVENTFOLD_BATCH_BYTES_MAX")]
    pub batch_bytes_max: Option<usize>,
    /// Largest `limit` of one read [default: 10000].
    #[arg(long, env = "EVENTFOLD_READ_LIMIT_MAX")]
    pub read_limit_max: Option<usize>,
    /// Seconds between heartbeats on idle subscriptions [default: 15].
    #[arg(long, env = "EVENTFOLD_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u64>,
    /// Connections served at once; more wait until one closes [default: 10000].
    #[arg(long, env = "EVENTFOLD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's whole header before it is disconnected
    /// (slowloris protection; also how long an idle kept-alive connection stays open)
    /// [default: 30].
    #[arg(long, env = "EVENTFOLD_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's whole body (for POST /appends: each line,
    /// from its first byte) before it is answered 408 body_read_timeout and disconnected
    /// [default: 60].
    #[arg(long, env = "EVENTFOLD_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// Size of each segment file of the engine, in bytes [default: 67108864]. Embedded engine
    /// only: an error with --store.
    #[arg(long, env = "EVENTFOLD_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// How many of the log's newest positions the idempotency window spans: an append that
    /// repeats an earlier one's event ids within it is answered with the first result, and an
    /// id seen within it in another batch is refused (409 duplicate_event_id). 0 turns the
    /// window off (only a stream's last batch is recognized). The engine holds it in memory
    /// (about 33 bytes per event, 85 for single-event appends) and reads it back from the log at
    /// start; PostgreSQL looks the ids up in its table [default: 1000000, at most 50000000].
    #[arg(long, env = "EVENTFOLD_IDEMPOTENCY_WINDOW_EVENTS")]
    pub idempotency_window_events: Option<u64>,
    /// The idempotency window's age bound: appends committed longer ago leave it, e.g. `24h`,
    /// `30m`, `7d`; `none` for no age bound [default: 24h].
    #[arg(long, env = "EVENTFOLD_IDEMPOTENCY_WINDOW")]
    pub idempotency_window: Option<String>,
    /// A bearer token with every right on every stream. With a token (or a tokens file) every
    /// request but /health/* needs `Authorization: Bearer <token>`.
    #[arg(long, env = "EVENTFOLD_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// A TOML file of tokens, each with its rights and stream prefixes:
    /// `[[tokens]] token = "..." rights = ["read", "write", "admin"] prefixes = ["order-"]`.
    #[arg(long, env = "EVENTFOLD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// A PEM certificate chain: serve HTTPS (TLS 1.2/1.3, rustls) instead of plain HTTP. Needs
    /// --tls-key. Off by default; use it whenever --listen is beyond loopback.
    #[arg(long, env = "EVENTFOLD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EVENTFOLD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector base URL (e.g.
    /// http://127.0.0.1:4318; `/v1/traces` is appended). Also on when the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. Off by default.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

/// `--durability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// fdatasync before acknowledging.
    Fsync,
    /// No fdatasync: for tests and throw-away data.
    None,
}

/// The same settings, from the TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    store: Option<String>,
    durability: Option<DurabilityArg>,
    event_bytes_max: Option<usize>,
    batch_events_max: Option<usize>,
    batch_bytes_max: Option<usize>,
    read_limit_max: Option<usize>,
    heartbeat_secs: Option<u64>,
    max_connections: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    segment_bytes: Option<u64>,
    idempotency_window_events: Option<u64>,
    idempotency_window: Option<String>,
    auth_token: Option<String>,
    tokens_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Where the server keeps its events and its consumer groups' state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded engine in this directory (the groups' state in `DIR/groups`).
    Embedded(PathBuf),
    /// The PostgreSQL database at this URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl StoreLocation {
    /// The location a `--store` value names: only PostgreSQL URLs are accepted (the embedded
    /// engine is chosen with `--data DIR`).
    pub fn from_url(url: &str) -> anyhow::Result<StoreLocation> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres(url.to_owned()))
        } else {
            bail!(
                "--store {:?} is not a store URL this server knows: give postgres://user@host:port/database \
                 (or postgresql://…) for PostgreSQL, or leave --store out and use --data DIR for the embedded engine",
                redact_url(url)
            )
        }
    }

    /// The location for messages and logs: a directory, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Embedded(dir) => dir.display().to_string(),
            StoreLocation::Postgres(url) => redact_url(url),
        }
    }
}

/// `url` without any password: the one in `user:password@` and any `password=` parameter.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let mut out = String::new();
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    out.push_str(&authority);
    out.push_str(path);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// The settings after merging.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: StoreLocation,
    pub engine: EngineOptions,
    pub server: ServerLimits,
    pub auth: eventfold_server::auth::Auth,
    /// Certificate chain and key files when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`, flags winning), the file, and defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("the config file {} is not valid", path.display()))?
            }
        };
        let d = Limits::DEFAULT;
        let limits = Limits {
            event_bytes_max: self
                .event_bytes_max
                .or(file.event_bytes_max)
                .unwrap_or(d.event_bytes_max),
            batch_events_max: self
                .batch_events_max
                .or(file.batch_events_max)
                .unwrap_or(d.batch_events_max),
            batch_bytes_max: self
                .batch_bytes_max
                .or(file.batch_bytes_max)
                .unwrap_or(d.batch_bytes_max),
            read_limit_max: self
                .read_limit_max
                .or(file.read_limit_max)
                .unwrap_or(d.read_limit_max),
        };
        if limits.event_bytes_max == 0
            || limits.batch_events_max == 0
            || limits.batch_bytes_max == 0
            || limits.read_limit_max == 0
        {
            bail!("every limit must be at least 1");
        }
        let heartbeat = self.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(15);
        if heartbeat == 0 || heartbeat > 15 {
            bail!(
                "--heartbeat-secs must be between 1 and 15 (the contract promises a heartbeat at least every 15 s)"
            );
        }
        let connections_max = self
            .max_connections
            .or(file.max_connections)
            .unwrap_or(eventfold_server::CONNECTIONS_MAX_DEFAULT);
        if connections_max == 0 {
            bail!("--max-connections must be at least 1");
        }
        let header_read_timeout = self
            .header_read_timeout_secs
            .or(file.header_read_timeout_secs)
            .map_or(
                eventfold_server::HEADER_READ_TIMEOUT_DEFAULT,
                Duration::from_secs,
            );
        if header_read_timeout.is_zero() {
            bail!("--header-read-timeout-secs must be at least 1");
        }
        let body_read_timeout = self
            .body_read_timeout_secs
            .or(file.body_read_timeout_secs)
            .map_or(
                eventfold_server::BODY_READ_TIMEOUT_DEFAULT,
                Duration::from_secs,
            );
        if body_read_timeout.is_zero() {
            bail!("--body-read-timeout-secs must be at least 1");
        }
        let durability = match self
            .durability
            .or(file.durability)
            .unwrap_or(DurabilityArg::Fsync)
        {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::NoSyncUnsafe,
        };
        let mut engine = EngineOptions {
            durability,
            limits,
            ..EngineOptions::default()
        };
        if let Some(b) = self.segment_bytes.or(file.segment_bytes) {
            engine.segment_bytes = b;
        }
        engine.idempotency = idempotency_window(
            self.idempotency_window_events
                .or(file.idempotency_window_events),
            self.idempotency_window
                .as_deref()
                .or(file.idempotency_window.as_deref()),
        )?;
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key: give --tls-cert and --tls-key"),
        };
        // The store is one choice: flags and environment, when they make it, win over the file
        // as a whole (a file's `store` does not fight a `--data` flag).
        let store = match store_choice(self.store.as_deref(), self.data.as_deref())? {
            Some(store) => store,
            None => store_choice(file.store.as_deref(), file.data.as_deref())?
                .unwrap_or_else(|| StoreLocation::Embedded(PathBuf::from("eventfold-data"))),
        };
        if matches!(store, StoreLocation::Postgres(_)) {
            let mut engine_only = Vec::new();
            if self.durability.or(file.durability).is_some() {
                engine_only
                    .push("--durability (EVENTFOLD_DURABILITY, `durability` in the config file)");
            }
            if self.segment_bytes.or(file.segment_bytes).is_some() {
                engine_only.push(
                    "--segment-bytes (EVENTFOLD_SEGMENT_BYTES, `segment_bytes` in the config file)",
                );
            }
            if !engine_only.is_empty() {
                bail!(
                    "the embedded engine's settings cannot apply to a PostgreSQL store (--store \
                     postgres://…), where an append is acknowledged after PostgreSQL's commit (as \
                     durable as the database's synchronous_commit makes it) and there are no \
                     segment files: remove {}, or use --data DIR for the embedded engine",
                    engine_only.join(" and ")
                );
            }
        }
        Ok(Settings {
            tls,
            store,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
            engine,
            server: ServerLimits {
                store: limits,
                heartbeat: Duration::from_secs(heartbeat),
                connections_max,
                header_read_timeout,
                body_read_timeout,
            },
            auth: eventfold_server::auth::Auth::new(
                self.auth_token.clone().or(file.auth_token),
                self.tokens_file.as_deref().or(file.tokens_file.as_deref()),
            )
            .map_err(anyhow::Error::msg)?,
        })
    }
}

/// The idempotency window of `--idempotency-window-events` and `--idempotency-window` (each
/// from its flag, variable or file), the defaults for what is not given.
fn idempotency_window(events: Option<u64>, age: Option<&str>) -> anyhow::Result<IdempotencyWindow> {
    let max_age = match age.map(str::trim) {
        None => IdempotencyWindow::DEFAULT.max_age,
        Some("none") => None,
        Some(text) => Some(humantime::parse_duration(text).map_err(|e| {
            anyhow::anyhow!(
                "--idempotency-window {text:?} is not a duration ({e}): give one such as 24h, 30m or 7d, or `none` for no age bound"
            )
        })?),
    };
    let events = events.unwrap_or(IdempotencyWindow::DEFAULT.events);
    IdempotencyWindow::new(events, max_age)
        .map_err(|e| anyhow::anyhow!("--idempotency-window-events / --idempotency-window: {e}"))
}

/// The store one level of settings chooses, if it chooses one; both `store` and `data` at
/// the same level is an error.
fn store_choice(
    store: Option<&str>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<Option<StoreLocation>> {
    match (store, data) {
        (Some(_), Some(_)) => bail!(
            "--store and --data both name a store: give --store postgres://… for PostgreSQL or \
             --data DIR for the embedded engine, not both (check the flags, EVENTFOLD_STORE, \
             EVENTFOLD_DATA and the config file)"
        ),
        (Some(url), None) => StoreLocation::from_url(url).map(Some),
        (None, Some(dir)) => Ok(Some(StoreLocation::Embedded(dir.to_owned()))),
        (None, None) => Ok(None),
    }
}

/// Catches SIGINT and SIGTERM from this call on (the handlers are installed here, not when the
/// future is first polled, so a signal sent as soon as the "listening" line is out is not
/// lost); the future resolves on the first of them.
pub(crate) fn shutdown_signal()
-> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Runs the server until SIGINT/SIGTERM, then shuts down cleanly.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let otlp = crate::otlp::start(args.otlp_endpoint.as_deref())?;
    let result = serve(args).await;
    if let Some(otlp) = otlp {
        // The exporter's blocking flush, off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
    }
    result
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let s = args.settings()?;
    // Bad certificate files are refused before the store is opened.
    let tls = match &s.tls {
        Some((cert, key)) => {
            Some(eventfold_server::tls::load_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let opened = open_store(&s).await?;
    let (store, raw_events, groups_state) = opened.stores();
    // The groups read the events as stored (sealed data stays sealed in their read-ahead);
    // the server opens each delivery's event as it hands it out. Other servers may share a
    // PostgreSQL database: their groups' state is shared too.
    let groups = if opened.is_shared() {
        eventfold_groups::Groups::open_shared(raw_events, groups_state).await
    } else {
        eventfold_groups::Groups::open(raw_events, groups_state).await
    }
    .context("cannot load the consumer groups")?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running there? choose another --listen)",
                s.listen
            )
        })?;
    // Before the line below: a supervisor may signal as soon as it has read it.
    let shutdown = shutdown_signal()?;
    match &s.store {
        StoreLocation::Embedded(_) => {
            tracing::info!(listen = %s.listen, store = %s.store.describe(), durability = ?s.engine.durability, tls = tls.is_some(), "eventfold serve");
        }
        StoreLocation::Postgres(_) => {
            tracing::info!(listen = %s.listen, store = %s.store.describe(), tls = tls.is_some(), "eventfold serve");
        }
    }
    // One line on stdout for people and scripts: where to connect.
    println!(
        "eventfold listening on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr().unwrap_or(s.listen)
    );
    if !s.listen.ip().is_loopback() {
        if !s.auth.enabled() {
            tracing::warn!(listen = %s.listen, "listening beyond loopback without --auth-token or --tokens-file: anyone who can reach it can read and write");
        }
        if tls.is_none() {
            tracing::warn!(listen = %s.listen, "listening beyond loopback without --tls-cert/--tls-key: tokens and events cross the network in clear text");
        }
    }
    let mut state = AppState::new(store, s.server)
        .with_auth(s.auth.clone())
        .with_groups(groups.clone());
    if let Some(keys) = opened.subject_keys() {
        state = state.with_subject_keys(keys);
    }
    if let StoreLocation::Embedded(dir) = &s.store {
        let dir = dir.clone();
        state = state.with_stored_bytes(Arc::new(move || directory_bytes(&dir)));
    }
    if let Some(source) = opened.backup_source() {
        state = state.with_backup(source);
    }
    if let Some(source) = opened.scavenge_source() {
        state = state.with_scavenge(source);
    }
    match tls {
        Some(config) => {
            let listener = eventfold_server::tls::TlsListener::new(listener, config)
                .context("cannot start the TLS listener")?;
            eventfold_server::serve(listener, state, shutdown).await
        }
        None => eventfold_server::serve(listener, state, shutdown).await,
    }
    .context("the server failed")?;
    // Requests in flight have finished; stop the groups, flush and stop the writers.
    groups.shutdown().await;
    opened.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The bytes on disk of the files under `dir` (the engine's segments, indexes and the groups' store):
/// what `GET /stats` reports as stored. Walks the tree each time; a data directory holds a few
/// files per 64 MiB segment.
fn directory_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += allocated(&entry.metadata()?);
            }
        }
    }
    Ok(total)
}

/// The bytes a file takes on disk: its allocated blocks (the engine preallocates segments, so
/// their length says little), or its length where blocks are not known.
fn allocated(m: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        m.blocks() * 512
    }
    #[cfg(not(unix))]
    {
        m.len()
    }
}

/// The stores a server runs on, opened.
enum Opened {
    /// The embedded engine, the engine of the groups' state beside it, and the subject keys
    /// (crypto-shredding) in `DIR/keys`.
    Embedded {
        events: Engine,
        groups: Engine,
        keys: FileKeys,
        limits: Limits,
    },
    /// Two stores in one PostgreSQL database: the events, and the groups' state.
    Postgres {
        events: PostgresStore,
        groups: PostgresStore,
        limits: Limits,
    },
}

impl Opened {
    /// The store of the user's events, the same events as stored (for the consumer groups,
    /// whose deliveries the server opens), and the store of the consumer groups' state. The
    /// events' store validates appends against the JSON Schemas registered in it
    /// (`eventfold_schema::Validating`; a no-op until a schema is registered) and, under that,
    /// crypto-shreds (`eventfold_shred::Shredding`), so schemas see the plaintext: on the
    /// engine with the key file in `DIR/keys`; on PostgreSQL, which has no key store yet,
    /// events naming a `$subject` are refused rather than stored in the clear.
    fn stores(
        &self,
    ) -> (
        Arc<dyn EventStore>,
        Arc<dyn EventStore>,
        Arc<dyn EventStore>,
    ) {
        match self {
            Opened::Embedded {
                events,
                groups,
                keys,
                limits,
            } => (
                // This process alone writes the directory (its lock): the registry learns of
                // every registration as it makes it.
                Arc::new(Validating::exclusive(Shredding::new(
                    events.clone(),
                    Arc::new(keys.clone()),
                    *limits,
                ))),
                Arc::new(events.clone()),
                Arc::new(groups.clone()),
            ),
            Opened::Postgres {
                events,
                groups,
                limits,
            } => (
                // Other servers may register schemas on the same database: the registry looks
                // for new registrations before every append.
                Arc::new(Validating::new(Shredding::new(
                    events.clone(),
                    Arc::new(NoKeyStore::new(
                        "cannot be kept erasable on this server: crypto-shredding keeps its keys \
                         in the embedded engine's data directory, and this server keeps its events \
                         in PostgreSQL; append without `$subject` in the metadata, or serve with \
                         --data DIR",
                    )),
                    *limits,
                ))),
                Arc::new(events.clone()),
                Arc::new(groups.clone()),
            ),
        }
    }

    /// The key store `DELETE /subjects/{subject}/key` deletes from (none on PostgreSQL).
    fn subject_keys(&self) -> Option<Arc<dyn SubjectKeys>> {
        match self {
            Opened::Embedded { keys, .. } => Some(Arc::new(keys.clone())),
            Opened::Postgres { .. } => None,
        }
    }

    /// The cuts of `GET /backup` on the embedded engines (the groups' state first, so that no
    /// group state refers to an event beyond the events' cut); none on PostgreSQL.
    fn backup_source(&self) -> Option<eventfold_server::BackupSource> {
        let Opened::Embedded {
            events,
            groups,
            keys,
            ..
        } = self
        else {
            return None;
        };
        let (events, groups, keys) = (events.clone(), groups.clone(), keys.clone());
        Some(Arc::new(move || {
            let part = |dir: &'static str, engine: &Engine| {
                let plan = engine.backup().map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(eventfold_server::BackupPart {
                    dir,
                    next_position: plan.next_position,
                    events: plan.events,
                    files: plan
                        .files
                        .into_iter()
                        .map(|f| {
                            let reader: Box<dyn std::io::Read + Send> = Box::new(f.reader());
                            (f.name().to_string(), f.len(), reader)
                        })
                        .collect(),
                })
            };
            let groups = part(eventfold_protocol::backup::GROUPS_DIR, &groups)?;
            let events = part("", &events)?;
            // After the events' cut: a key is durable before any event sealed with it, so
            // this copy has the key of every sealed event in the cut (and none deleted
            // before now).
            let (len, file) = keys.snapshot()?;
            let keys = eventfold_server::BackupPart {
                dir: eventfold_protocol::backup::KEYS_DIR,
                next_position: 0,
                events: 0,
                files: vec![(
                    eventfold_shred::KEYS_FILE.to_string(),
                    len,
                    Box::new(std::io::Read::take(file, len)),
                )],
            };
            Ok(vec![events, groups, keys])
        }))
    }

    /// The scavenges of `POST /scavenge` on the embedded engine's event store; none on
    /// PostgreSQL.
    fn scavenge_source(&self) -> Option<eventfold_server::ScavengeSource> {
        let Opened::Embedded { events, .. } = self else {
            return None;
        };
        let events = events.clone();
        Some(Arc::new(move |progress| {
            let report = events.scavenge(|p| progress(p.done, p.total, &wire_report(&p.so_far)))?;
            Ok(report.map(|r| wire_report(&r)))
        }))
    }

    /// Whether other servers may use the same stores (a PostgreSQL database); the engine's
    /// directory lock keeps every other process out.
    fn is_shared(&self) -> bool {
        matches!(self, Opened::Postgres { .. })
    }

    /// Flushes and stops the engines' writers; PostgreSQL has committed every acknowledged
    /// write already, so its stores are just dropped.
    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Opened::Embedded { events, groups, .. } => {
                tokio::task::spawn_blocking(move || groups.shutdown())
                    .await
                    .context("the groups engine's shutdown task failed")?;
                tokio::task::spawn_blocking(move || events.shutdown())
                    .await
                    .context("the engine's shutdown task failed")?;
            }
            Opened::Postgres { events, groups, .. } => {
                drop(groups);
                drop(events);
            }
        }
        Ok(())
    }
}

/// Opens the store `s` names, and the store of the consumer groups' state beside it, so that
/// the user's `$all` holds only the user's events.
async fn open_store(s: &Settings) -> anyhow::Result<Opened> {
    match &s.store {
        StoreLocation::Embedded(dir) => {
            let data = dir.clone();
            // The engine stores sealed events, larger than what clients sent by the envelope;
            // `Shredding` holds clients to `s.engine.limits` on the plaintext.
            let engine_opts = EngineOptions {
                limits: sealed_limits(s.engine.limits),
                ..s.engine.clone()
            };
            let events = tokio::task::spawn_blocking(move || Engine::open(&data, engine_opts))
                .await
                .context("the engine's open task failed")?
                .with_context(|| format!("cannot open the store in {}", dir.display()))?;
            // The groups' state in a second engine beside the data, with the same durability and
            // its own limits: its records (checkpoints, parked copies) and its restore reads must
            // not depend on limits chosen for the user's events.
            let groups_dir = dir.join(eventfold_protocol::backup::GROUPS_DIR);
            // The groups' state has no use for the idempotency window (fresh ids, expected
            // revisions): off, so that it holds no memory for it.
            let groups_opts = EngineOptions {
                limits: Limits::DEFAULT,
                idempotency: IdempotencyWindow::OFF,
                segment_bytes: s
                    .engine
                    .segment_bytes
                    .max(eventfold_engine::SEGMENT_BYTES_DEFAULT),
                ..s.engine.clone()
            };
            let groups_dir2 = groups_dir.clone();
            let groups =
                tokio::task::spawn_blocking(move || Engine::open(&groups_dir2, groups_opts))
                    .await
                    .context("the groups engine's open task failed")?
                    .with_context(|| {
                        format!(
                            "cannot open the consumer-group state in {}",
                            groups_dir.display()
                        )
                    })?;
            let keys_dir = dir.join(eventfold_protocol::backup::KEYS_DIR);
            let keys_dir2 = keys_dir.clone();
            let keys = tokio::task::spawn_blocking(move || FileKeys::open(&keys_dir2))
                .await
                .context("the key store's open task failed")?
                .with_context(|| {
                    format!(
                        "cannot open the subject key store in {}",
                        keys_dir.display()
                    )
                })?;
            Ok(Opened::Embedded {
                events,
                groups,
                keys,
                limits: s.engine.limits,
            })
        }
        StoreLocation::Postgres(url) => {
            let events = connect_postgres(
                url,
                PostgresOptions {
                    schema: PG_EVENTS_SCHEMA.to_owned(),
                    limits: s.engine.limits,
                    idempotency: s.engine.idempotency,
                    ..PostgresOptions::default()
                },
            )
            .await?;
            // The groups' state keeps its own limits, as on the engine.
            let groups = connect_postgres(
                url,
                PostgresOptions {
                    schema: PG_GROUPS_SCHEMA.to_owned(),
                    limits: Limits::DEFAULT,
                    idempotency: IdempotencyWindow::OFF,
                    ..PostgresOptions::default()
                },
            )
            .await?;
            Ok(Opened::Postgres {
                events,
                groups,
                limits: s.engine.limits,
            })
        }
    }
}

/// Connects a PostgreSQL store on `url`; the error names the URL without its password and
/// what to check.
pub(crate) async fn connect_postgres(
    url: &str,
    options: PostgresOptions,
) -> anyhow::Result<PostgresStore> {
    let shown = redact_url(url);
    let schema = options.schema.clone();
    let what = || {
        format!(
            "cannot open the PostgreSQL store at {shown} (schema {schema}): check that \
             PostgreSQL runs there and accepts connections from this machine, that the user \
             may log in and the database exists, or give another --store"
        )
    };
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, PostgresStore::connect(url, options)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(what())),
        Err(_) => Err(
            anyhow::anyhow!("no answer within {} s", PG_CONNECT_TIMEOUT.as_secs()).context(what()),
        ),
    }
}

/// The engine's scavenge report as the API sends it.
fn wire_report(
    r: &eventfold_engine::ScavengeReport,
) -> eventfold_protocol::scavenge::ScavengeReport {
    eventfold_protocol::scavenge::ScavengeReport {
        segments_scanned: r.segments_scanned,
        segments_compacted: r.segments_compacted,
        events_removed: r.events_removed,
        events_kept: r.events_kept,
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
        bytes_reclaimed: r.bytes_reclaimed(),
        duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(
            redact_url("postgresql://h/db?sslmode=disable&password=secret"),
            "postgresql://h/db?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    /// The engine's own settings, from a flag or the config file, are refused with a
    /// PostgreSQL store (they could not apply), and accepted with the engine.
    #[test]
    fn engine_only_settings_are_refused_on_postgres() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let settings = |args: &[&str]| {
            let mut argv = vec!["serve"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .expect("flags parse")
                .serve
                .settings()
        };
        let pg = "postgres://u@h/db";
        for flags in [
            &["--store", pg, "--durability", "none"][..],
            &["--store", pg, "--durability", "fsync"][..],
            &["--store", pg, "--segment-bytes", "1048576"][..],
        ] {
            let e = settings(flags).expect_err("an engine setting with PostgreSQL");
            let msg = e.to_string();
            assert!(
                msg.contains(flags[2]) && msg.contains("PostgreSQL") && msg.contains("remove"),
                "{msg}"
            );
        }
        let e = settings(&[
            "--store",
            pg,
            "--durability",
            "none",
            "--segment-bytes",
            "1048576",
        ])
        .expect_err("both");
        let msg = e.to_string();
        assert!(
            msg.contains("--durability") && msg.contains("--segment-bytes"),
            "{msg}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("eventfold.toml");
        std::fs::write(
            &config,
            format!("store = \"{pg}\"\nsegment_bytes = 1048576\n"),
        )
        .expect("write the config");
        let config = config.to_str().expect("a UTF-8 temp path");
        let e = settings(&["--config", config]).expect_err("from the file too");
        assert!(e.to_string().contains("segment_bytes"), "{e}");

        assert!(settings(&["--store", pg]).is_ok());
        let data = dir.path().join("data");
        let data = data.to_str().expect("a UTF-8 temp path");
        let s = settings(&[
            "--data",
            data,
            "--durability",
            "none",
            "--segment-bytes",
            "1048576",
        ])
        .expect("engine settings with the engine");
        assert_eq!(s.engine.segment_bytes, 1_048_576);
    }

    /// The idempotency window from flags (and its defaults), with a clear error for a bad
    /// duration or a window beyond the maximum.
    #[test]
    fn the_idempotency_window_is_configured_by_count_and_age() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let window = |args: &[&str]| {
            let mut argv = vec!["serve", "--data", "unused-dir"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .expect("flags parse")
                .serve
                .settings()
                .map(|s| s.engine.idempotency)
        };
        let day = Some(Duration::from_secs(24 * 3600));
        // The flags, and the window they set (events, age), or `None` for refused.
        type Case<'a> = (&'a [&'a str], Option<(u64, Option<Duration>)>);
        let cases: [Case; 7] = [
            (&[], Some((1_000_000, day))),
            (&["--idempotency-window-events", "0"], Some((0, day))),
            (
                &[
                    "--idempotency-window-events",
                    "5000",
                    "--idempotency-window",
                    "30m",
                ],
                Some((5000, Some(Duration::from_secs(1800)))),
            ),
            (&["--idempotency-window", "none"], Some((1_000_000, None))),
            (&["--idempotency-window", "soon"], None),
            (&["--idempotency-window", "0s"], None),
            (&["--idempotency-window-events", "50000001"], None),
        ];
        for (args, want) in cases {
            match (window(args), want) {
                (Ok(w), Some((events, max_age))) => {
                    assert_eq!((w.events, w.max_age), (events, max_age), "{args:?}")
                }
                (Err(e), None) => assert!(
                    e.to_string().contains("--idempotency-window"),
                    "{args:?}: {e}"
                ),
                (got, want) => panic!("{args:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn only_postgres_urls_are_stores() {
        assert_eq!(
            StoreLocation::from_url("postgres://u@h/db").expect("a PostgreSQL URL"),
            StoreLocation::Postgres("postgres://u@h/db".to_owned())
        );
        assert!(StoreLocation::from_url("postgresql://h/db").is_ok());
        let e = StoreLocation::from_url("mysql://u:pw@h/db").expect_err("not PostgreSQL");
        let msg = e.to_string();
        assert!(
            msg.contains("postgres://") && msg.contains("--data"),
            "{msg}"
        );
        assert!(!msg.contains("pw"), "{msg}");
    }
}
