//! The conformance suite of [`EventStore`](eventfold_core::EventStore): every rule of the
//! contract's semantics (`docs/http-api.md`), one test per case.
//!
//! # Running it
//!
//! An implementation runs the whole suite with one line in an integration test. The factory is
//! a closure (or function) taking no argument and returning a future of `(store, guard)`: a
//! **fresh, empty** store for each case, and anything that must live as long as the case (a
//! `tempfile::TempDir`, a server process; `()` when there is nothing):
//!
//! ```ignore
//! use eventfold_engine::{Engine, EngineOptions};
//!
//! eventfold_conformance::conformance_tests!(
//!     || async {
//!         let dir = tempfile::tempdir().expect("tempdir");
//!         let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("open");
//!         (engine, dir) // `dir` is dropped (and deleted) when the case ends
//!     },
//!     limits = EngineOptions::for_tests().limits
//! );
//! ```
//!
//! Stores that can be built with a given idempotency window also run
//! [`idempotency_window_tests!`] (eviction of the window by count and by age), whose factory
//! takes the window.
//!
//! `limits` are the store's size limits, which the limit cases test exactly; leave it out for a
//! store configured with the contract's defaults ([`Limits::DEFAULT`]). The macro expands, in
//! the calling module, to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
//! function per case, named after the case, so `cargo test conformance::soft_delete` runs one.
//! The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
//!
//! # Calling a case on its own
//!
//! Every case is a public function in [`cases`] taking `(&Arc<S>, Limits)`:
//!
//! ```ignore
//! let store = Arc::new(my_store);
//! eventfold_conformance::cases::soft_delete(&store, Limits::DEFAULT).await;
//! ```
//!
//! A case panics (with what was expected and what came back) on the first breach. Cases that
//! read `$all` expect to find only their own events there, hence a fresh store per case.
//! Subscription waits are bounded (10 s), so a broken store fails instead of hanging.

pub mod cases;
mod support;

pub use eventfold_core::Limits;

/// Expands to one `#[tokio::test]` per conformance case; see the [crate docs](crate).
///
/// `conformance_tests!(factory)` or `conformance_tests!(factory, limits = expr)`, where
/// `factory()` returns a future of `(impl EventStore, guard)`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!($factory, limits = $crate::Limits::DEFAULT);
    };
    ($factory:expr, limits = $limits:expr $(,)?) => {
        $crate::conformance_tests!(@cases $factory, $limits,
            // append
            append_assigns_contiguous_revisions_and_increasing_positions,
            empty_batch_is_refused,
            expected_any,
            expected_no_stream,
            expected_exists,
            expected_exact,
            conflict_writes_nothing,
            sequenced_appends_are_judged_in_the_order_sent,
            // idempotency
            idempotent_retry_returns_the_first_result,
            idempotent_retry_is_decided_before_the_expected_revision,
            a_retry_after_later_appends_to_the_stream_replays,
            partial_overlap_is_refused,
            an_id_seen_in_another_stream_or_twice_in_a_batch_is_refused,
            racing_retries_write_once,
            // limits
            batch_event_limit,
            event_size_limit,
            batch_bytes_limit,
            read_limit,
            // read_stream
            read_stream_directions_limits_and_next,
            events_round_trip_every_field,
            missing_stream_is_not_found,
            // read_all
            read_all_directions_and_next,
            read_all_filters,
            read_all_type_patterns,
            // metadata
            metadata_default_and_round_trip,
            max_count_hides_older_events,
            truncate_before_hides_events,
            max_age_keeps_young_events,
            // delete
            soft_delete,
            soft_delete_of_a_missing_stream,
            hard_delete,
            hard_delete_of_a_missing_or_soft_deleted_stream,
            // moving a store (optional: `Unsupported` passes)
            import_keeps_timestamps_and_revisions,
            known_streams_list_deleted_ones,
            // reads as of a time (`until`; events timed by an import, optional like it)
            reads_until_a_time,
            // list
            list_streams_pages_in_order,
            stream_info_fields,
            // subscribe
            subscribe_stream_history_then_live,
            subscribe_stream_from_end_and_revision,
            subscribe_stream_before_it_exists,
            subscribe_stream_has_no_gap_during_concurrent_appends,
            subscribe_all_has_no_gap_during_concurrent_appends,
            subscribe_all_filtered_and_from_position,
            subscribe_all_type_patterns,
            many_subscribers_see_the_same_sequence,
            // concurrency
            racing_exact_appends_have_one_winner_per_revision,
            optimistic_concurrency_loop_loses_nothing,
            concurrent_appends_to_many_streams,
            // dynamic consistency boundaries (tags, queries, conditional appends)
            tags_round_trip,
            read_all_by_query,
            subscribe_all_by_query,
            conditional_append_passes_when_nothing_matched_after,
            conditional_append_fails_when_an_event_matched_after,
            conditional_append_checks_replay_then_expected_then_condition,
            racing_conditional_appends_have_one_winner_per_round,
        );
    };
    (@schemas $factory:expr, $limits:expr) => {
        $crate::conformance_tests!(@cases $factory, $limits,
            schemas_register_list_and_get,
            appends_are_checked_against_registered_schemas,
            conditional_appends_are_checked_against_registered_schemas,
            reads_never_change_after_a_schema_is_registered,
            imports_are_not_checked_against_schemas,
        );
    };
    (@cases $factory:expr, $limits:expr, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = ($factory)().await;
                let store = ::std::sync::Arc::new(store);
                $crate::cases::$case(&store, $limits).await;
            }
        )+
    };
}

/// Expands to one `#[tokio::test]` per case of the schema registry ([`cases::schemas_register_list_and_get`]
/// and the others of `cases/schemas.rs`), like [`conformance_tests!`]: for stores that have a
/// registry (`eventfold_schema::Validating` around a backend, or a server through the client).
///
/// `schema_conformance_tests!(factory)` or `schema_conformance_tests!(factory, limits = expr)`.
#[macro_export]
macro_rules! schema_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@schemas $factory, $crate::Limits::DEFAULT);
    };
    ($factory:expr, limits = $limits:expr $(,)?) => {
        $crate::conformance_tests!(@schemas $factory, $limits);
    };
}

/// Expands to one `#[tokio::test]` per case that needs a store with an idempotency window of
/// its own (eviction by count and by age). The factory takes the
/// [`IdempotencyWindow`](eventfold_core::IdempotencyWindow) the case asks for and returns a
/// future of a fresh `(store, guard)` keeping that window:
///
/// ```ignore
/// eventfold_conformance::idempotency_window_tests!(|window| async move {
///     (MemoryStore::with_window(Limits::DEFAULT, window), ())
/// });
/// ```
#[macro_export]
macro_rules! idempotency_window_tests {
    ($factory:expr $(,)?) => {
        $crate::idempotency_window_tests!(@cases $factory,
            a_retry_beyond_the_window_is_appended_again,
            a_retry_older_than_the_window_is_appended_again,
        );
    };
    (@cases $factory:expr, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::cases::$case($factory).await;
            }
        )+
    };
}
