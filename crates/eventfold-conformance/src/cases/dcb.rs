//! Dynamic Consistency Boundaries: tags on events, reads and subscriptions by query (types and
//! tags), and appends conditional on what a query matched after a position.

use std::sync::Arc;

use eventfold_core::{
    AppendCondition, EventFilter, EventStore, ExpectedRevision, Limits, NewEvent, Position, Query,
    QueryItem, ReadAll, ReadFrom, RecordedEvent, StoreError, StoreResult, StreamName,
    SubscribeFrom, Tag, Tags,
};
use tokio::sync::Barrier;

use crate::support::{StoreExt as _, ev, next, nothing_within, positions, stream, take, ty};

/// An event of type `t` with data `{"n": n}` carrying `tags`.
fn tagged(t: &str, n: u64, tags: &[&str]) -> NewEvent {
    ev(t, n).with_tags(Tags::parse(tags).expect("the case's tags are valid"))
}

fn tag(t: &str) -> Tag {
    Tag::new(t).expect("the case's tags are valid")
}

/// An item of these types (none: any) and tags (all needed).
fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem::new(types.iter().map(|t| ty(t)), tags.iter().map(|t| tag(t)))
        .expect("the case's items are valid")
}

fn query(items: impl IntoIterator<Item = QueryItem>) -> Query {
    Query::new(items).expect("the case's queries are valid")
}

/// The position of the log's last event (`None`: no event yet): where a read reaches.
async fn head<S: EventStore>(store: &Arc<S>) -> Option<Position> {
    store
        .read_all(ReadAll::backward(1))
        .await
        .expect("read the end of $all")
        .events
        .first()
        .map(|e| e.position)
}

/// Every event matching `q`, forward, following `next` in pages of `page`.
async fn by_query<S: EventStore>(store: &Arc<S>, q: &Query, page: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut read = ReadAll::forward(page).filter(EventFilter::default().with_query(q.clone()));
    loop {
        let slice = store
            .read_all(read.clone())
            .await
            .unwrap_or_else(|e| panic!("read $all by query {q}: {e}"));
        assert!(slice.events.len() <= page, "a page holds at most its limit");
        out.extend(slice.events);
        match slice.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => return out,
        }
    }
}

fn data_n(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e.data_json().expect("JSON data")["n"]
                .as_u64()
                .expect("the case's data has n")
        })
        .collect()
}

async fn append_if<S: EventStore>(
    store: &Arc<S>,
    s: &StreamName,
    events: Vec<NewEvent>,
    q: &Query,
    after: Option<Position>,
) -> StoreResult<eventfold_core::AppendResult> {
    store
        .append_with_condition(
            s,
            ExpectedRevision::Any,
            events,
            AppendCondition::new(q.clone(), after),
        )
        .await
}

/// Asserts `r` is `AppendConditionFailed` for `stream` and `after`, naming `position`.
#[track_caller]
fn assert_condition_failed<T: std::fmt::Debug>(
    r: StoreResult<T>,
    s: &StreamName,
    after: Option<Position>,
    position: Position,
) {
    match r {
        Err(StoreError::AppendConditionFailed {
            stream,
            after: a,
            position: p,
        }) => assert_eq!(
            (stream, a, p),
            (s.clone(), after, position),
            "AppendConditionFailed {{ stream, after, position }}"
        ),
        other => panic!(
            "expected AppendConditionFailed {{ stream: {s}, after: {after:?}, position: {position:?} }}, got {other:?}"
        ),
    }
}

/// Tags are kept as given (order included) and come back from every read and subscription;
/// an event without tags has none.
pub async fn tags_round_trip<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("tags-1");
    let events = vec![
        tagged("t", 0, &["course:c1", "student:s7"]),
        ev("t", 1),
        tagged("t", 2, &["z", "a"]),
    ];
    let want: Vec<Tags> = events.iter().map(|e| e.tags.clone()).collect();
    store
        .append(&s, ExpectedRevision::NoStream, events)
        .await
        .expect("append tagged events");
    let tags_of = |events: &[RecordedEvent]| events.iter().map(|e| e.tags.clone()).collect();
    let read: Vec<Tags> = tags_of(&store.stream_events(&s).await);
    assert_eq!(read, want, "tags read back from the stream");
    assert_eq!(
        tags_of(&store.all_events().await),
        want,
        "tags read back from $all"
    );
    let mut sub = store.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    assert_eq!(tags_of(&take(&mut sub, 3).await), want, "tags subscribed");
    assert_eq!(
        want[2].iter().map(Tag::as_str).collect::<Vec<_>>(),
        ["z", "a"],
        "order as given"
    );
}

