//! The conformance suite of [`Transport`](eventfold_transport::Transport): one test per case,
//! modelled on Watermill's universal Pub/Sub tests, run by every broker adapter against its real
//! broker.
//!
//! # Running it
//!
//! ```ignore
//! eventfold_transport_conformance::transport_conformance_tests!(
//!     || async { my_adapter::connect("redis://127.0.0.1:6379").await.ok().map(|t| Arc::new(t) as _) },
//!     restart = || async { restart_the_broker().await },
//! );
//! ```
//!
//! The factory returns a future of `Option<Arc<dyn Transport>>`: a new connection to the broker
//! each time it is called (cases open a second one to act as another process), or `None` when
//! the broker is unreachable: the case is skipped with the reason the factory printed (a factory
//! panics instead under `EVENTFOLD_REQUIRE_SERVICES=1`). `restart` (optional) restarts the
//! broker and returns once it accepts connections again; without it the restart case is skipped.
//!
//! Every case uses topics and groups of its own (random names), so cases run in parallel on one
//! broker. What a broker does not guarantee ([`Features`](eventfold_transport::Features)) is
//! skipped by the cases that need it, with a printed note. Waits are bounded, so a broken
//! adapter fails instead of hanging.

pub mod cases;
mod support;

pub use support::Factory;

/// Expands to one `#[tokio::test]` per case; see the [crate docs](crate).
#[macro_export]
macro_rules! transport_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::transport_conformance_tests!(@cases $factory, None::<fn() -> ::std::future::Ready<()>>);
    };
    ($factory:expr, restart = $restart:expr $(,)?) => {
        $crate::transport_conformance_tests!(@cases $factory, Some($restart));
    };
    (@cases $factory:expr, $restart:expr) => {
        $crate::transport_conformance_tests!(@each $factory, $restart,
            publish_then_subscribe_keeps_every_attribute,
            many_publishers_and_subscribers_lose_nothing,
            a_retried_delivery_comes_back,
            an_unsettled_delivery_holds_back_its_key,
            order_per_key_over_interleaved_keys,
            a_closed_subscriber_loses_nothing,
            subscribers_close_concurrently,
            publish_returns_once_the_broker_has_it,
            topics_are_isolated,
            the_trace_context_travels_in_its_own_headers,
            two_groups_each_get_everything,
            a_poison_event_is_dead_lettered_and_can_be_replayed,
            what_is_not_an_eventfold_event_is_dead_lettered,
            a_crashed_consumers_deliveries_come_back,
            a_new_group_reads_from_the_oldest_message,
            the_broker_restarted_mid_run_loses_nothing_acknowledged,
        );
    };
    (@each $factory:expr, $restart:expr, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $crate::Factory::new($factory, $restart);
                $crate::cases::$case(&factory).await;
            }
        )+
    };
}
