//! A registration saga: a user registers → a player profile is created → the player is assigned
//! to the default league → a welcome email goes out → the registration is marked complete.
//!
//! Every step is a command the [`RegistrationSaga`] sends to a service ([`Services`], a
//! [`CommandSender`]); each service records its result as an event (`ProfileCreated`,
//! `LeagueAssigned`, `LeagueAssignmentFailed`, …), which the saga reacts to. When a step fails
//! the saga compensates:
//!
//! - the league is full (`LeagueAssignmentFailed`) → delete the profile, mark the registration
//!   failed;
//! - the profile is not confirmed within [`RegistrationSaga::profile_timeout`] → delete the
//!   profile (in case it is created late), mark the registration failed;
//! - a service refuses a command outright → the same compensation.
//!
//! The services append their events with the command's id as the event id, so a command the
//! saga manager sends again after a crash (delivery is at least once) is an idempotent append,
//! and with the command's context, so every event of one registration shares its correlation id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{
    EventStore, ExpectedRevision, ReadStream, StoreError, StreamName, SubscribeFrom,
};
use eventfold::{
    Codec, CommandSender, Context, DomainEvent, Effects, Envelope, Saga, SagaCommand, SendError,
    Upcasters, encode_event,
};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A user asked to register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The registration (the saga instance).
    pub registration_id: String,
    /// The player's name.
    pub name: String,
    /// Where the welcome email goes.
    pub email: String,
}

/// Refers to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The registration.
    pub registration_id: String,
}

/// The player was put in a league.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeagueAssigned {
    /// The registration.
    pub registration_id: String,
    /// The league.
    pub league: String,
}

/// A step failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailed {
    /// The registration.
    pub registration_id: String,
    /// Why.
    pub reason: String,
}

/// What happens during a registration.
#[derive(Clone, Debug, PartialEq, Eq, DomainEvent)]
#[event(prefix = "registration.")]
pub enum RegistrationEvent {
    /// `registration.user_registered`, in `registration-{id}`.
    UserRegistered(UserRegistered),
    /// `registration.profile_created`, in `profile-{id}`.
    ProfileCreated(Step),
    /// `registration.profile_deleted` (compensation), in `profile-{id}`.
    ProfileDeleted(Step),
    /// `registration.league_assigned`, in `league-{league}`.
    LeagueAssigned(LeagueAssigned),
    /// `registration.league_assignment_failed`, in `registration-{id}`.
    LeagueAssignmentFailed(StepFailed),
    /// `registration.welcome_email_sent`, in `email-{id}`.
    WelcomeEmailSent(Step),
    /// `registration.completed`, in `registration-{id}`.
    Completed(Step),
    /// `registration.failed`, in `registration-{id}`.
    Failed(StepFailed),
}

impl RegistrationEvent {
    /// The registration the event belongs to.
    pub fn registration_id(&self) -> &str {
        match self {
            RegistrationEvent::UserRegistered(e) => &e.registration_id,
            RegistrationEvent::ProfileCreated(e)
            | RegistrationEvent::ProfileDeleted(e)
            | RegistrationEvent::WelcomeEmailSent(e)
            | RegistrationEvent::Completed(e) => &e.registration_id,
            RegistrationEvent::LeagueAssigned(e) => &e.registration_id,
            RegistrationEvent::LeagueAssignmentFailed(e) | RegistrationEvent::Failed(e) => {
                &e.registration_id
            }
        }
    }
}

/// The commands the saga sends; each names its registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationCommand {
    /// Create the player profile.
    CreateProfile {
        /// The player's name.
        name: String,
    },
    /// Put the player in `league`.
    AssignLeague {
        /// The league.
        league: String,
    },
    /// Send the welcome email.
    SendWelcomeEmail {
        /// The address.
        email: String,
    },
    /// Compensation: delete the profile.
    DeleteProfile,
    /// Mark the registration complete.
    MarkCompleted,
    /// Mark the registration failed.
    MarkFailed {
        /// Why.
        reason: String,
    },
}

/// Where a registration is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Nothing happened yet.
    #[default]
    New,
    /// Waiting for the profile.
    CreatingProfile,
    /// Waiting for the league.
    AssigningLeague,
    /// Waiting for the email.
    Welcoming,
    /// Done.
    Completed,
    /// Failed and compensated.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The saga's state of one registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Where it is.
    pub stage: Stage,
    /// The player's email.
    pub email: String,
    /// Whether a profile was created (and must be deleted on failure).
    pub profile_created: bool,
}

/// The name of the profile timeout.
pub const PROFILE_TIMEOUT: &str = "profile";

/// The registration process. Pure: it decides, the [`eventfold::SagaManager`] stores, sends
/// and fires timeouts.
#[derive(Clone, Debug)]
pub struct RegistrationSaga {
    /// The league new players join.
    pub default_league: String,
    /// How long the profile service may take to confirm.
    pub profile_timeout: Duration,
}

impl Default for RegistrationSaga {
    fn default() -> Self {
        RegistrationSaga {
            default_league: "rookies".to_owned(),
            profile_timeout: Duration::from_secs(30),
        }
    }
}

