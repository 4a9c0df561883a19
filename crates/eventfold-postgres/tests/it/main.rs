//! PostgreSQL read models on the real embedded engine and a real PostgreSQL, and the PostgreSQL
//! checkpoint and processed-id stores. Skipped (with the
//! reason printed) when PostgreSQL is unreachable, unless `EVENTFOLD_REQUIRE_SERVICES=1`.

mod processed;
mod read_model;

use eventfold_postgres::connect;
use eventfold_postgres::tokio_postgres::Client;

const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3";

/// A client in a fresh schema of its own, or `None` (skip) when PostgreSQL is unreachable.
pub(crate) async fn client_in(schema: Option<&str>) -> Option<(Client, String)> {
    let client = match connect(PG).await {
        Ok(c) => c,
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
        }
        Err(e) => {
            eprintln!("skipping: PostgreSQL is unreachable at 127.0.0.1:5432: {e}");
            return None;
        }
    };
    let schema = match schema {
        Some(s) => s.to_owned(),
        None => {
            let s = format!("ef_test_{}", uuid::Uuid::new_v4().simple());
            client
                .batch_execute(&format!("CREATE SCHEMA {s}"))
                .await
                .unwrap();
            s
        }
    };
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    Some((client, schema))
}

/// Drops a schema `client_in` created, with its tables.
pub(crate) async fn drop_schema(schema: &str) {
    if let Some((c, _)) = client_in(Some("public")).await {
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }
}