/// A read by query returns, in position order, the events matching any item: of one of the
/// item's types (none: any) and carrying all of its tags. It combines with the other filters,
/// pages with `next` in both directions, and an empty query matches everything.
pub async fn read_all_by_query<S: EventStore>(store: &Arc<S>, _: Limits) {
    // n = the order of appends, so positions increase with n.
    let appends: &[(&str, &str, &[&str])] = &[
        ("course-c1", "CourseDefined", &["course:c1"]), // 0
        ("course-c2", "CourseDefined", &["course:c2"]), // 1
        ("student-s7", "StudentRegistered", &["student:s7"]), // 2
        (
            "course-c1",
            "StudentSubscribed",
            &["course:c1", "student:s7"],
        ), // 3
        (
            "course-c2",
            "StudentSubscribed",
            &["course:c2", "student:s8"],
        ), // 4
        ("other-1", "Unrelated", &[]),                  // 5
        ("course-c1", "CourseCapacityChanged", &["course:c1"]), // 6
        (
            "student-s7",
            "StudentSubscribed",
            &["student:s7", "course:c2"],
        ), // 7
    ];
    for (n, (s, t, tags)) in appends.iter().enumerate() {
        store
            .append(
                &stream(s),
                ExpectedRevision::Any,
                vec![tagged(t, n as u64, tags)],
            )
            .await
            .expect("append");
    }
    let cases: Vec<(Query, Vec<u64>)> = vec![
        // One tag: every event carrying it, whatever its type.
        (query([item(&[], &["course:c1"])]), vec![0, 3, 6]),
        // Types AND tags.
        (
            query([item(
                &["CourseDefined", "CourseCapacityChanged"],
                &["course:c1"],
            )]),
            vec![0, 6],
        ),
        // All tags of an item.
        (query([item(&[], &["student:s7", "course:c2"])]), vec![7]),
        // OR of items: the course's definition, and the student's subscriptions.
        (
            query([
                item(&["CourseDefined"], &["course:c2"]),
                item(&["StudentSubscribed"], &["student:s7"]),
            ]),
            vec![1, 3, 7],
        ),
        // Types only.
        (query([item(&["StudentSubscribed"], &[])]), vec![3, 4, 7]),
        // Nothing carries this tag.
        (query([item(&[], &["course:c9"])]), vec![]),
        // An item without types or tags matches every event.
        (query([item(&[], &[])]), (0..8).collect()),
    ];
    for (q, want) in &cases {
        for page in [1, 2, 100] {
            assert_eq!(
                data_n(&by_query(store, q, page).await),
                *want,
                "read by {q} in pages of {page}"
            );
        }
        // Backward: the same events, newest first.
        let back = store
            .read_all(ReadAll::backward(100).filter(EventFilter::default().with_query(q.clone())))
            .await
            .expect("read backward by query");
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(data_n(&back.events), rev, "backward by {q}");
    }
    // Position order, and the other filters still apply (AND).
    let all_c1 = by_query(store, &query([item(&[], &["course:c1"])]), 100).await;
    let ps = positions(&all_c1);
    assert!(ps.windows(2).all(|w| w[0] < w[1]), "position order: {ps:?}");
    let mut filter = EventFilter::default().with_query(query([item(&[], &["student:s7"])]));
    filter.category = Some("course".into());
    let read = store
        .read_all(ReadAll::forward(100).filter(filter))
        .await
        .expect("read by query and category");
    assert_eq!(data_n(&read.events), [3], "query AND category");
    // No query: everything, tags or not.
    assert_eq!(
        data_n(&store.all_events().await),
        (0..8).collect::<Vec<_>>()
    );
}

/// A subscription by query delivers the matching history, then matching live events only.
pub async fn subscribe_all_by_query<S: EventStore>(store: &Arc<S>, _: Limits) {
    let q = query([
        item(&["CourseDefined"], &["course:c1"]),
        item(&[], &["student:s7"]),
    ]);
    store
        .append(
            &stream("course-c1"),
            ExpectedRevision::Any,
            vec![
                tagged("CourseDefined", 0, &["course:c1"]),
                tagged("CourseRenamed", 1, &["course:c1"]),
            ],
        )
        .await
        .expect("append");
    let mut sub = store.subscribe_all(
        SubscribeFrom::Start,
        EventFilter::default().with_query(q.clone()),
    );
    assert_eq!(data_n(&[next(&mut sub).await]), [0], "history");
    store
        .append(
            &stream("student-s8"),
            ExpectedRevision::Any,
            vec![tagged("StudentRegistered", 2, &["student:s8"])],
        )
        .await
        .expect("append");
    store
        .append(
            &stream("student-s7"),
            ExpectedRevision::Any,
            vec![tagged("StudentRegistered", 3, &["student:s7"])],
        )
        .await
        .expect("append");
    assert_eq!(data_n(&[next(&mut sub).await]), [3], "live, matching only");
    nothing_within(&mut sub, 200).await;
}

