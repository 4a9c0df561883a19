//! A bank account on the embedded engine: open, credit, debit, a debit refused for lack of
//! funds, and the balance as it was earlier.
//!
//! ```text
//! cargo run -p eventfold-examples --example bank_account [-- --data DIR]
//! ```
//!
//! Without `--data` the store lives in a temporary directory removed at exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use eventfold::core::{EventStore, ReadStream, Timestamp};
use eventfold::{Context, RepositoryError, Upcasters};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::bank_account::{AccountError, AccountEvent, Bank, Money};

const ACCOUNT: &str = "alice-checking";

fn data_dir() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => Ok(None),
        (Some("--data"), Some(dir), None) => Ok(Some(PathBuf::from(dir))),
        _ => bail!("usage: bank_account [--data DIR]"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let temp;
    let dir = match data_dir()? {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().context("create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let engine = Engine::open(&dir, EngineOptions::default())
        .with_context(|| format!("open the event store in {}", dir.display()))?;
    println!("event store: {}", dir.display());
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let story = run(store).await;
    engine.shutdown();
    story
}

async fn run(store: Arc<dyn EventStore>) -> anyhow::Result<()> {
    let bank = Bank::new(store.clone());
    // Everything this story does shares one correlation id, stamped on every event.
    let ctx = Context::with_correlation_id("bank-story");

    match bank.open(ACCOUNT, "Alice", &ctx).await {
        Ok(()) => println!("opened {ACCOUNT} for Alice"),
        Err(RepositoryError::Rejected(AccountError::AlreadyOpen { owner })) => {
            println!("{ACCOUNT} is already open for {owner} (from an earlier run); continuing");
        }
        Err(e) => return Err(e.into()),
    }
    let balance = bank
        .credit(ACCOUNT, Money::units(100), "salary", &ctx)
        .await?;
    println!("credit  100.00 salary     -> balance {balance}");
    let balance = bank
        .debit(ACCOUNT, Money::cents(3_050), "groceries", &ctx)
        .await?;
    println!("debit    30.50 groceries  -> balance {balance}");

    let after_groceries = Timestamp::now();
    // Commit timestamps have microsecond resolution; keep the next ones clearly later.
    tokio::time::sleep(Duration::from_millis(5)).await;

    match bank
        .debit(ACCOUNT, Money::units(1_000), "new laptop", &ctx)
        .await
    {
        Err(RepositoryError::Rejected(e @ AccountError::InsufficientFunds { .. })) => {
            println!("debit  1000.00 new laptop -> refused: {e}");
        }
        Ok(balance) => bail!("a debit above the balance was accepted (balance now {balance})"),
        Err(e) => return Err(e.into()),
    }
    let balance = bank
        .credit(ACCOUNT, Money::cents(4_225), "refund", &ctx)
        .await?;
    println!("credit   42.25 refund     -> balance {balance}");

    let now = bank
        .balance(ACCOUNT)
        .await?
        .context("the account is open")?;
    let then = bank
        .balance_at(ACCOUNT, after_groceries)
        .await?
        .context("the account was open then")?;
    let before = bank.balance_at(ACCOUNT, Timestamp(0)).await?;
    println!("balance now: {now}");
    println!("balance right after the groceries: {then}");
    println!(
        "balance at 1970-01-01: {}",
        before.map_or_else(|| "no account yet".to_owned(), |b| b.to_string())
    );

    println!("statement of {ACCOUNT}:");
    let stream = bank.accounts().stream_name(ACCOUNT)?;
    let events = store
        .read_stream(&stream, ReadStream::forward(1_000))
        .await?
        .events;
    let upcasters = Upcasters::new();
    for recorded in events {
        let envelope = upcasters.decode::<AccountEvent>(recorded)?;
        let line = match &envelope.event {
            AccountEvent::Opened(e) => format!("opened for {}", e.owner),
            AccountEvent::Credited(e) => {
                format!("{:>9}  {}", format!("+{}", e.amount), e.description)
            }
            AccountEvent::Debited(e) => {
                format!("{:>9}  {}", format!("-{}", e.amount), e.description)
            }
        };
        println!(
            "  #{:<3} {line}  (correlation {})",
            envelope.revision.value(),
            envelope.correlation_id().unwrap_or("-")
        );
    }
    Ok(())
}
