use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventStore, Limits};
use tokio::sync::watch;

/// Limits the server applies before a request reaches the store.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// The store's limits (events, batches, reads).
    pub store: Limits,
    /// Heartbeat interval of idle subscriptions (contract: at most 15 s).
    pub heartbeat: Duration,
    /// Connections served at once; further clients wait in the listen backlog until one
    /// closes (every connection holds a task and buffers, subscribers for hours).
    pub connections_max: usize,
    /// Time a client has to send a request's whole header, from its first byte (or from the
    /// connection, or the previous answer, on a kept-alive one, so it is also how long an idle
    /// kept-alive connection stays open): a client that trickles its header (slowloris) is
    /// disconnected instead of holding a connection forever.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body, from when the server starts reading
    /// it (for `POST /appends`, each line from its first byte): a client that trickles its body
    /// is answered `408 body_read_timeout` and disconnected instead of holding a connection
    /// and a buffer forever.
    pub body_read_timeout: Duration,
}

/// Default [`ServerLimits::connections_max`].
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default [`ServerLimits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default [`ServerLimits::body_read_timeout`]: the largest body the default limits accept
/// (a 16 MiB batch in base64 with its JSON, about 43 MiB) arrives in it at 1 MB/s.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            store: Limits::DEFAULT,
            heartbeat: Duration::from_secs(15),
            connections_max: CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: BODY_READ_TIMEOUT_DEFAULT,
        }
    }
}

impl ServerLimits {
    /// Largest request body accepted: a full batch in base64 (4/3 of its bytes) plus JSON framing
    /// per event. Bodies beyond this are refused before they are read in full.
    pub fn body_bytes_max(&self) -> usize {
        self.store.batch_bytes_max / 3 * 4 + self.store.batch_events_max * 2048 + (64 << 10)
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// Limits.
    pub limits: ServerLimits,
    /// Turns `true` when the server shuts down: subscriptions end with a final message.
    pub closing: watch::Sender<bool>,
    /// Who may do what.
    pub auth: Arc<crate::auth::Auth>,
    /// The metric families.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The consumer groups (`/subscriptions`), when the server runs them.
    pub groups: Option<eventfold_groups::Groups>,
    /// Events encoded once for all live subscriptions.
    pub encoded: Arc<crate::encoded::EncodedEvents>,
    /// The one reader of the log for every live subscription.
    pub live: crate::live::Hub,
    /// When this state was made: the server's start, for `GET /stats`.
    pub started: std::time::Instant,
    /// Measures the bytes the store holds on disk, when the server knows how (`GET /stats`).
    pub stored_bytes: Option<StoredBytes>,
    /// Takes the consistent cut of `GET /backup`, when the server's stores can be backed up
    /// online (the embedded engine).
    pub backup: Option<BackupSource>,
    /// Runs a scavenge of the event store (`POST /scavenge`), when the store can be scavenged
    /// (the embedded engine).
    pub scavenge: Option<ScavengeSource>,
    /// Where the server's scavenges stand (`GET /scavenge`).
    pub scavenge_status: Arc<std::sync::Mutex<eventfold_protocol::scavenge::ScavengeStatus>>,
    /// The subject keys of `DELETE /subjects/{subject}/key`, when `store` crypto-shreds with
    /// them (an `eventfold_shred::Shredding` over the same key store).
    pub subject_keys: Option<Arc<dyn eventfold_shred::SubjectKeys>>,
}

/// Runs a scavenge of the event store to its end (a blocking call), telling `progress` after
/// each segment (segments looked at, of how many, the report so far); `Ok(None)` when another
/// scavenge of the store is running.
pub type ScavengeSource = Arc<
    dyn Fn(
            &mut dyn FnMut(u64, u64, &eventfold_protocol::scavenge::ScavengeReport),
        )
            -> eventfold_core::StoreResult<Option<eventfold_protocol::scavenge::ScavengeReport>>
        + Send
        + Sync,
>;

/// Measures the bytes a store holds on disk (a blocking call: it may walk a directory).
pub type StoredBytes = Arc<dyn Fn() -> std::io::Result<u64> + Send + Sync>;

/// Takes a consistent cut of the server's stores for `GET /backup` (a blocking call): the
/// consumer-group state store first, then the events, so that no group state in the backup
/// refers to an event beyond its cut.
pub type BackupSource = Arc<dyn Fn() -> std::io::Result<Vec<BackupPart>> + Send + Sync>;

/// One store's part of a backup.
pub struct BackupPart {
    /// Its directory in the archive: `""` (the events),
    /// [`eventfold_protocol::backup::GROUPS_DIR`] or [`eventfold_protocol::backup::KEYS_DIR`].
    pub dir: &'static str,
    /// The position the next event after the cut gets.
    pub next_position: u64,
    /// Event records before the cut.
    pub events: u64,
    /// Its files: name, length, and a reader of exactly that many bytes.
    pub files: Vec<(String, u64, Box<dyn std::io::Read + Send>)>,
}

impl std::fmt::Debug for BackupPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupPart")
            .field("dir", &self.dir)
            .field("next_position", &self.next_position)
            .field("events", &self.events)
            .field("files", &self.files.len())
            .finish()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `store` with the given limits.
    pub fn new(store: Arc<dyn EventStore>, limits: ServerLimits) -> Self {
        AppState {
            store,
            limits,
            closing: watch::channel(false).0,
            auth: Arc::new(crate::auth::Auth::none()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            groups: None,
            encoded: Arc::new(crate::encoded::EncodedEvents::new()),
            live: crate::live::Hub::default(),
            started: std::time::Instant::now(),
            stored_bytes: None,
            backup: None,
            scavenge: None,
            scavenge_status: Arc::default(),
            subject_keys: None,
        }
    }

    /// Serves consumer groups from `groups`, and makes them report how each delivery ended to
    /// this state's metrics (replacing the observer of another state over the same groups).
    pub fn with_groups(mut self, groups: eventfold_groups::Groups) -> Self {
        let metrics = self.metrics.clone();
        groups.observe_deliveries(Arc::new(move |e| metrics.delivery_ended(e)));
        self.groups = Some(groups);
        self
    }

    /// Reports the store's size on disk in `GET /stats` with `measure` (run on a blocking
    /// thread).
    pub fn with_stored_bytes(mut self, measure: StoredBytes) -> Self {
        self.stored_bytes = Some(measure);
        self
    }

    /// Serves `GET /backup` from the cuts `source` takes.
    pub fn with_backup(mut self, source: BackupSource) -> Self {
        self.backup = Some(source);
        self
    }

    /// Serves `POST /scavenge` with `source`.
    pub fn with_scavenge(mut self, source: ScavengeSource) -> Self {
        self.scavenge = Some(source);
        self
    }

    /// Serves `DELETE /subjects/{subject}/key` from `keys`: the key store the state's store
    /// (an `eventfold_shred::Shredding`) seals with.
    pub fn with_subject_keys(mut self, keys: Arc<dyn eventfold_shred::SubjectKeys>) -> Self {
        self.subject_keys = Some(keys);
        self
    }

    /// Requires the given tokens.
    pub fn with_auth(mut self, auth: crate::auth::Auth) -> Self {
        self.auth = Arc::new(auth);
        self
    }
}
