//! `eventfold serve`: configuration (flags > `EVENTFOLD_*` environment > TOML file > defaults),
//! the engine, the server, and a graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use eventfold_core::Limits;
use eventfold_engine::{Durability, Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};

/// Starts the HTTP server on the embedded engine.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "EVENTFOLD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory of the embedded engine, created if missing [default: ./eventfold-data].
    #[arg(long, env = "EVENTFOLD_DATA")]
    pub data: Option<PathBuf>,
    /// When an append is acknowledged: `fsync` (after fdatasync; survives power loss) or `none`
    /// (after the write reaches the OS; survives a crash of the process only) [default: fsync].
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
    /// Size of each segment file of the engine, in bytes [default: 67108864].
    #[arg(long, env = "EVENTFOLD_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
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
    durability: Option<DurabilityArg>,
    event_bytes_max: Option<usize>,
    batch_events_max: Option<usize>,
    batch_bytes_max: Option<usize>,
    read_limit_max: Option<usize>,
    heartbeat_secs: Option<u64>,
    segment_bytes: Option<u64>,
    auth_token: Option<String>,
    tokens_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The settings after merging.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data: PathBuf,
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
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key: give --tls-cert and --tls-key"),
        };
        Ok(Settings {
            tls,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
            data: self
                .data
                .clone()
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from("eventfold-data")),
            engine,
            server: ServerLimits {
                store: limits,
                heartbeat: Duration::from_secs(heartbeat),
            },
            auth: eventfold_server::auth::Auth::new(
                self.auth_token.clone().or(file.auth_token),
                self.tokens_file.as_deref().or(file.tokens_file.as_deref()),
            )
            .map_err(anyhow::Error::msg)?,
        })
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the server until SIGINT/SIGTERM, then shuts down cleanly.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let s = args.settings()?;
    // Bad certificate files are refused before the store is opened.
    let tls = match &s.tls {
        Some((cert, key)) => {
            Some(eventfold_server::tls::load_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let data = s.data.clone();
    let engine_opts = s.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&data, engine_opts))
        .await
        .context("the engine's open task failed")?
        .with_context(|| format!("cannot open the store in {}", s.data.display()))?;
    // Consumer groups keep their state in a second engine beside the data, with the same
    // durability, so the user's `$all` holds only the user's events.
    let groups_dir = s.data.join("groups");
    // Its own limits: the state's records (checkpoints, parked copies) and its restore reads
    // must not depend on limits chosen for the user's events.
    let groups_opts = EngineOptions {
        limits: eventfold_core::Limits::DEFAULT,
        segment_bytes: s
            .engine
            .segment_bytes
            .max(eventfold_engine::SEGMENT_BYTES_DEFAULT),
        ..s.engine.clone()
    };
    let groups_dir2 = groups_dir.clone();
    let groups_engine =
        tokio::task::spawn_blocking(move || Engine::open(&groups_dir2, groups_opts))
            .await
            .context("the groups engine's open task failed")?
            .with_context(|| {
                format!(
                    "cannot open the consumer-group state in {}",
                    groups_dir.display()
                )
            })?;
    let groups =
        eventfold_groups::Groups::open(Arc::new(engine.clone()), Arc::new(groups_engine.clone()))
            .await
            .context("cannot load the consumer groups")?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running there? choose another --listen)",
                s.listen
            )
        })?;
    tracing::info!(listen = %s.listen, data = %s.data.display(), durability = ?s.engine.durability, tls = tls.is_some(), "eventfold serve");
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
    let state = AppState::new(Arc::new(engine.clone()), s.server)
        .with_auth(s.auth.clone())
        .with_groups(groups.clone());
    match tls {
        Some(config) => {
            let listener = eventfold_server::tls::TlsListener::new(listener, config)
                .context("cannot start the TLS listener")?;
            eventfold_server::serve(listener, state, shutdown_signal()).await
        }
        None => eventfold_server::serve(listener, state, shutdown_signal()).await,
    }
    .context("the server failed")?;
    // Requests in flight have finished; stop the groups, flush and stop the writers.
    groups.shutdown().await;
    tokio::task::spawn_blocking(move || groups_engine.shutdown())
        .await
        .context("the groups engine's shutdown task failed")?;
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("the engine's shutdown task failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
