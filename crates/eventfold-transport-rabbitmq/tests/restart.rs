//! The conformance suite's broker-restart case against the shared RabbitMQ on 127.0.0.1:5672:
//! RabbitMQ cannot easily be run privately, so this binary (which cargo runs alone, never next
//! to another test binary) restarts the broker's application with `rabbitmqctl stop_app` and
//! `rabbitmqctl start_app`. Quorum queues and persistent messages survive it.
//!
//! Restarting a shared broker disturbs whoever else uses it, so it happens only when
//! `EVENTFOLD_RABBITMQ_RESTART=1` (set by `.ci/run`); otherwise the test says why it skips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_transport::Transport;
use eventfold_transport_conformance::{Factory, cases};
use eventfold_transport_rabbitmq::{RabbitOptions, RabbitTransport};

/// How long RabbitMQ may take to accept connections again after `start_app`.
const START_WAIT: Duration = Duration::from_secs(60);

fn url() -> String {
    std::env::var("EVENTFOLD_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn options() -> RabbitOptions {
    RabbitOptions {
        expire_idle: Some(Duration::from_secs(600)),
    }
}

/// Why this run cannot restart the broker, if it cannot.
fn cannot_restart() -> Option<String> {
    if std::env::var("EVENTFOLD_RABBITMQ_RESTART").as_deref() != Ok("1") {
        return Some(
            "set EVENTFOLD_RABBITMQ_RESTART=1 to let this test restart the shared RabbitMQ \
             (rabbitmqctl stop_app/start_app)"
                .to_owned(),
        );
    }
    match std::process::Command::new("rabbitmqctl")
        .arg("status")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`rabbitmqctl status` failed ({s})")),
        Err(e) => Some(format!("rabbitmqctl cannot be run: {e}")),
    }
}

/// `rabbitmqctl {args}`, panicking with its output when it fails.
async fn rabbitmqctl(args: &'static [&'static str]) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
    })
    .await
    .expect("the rabbitmqctl task")
    .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until RabbitMQ takes connections and declares again.
async fn ready() {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(t) = RabbitTransport::connect(&url()).await
            && t.channel().await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RabbitMQ did not come back within {START_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One restart at a time: the tests of this binary run in parallel, the broker is one.
static RESTARTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the broker runs again even when a case panicked mid-restart.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_mid_run_loses_nothing_acknowledged() {
    if let Some(why) = cannot_restart() {
        eprintln!("skipping the RabbitMQ restart test: {why}");
        return;
    }
    let _one = RESTARTS.lock().await;
    let _start = StartOnDrop;
    let factory = Factory::new(
        || async {
            let t = RabbitTransport::connect_with(&url(), options())
                .await
                .unwrap_or_else(|e| panic!("RabbitMQ: {e}"));
            Some(Arc::new(t) as Arc<dyn Transport>)
        },
        Some(|| async {
            let started = Instant::now();
            rabbitmqctl(&["stop_app"]).await;
            rabbitmqctl(&["start_app"]).await;
            ready().await;
            eprintln!("RabbitMQ restarted in {:?}", started.elapsed());
        }),
    );
    cases::the_broker_restarted_mid_run_loses_nothing_acknowledged(&factory).await;
}

/// While RabbitMQ is stopped, a publish fails fast with a retryable error naming the URL (no
/// password); a subscriber waiting through the outage gets what is published once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_a_waiting_subscriber_resumes() {
    use eventfold_transport::{ConsumerGroup, Message, SubscribeSettings, Topic};

    if let Some(why) = cannot_restart() {
        eprintln!("skipping the RabbitMQ outage test: {why}");
        return;
    }
    let _one = RESTARTS.lock().await;
    let _start = StartOnDrop;
    let t = RabbitTransport::connect_with(&url(), options())
        .await
        .expect("connect");
    let topic = Topic::new(format!(
        "outage-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .unwrap();
    let g = ConsumerGroup::new("g").unwrap();
    let mut sub = t
        .subscribe(&topic, &g, &SubscribeSettings::default())
        .await
        .expect("subscribe");
    let message = |n: u32| Message {
        key: "k".into(),
        headers: vec![("ce_id".into(), format!("id-{n}"))],
        payload: vec![1, 2, 3],
    };
    let waiting = tokio::spawn(async move {
        let got = tokio::time::timeout(Duration::from_secs(60), sub.receive())
            .await
            .expect("a delivery after the outage")
            .expect("receive resumes by itself");
        sub.ack(&got).await.expect("ack");
        sub.close().await.expect("close");
        got
    });
    rabbitmqctl(&["stop_app"]).await;
    let err = t
        .publish(&topic, &[message(1)])
        .await
        .expect_err("RabbitMQ is stopped");
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("amqp://guest@127.0.0.1:5672"),
        "{err}"
    );
    assert!(!err.to_string().contains("guest:guest"), "{err}");
    rabbitmqctl(&["start_app"]).await;
    ready().await;
    let deadline = Instant::now() + START_WAIT;
    loop {
        match t.publish(&topic, &[message(2)]).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish after the restart: {e}"),
        }
    }
    let got = waiting.await.expect("the subscriber task");
    assert_eq!(got.message.id(), Some("id-2"));
}