/// A conditional append succeeds when nothing matching its query was appended after its
/// position, whatever else was (other tags, other types).
pub async fn conditional_append_passes_when_nothing_matched_after<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("course-c1");
    let q = query([item(
        &["CourseDefined", "StudentSubscribed"],
        &["course:c1"],
    )]);
    // Before any event: nothing matches, with or without a position.
    append_if(
        store,
        &s,
        vec![tagged("CourseDefined", 0, &["course:c1"])],
        &q,
        None,
    )
    .await
    .expect("nothing matched yet");
    let read = head(store).await;
    assert_eq!(data_n(&by_query(store, &q, 100).await), [0]);
    // Other tags, and the same tag with another type, do not match.
    for (t, tags) in [
        ("StudentSubscribed", &["course:c2"][..]),
        ("CourseRenamed", &["course:c1"][..]),
        ("StudentSubscribed", &[][..]),
    ] {
        store
            .append(
                &stream("noise"),
                ExpectedRevision::Any,
                vec![tagged(t, 9, tags)],
            )
            .await
            .expect("append");
    }
    let r = append_if(
        store,
        &s,
        vec![tagged("StudentSubscribed", 1, &["course:c1", "student:s7"])],
        &q,
        read,
    )
    .await
    .expect("nothing matching after the read: the append passes");
    assert!(!r.idempotent_replay);
    assert_eq!(data_n(&store.stream_events(&s).await), [0, 1]);
    // The append's own events are not counted against it, and a position at the end passes.
    let end = head(store).await;
    append_if(
        store,
        &s,
        vec![tagged("CourseDefined", 2, &["course:c1"])],
        &q,
        end,
    )
    .await
    .expect("after the last event: nothing can match");
    append_if(
        store,
        &s,
        vec![tagged("CourseDefined", 3, &["course:c1"])],
        &q,
        Some(Position(u64::MAX)),
    )
    .await
    .expect("after the largest position: nothing can match");
}

/// A conditional append fails, writing nothing, when an event matching its query was appended
/// after its position; the error names the first such event. With no position every event
/// counts; an empty query matches any event.
pub async fn conditional_append_fails_when_an_event_matched_after<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("course-c1");
    let q = query([
        item(&["CourseDefined"], &["course:c1"]),
        item(&["StudentSubscribed"], &["course:c1"]),
    ]);
    store
        .append(
            &s,
            ExpectedRevision::NoStream,
            vec![tagged("CourseDefined", 0, &["course:c1"])],
        )
        .await
        .expect("append");
    let read = head(store).await;
    store
        .append(
            &stream("unrelated"),
            ExpectedRevision::Any,
            vec![ev("x", 1)],
        )
        .await
        .expect("append");
    // Two matching events after the read, by another writer; the first one is named.
    let first = store
        .append(
            &stream("student-s8"),
            ExpectedRevision::Any,
            vec![
                tagged("StudentSubscribed", 2, &["course:c1", "student:s8"]),
                tagged("StudentSubscribed", 3, &["course:c1", "student:s8"]),
            ],
        )
        .await
        .expect("append");
    let attempt = vec![tagged("StudentSubscribed", 4, &["course:c1", "student:s7"])];
    let r = append_if(store, &s, attempt.clone(), &q, read).await;
    assert_condition_failed(r, &s, read, first.first_position);
    assert_eq!(
        data_n(&store.stream_events(&s).await),
        [0],
        "nothing written"
    );
    // After the last matching event: passes.
    append_if(store, &s, attempt, &q, Some(first.last_position))
        .await
        .expect("nothing matched after the last matching event");
    // No position: any matching event fails it, the oldest named.
    let r = append_if(store, &s, vec![ev("y", 5)], &q, None).await;
    assert_condition_failed(r, &s, None, Position(0));
    // No position and nothing matching: passes.
    let nothing = query([item(&[], &["course:c9"])]);
    append_if(store, &s, vec![ev("y", 6)], &nothing, None)
        .await
        .expect("nothing carries course:c9");
    // The empty query matches any event after the position.
    let end = head(store).await;
    append_if(store, &s, vec![ev("y", 7)], &Query::all(), end)
        .await
        .expect("nothing after the end");
    let end = head(store).await;
    let unrelated = store
        .append(
            &stream("unrelated"),
            ExpectedRevision::Any,
            vec![ev("x", 8)],
        )
        .await
        .expect("append");
    let r = append_if(store, &s, vec![ev("y", 9)], &Query::all(), end).await;
    assert_condition_failed(r, &s, end, unrelated.first_position);
}

