//! Which store an example runs on, as its command line says: the embedded engine (the
//! default), or PostgreSQL with `--store postgres://user@host:port/database`. Either way the
//! domain code is handed an `Arc<dyn EventStore>` and does not know which.

use anyhow::{Context as _, bail};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};

/// The store an example's command line chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreArg {
    /// No `--store`: the embedded engine (the example says where its data lives).
    Embedded,
    /// `--store postgres://…` (or `postgresql://…`): the PostgreSQL event store at that URL.
    Postgres(String),
}

impl StoreArg {
    /// Parses the example's arguments (without the program name): nothing, or
    /// `--store postgres://…`. Anything else is an error with `program`'s usage.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        program: &str,
    ) -> anyhow::Result<StoreArg> {
        let usage = || format!("usage: {program} [--store postgres://user@host:port/database]");
        let mut args = args.into_iter();
        match (args.next().as_deref(), args.next(), args.next()) {
            (None, _, _) => Ok(StoreArg::Embedded),
            (Some("--store"), Some(url), None)
                if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                Ok(StoreArg::Postgres(url))
            }
            (Some("--store"), Some(_), None) => bail!(
                "--store takes a PostgreSQL URL (postgres://…); leave it out for the embedded \
                 engine\n{}",
                usage()
            ),
            _ => bail!("{}", usage()),
        }
    }
}

/// Opens the PostgreSQL event store at `url` (its tables in schema `eventfold`, created when
/// missing). The error does not repeat the URL, which may hold a password.
pub async fn open_postgres(url: &str) -> anyhow::Result<PostgresStore> {
    PostgresStore::connect(url, PostgresOptions::default())
        .await
        .context(
            "cannot open the PostgreSQL store given with --store: check that PostgreSQL runs \
             at that address, that the database exists and that the user may create tables in it",
        )
}