impl RegistrationSaga {
    /// Fails the registration: deletes the profile (always: it may still be created late,
    /// and deleting a missing profile does nothing), marks it failed, completes.
    fn compensate(
        &self,
        r: &mut Registration,
        reason: String,
        fx: &mut Effects<RegistrationCommand>,
    ) {
        fx.cancel(PROFILE_TIMEOUT)
            .send(RegistrationCommand::DeleteProfile)
            .send(RegistrationCommand::MarkFailed {
                reason: reason.clone(),
            })
            .complete();
        r.profile_created = false;
        r.stage = Stage::Failed { reason };
    }
}

impl Saga for RegistrationSaga {
    const NAME: &'static str = "registration";
    type Event = RegistrationEvent;
    type State = Registration;
    type Command = RegistrationCommand;

    fn instance_id(&self, event: &Envelope<RegistrationEvent>) -> Option<String> {
        Some(event.event.registration_id().to_owned())
    }

    fn react(
        &self,
        r: &mut Registration,
        event: &Envelope<RegistrationEvent>,
        fx: &mut Effects<RegistrationCommand>,
    ) {
        use RegistrationEvent as E;
        match (&event.event, &r.stage) {
            (E::UserRegistered(u), Stage::New) => {
                r.stage = Stage::CreatingProfile;
                r.email = u.email.clone();
                fx.send(RegistrationCommand::CreateProfile {
                    name: u.name.clone(),
                })
                .schedule(PROFILE_TIMEOUT, self.profile_timeout);
            }
            (E::ProfileCreated(_), Stage::CreatingProfile) => {
                r.stage = Stage::AssigningLeague;
                r.profile_created = true;
                fx.cancel(PROFILE_TIMEOUT)
                    .send(RegistrationCommand::AssignLeague {
                        league: self.default_league.clone(),
                    });
            }
            (E::LeagueAssigned(_), Stage::AssigningLeague) => {
                r.stage = Stage::Welcoming;
                fx.send(RegistrationCommand::SendWelcomeEmail {
                    email: r.email.clone(),
                });
            }
            (E::LeagueAssignmentFailed(f), Stage::AssigningLeague) => {
                self.compensate(r, format!("league assignment failed: {}", f.reason), fx);
            }
            (E::WelcomeEmailSent(_), Stage::Welcoming) => {
                r.stage = Stage::Completed;
                fx.send(RegistrationCommand::MarkCompleted).complete();
            }
            // Anything else (a late or repeated event) changes nothing.
            _ => {}
        }
    }

    fn on_timeout(&self, r: &mut Registration, name: &str, fx: &mut Effects<RegistrationCommand>) {
        if name == PROFILE_TIMEOUT && r.stage == Stage::CreatingProfile {
            let reason = format!(
                "the profile was not created within {:?}",
                self.profile_timeout
            );
            self.compensate(r, reason, fx);
        }
    }

    fn on_command_failed(
        &self,
        r: &mut Registration,
        command: &RegistrationCommand,
        reason: &str,
        fx: &mut Effects<RegistrationCommand>,
    ) {
        match command {
            // A failed compensation or marking cannot be compensated: it is logged by the
            // manager and needs an operator.
            RegistrationCommand::DeleteProfile
            | RegistrationCommand::MarkFailed { .. }
            | RegistrationCommand::MarkCompleted => {
                tracing::error!(?command, reason, "registration bookkeeping failed");
            }
            _ => self.compensate(r, format!("{command:?} failed: {reason}"), fx),
        }
    }
}

/// The step services: profile, league, email and registration bookkeeping, as simple command
/// handlers that append their result events to the store. The league holds at most
/// `league_capacity` players; the profile service never answers for the names in
/// [`Services::stall_profiles_of`] (to show the timeout).
#[derive(Clone)]
pub struct Services {
    store: Arc<dyn EventStore>,
    league_capacity: u64,
    stalled: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("league_capacity", &self.league_capacity)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Services on `store`, leagues holding `league_capacity` players.
    pub fn new(store: Arc<dyn EventStore>, league_capacity: u64) -> Self {
        Services {
            store,
            league_capacity,
            stalled: Arc::default(),
        }
    }

    /// The profile service takes `CreateProfile` for `name` but never creates it.
    pub fn stall_profiles_of(&self, name: &str) {
        self.stalled.lock().insert(name.to_owned());
    }

