//! The PostgreSQL store's integration tests: the whole conformance suite and the ordering
//! proof, each test in a database of its own, created here and dropped after. Skipped (with
//! the reason printed) when PostgreSQL is unreachable at 127.0.0.1:5432, unless
//! `EVENTFOLD_REQUIRE_SERVICES=1`.

mod conformance;
mod faults;
mod group;
mod ordering;
mod schema;

use eventfold_store_postgres::{PostgresOptions, PostgresStore};

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3";

/// A database created for one test, dropped (with any connection left to it) when this is
/// dropped.
#[derive(Debug)]
pub(crate) struct TestDb {
    pub(crate) name: String,
}

impl TestDb {
    /// A fresh database, or `None` (skip, with the reason printed) when PostgreSQL is
    /// unreachable.
    pub(crate) async fn create() -> Option<TestDb> {
        let client = match admin().await {
            Ok(c) => c,
            Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
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
            .expect("create the test database");
        Some(TestDb { name })
    }

    /// The URL of the database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// A store on the database with `options`.
    pub(crate) async fn store(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect(&self.url(), options)
            .await
            .expect("connect the store to the test database")
    }
}

async fn admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(ADMIN, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            rt.block_on(async {
                let client = admin().await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
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
