//! The registration saga: in the harness (no store, no clock), then end to end on the
//! embedded engine with the step services.

use std::sync::Arc;
use std::time::Duration;

use eventfold::core::EventStore;
use eventfold::testing::SagaHarness;
use eventfold::{Context, ManualClock, SagaManager};
use eventfold_examples::registration_saga::{
    LeagueAssigned, Outcome, Registration, RegistrationCommand as C, RegistrationEvent as E,
    RegistrationSaga, Services, Stage, Step, StepFailed, UserRegistered, history, outcome,
    register, stream_types,
};
use tokio::task::JoinHandle;

use crate::support::engine_in;

fn registered(id: &str) -> E {
    E::UserRegistered(UserRegistered {
        registration_id: id.into(),
        name: "Ana".into(),
        email: "ana@example.com".into(),
    })
}

fn step(id: &str) -> Step {
    Step {
        registration_id: id.into(),
    }
}

#[test]
fn each_confirmed_step_leads_to_the_next_command() {
    let mut saga = SagaHarness::new(RegistrationSaga::default());
    let r = saga.when(registered("r1"));
    assert_eq!(r.commands(), [C::CreateProfile { name: "Ana".into() }]);
    assert_eq!(r.scheduled_names(), ["profile"]);

    let r = saga.when(E::ProfileCreated(step("r1")));
    assert_eq!(r.cancelled, ["profile"]);
    assert_eq!(
        r.commands(),
        [C::AssignLeague {
            league: "rookies".into()
        }]
    );
    let r = saga.when(E::LeagueAssigned(LeagueAssigned {
        registration_id: "r1".into(),
        league: "rookies".into(),
    }));
    assert_eq!(
        r.commands(),
        [C::SendWelcomeEmail {
            email: "ana@example.com".into()
        }]
    );
    let r = saga.when(E::WelcomeEmailSent(step("r1")));
    assert_eq!(r.commands(), [C::MarkCompleted]);
    assert_eq!(r.completed, ["r1"]);
    // A late repeat after completion changes nothing.
    assert!(saga.when(E::ProfileCreated(step("r1"))).sent.is_empty());
    assert_eq!(saga.state("r1").unwrap().stage, Stage::Completed);
}

#[test]
fn a_full_league_a_late_profile_and_a_refused_command_all_compensate() {
    let mut saga = SagaHarness::new(RegistrationSaga::default())
        .given([registered("r1"), E::ProfileCreated(step("r1"))]);
    let r = saga.when(E::LeagueAssignmentFailed(StepFailed {
        registration_id: "r1".into(),
        reason: "full".into(),
    }));
    assert!(
        matches!(&r.commands()[..], [C::DeleteProfile, C::MarkFailed { reason }] if reason.contains("full"))
    );
    assert!(saga.is_completed("r1"));

    // No profile within 30 s.
    let mut saga = SagaHarness::new(RegistrationSaga::default()).given([registered("r2")]);
    assert!(saga.advance(Duration::from_secs(29)).sent.is_empty());
    let r = saga.advance(Duration::from_secs(1));
    assert_eq!(r.fired, [("r2".to_owned(), "profile".to_owned())]);
    assert!(matches!(
        &r.commands()[..],
        [C::DeleteProfile, C::MarkFailed { .. }]
    ));
    // The profile arriving afterwards is ignored: the registration is over.
    assert!(saga.when(E::ProfileCreated(step("r2"))).sent.is_empty());

    // The email service refuses the address.
    let mut saga = SagaHarness::new(RegistrationSaga::default())
        .given([registered("r3"), E::ProfileCreated(step("r3"))]);
    let r = saga.when(E::LeagueAssigned(LeagueAssigned {
        registration_id: "r3".into(),
        league: "rookies".into(),
    }));
    let email = r.sent[0].clone();
    let r = saga.command_fails(&email, "mailbox does not exist");
    assert!(matches!(
        &r.commands()[..],
        [C::DeleteProfile, C::MarkFailed { .. }]
    ));
    assert!(matches!(
        saga.state("r3").unwrap(),
        Registration { stage: Stage::Failed { reason }, .. } if reason.contains("mailbox")
    ));
}

