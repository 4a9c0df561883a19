//! A bank account: opened, credited and debited, its balance rebuilt from those events. A debit
//! above the balance is refused, and the balance at any past time can be asked for (a temporal
//! query: the events up to that time, folded).
//!
//! The aggregate ([`BankAccount`]) holds the rules; [`Bank`] is the service around a
//! [`Repository`] that a program (or an HTTP handler) calls.

use std::fmt;
use std::sync::Arc;

use eventfold::core::{EventStore, Timestamp};
use eventfold::{
    Aggregate, Context, DomainEvent, Repository, RepositoryError, SnapshotAggregate, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};

/// An amount of money in cents. Never negative: an account cannot be overdrawn.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// `cents` cents.
    pub const fn cents(cents: u64) -> Money {
        Money(cents)
    }

    /// Whole units (`Money::units(12)` is 12.00).
    pub const fn units(units: u64) -> Money {
        Money(units.saturating_mul(100))
    }

    /// The amount in cents.
    pub const fn as_cents(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}.{:02}", self.0 / 100, self.0 % 100))
    }
}

/// The account was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    /// Who holds it.
    pub owner: String,
}

/// Money came in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credited {
    /// How much.
    pub amount: Money,
    /// What for, as shown on the statement.
    pub description: String,
}

/// Money went out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debited {
    /// How much.
    pub amount: Money,
    /// What for, as shown on the statement.
    pub description: String,
}

/// What happens to an account.
#[derive(Clone, Debug, PartialEq, Eq, DomainEvent)]
#[event(prefix = "account.")]
pub enum AccountEvent {
    /// `account.opened`.
    Opened(AccountOpened),
    /// `account.credited`.
    Credited(Credited),
    /// `account.debited`.
    Debited(Debited),
}

/// What can be asked of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open it for `owner`.
    Open {
        /// Who holds it.
        owner: String,
    },
    /// Put money in.
    Credit {
        /// How much (more than zero).
        amount: Money,
        /// What for.
        description: String,
    },
    /// Take money out (at most the balance).
    Debit {
        /// How much (more than zero).
        amount: Money,
        /// What for.
        description: String,
    },
}

/// Why an account refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Credit or debit before the account was opened.
    #[error("the account is not open; open it first")]
    NotOpen,
    /// Opening an account twice.
    #[error("the account is already open (held by {owner})")]
    AlreadyOpen {
        /// Who holds it.
        owner: String,
    },
    /// A credit or debit of nothing.
    #[error("an amount must be more than 0.00")]
    ZeroAmount,
    /// A debit above the balance.
    #[error("cannot debit {requested}: the balance is only {balance}")]
    InsufficientFunds {
        /// The balance.
        balance: Money,
        /// The debit asked for.
        requested: Money,
    },
    /// A credit that would take the balance beyond what can be counted.
    #[error("a credit of {amount} would overflow the balance of {balance}")]
    BalanceOverflow {
        /// The balance.
        balance: Money,
        /// The credit asked for.
        amount: Money,
    },
}

/// The state of one account, rebuilt from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    /// Who holds it; `None` until it is opened.
    pub owner: Option<String>,
    /// What is in it.
    pub balance: Money,
}

impl Aggregate for BankAccount {
    const CATEGORY: &'static str = "account";
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened(e) => self.owner = Some(e.owner.clone()),
            AccountEvent::Credited(e) => {
                self.balance = Money(self.balance.0.saturating_add(e.amount.0));
            }
            AccountEvent::Debited(e) => {
                self.balance = Money(self.balance.0.saturating_sub(e.amount.0));
            }
        }
    }

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { owner } => match &self.owner {
                Some(current) => Err(AccountError::AlreadyOpen {
                    owner: current.clone(),
                }),
                None => Ok(vec![AccountEvent::Opened(AccountOpened { owner })]),
            },
            _ if self.owner.is_none() => Err(AccountError::NotOpen),
            AccountCommand::Credit { amount, .. } | AccountCommand::Debit { amount, .. }
                if amount == Money::ZERO =>
            {
                Err(AccountError::ZeroAmount)
            }
            AccountCommand::Credit {
                amount,
                description,
            } => {
                if self.balance.0.checked_add(amount.0).is_none() {
                    return Err(AccountError::BalanceOverflow {
                        balance: self.balance,
                        amount,
                    });
                }
                Ok(vec![AccountEvent::Credited(Credited {
                    amount,
                    description,
                })])
            }
            AccountCommand::Debit {
                amount,
                description,
            } => {
                if amount > self.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                Ok(vec![AccountEvent::Debited(Debited {
                    amount,
                    description,
                })])
            }
        }
    }
}

impl SnapshotAggregate for BankAccount {
    const SNAPSHOT_VERSION: u32 = 1;
}

/// Events between two snapshots of an account: a busy account loads its last snapshot and at
/// most this many events.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 50;

/// The errors of [`Bank`]: an [`AccountError`] when a rule refused, or a storage failure.
pub type BankError = RepositoryError<AccountError>;

/// The bank service: commands and queries on accounts, over any event store.
#[derive(Clone, Debug)]
pub struct Bank {
    accounts: Repository<BankAccount>,
}

impl Bank {
    /// A bank keeping its accounts in `store`, with a snapshot every
    /// [`SNAPSHOT_EVERY_EVENTS`] events.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Bank {
            accounts: Repository::new(store)
                .with_snapshots(SnapshotPolicy::every(SNAPSHOT_EVERY_EVENTS)),
        }
    }

    /// The repository underneath, for what this service does not wrap.
    pub fn accounts(&self) -> &Repository<BankAccount> {
        &self.accounts
    }

    /// Opens account `id` for `owner`.
    pub async fn open(&self, id: &str, owner: &str, context: &Context) -> Result<(), BankError> {
        self.accounts
            .execute(
                id,
                AccountCommand::Open {
                    owner: owner.to_owned(),
                },
                context,
            )
            .await?;
        Ok(())
    }

    /// Credits `amount` to account `id`; answers the new balance.
    pub async fn credit(
        &self,
        id: &str,
        amount: Money,
        description: &str,
        context: &Context,
    ) -> Result<Money, BankError> {
        let command = AccountCommand::Credit {
            amount,
            description: description.to_owned(),
        };
        self.balance_after(id, command, context).await
    }

    /// Debits `amount` from account `id`; answers the new balance. Refused with
    /// [`AccountError::InsufficientFunds`] when the balance is lower, even when another debit
    /// races this one: the repository decides again on the fresh balance.
    pub async fn debit(
        &self,
        id: &str,
        amount: Money,
        description: &str,
        context: &Context,
    ) -> Result<Money, BankError> {
        let command = AccountCommand::Debit {
            amount,
            description: description.to_owned(),
        };
        self.balance_after(id, command, context).await
    }

    /// Executes `command` on account `id`; the balance after it.
    async fn balance_after(
        &self,
        id: &str,
        command: AccountCommand,
        context: &Context,
    ) -> Result<Money, BankError> {
        let executed = self.accounts.execute(id, command, context).await?;
        Ok(executed.state.balance)
    }

    /// The balance of account `id` now; `None` when it is not open.
    pub async fn balance(&self, id: &str) -> Result<Option<Money>, BankError> {
        let account = self.accounts.load(id).await?.state;
        Ok(account.owner.map(|_| account.balance))
    }

    /// The balance of account `id` as it was at `time`; `None` when it was not open yet.
    pub async fn balance_at(&self, id: &str, time: Timestamp) -> Result<Option<Money>, BankError> {
        let account = self.accounts.load_as_of(id, time).await?.state;
        Ok(account.owner.map(|_| account.balance))
    }
}
