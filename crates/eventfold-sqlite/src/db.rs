use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{Position, Revision, StoreError};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction};

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The table of checkpoints, shared by [`crate::SqliteReadModel`] and
/// [`crate::SqliteCheckpoints`].
pub(crate) const CHECKPOINTS_DDL: &str = "CREATE TABLE IF NOT EXISTS eventfold_checkpoints (
    name TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID";

/// The table of per-stream revisions of read models fed from a broker, kept by
/// [`crate::SqliteReadModel`] as a [`eventfold::StreamReadModel`].
pub(crate) const STREAM_REVISIONS_DDL: &str =
    "CREATE TABLE IF NOT EXISTS eventfold_stream_revisions (
    name TEXT NOT NULL,
    stream TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (name, stream)
) WITHOUT ROWID";

/// Why a SQLite operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// Opening or configuring the database failed.
    #[error(
        "cannot open the SQLite database {path}: {source}; check that the directory exists and is writable"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A position does not fit SQLite's signed 64-bit integers.
    #[error("position {0} is beyond what SQLite's INTEGER holds (2^63 - 1)")]
    PositionRange(u64),
    /// A stored checkpoint is negative (the table was edited by hand).
    #[error(
        "the checkpoint of {name:?} is {value}, which is not a position; delete its row in eventfold_checkpoints to rebuild"
    )]
    BadCheckpoint {
        /// The consumer.
        name: String,
        /// The stored value.
        value: i64,
    },
    /// A revision does not fit SQLite's signed 64-bit integers.
    #[error("revision {0} is beyond what SQLite's INTEGER holds (2^63 - 1)")]
    RevisionRange(u64),
    /// A stored stream revision is negative (the table was edited by hand).
    #[error(
        "the revision of stream {stream:?} in read model {name:?} is {value}, which is not a revision; delete its row in eventfold_stream_revisions and rebuild the read model"
    )]
    BadRevision {
        /// The read model.
        name: String,
        /// The stream.
        stream: String,
        /// The stored value.
        value: i64,
    },
    /// The blocking task running the statement panicked.
    #[error("the SQLite task did not finish: {0}")]
    Task(String),
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Backend {
            code: "sqlite".into(),
            message: e.to_string(),
        }
    }
}

/// One connection to a SQLite database, shared (cheap to clone) and used on tokio's blocking
/// threads, one statement or transaction at a time. Opened in WAL mode with
/// `synchronous = NORMAL` (see the crate docs for why) and a busy timeout, so readers on other
/// connections to the same file do not block it.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.conn.lock().path().map(str::to_owned);
        f.debug_struct("Sqlite").field("path", &path).finish()
    }
}

impl Sqlite {
    /// Opens (or creates) the database at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Sqlite, SqliteError> {
        let path = path.as_ref().to_owned();
        run_blocking(move || {
            let open = |path: &Path| -> rusqlite::Result<Connection> {
                let conn = Connection::open(path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(conn)
            };
            let conn = open(&path).map_err(|source| SqliteError::Open { path, source })?;
            Ok(Sqlite::from_connection(conn))
        })
        .await
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Sqlite, SqliteError> {
        let conn = Connection::open_in_memory().map_err(|source| SqliteError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Ok(Sqlite::from_connection(conn))
    }

    /// Wraps a connection configured by the caller.
    pub fn from_connection(conn: Connection) -> Sqlite {
        Sqlite {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    /// Runs `f` with the connection on a blocking thread (queries of the read model, say).
    pub async fn call<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let conn = self.conn.clone();
        run_blocking(move || f(&mut conn.lock())).await
    }
}

async fn run_blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<SqliteError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SqliteError::Task(e.to_string()).into()),
    }
}

/// The checkpoint of `name`.
pub(crate) fn load_checkpoint(
    conn: &Connection,
    name: &str,
) -> Result<Option<Position>, SqliteError> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT position FROM eventfold_checkpoints WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    value
        .map(|v| {
            u64::try_from(v)
                .map(Position)
                .map_err(|_| SqliteError::BadCheckpoint {
                    name: name.to_owned(),
                    value: v,
                })
        })
        .transpose()
}

/// Writes the checkpoint of `name` in `tx`.
pub(crate) fn save_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    position: Position,
) -> Result<(), SqliteError> {
    let value = i64::try_from(position.0).map_err(|_| SqliteError::PositionRange(position.0))?;
    tx.prepare_cached(
        "INSERT INTO eventfold_checkpoints (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )?
    .execute(rusqlite::params![name, value])?;
    Ok(())
}

/// Forgets the checkpoint of `name` in `tx`.
pub(crate) fn delete_checkpoint(tx: &Transaction<'_>, name: &str) -> Result<(), SqliteError> {
    tx.prepare_cached("DELETE FROM eventfold_checkpoints WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}

/// The revision of the last event of `stream` applied by the read model `name`.
pub(crate) fn load_stream_revision(
    conn: &Connection,
    name: &str,
    stream: &str,
) -> Result<Option<Revision>, SqliteError> {
    let value: Option<i64> = conn
        .prepare_cached(
            "SELECT revision FROM eventfold_stream_revisions WHERE name = ?1 AND stream = ?2",
        )?
        .query_row([name, stream], |r| r.get(0))
        .optional()?;
    value
        .map(|v| {
            u64::try_from(v)
                .map(Revision)
                .map_err(|_| SqliteError::BadRevision {
                    name: name.to_owned(),
                    stream: stream.to_owned(),
                    value: v,
                })
        })
        .transpose()
}

/// Writes the revision of `stream` for the read model `name` in `tx`.
pub(crate) fn save_stream_revision(
    tx: &Transaction<'_>,
    name: &str,
    stream: &str,
    revision: Revision,
) -> Result<(), SqliteError> {
    let value = i64::try_from(revision.0).map_err(|_| SqliteError::RevisionRange(revision.0))?;
    tx.prepare_cached(
        "INSERT INTO eventfold_stream_revisions (name, stream, revision) VALUES (?1, ?2, ?3)
         ON CONFLICT (name, stream) DO UPDATE SET revision = excluded.revision",
    )?
    .execute(rusqlite::params![name, stream, value])?;
    Ok(())
}

/// Forgets every stream revision of the read model `name` in `tx`.
pub(crate) fn delete_stream_revisions(tx: &Transaction<'_>, name: &str) -> Result<(), SqliteError> {
    tx.prepare_cached("DELETE FROM eventfold_stream_revisions WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}