struct Running {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    services: Services,
    clock: ManualClock,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The engine in a temporary directory, the services (league of `capacity`) and a saga
/// manager on a manual clock.
fn start(capacity: u64) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(engine_in(dir.path()));
    let services = Services::new(store.clone(), capacity);
    let clock = ManualClock::starting_now();
    let manager = SagaManager::new(RegistrationSaga::default(), store.clone(), services.clone())
        .with_clock(Arc::new(clock.clone()));
    let task = tokio::spawn(async move {
        let Err(e) = manager.run().await;
        panic!("the saga manager stopped: {e}");
    });
    Running {
        _dir: dir,
        store,
        services,
        clock,
        task,
    }
}

async fn finished(store: &dyn EventStore, id: &str) -> Outcome {
    tokio::time::timeout(Duration::from_secs(10), outcome(store, id))
        .await
        .expect("the registration finishes within 10 s")
        .unwrap()
}

#[tokio::test]
async fn a_registration_runs_every_step_under_one_correlation_id() {
    let app = start(10);
    let ctx = Context::new().user("ana");
    register(&*app.store, "r1", "Ana", "ana@example.com", &ctx)
        .await
        .unwrap();
    assert_eq!(finished(&*app.store, "r1").await, Outcome::Completed);
    let steps: Vec<String> = history(&*app.store, &ctx.correlation_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        steps,
        [
            "registration.user_registered",
            "registration.profile_created",
            "registration.league_assigned",
            "registration.welcome_email_sent",
            "registration.completed",
        ]
    );
    let snap = SagaManager::<RegistrationSaga>::read_instance(&*app.store, "r1")
        .await
        .unwrap()
        .unwrap();
    assert!(snap.completed && snap.timeouts.is_empty());
}

#[tokio::test]
async fn a_full_league_deletes_the_profile_and_fails_the_registration() {
    let app = start(1);
    register(&*app.store, "r1", "Ana", "ana@example.com", &Context::new())
        .await
        .unwrap();
    assert_eq!(finished(&*app.store, "r1").await, Outcome::Completed);

    register(&*app.store, "r2", "Ben", "ben@example.com", &Context::new())
        .await
        .unwrap();
    let Outcome::Failed(reason) = finished(&*app.store, "r2").await else {
        panic!("the second registration must fail");
    };
    assert!(reason.contains("league rookies is full"), "{reason}");
    assert_eq!(
        stream_types(&*app.store, "profile-r2").await.unwrap(),
        [
            "registration.profile_created",
            "registration.profile_deleted"
        ]
    );
    assert_eq!(
        stream_types(&*app.store, "league-rookies")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        stream_types(&*app.store, "email-r2")
            .await
            .unwrap()
            .is_empty(),
        "no welcome email for a failed registration"
    );
}

#[tokio::test]
async fn a_profile_not_created_in_time_is_compensated_when_the_timeout_fires() {
    let app = start(10);
    app.services.stall_profiles_of("Cid");
    register(&*app.store, "r1", "Cid", "cid@example.com", &Context::new())
        .await
        .unwrap();
    // Wait until the timeout is stored, then let 30 s pass on the saga's clock.
    for _ in 0..1000 {
        let snap = SagaManager::<RegistrationSaga>::read_instance(&*app.store, "r1")
            .await
            .unwrap();
        if snap.is_some_and(|s| !s.timeouts.is_empty() && s.pending_commands == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.clock.advance(Duration::from_secs(31));
    let Outcome::Failed(reason) = finished(&*app.store, "r1").await else {
        panic!("the registration must fail");
    };
    assert!(reason.contains("not created within 30s"), "{reason}");
    assert_eq!(
        stream_types(&*app.store, "profile-r1").await.unwrap(),
        ["registration.profile_deleted"]
    );
}
