//! The framework unchanged on the PostgreSQL event store: the orders example, given
//! `--store postgres://…` for a database created for the test (and dropped after), runs end to
//! end with the same outcome as on the embedded engine, and what it wrote is in the database.
//! Skipped, with the reason printed, when PostgreSQL is unreachable, unless
//! `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::sync::Arc;

use eventfold::core::{EventStore, ReadStream};
use eventfold_examples::orders::demo::{self, DemoOutcome};
use eventfold_examples::store::{StoreArg, open_postgres};
use eventfold_store_postgres::testing::TestDb;

use crate::support::{read, temp_store};

/// The parts of an outcome that do not depend on the store (no ids, times or positions).
#[allow(clippy::type_complexity)]
pub(crate) fn comparable(
    o: &DemoOutcome,
) -> (
    Vec<(String, String)>,
    Vec<(String, u64)>,
    (u64, u64),
    Vec<(String, u64, u64)>,
    Vec<(String, u32, String)>,
    Vec<(String, u64, u64, u64)>,
) {
    (
        o.emails
            .iter()
            .map(|e| (e.to.clone(), e.subject.clone()))
            .collect(),
        o.reserved.clone().into_iter().collect(),
        (o.analytics.orders, o.analytics.revenue_cents),
        o.orders_of_ann
            .iter()
            .map(|s| (s.order_id.clone(), s.total_cents, s.units))
            .collect(),
        o.dead_letters
            .iter()
            .map(|d| (d.original.stream.to_string(), d.attempts, d.error.clone()))
            .collect(),
        o.stats
            .iter()
            .map(|(n, s)| (n.clone(), s.handled, s.dead_lettered, s.failed_attempts))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_with_store_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let arg = StoreArg::parse(["--store".to_owned(), db.url()], "orders").unwrap();
    assert_eq!(arg, StoreArg::Postgres(db.url()));
    let StoreArg::Postgres(url) = arg else {
        unreachable!("asserted above")
    };
    let store: Arc<dyn EventStore> = Arc::new(open_postgres(&url).await.unwrap());
    let mut report = Vec::new();
    let on_postgres = demo::run(store, &mut report).await.unwrap();
    let report = String::from_utf8(report).unwrap();

    // What the orders add up to (see the demo's orders): o-0999 (version 1: BOOK-1, TEA-3, no
    // price), o-1001 ann 2 × BOOK-1, o-1002 bob MUG-7 + 3 × TEA-3, o-1003 ann POISON + MUG-7
    // (dead-lettered by the inventory), o-1004 ann 10 × TEA-3.
    let (emails, reserved, analytics, ann, letters, _) = comparable(&on_postgres);
    assert_eq!(emails.len(), 5, "{emails:?}");
    assert_eq!(
        reserved,
        [
            ("BOOK-1".to_owned(), 3),
            ("MUG-7".to_owned(), 1),
            ("TEA-3".to_owned(), 14)
        ]
    );
    assert_eq!(analytics, (5, 2500 + 2249 + 999 + 4500));
    let ann: Vec<&str> = ann.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ann, ["o-1004", "o-1003", "o-1001", "o-0999"]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].0.as_str(), letters[0].1), ("order-o-1003", 3));
    assert!(letters[0].2.contains("not in the catalogue"), "{letters:?}");
    assert!(
        report.contains("analytics: 5 orders, revenue 102.48"),
        "{report}"
    );

    // The same program on the embedded engine has the same outcome.
    let (_dir, engine) = temp_store();
    let on_engine = demo::run(engine, &mut std::io::sink()).await.unwrap();
    assert_eq!(comparable(&on_postgres), comparable(&on_engine));

    // What it wrote is in the database, as another process opening it finds it.
    let again: Arc<dyn EventStore> = Arc::new(open_postgres(&db.url()).await.unwrap());
    let letters = read(&*again, "deadletter-inventory", ReadStream::forward(10)).await;
    assert_eq!(letters.len(), 1);
    let reservation = read(&*again, "reservation-o-1004", ReadStream::forward(10)).await;
    assert_eq!(reservation.len(), 1);
    // The order ids are fixed: a second run on the same database says what to do.
    let err = demo::run(again, &mut std::io::sink()).await.unwrap_err();
    assert!(format!("{err:#}").contains("empty store"), "{err:#}");
}

#[test]
fn the_store_argument_is_postgres_or_nothing() {
    let parse = |args: &[&str]| StoreArg::parse(args.iter().map(|a| (*a).to_owned()), "orders");
    assert_eq!(parse(&[]).unwrap(), StoreArg::Embedded);
    assert_eq!(
        parse(&["--store", "postgresql://h/db"]).unwrap(),
        StoreArg::Postgres("postgresql://h/db".into())
    );
    let err = parse(&["--store", "redis://h"]).unwrap_err().to_string();
    assert!(
        err.contains("PostgreSQL URL") && err.contains("usage: orders"),
        "{err}"
    );
    let err = parse(&["--data", "x"]).unwrap_err().to_string();
    assert!(err.starts_with("usage: orders [--store"), "{err}");
    assert!(parse(&["--store"]).is_err());
    assert!(parse(&["--store", "postgres://h/db", "extra"]).is_err());
}
