//! Decisions on a query (`Decision`, `Decider`): folding by query across streams, skipping
//! types the decision does not know, conditional appends, retries on fresh events, and an
//! event that no read returns any more (its stream deleted) still counted without deciding
//! forever.

use std::sync::Arc;

use eventfold::core::{
    DeleteMode, EventStore, EventType, ExpectedRevision, NewEvent, Query, QueryItem, ReadAll,
    StoreError, StreamName, Tag, Tags,
};
use eventfold::{Context, Decider, Decision, DecisionError, DomainEvent};
use eventfold_memory::MemoryStore;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Added {
    counter: String,
    n: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, DomainEvent)]
enum CounterEvent {
    #[event(name = "Added")]
    Added(Added),
}

#[derive(Debug, thiserror::Error)]
#[error("the counter would pass {0}")]
struct TooMuch(u64);

/// Adds `n` to a counter kept across streams, up to 10.
#[derive(Clone, Debug)]
struct Add {
    counter: String,
    n: u64,
    total: u64,
}

fn add(counter: &str, n: u64) -> Add {
    Add {
        counter: counter.into(),
        n,
        total: 0,
    }
}

fn tag(counter: &str) -> Tag {
    Tag::new(format!("counter:{counter}")).unwrap()
}

impl Decision for Add {
    type Event = CounterEvent;
    type Error = TooMuch;

    fn query(&self) -> Query {
        Query::from(QueryItem::tagged([tag(&self.counter)]).unwrap())
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added(a) = event;
        self.total += a.n;
    }

    fn decide(&self) -> Result<Vec<CounterEvent>, TooMuch> {
        if self.total + self.n > 10 {
            return Err(TooMuch(10));
        }
        Ok(vec![CounterEvent::Added(Added {
            counter: self.counter.clone(),
            n: self.n,
        })])
    }

    fn stream(&self) -> String {
        format!("adds-{}", self.counter)
    }

    fn tags(event: &CounterEvent) -> Tags {
        let CounterEvent::Added(a) = event;
        Tags::new([tag(&a.counter)]).unwrap()
    }
}

fn store() -> Arc<dyn EventStore> {
    Arc::new(MemoryStore::new())
}

/// An `Added` event appended by hand to `stream`, tagged for `counter`.
fn added(counter: &str, n: u64) -> NewEvent {
    NewEvent::json(
        EventType::new("Added").unwrap(),
        &serde_json::json!({"counter": counter, "n": n}),
    )
    .with_tags(Tags::new([tag(counter)]).unwrap())
}

#[tokio::test]
async fn a_decision_folds_its_query_across_streams_and_appends_tagged_events() {
    let store = store();
    for (s, n) in [("a-1", 2), ("b-1", 3)] {
        store
            .append(
                &StreamName::new(s).unwrap(),
                ExpectedRevision::Any,
                vec![added("x", n)],
            )
            .await
            .unwrap();
    }
    // Another counter's event, and an event of a type the decision does not know.
    store
        .append(
            &StreamName::new("c-1").unwrap(),
            ExpectedRevision::Any,
            vec![added("y", 9)],
        )
        .await
        .unwrap();
    let unknown = NewEvent::json(EventType::new("Reset").unwrap(), &serde_json::json!({}))
        .with_tags(Tags::new([tag("x")]).unwrap());
    store
        .append(
            &StreamName::new("c-1").unwrap(),
            ExpectedRevision::Any,
            vec![unknown],
        )
        .await
        .unwrap();
    let decider = Decider::new(store.clone());
    let d = decider
        .execute(add("x", 4), &Context::new())
        .await
        .expect("2 + 3 + 4 <= 10");
    assert_eq!(d.state.total, 5, "x's two Added events, not y's, not Reset");
    assert_eq!(d.attempts, 1);
    let appended = d.appended.expect("an event");
    let last = store.read_all(ReadAll::backward(1)).await.unwrap().events;
    assert_eq!(last[0].position, appended.first_position);
    assert_eq!(last[0].stream.as_str(), "adds-x");
    assert!(last[0].tags.contains("counter:x"));
    match decider.execute(add("x", 2), &Context::new()).await {
        Err(DecisionError::Rejected(TooMuch(10))) => {}
        other => panic!("9 + 2 > 10: {other:?}"),
    }
}

#[tokio::test]
async fn a_decision_that_lost_a_race_decides_again_on_fresh_events() {
    let store = store();
    let decider = Decider::new(store.clone());
    let stale = decider.decide(&add("x", 6), None).await.unwrap();
    decider
        .execute(add("x", 5), &Context::new())
        .await
        .expect("first");
    match decider.append(&stale, &Context::new()).await {
        Err(DecisionError::Conflict {
            source: StoreError::AppendConditionFailed { .. },
            attempts: 1,
        }) => {}
        other => panic!("a stale decision is refused: {other:?}"),
    }
    // Decided again, it sees the 5 and refuses.
    assert!(matches!(
        decider.execute(add("x", 6), &Context::new()).await,
        Err(DecisionError::Rejected(_))
    ));
    // With one attempt only, a lost race is the error.
    let one = Decider::new(store.clone()).with_max_attempts(1);
    let racing = one.decide(&add("x", 1), None).await.unwrap();
    one.execute(add("x", 1), &Context::new()).await.unwrap();
    assert!(matches!(
        one.append(&racing, &Context::new()).await,
        Err(DecisionError::Conflict { .. })
    ));
}

/// An event of the boundary whose stream was deleted: no read returns it, a condition still
/// counts it; the decider takes the position the conflict named as read and succeeds.
#[tokio::test]
async fn an_event_no_read_returns_still_counts_but_does_not_block_the_decision() {
    let store = store();
    let gone = StreamName::new("gone-1").unwrap();
    store
        .append(&gone, ExpectedRevision::Any, vec![added("x", 9)])
        .await
        .unwrap();
    store
        .delete_stream(&gone, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .unwrap();
    let decider = Decider::new(store.clone());
    let d = decider
        .execute(add("x", 4), &Context::new())
        .await
        .expect("the deleted event is not part of the state");
    assert_eq!(d.state.total, 0);
    assert_eq!(
        d.attempts, 2,
        "the first attempt's condition counted the deleted event"
    );
}
