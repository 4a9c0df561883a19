//! The benchmark's domain: a bank account (the aggregate the command rows drive) and a
//! balances read model, in memory and in SQLite (what the rebuild rows fill).

use std::collections::HashMap;

use eventfold::core::StreamName;
use eventfold::{
    Aggregate, BoxError, DomainEvent, Envelope, MemoryProjection, Projection, SnapshotAggregate,
};
use eventfold_sqlite::SqliteProjection;
use eventfold_sqlite::rusqlite::Transaction;
use serde::{Deserialize, Serialize};

/// The aggregate's category: its streams are `account-{id}`.
pub const CATEGORY: &str = "account";

/// Money put into an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    /// Amount in cents.
    pub amount: u64,
}

/// The account's events: small JSON documents (`{"amount":1}`) plus the correlation and
/// causation ids the framework adds to every event's metadata.
#[derive(Debug, Clone, PartialEq, DomainEvent)]
#[event(prefix = "account.")]
pub enum AccountEvent {
    /// `account.deposited`
    Deposited(Deposited),
}

/// What can be asked of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCommand {
    /// Put `amount` cents in.
    Deposit(u64),
}

/// Why an account refused a command.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A zero amount.
    #[error("a deposit must be at least 1 cent")]
    ZeroAmount,
}

/// A bank account: its balance and how many events built it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Balance in cents.
    pub balance: u64,
    /// Events applied.
    pub events: u64,
}

impl Aggregate for Account {
    const CATEGORY: &'static str = CATEGORY;
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited(d) => self.balance = self.balance.saturating_add(d.amount),
        }
        self.events += 1;
    }

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Deposit(0) => Err(AccountError::ZeroAmount),
            AccountCommand::Deposit(amount) => {
                Ok(vec![AccountEvent::Deposited(Deposited { amount })])
            }
        }
    }
}

impl SnapshotAggregate for Account {
    const SNAPSHOT_VERSION: u32 = 1;
}

/// The change an event makes to a balance.
fn delta(event: &AccountEvent) -> i64 {
    match event {
        AccountEvent::Deposited(d) => i64::try_from(d.amount).unwrap_or(i64::MAX),
    }
}

/// The read model of the rebuild rows: the balance of every account, by stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balances;

impl Projection for Balances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "bench_balances"
    }
}

/// The in-memory balances: per stream, the balance and the events applied.
pub type BalanceMap = HashMap<StreamName, (i64, u64)>;

impl MemoryProjection for Balances {
    type State = BalanceMap;

    fn apply(
        &self,
        state: &mut BalanceMap,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            apply_to_map(state, &e.stream, &e.event);
        }
        Ok(())
    }
}

/// What [`Balances`] does to the in-memory map for one event (shared with the breakdown row
/// that applies without the processor).
pub fn apply_to_map(state: &mut BalanceMap, stream: &StreamName, event: &AccountEvent) {
    match state.get_mut(stream) {
        Some((balance, n)) => {
            *balance += delta(event);
            *n += 1;
        }
        None => {
            state.insert(stream.clone(), (delta(event), 1));
        }
    }
}

impl SqliteProjection for Balances {
    fn migrate(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS bench_balances (
                 account TEXT PRIMARY KEY NOT NULL,
                 balance INTEGER NOT NULL,
                 events INTEGER NOT NULL
             ) WITHOUT ROWID",
        )?;
        Ok(())
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        // One upsert per event (not one per account per batch): the per-event cost a
        // projection written the plain way pays.
        let mut upsert = tx.prepare_cached(
            "INSERT INTO bench_balances (account, balance, events) VALUES (?1, ?2, 1)
             ON CONFLICT (account) DO UPDATE
             SET balance = balance + excluded.balance, events = events + 1",
        )?;
        for e in events {
            upsert.execute((e.stream.as_str(), delta(&e.event)))?;
        }
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.execute("DELETE FROM bench_balances", ())?;
        Ok(())
    }
}
