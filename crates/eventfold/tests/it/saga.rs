//! Sagas on a store (in memory; the engine where it closes): a transfer between two accounts, debited then credited, with
//! a timeout on the debit and a refund when the credit is refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{EventId, EventStore, ExpectedRevision, StreamName};
use eventfold::testing::SagaHarness;
use eventfold::{
    CheckpointStore, Codec, CommandSender, Context, DomainEvent, Effects, Envelope, ManualClock,
    RetryPolicy, Saga, SagaCommand, SagaManager, SagaOptions, SagaSnapshot, SendError,
    StoreCheckpoints, encode_event,
};
use eventfold_engine::Engine;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::support::{engine_in, memory_store, sample, wait_for_sample};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Requested {
    transfer_id: String,
    from: String,
    to: String,
    amount: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TransferRef {
    transfer_id: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "transfer.")]
enum TransferEvent {
    Requested(Requested),
    Debited(TransferRef),
    Credited(TransferRef),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Command {
    Debit { account: String, amount: u64 },
    Credit { account: String, amount: u64 },
    Refund { account: String, amount: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
enum Phase {
    #[default]
    New,
    Debiting,
    Crediting,
    Done,
    Refunded,
    TimedOut,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Transfer {
    phase: Phase,
    from: String,
    to: String,
    amount: u64,
}

#[derive(Default)]
struct TransferSaga;

const DEBIT_TIMEOUT: Duration = Duration::from_secs(30);

impl Saga for TransferSaga {
    const NAME: &'static str = "transfer";
    type Event = TransferEvent;
    type State = Transfer;
    type Command = Command;

    fn instance_id(&self, event: &Envelope<TransferEvent>) -> Option<String> {
        Some(match &event.event {
            TransferEvent::Requested(r) => r.transfer_id.clone(),
            TransferEvent::Debited(r) | TransferEvent::Credited(r) => r.transfer_id.clone(),
        })
    }

    fn react(&self, t: &mut Transfer, event: &Envelope<TransferEvent>, fx: &mut Effects<Command>) {
        match (&event.event, &t.phase) {
            (TransferEvent::Requested(r), Phase::New) => {
                *t = Transfer {
                    phase: Phase::Debiting,
                    from: r.from.clone(),
                    to: r.to.clone(),
                    amount: r.amount,
                };
                fx.send(Command::Debit {
                    account: t.from.clone(),
                    amount: t.amount,
                })
                .schedule("debit", DEBIT_TIMEOUT);
            }
            (TransferEvent::Debited(_), Phase::Debiting) => {
                t.phase = Phase::Crediting;
                fx.cancel("debit").send(Command::Credit {
                    account: t.to.clone(),
                    amount: t.amount,
                });
            }
            (TransferEvent::Credited(_), Phase::Crediting) => {
                t.phase = Phase::Done;
                fx.complete();
            }
            _ => {}
        }
    }

    fn on_timeout(&self, t: &mut Transfer, name: &str, fx: &mut Effects<Command>) {
        if name == "debit" && t.phase == Phase::Debiting {
            // The debit may still land: give the money back to be safe.
            refund(t, Phase::TimedOut, fx);
        }
    }

    fn on_command_failed(
        &self,
        t: &mut Transfer,
        command: &Command,
        _reason: &str,
        fx: &mut Effects<Command>,
    ) {
        if let Command::Credit { .. } = command {
            refund(t, Phase::Refunded, fx);
        }
    }
}

/// Ends the transfer in `phase`, giving the money back.
fn refund(t: &mut Transfer, phase: Phase, fx: &mut Effects<Command>) {
    t.phase = phase;
    fx.send(Command::Refund {
        account: t.from.clone(),
        amount: t.amount,
    })
    .complete();
}

/// The bank: a real command handler that appends the result events to the store (with the
/// command's id, so a redelivered command is an idempotent append) and reports every command it
/// received (and the id of every attempt). Account `slow` never answers a debit; crediting
/// `closed` is refused, crediting `unreachable` is never deliverable; while `down` is set
/// debits and credits are unavailable.
#[derive(Clone)]
struct Bank {
    store: Arc<dyn EventStore>,
    received: mpsc::Sender<SagaCommand<Command>>,
    down: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<Vec<EventId>>>,
}

#[async_trait::async_trait]
impl CommandSender<Command> for Bank {
    async fn send(&self, c: &SagaCommand<Command>) -> Result<(), SendError> {
        self.attempts.lock().push(c.id);
        if *self.down.lock() && !matches!(c.command, Command::Refund { .. }) {
            return Err(SendError::Unavailable("the bank is down".into()));
        }
        self.received
            .send(c.clone())
            .await
            .map_err(|e| SendError::Unavailable(e.into()))?;
        let transfer_id = c.instance.clone();
        let event = match &c.command {
            Command::Debit { account, .. } if account == "slow" => return Ok(()),
            Command::Debit { .. } => TransferEvent::Debited(TransferRef { transfer_id }),
            Command::Credit { account, .. } if account == "unreachable" => {
                return Err(SendError::Unavailable("no route to the account".into()));
            }
            Command::Credit { account, .. } if account == "closed" => {
                return Err(SendError::Rejected(format!("account {account} is closed")));
            }
            Command::Credit { .. } => TransferEvent::Credited(TransferRef { transfer_id }),
            Command::Refund { .. } => return Ok(()),
        };
        let new = encode_event(&event, Codec::Json, &c.context)
            .map_err(|e| SendError::Unavailable(e.into()))?
            .with_id(c.id);
        let stream = StreamName::new(format!("account-{}", c.instance)).expect("valid");
        self.store
            .append(&stream, ExpectedRevision::Any, vec![new])
            .await
            .map_err(|e| SendError::Unavailable(e.into()))?;
        Ok(())
    }
}

struct World {
    /// The engine and its directory, for the worlds that run on it.
    engine: Option<(tempfile::TempDir, Engine)>,
    store: Arc<dyn EventStore>,
    clock: ManualClock,
    bank: Bank,
    received: mpsc::Receiver<SagaCommand<Command>>,
}

impl World {
    /// A world on the in-memory store.
    fn new() -> Self {
        World::on(memory_store(), None)
    }

    /// A world on the embedded engine, which the test may shut down.
    fn on_engine() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(dir.path());
        World::on(Arc::new(engine.clone()), Some((dir, engine)))
    }

    fn on(store: Arc<dyn EventStore>, engine: Option<(tempfile::TempDir, Engine)>) -> Self {
        let (tx, received) = mpsc::channel(64);
        World {
            engine,
            bank: Bank {
                store: store.clone(),
                received: tx,
                down: Arc::new(Mutex::new(false)),
                attempts: Arc::default(),
            },
            store,
            clock: ManualClock::starting_now(),
            received,
        }
    }

    /// A manager on the world's store, bank and clock, sending per `send_retry` with
    /// millisecond delays.
    fn manager(&self, send_retry: RetryPolicy) -> SagaManager<TransferSaga> {
        let send_retry = send_retry
            .initial_delay(Duration::from_millis(1))
            .max_delay(Duration::from_millis(5));
        SagaManager::new(TransferSaga, self.store.clone(), self.bank.clone())
            .with_clock(Arc::new(self.clock.clone()))
            .with_options(SagaOptions::default().send_retry(send_retry))
    }

    fn start(&self) -> JoinHandle<()> {
        let manager = self.manager(RetryPolicy::new(3));
        tokio::spawn(async move {
            let Err(e) = manager.run().await;
            panic!("the saga manager stopped: {e}");
        })
    }

    async fn request(&self, transfer_id: &str, from: &str, to: &str, ctx: &Context) {
        let event = TransferEvent::Requested(Requested {
            transfer_id: transfer_id.into(),
            from: from.into(),
            to: to.into(),
            amount: 100,
        });
        let new = encode_event(&event, Codec::Json, ctx).unwrap();
        let stream = StreamName::new(format!("transfer-{transfer_id}")).unwrap();
        self.store
            .append(&stream, ExpectedRevision::Any, vec![new])
            .await
            .unwrap();
    }

    async fn next_command(&mut self) -> SagaCommand<Command> {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a command within 10 s")
            .expect("the bank is alive")
    }

    /// The next command, which must be a debit.
    async fn next_debit(&mut self) -> SagaCommand<Command> {
        let debit = self.next_command().await;
        assert!(matches!(debit.command, Command::Debit { .. }), "{debit:?}");
        debit
    }

    /// The next command, which must be the refund of a transfer from `account`.
    async fn next_refund(&mut self, account: &str) -> SagaCommand<Command> {
        let refund = self.next_command().await;
        let expected = Command::Refund {
            account: account.into(),
            amount: 100,
        };
        assert_eq!(refund.command, expected, "{refund:?}");
        refund
    }

    /// The stored instance once `ready` holds for it (polled for up to 10 s).
    async fn instance_when(
        &self,
        transfer_id: &str,
        ready: impl Fn(&SagaSnapshot<Transfer>) -> bool,
    ) -> SagaSnapshot<Transfer> {
        for _ in 0..1000 {
            let snap = SagaManager::<TransferSaga>::read_instance(&*self.store, transfer_id)
                .await
                .unwrap();
            if let Some(s) = snap.filter(&ready) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("transfer {transfer_id} never got to the expected state");
    }

    async fn completed(&self, transfer_id: &str) -> Transfer {
        self.instance_when(transfer_id, |s| s.completed && s.pending_commands == 0)
            .await
            .state
    }
}

/// A started world where transfer `id` from `from` to `to` was requested and debited.
async fn transfer_debited(id: &str, from: &str, to: &str) -> (World, JoinHandle<()>) {
    let mut w = World::new();
    let task = w.start();
    w.request(id, from, to, &Context::new()).await;
    w.next_debit().await;
    (w, task)
}

async fn stop(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn a_transfer_debits_then_credits_with_the_correlation_id_carried_through() {
    let mut w = World::new();
    let task = w.start();
    let ctx = Context::with_correlation_id("req-7");
    w.request("t1", "alice", "bob", &ctx).await;

    let debit = w.next_command().await;
    assert_eq!(
        debit.command,
        Command::Debit {
            account: "alice".into(),
            amount: 100
        }
    );
    assert_eq!(debit.instance, "t1");
    assert_eq!(debit.context.correlation_id, "req-7");
    let request = w
        .store
        .read_stream(
            &StreamName::new("transfer-t1").unwrap(),
            eventfold::core::ReadStream::forward(1),
        )
        .await
        .unwrap();
    assert_eq!(debit.context.causation_id, request.events[0].id.to_string());

    let credit = w.next_command().await;
    assert_eq!(
        credit.command,
        Command::Credit {
            account: "bob".into(),
            amount: 100
        }
    );
    // The credit was caused by the `debited` event, which the bank wrote with the debit's id.
    assert_eq!(credit.context.correlation_id, "req-7");
    assert_eq!(credit.context.causation_id, debit.id.to_string());
    assert_ne!(credit.id, debit.id);

    assert_eq!(w.completed("t1").await.phase, Phase::Done);
    let snap = SagaManager::<TransferSaga>::read_instance(&*w.store, "t1")
        .await
        .unwrap()
        .unwrap();
    assert!(snap.timeouts.is_empty(), "the debit timeout was cancelled");
    stop(task).await;
}

#[tokio::test]
async fn a_refused_credit_is_compensated_by_a_refund() {
    let (mut w, task) = transfer_debited("t2", "alice", "closed").await;
    let credit = w.next_command().await;
    assert!(matches!(credit.command, Command::Credit { .. }));
    let refund = w.next_refund("alice").await;
    assert_eq!(refund.context.causation_id, credit.id.to_string());
    assert_eq!(refund.context.correlation_id, credit.context.correlation_id);
    assert_eq!(w.completed("t2").await.phase, Phase::Refunded);
    stop(task).await;
}

#[tokio::test]
async fn a_command_that_stays_undeliverable_counts_as_failed() {
    let (mut w, task) = transfer_debited("t3", "alice", "unreachable").await;
    // The credit is never deliverable: three attempts, then the compensation.
    let mut credits = 0;
    let refund = loop {
        let c = w.next_command().await;
        match c.command {
            Command::Credit { .. } => credits += 1,
            Command::Refund { .. } => break c,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(credits, 3, "three attempts to credit");
    assert!(refund.context.causation_id != refund.context.correlation_id);
    assert_eq!(w.completed("t3").await.phase, Phase::Refunded);
    stop(task).await;
}

#[tokio::test]
async fn a_timeout_fires_when_the_clock_passes_its_deadline() {
    let (mut w, task) = transfer_debited("t4", "slow", "bob").await;
    let snap = w.instance_when("t4", |s| s.pending_commands == 0).await;
    assert_eq!(snap.timeouts.len(), 1);
    assert_eq!(snap.timeouts[0].0, "debit");

    w.clock.advance(DEBIT_TIMEOUT - Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        w.received.try_recv().is_err(),
        "nothing before the deadline"
    );

    w.clock.advance(Duration::from_secs(2));
    w.next_refund("slow").await;
    assert_eq!(w.completed("t4").await.phase, Phase::TimedOut);
    stop(task).await;
}

#[tokio::test]
async fn a_timeout_scheduled_before_a_restart_fires_after_it_and_nothing_is_sent_twice() {
    let (mut w, task) = transfer_debited("t5", "slow", "bob").await;
    // Wait until the delivery is recorded, then stop the manager.
    w.instance_when("t5", |s| s.pending_commands == 0).await;
    stop(task).await;

    // The deadline passes while no manager runs, and the checkpoint is lost too (as if the
    // process died before saving it): the restart reads the request again.
    w.clock.advance(DEBIT_TIMEOUT + Duration::from_secs(5));
    StoreCheckpoints::new(w.store.clone())
        .reset(&SagaManager::<TransferSaga>::checkpoint_name())
        .await
        .unwrap();
    let task = w.start();
    // The first command after the restart is the timeout's, not the debit again.
    w.next_refund("slow").await;
    assert_eq!(w.completed("t5").await.phase, Phase::TimedOut);

    // A new transfer still flows, and the debit of t5 never came again.
    w.request("t6", "alice", "bob", &Context::new()).await;
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let c = w.next_command().await;
        assert_eq!(c.instance, "t6", "{c:?}");
        assert!(seen.insert(c.id));
    }
    w.completed("t6").await;
    assert!(w.received.try_recv().is_err());
    stop(task).await;
}

#[tokio::test]
async fn commands_recorded_before_a_crash_are_sent_after_the_restart_with_the_same_id() {
    let mut w = World::new();
    *w.bank.down.lock() = true;
    // Many attempts: the manager is still retrying the debit when it is stopped.
    let manager = w.manager(RetryPolicy::forever());
    let task = tokio::spawn(async move {
        let _ = manager.run().await;
    });
    w.request("t7", "alice", "bob", &Context::new()).await;
    w.instance_when("t7", |s| s.pending_commands == 1).await;
    // The snapshot is stored before the first attempt: wait until the manager is retrying.
    tokio::time::timeout(Duration::from_secs(10), async {
        while w.bank.attempts.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the manager retries the debit within 10 s");
    task.abort();
    let _ = task.await;
    let attempted = w.bank.attempts.lock().clone();
    assert!(
        attempted.iter().all(|id| *id == attempted[0]),
        "{attempted:?}"
    );

    *w.bank.down.lock() = false;
    let task = w.start();
    let debit = w.next_debit().await;
    assert_eq!(
        debit.id, attempted[0],
        "the debit recorded before the crash keeps its id after the restart"
    );
    let credit = w.next_command().await;
    assert!(matches!(credit.command, Command::Credit { .. }));
    assert_eq!(w.completed("t7").await.phase, Phase::Done);
    stop(task).await;
}

#[test]
fn the_harness_shows_commands_timeouts_and_compensation_without_a_store() {
    let requested = TransferEvent::Requested(Requested {
        transfer_id: "t1".into(),
        from: "alice".into(),
        to: "closed".into(),
        amount: 5,
    });
    let mut saga = SagaHarness::new(TransferSaga);
    let r = saga.when(requested.clone());
    assert_eq!(
        r.commands(),
        [Command::Debit {
            account: "alice".into(),
            amount: 5
        }]
    );
    assert_eq!(r.scheduled_names(), ["debit"]);
    assert_eq!(r.scheduled[0].1.0 - saga.now().0, 30_000_000);
    assert_eq!(saga.state("t1").unwrap().phase, Phase::Debiting);

    let r = saga.when(TransferEvent::Debited(TransferRef {
        transfer_id: "t1".into(),
    }));
    assert_eq!(r.cancelled, ["debit"]);
    let credit = r.sent[0].clone();
    let r = saga.command_fails(&credit, "account closed");
    assert_eq!(
        r.commands(),
        [Command::Refund {
            account: "alice".into(),
            amount: 5
        }]
    );
    assert_eq!(r.completed, ["t1"]);
    assert_eq!(r.sent[0].context.causation_id, credit.id.to_string());

    // A timeout: nothing at 29 s, the refund at 30 s.
    let mut saga = SagaHarness::new(TransferSaga).given([TransferEvent::Requested(Requested {
        transfer_id: "t2".into(),
        from: "slow".into(),
        to: "bob".into(),
        amount: 1,
    })]);
    assert!(saga.advance(Duration::from_secs(29)).fired.is_empty());
    let r = saga.advance(Duration::from_secs(1));
    assert_eq!(r.fired, [("t2".to_owned(), "debit".to_owned())]);
    assert!(matches!(r.commands()[..], [Command::Refund { .. }]));
    assert!(saga.is_completed("t2"));
    assert_eq!(saga.state("t2").unwrap().phase, Phase::TimedOut);
}

#[tokio::test]
async fn the_manager_stops_with_a_clear_error_when_the_store_closes() {
    let w = World::on_engine();
    let run = tokio::spawn(w.manager(RetryPolicy::new(3)).run());
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.engine
        .as_ref()
        .expect("a world on the engine")
        .1
        .shutdown();
    let Err(err) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the manager stops within 10 s")
        .unwrap();
    assert!(matches!(err, eventfold::SagaError::Store { .. }), "{err}");
    assert!(err.to_string().contains("transfer"), "{err}");
}

/// The saga's step is a `process` span, the child of the event's context; a timeout that fires
/// after a restart continues that step's trace, from the context stored with the instance.
/// Breaking it: a step span without the event's context, or a snapshot that does not keep the
/// step's context (the timeout then starts a new trace), fails the trace checks.
#[tokio::test]
async fn a_saga_step_and_a_timeout_after_a_restart_continue_the_events_trace() {
    use opentelemetry::trace::{SpanId, SpanKind, TraceId};
    let _ = crate::trace::exporter();
    let root = eventfold::core::TraceContext::parse(
        Some("00-5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a-1111111111111111-01"),
        None,
    )
    .unwrap()
    .unwrap();
    let trace_id = TraceId::from_bytes(root.parent.trace_id());
    let mut w = World::new();
    let task = w.start();
    w.request(
        "traced",
        "slow",
        "bob",
        &Context::new().with_trace(root.clone()),
    )
    .await;
    let debit = w.next_debit().await;
    let steps = crate::trace::spans_about("process saga-transfer", &root).await;
    assert_eq!(
        steps.len(),
        1,
        "one step span, the child of the event's context"
    );
    let step = &steps[0];
    assert_eq!(step.span_kind, SpanKind::Consumer);
    let debit_trace = debit.context.trace.expect("the debit carries the trace");
    assert_eq!(
        SpanId::from_bytes(debit_trace.parent.parent_id()),
        step.span_context.span_id(),
        "the command continues the step"
    );
    w.instance_when("traced", |s| s.pending_commands == 0).await;
    stop(task).await;

    // The deadline passes while no manager runs.
    w.clock.advance(DEBIT_TIMEOUT + Duration::from_secs(5));
    let task = w.start();
    let refund = w.next_refund("slow").await;
    let refund_trace = refund.context.trace.expect("the refund carries the trace");
    assert_eq!(
        TraceId::from_bytes(refund_trace.parent.trace_id()),
        trace_id,
        "the timeout continues the trace of the step that scheduled it"
    );
    let step_ctx = eventfold::trace::trace_context(&step.span_context).unwrap();
    let timeouts = crate::trace::spans_about("timeout saga-transfer", &step_ctx).await;
    assert_eq!(
        timeouts.len(),
        1,
        "the timeout's span is the child of the step's"
    );
    assert_eq!(
        SpanId::from_bytes(refund_trace.parent.parent_id()),
        timeouts[0].span_context.span_id()
    );
    stop(task).await;
}

#[tokio::test]
async fn a_fired_timeout_is_counted_and_no_longer_pending_in_the_framework_metrics() {
    let mut w = World::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventfold::FrameworkMetrics::new(&mut registry);
    let manager = w.manager(RetryPolicy::new(3)).with_metrics(metrics);
    let task = tokio::spawn(async move {
        let Err(e) = manager.run().await;
        panic!("the saga manager stopped: {e}");
    });
    w.request("t9", "slow", "bob", &Context::new()).await;
    w.next_debit().await;
    let pending = "eventfold_saga_timeouts_pending{saga=\"transfer\"}";
    let text = wait_for_sample(&registry, pending, 1.0).await;
    assert_eq!(
        sample(
            &text,
            "eventfold_saga_timeouts_fired_total{saga=\"transfer\"}"
        ),
        None,
        "nothing fired before the deadline: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "eventfold_consumer_events_processed_total{consumer=\"saga-transfer\",type=\"transfer.requested\"}"
        ),
        Some(1.0),
        "{text}"
    );

    w.clock.advance(DEBIT_TIMEOUT + Duration::from_secs(1));
    w.next_refund("slow").await;
    wait_for_sample(
        &registry,
        "eventfold_saga_timeouts_fired_total{saga=\"transfer\"}",
        1.0,
    )
    .await;
    wait_for_sample(&registry, pending, 0.0).await;
    stop(task).await;
}