    async fn players_in(&self, league: &StreamName) -> Result<u64, StoreError> {
        match self.store.stream_info(league).await {
            Ok(info) => Ok(info.event_count),
            Err(StoreError::StreamNotFound { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    async fn record(
        &self,
        command: &SagaCommand<RegistrationCommand>,
        stream: String,
        event: RegistrationEvent,
    ) -> Result<(), SendError> {
        let stream = StreamName::new(stream).map_err(|e| SendError::Rejected(e.to_string()))?;
        let new = encode_event(&event, Codec::Json, &command.context)
            .map_err(|e| SendError::Rejected(e.to_string()))?
            .with_id(command.id);
        self.store
            .append(&stream, ExpectedRevision::Any, vec![new])
            .await
            .map_err(|e| SendError::Unavailable(e.into()))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl CommandSender<RegistrationCommand> for Services {
    async fn send(&self, c: &SagaCommand<RegistrationCommand>) -> Result<(), SendError> {
        use RegistrationCommand as C;
        let id = c.instance.clone();
        let step = || Step {
            registration_id: id.clone(),
        };
        match &c.command {
            C::CreateProfile { name } => {
                if self.stalled.lock().contains(name) {
                    return Ok(());
                }
                let e = RegistrationEvent::ProfileCreated(step());
                self.record(c, format!("profile-{id}"), e).await
            }
            C::DeleteProfile => {
                let e = RegistrationEvent::ProfileDeleted(step());
                self.record(c, format!("profile-{id}"), e).await
            }
            C::AssignLeague { league } => {
                let stream = StreamName::new(format!("league-{league}"))
                    .map_err(|e| SendError::Rejected(e.to_string()))?;
                let players = self
                    .players_in(&stream)
                    .await
                    .map_err(|e| SendError::Unavailable(e.into()))?;
                if players >= self.league_capacity {
                    let e = RegistrationEvent::LeagueAssignmentFailed(StepFailed {
                        registration_id: id.clone(),
                        reason: format!("league {league} is full ({players} players)"),
                    });
                    return self.record(c, format!("registration-{id}"), e).await;
                }
                let e = RegistrationEvent::LeagueAssigned(LeagueAssigned {
                    registration_id: id.clone(),
                    league: league.clone(),
                });
                self.record(c, stream.as_str().to_owned(), e).await
            }
            C::SendWelcomeEmail { .. } => {
                let e = RegistrationEvent::WelcomeEmailSent(step());
                self.record(c, format!("email-{id}"), e).await
            }
            C::MarkCompleted => {
                let e = RegistrationEvent::Completed(step());
                self.record(c, format!("registration-{id}"), e).await
            }
            C::MarkFailed { reason } => {
                let e = RegistrationEvent::Failed(StepFailed {
                    registration_id: id.clone(),
                    reason: reason.clone(),
                });
                self.record(c, format!("registration-{id}"), e).await
            }
        }
    }
}

/// Starts a registration: appends `UserRegistered` to a new stream `registration-{id}`.
pub async fn register(
    store: &dyn EventStore,
    registration_id: &str,
    name: &str,
    email: &str,
    context: &Context,
) -> anyhow::Result<()> {
    let event = RegistrationEvent::UserRegistered(UserRegistered {
        registration_id: registration_id.to_owned(),
        name: name.to_owned(),
        email: email.to_owned(),
    });
    let stream = StreamName::new(format!("registration-{registration_id}"))?;
    store
        .append(
            &stream,
            ExpectedRevision::NoStream,
            vec![encode_event(&event, Codec::Json, context)?],
        )
        .await?;
    Ok(())
}

/// How a registration ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed.
    Completed,
    /// Failed, with why.
    Failed(String),
}

/// Waits (live, on the registration's stream) until the registration completes or fails.
pub async fn outcome(store: &dyn EventStore, registration_id: &str) -> anyhow::Result<Outcome> {
    let stream = StreamName::new(format!("registration-{registration_id}"))?;
    let mut events = store.subscribe_stream(&stream, SubscribeFrom::Start);
    let upcasters = Upcasters::new();
    while let Some(recorded) = events.next().await {
        match upcasters.decode::<RegistrationEvent>(recorded?)?.event {
            RegistrationEvent::Completed(_) => return Ok(Outcome::Completed),
            RegistrationEvent::Failed(f) => return Ok(Outcome::Failed(f.reason)),
            _ => {}
        }
    }
    anyhow::bail!("the subscription to {stream} ended")
}

/// Every event of the process whose correlation id is `correlation_id`, in order: type and
/// stream. Reads `$all` (fine for an example; a real system would index by correlation id).
pub async fn history(
    store: &dyn EventStore,
    correlation_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut from = eventfold::core::ReadFrom::Start;
    loop {
        let page = store
            .read_all(eventfold::core::ReadAll::forward(1000).from(from))
            .await?;
        for e in &page.events {
            let correlated = e
                .metadata
                .get("correlation_id")
                .and_then(|v| v.as_str())
                .is_some_and(|c| c == correlation_id);
            if correlated && RegistrationEvent::knows(e.event_type.as_str()) {
                out.push((
                    e.event_type.as_str().to_owned(),
                    e.stream.as_str().to_owned(),
                ));
            }
        }
        match page.next {
            Some(next) => from = eventfold::core::ReadFrom::At(next),
            None => return Ok(out),
        }
    }
}

/// Reads one stream's event types (for tests and the example's output).
pub async fn stream_types(store: &dyn EventStore, stream: &str) -> anyhow::Result<Vec<String>> {
    let stream = StreamName::new(stream)?;
    match store.read_stream(&stream, ReadStream::forward(1000)).await {
        Ok(slice) => Ok(slice
            .events
            .iter()
            .map(|e| e.event_type.as_str().to_owned())
            .collect()),
        Err(StoreError::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
