//! Course subscriptions decided on a query (Dynamic Consistency Boundaries): the rules, the
//! tags the events carry, and decisions racing on the embedded engine, the memory store and
//! PostgreSQL: two that would break a rule together cannot both succeed; two on disjoint
//! boundaries both do.

use std::sync::Arc;

use eventfold::core::{EventFilter, EventStore, Query, QueryItem, ReadAll, StoreError, Tag};
use eventfold::{Context, DecisionError};
use eventfold_examples::course_subscriptions::{
    STUDENT_COURSES_MAX, School, SchoolError, Subscribe,
};
use eventfold_memory::MemoryStore;
use eventfold_store_postgres::testing::TestDb;

use crate::support::temp_store;

fn ctx() -> Context {
    Context::with_correlation_id("course-test")
}

fn rejection<T: std::fmt::Debug>(r: Result<T, DecisionError<SchoolError>>) -> SchoolError {
    match r {
        Err(DecisionError::Rejected(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// The rules, one after the other, on `store`.
async fn the_rules_hold(store: Arc<dyn EventStore>) {
    let school = School::new(store.clone());
    let ctx = ctx();
    school
        .define_course("c1", 2, &ctx)
        .await
        .expect("define c1");
    assert_eq!(
        rejection(school.define_course("c1", 5, &ctx).await),
        SchoolError::CourseExists("c1".into())
    );
    assert_eq!(
        rejection(school.subscribe("c9", "s1", &ctx).await),
        SchoolError::NoSuchCourse("c9".into())
    );
    let s1 = school.subscribe("c1", "s1", &ctx).await.expect("s1 in c1");
    assert_eq!(s1.attempts, 1);
    assert_eq!(
        rejection(school.subscribe("c1", "s1", &ctx).await),
        SchoolError::AlreadySubscribed {
            course: "c1".into(),
            student: "s1".into()
        }
    );
    school.subscribe("c1", "s2", &ctx).await.expect("s2 in c1");
    assert_eq!(
        rejection(school.subscribe("c1", "s3", &ctx).await),
        SchoolError::CourseFull {
            course: "c1".into(),
            capacity: 2
        }
    );
    school
        .change_capacity("c1", 3, &ctx)
        .await
        .expect("more room");
    school.subscribe("c1", "s3", &ctx).await.expect("s3 in c1");
    assert_eq!(
        rejection(school.change_capacity("c1", 2, &ctx).await),
        SchoolError::CourseFull {
            course: "c1".into(),
            capacity: 2
        },
        "not below its students"
    );
    // A student takes at most STUDENT_COURSES_MAX courses (s1 has c1).
    for n in 2..=STUDENT_COURSES_MAX {
        let c = format!("c{n}");
        school.define_course(&c, 10, &ctx).await.expect("define");
        school.subscribe(&c, "s1", &ctx).await.expect("subscribe");
    }
    school.define_course("c99", 10, &ctx).await.expect("define");
    assert_eq!(
        rejection(school.subscribe("c99", "s1", &ctx).await),
        SchoolError::TooManyCourses {
            student: "s1".into()
        }
    );
    assert!(matches!(
        rejection(school.subscribe("c1", "bad id", &ctx).await),
        SchoolError::InvalidId {
            what: "student",
            ..
        }
    ));
    // The events carry their tags: the student's subscriptions are found by tag alone.
    let by_student = store
        .read_all(
            ReadAll::forward(100).filter(EventFilter::default().with_query(Query::from(
                QueryItem::tagged([Tag::new("student:s1").unwrap()]).unwrap(),
            ))),
        )
        .await
        .expect("read by tag");
    assert_eq!(by_student.events.len() as u32, STUDENT_COURSES_MAX);
    for e in &by_student.events {
        assert_eq!(e.event_type.as_str(), "StudentSubscribed");
        assert!(e.tags.contains("student:s1"), "{:?}", e.tags);
        assert!(e.tags.iter().any(|t| t.as_str().starts_with("course:")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_hold_on_the_engine() {
    let (_dir, store) = temp_store();
    the_rules_hold(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_hold_on_the_memory_store() {
    the_rules_hold(Arc::new(MemoryStore::new())).await;
}

/// Two decisions made on the same events, then appended one after the other: the second is
/// refused (its condition names the first's event), and decided again it meets the rule.
async fn racing_decisions_cannot_both_break_a_rule(store: Arc<dyn EventStore>) {
    let school = School::new(store.clone());
    let ctx = ctx();
    school.define_course("c1", 1, &ctx).await.expect("define");
    let decider = school.decider();
    // The last seat of c1: both decisions see it free.
    let a = decider
        .decide(&Subscribe::new("c1", "s1").unwrap(), None)
        .await
        .expect("s1 decides");
    let b = decider
        .decide(&Subscribe::new("c1", "s2").unwrap(), None)
        .await
        .expect("s2 decides");
    assert_eq!((a.events.len(), b.events.len()), (1, 1), "both see a seat");
    let won = decider
        .append(&a, &ctx)
        .await
        .expect("the first append")
        .expect("an event");
    match decider.append(&b, &ctx).await {
        Err(DecisionError::Conflict {
            source: StoreError::AppendConditionFailed { position, .. },
            ..
        }) => assert_eq!(position, won.first_position),
        other => panic!("expected a conflict naming s1's subscription, got {other:?}"),
    }
    assert_eq!(
        rejection(school.subscribe("c1", "s2", &ctx).await),
        SchoolError::CourseFull {
            course: "c1".into(),
            capacity: 1
        }
    );
    // A student one course short of the limit, subscribing to two courses at once.
    for n in 1..=STUDENT_COURSES_MAX + 1 {
        school
            .define_course(&format!("d{n}"), 10, &ctx)
            .await
            .expect("define");
    }
    for n in 1..STUDENT_COURSES_MAX {
        school
            .subscribe(&format!("d{n}"), "s7", &ctx)
            .await
            .expect("subscribe");
    }
    let last = STUDENT_COURSES_MAX;
    let x = decider
        .decide(&Subscribe::new(&format!("d{last}"), "s7").unwrap(), None)
        .await
        .expect("decide");
    let y = decider
        .decide(
            &Subscribe::new(&format!("d{}", last + 1), "s7").unwrap(),
            None,
        )
        .await
        .expect("decide");
    decider.append(&x, &ctx).await.expect("the first");
    assert!(
        matches!(
            decider.append(&y, &ctx).await,
            Err(DecisionError::Conflict { .. })
        ),
        "the student's boundary changed"
    );
    // A decision on a disjoint boundary is not held up by either.
    let other = decider
        .decide(&Subscribe::new(&format!("d{last}"), "s8").unwrap(), None)
        .await
        .expect("decide");
    school
        .subscribe(&format!("d{}", last + 1), "s9", &ctx)
        .await
        .expect("another course, another student");
    decider
        .append(&other, &ctx)
        .await
        .expect("s8's boundary did not change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_cannot_both_break_a_rule_on_the_engine() {
    let (_dir, store) = temp_store();
    racing_decisions_cannot_both_break_a_rule(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_cannot_both_break_a_rule_on_the_memory_store() {
    racing_decisions_cannot_both_break_a_rule(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_cannot_both_break_a_rule_on_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(Default::default()).await;
    racing_decisions_cannot_both_break_a_rule(Arc::new(store)).await;
}

/// Many students at once for a few seats, on tasks racing on the engine's threads: exactly
/// the capacity subscribe (the others are told the course is full), and nobody gets more
/// courses than allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_never_overfills_a_course() {
    const SEATS: u32 = 3;
    const STUDENTS: usize = 24;
    let (_dir, store) = temp_store();
    let school = School::new(store.clone());
    school
        .define_course("c1", SEATS, &ctx())
        .await
        .expect("define");
    let barrier = Arc::new(tokio::sync::Barrier::new(STUDENTS));
    let tasks: Vec<_> = (0..STUDENTS)
        .map(|k| {
            let (school, barrier) = (school.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                school.subscribe("c1", &format!("s{k}"), &ctx()).await
            })
        })
        .collect();
    let mut subscribed = 0;
    for t in tasks {
        match t.await.expect("a task") {
            Ok(d) => {
                subscribed += 1;
                assert!(d.attempts >= 1);
            }
            Err(DecisionError::Rejected(SchoolError::CourseFull { .. })) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(subscribed, SEATS);
    let in_c1 = store
        .read_all(
            ReadAll::forward(100).filter(
                EventFilter::default().with_query(Query::from(
                    QueryItem::new(
                        [eventfold::core::EventType::new("StudentSubscribed").unwrap()],
                        [Tag::new("course:c1").unwrap()],
                    )
                    .unwrap(),
                )),
            ),
        )
        .await
        .expect("read");
    assert_eq!(in_c1.events.len() as u32, SEATS, "no more than the seats");
}
