//! Databases for tests (feature `testing`): every test that needs PostgreSQL creates a fresh
//! database with [`TestDb::create`] and the database is dropped, with any connection left to
//! it, when the [`TestDb`] is dropped. The one helper of the workspace's tests (this crate's,
//! the CLI's, the examples'); not part of the store.
//!
//! PostgreSQL is expected at 127.0.0.1:5432 as user `postgres` with trust authentication. When
//! it is unreachable, [`TestDb::create`] prints why and returns `None`, so the test skips,
//! unless `EVENTFOLD_REQUIRE_SERVICES=1`, in which case it panics and the test fails.

use tokio_postgres::{Client, NoTls};

use crate::{PostgresOptions, PostgresStore};

/// The maintenance database the test databases are created from and dropped through.
const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3";

/// Whether the environment asks for the services to be there (`EVENTFOLD_REQUIRE_SERVICES=1`):
/// then a test must fail, not skip, when PostgreSQL is unreachable.
pub fn services_required() -> bool {
    std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A connection to the maintenance database `postgres`, its connection driven by a task of
/// the current runtime.
pub async fn admin() -> Result<Client, tokio_postgres::Error> {
    connect(ADMIN).await
}

async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database created for one test (named `eventfold_test_` and a random UUID), dropped with
/// `DROP DATABASE … WITH (FORCE)` when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// A fresh database, or `None` (skip, with the reason printed) when PostgreSQL is
    /// unreachable and [`services_required`] is false.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is unreachable and [`services_required`], or when it is reachable but
    /// refuses to create the database.
    pub async fn create() -> Option<TestDb> {
        let client = match admin().await {
            Ok(c) => c,
            Err(e) if services_required() => {
                panic!("PostgreSQL is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
            }
            Err(e) => {
                eprintln!("skipping: PostgreSQL is unreachable at 127.0.0.1:5432: {e}");
                return None;
            }
        };
        let name = format!("eventfold_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
        Some(TestDb { name })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL, as `--store` and [`PostgresStore::connect`] take it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// A plain connection to the database (to look at its tables), driven by a task of the
    /// current runtime.
    pub async fn client(&self) -> Result<Client, tokio_postgres::Error> {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} connect_timeout=3",
            self.name
        ))
        .await
    }

    /// A store on the database with `options`.
    ///
    /// # Panics
    ///
    /// When the store cannot connect.
    pub async fn store(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect(&self.url(), options)
            .await
            .unwrap_or_else(|e| panic!("connect the store to the test database: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the test's runtime, where blocking on another is refused: drop
        // the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = admin().await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
            .map_err(|e| e.to_string())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}