/// The rules are checked in order: a retry of the stream's last batch is a replay (though its
/// own events now match the query), then the expected revision, then the condition. Every
/// event appended counts, even one whose stream was deleted since.
pub async fn conditional_append_checks_replay_then_expected_then_condition<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("course-c1");
    let q = query([item(&[], &["course:c1"])]);
    let batch = vec![tagged("CourseDefined", 0, &["course:c1"])];
    let first = store
        .append_with_condition(
            &s,
            ExpectedRevision::NoStream,
            batch.clone(),
            AppendCondition::new(q.clone(), None),
        )
        .await
        .expect("nothing matched");
    let again = store
        .append_with_condition(
            &s,
            ExpectedRevision::NoStream,
            batch,
            AppendCondition::new(q.clone(), None),
        )
        .await
        .expect("a retry of the last batch is a replay");
    assert!(again.idempotent_replay, "{again:?}");
    assert_eq!(again.first_position, first.first_position);
    // Wrong expected revision and a violated condition: the revision is reported.
    let r = store
        .append_with_condition(
            &s,
            ExpectedRevision::Exact(5),
            vec![tagged("CourseDefined", 1, &["course:c1"])],
            AppendCondition::new(q.clone(), None),
        )
        .await;
    crate::support::assert_wrong(r, &s, ExpectedRevision::Exact(5), Some(0));
    // Right expected revision, violated condition.
    let r = store
        .append_with_condition(
            &s,
            ExpectedRevision::Exact(0),
            vec![tagged("CourseDefined", 1, &["course:c1"])],
            AppendCondition::new(q.clone(), None),
        )
        .await;
    assert_condition_failed(r, &s, None, first.first_position);
    // A matching event of a stream deleted since still counts.
    let read = head(store).await;
    let gone = stream("gone-1");
    let w = store
        .append(
            &gone,
            ExpectedRevision::NoStream,
            vec![tagged("x", 2, &["course:c1"])],
        )
        .await
        .expect("append");
    store
        .delete_stream(
            &gone,
            ExpectedRevision::Any,
            eventfold_core::DeleteMode::Soft,
        )
        .await
        .expect("soft delete");
    assert!(
        by_query(store, &q, 100)
            .await
            .iter()
            .all(|e| e.stream != gone)
    );
    let r = append_if(store, &s, vec![ev("y", 3)], &q, read).await;
    assert_condition_failed(r, &s, read, w.first_position);
}

/// Racers that read the same query and append with the condition "nothing matching after my
/// read": exactly one wins each round, the others are refused naming the winner's event;
/// racers with disjoint queries all win.
pub async fn racing_conditional_appends_have_one_winner_per_round<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    const RACERS: usize = 8;
    const ROUNDS: u64 = 10;
    let q = query([item(&[], &["seat:1"])]);
    for round in 0..ROUNDS {
        let read = head(store).await;
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|k| {
                let (store, q, barrier) = (Arc::clone(store), q.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let s = stream(&format!("racer-{k}"));
                    let e = tagged("SeatTaken", round * 100 + k as u64, &["seat:1"]);
                    (s.clone(), append_if(&store, &s, vec![e], &q, read).await)
                })
            })
            .collect();
        let mut wins = Vec::new();
        let mut losses = Vec::new();
        for racer in racers {
            match racer.await.expect("a racer task") {
                (_, Ok(r)) => wins.push(r),
                (s, lost) => losses.push((s, lost)),
            }
        }
        assert_eq!(
            wins.len(),
            1,
            "round {round}: exactly one racer wins: {wins:?}"
        );
        for (s, lost) in losses {
            assert_condition_failed(lost, &s, read, wins[0].first_position);
        }
    }
    assert_eq!(
        by_query(store, &q, 100).await.len() as u64,
        ROUNDS,
        "one event per round"
    );
    // Disjoint queries do not conflict, even racing.
    let read = head(store).await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|k| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            tokio::spawn(async move {
                let own = format!("seat:{}", 100 + k);
                let q = query([item(&[], &[own.as_str()])]);
                barrier.wait().await;
                let s = stream(&format!("racer-{k}"));
                append_if(
                    &store,
                    &s,
                    vec![tagged("SeatTaken", k as u64, &[own.as_str()])],
                    &q,
                    read,
                )
                .await
            })
        })
        .collect();
    for racer in racers {
        racer
            .await
            .expect("a racer task")
            .expect("a racer with its own query wins");
    }
}
