use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{EventStore, Timestamp};
use eventfold::testing::AggregateTest;
use eventfold::{Context, RepositoryError};
use eventfold_examples::bank_account::{
    AccountCommand, AccountError, AccountEvent, AccountOpened, Bank, BankAccount, Credited,
    Debited, Money, SNAPSHOT_EVERY_EVENTS,
};

use crate::support::engine_in;

fn opened() -> AccountEvent {
    AccountEvent::Opened(AccountOpened {
        owner: "alice".into(),
    })
}

fn credited(cents: u64) -> AccountEvent {
    AccountEvent::Credited(Credited {
        amount: Money::cents(cents),
        description: "in".into(),
    })
}

fn debited(cents: u64) -> AccountEvent {
    AccountEvent::Debited(Debited {
        amount: Money::cents(cents),
        description: "out".into(),
    })
}

fn credit(cents: u64) -> AccountCommand {
    AccountCommand::Credit {
        amount: Money::cents(cents),
        description: "in".into(),
    }
}

fn debit(cents: u64) -> AccountCommand {
    AccountCommand::Debit {
        amount: Money::cents(cents),
        description: "out".into(),
    }
}

// ---- the rules, given/when/then ----

#[test]
fn a_debit_within_the_balance_is_accepted() {
    AggregateTest::<BankAccount>::given([opened(), credited(10_000), debited(2_500)])
        .when(debit(7_500))
        .then([debited(7_500)])
        .then_state(BankAccount {
            owner: Some("alice".into()),
            balance: Money::ZERO,
        });
}

#[test]
fn a_debit_above_the_balance_is_refused() {
    AggregateTest::<BankAccount>::given([opened(), credited(10_000), debited(2_500)])
        .when(debit(7_501))
        .then_error(AccountError::InsufficientFunds {
            balance: Money::cents(7_500),
            requested: Money::cents(7_501),
        });
}

#[test]
fn an_account_is_opened_once_and_used_only_when_open() {
    AggregateTest::<BankAccount>::given_no_events()
        .when(AccountCommand::Open {
            owner: "alice".into(),
        })
        .then([opened()]);
    AggregateTest::<BankAccount>::given([opened()])
        .when(AccountCommand::Open {
            owner: "bob".into(),
        })
        .then_error(AccountError::AlreadyOpen {
            owner: "alice".into(),
        });
    AggregateTest::<BankAccount>::given_no_events()
        .when(credit(100))
        .then_error(AccountError::NotOpen);
    AggregateTest::<BankAccount>::given([opened()])
        .when(credit(0))
        .then_error(AccountError::ZeroAmount);
    AggregateTest::<BankAccount>::given([opened(), credited(u64::MAX)])
        .when(credit(1))
        .then_error_matches(|e| matches!(e, AccountError::BalanceOverflow { .. }));
}

// ---- the service on the embedded engine ----

#[tokio::test]
async fn the_balance_is_rebuilt_from_events_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    {
        let engine = engine_in(dir.path());
        let bank = Bank::new(Arc::new(engine.clone()));
        bank.open("a-1", "alice", &ctx).await.unwrap();
        // Enough commands for a snapshot and events after it.
        for _ in 0..SNAPSHOT_EVERY_EVENTS + 10 {
            bank.credit("a-1", Money::cents(100), "in", &ctx)
                .await
                .unwrap();
        }
        let left = bank
            .debit("a-1", Money::cents(1_050), "out", &ctx)
            .await
            .unwrap();
        assert_eq!(left, Money::cents(4_950));
        engine.shutdown();
    }
    let bank = Bank::new(Arc::new(engine_in(dir.path())));
    assert_eq!(
        bank.balance("a-1").await.unwrap(),
        Some(Money::cents(4_950))
    );
    let loaded = bank.accounts().load("a-1").await.unwrap();
    assert!(loaded.snapshot_revision.is_some());
    assert!(loaded.events_applied < SNAPSHOT_EVERY_EVENTS);
    assert_eq!(bank.balance("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn a_refused_debit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(engine_in(dir.path()));
    let bank = Bank::new(store.clone());
    let ctx = Context::new();
    bank.open("a-1", "alice", &ctx).await.unwrap();
    bank.credit("a-1", Money::units(20), "in", &ctx)
        .await
        .unwrap();
    let err = bank
        .debit("a-1", Money::units(21), "out", &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: Money::units(20),
            requested: Money::units(21)
        })
    );
    assert_eq!(
        err.to_string(),
        "cannot debit 21.00: the balance is only 20.00"
    );
    assert_eq!(bank.balance("a-1").await.unwrap(), Some(Money::units(20)));
    let stream = bank.accounts().stream_name("a-1").unwrap();
    assert_eq!(store.stream_info(&stream).await.unwrap().event_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_debits_cannot_overdraw() {
    let dir = tempfile::tempdir().unwrap();
    let bank = Bank::new(Arc::new(engine_in(dir.path())));
    let ctx = Context::new();
    bank.open("a-1", "alice", &ctx).await.unwrap();
    bank.credit("a-1", Money::units(100), "in", &ctx)
        .await
        .unwrap();

    // Two debits of 60 race on 100: whatever the interleaving, one is refused.
    let (a, b) = tokio::join!(
        tokio::spawn({
            let (bank, ctx) = (bank.clone(), ctx.clone());
            async move { bank.debit("a-1", Money::units(60), "a", &ctx).await }
        }),
        tokio::spawn({
            let (bank, ctx) = (bank.clone(), ctx.clone());
            async move { bank.debit("a-1", Money::units(60), "b", &ctx).await }
        }),
    );
    let results = [a.unwrap(), b.unwrap()];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().any(|r| matches!(
        r,
        Err(RepositoryError::Rejected(AccountError::InsufficientFunds {
            requested,
            ..
        })) if *requested == Money::units(60)
    )));
    assert_eq!(bank.balance("a-1").await.unwrap(), Some(Money::units(40)));
}

#[tokio::test]
async fn the_balance_at_a_past_time() {
    let dir = tempfile::tempdir().unwrap();
    let bank = Bank::new(Arc::new(engine_in(dir.path())));
    let ctx = Context::new();
    let before_opening = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    bank.open("a-1", "alice", &ctx).await.unwrap();
    bank.credit("a-1", Money::units(100), "salary", &ctx)
        .await
        .unwrap();
    let after_salary = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    bank.debit("a-1", Money::units(30), "rent", &ctx)
        .await
        .unwrap();
    let after_rent = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    bank.credit("a-1", Money::units(5), "refund", &ctx)
        .await
        .unwrap();

    let at = |t| bank.balance_at("a-1", t);
    assert_eq!(at(before_opening).await.unwrap(), None);
    assert_eq!(at(after_salary).await.unwrap(), Some(Money::units(100)));
    assert_eq!(at(after_rent).await.unwrap(), Some(Money::units(70)));
    assert_eq!(at(Timestamp::now()).await.unwrap(), Some(Money::units(75)));
}
