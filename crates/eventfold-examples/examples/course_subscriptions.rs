//! Course subscriptions decided on a query (Dynamic Consistency Boundaries) on the embedded
//! engine: courses with a capacity, students with at most three courses, a subscription that
//! must respect both, and two decisions racing for the last seat.
//!
//! ```text
//! cargo run -p eventfold-examples --example course_subscriptions
//! ```

use std::sync::Arc;

use anyhow::Context as _;
use eventfold::core::{EventFilter, EventStore, Query, QueryItem, ReadAll, Tag};
use eventfold::{Context, DecisionError};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::course_subscriptions::{School, Subscribe};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let engine = Engine::open(dir.path(), EngineOptions::default())
        .with_context(|| format!("open the event store in {}", dir.path().display()))?;
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());
    let story = run(store).await;
    engine.shutdown();
    story
}

async fn run(store: Arc<dyn EventStore>) -> anyhow::Result<()> {
    let school = School::new(store.clone());
    let ctx = Context::with_correlation_id("school-story");
    school.define_course("maths", 2, &ctx).await?;
    school.define_course("physics", 10, &ctx).await?;
    println!("defined maths (2 seats) and physics (10 seats)");
    school.subscribe("maths", "ada", &ctx).await?;
    println!("ada takes maths");

    // Two decisions made on the same events: both see the last seat of maths free.
    let decider = school.decider();
    let bob = decider
        .decide(&Subscribe::new("maths", "bob")?, None)
        .await?;
    let eve = decider
        .decide(&Subscribe::new("maths", "eve")?, None)
        .await?;
    decider.append(&bob, &ctx).await?;
    println!("bob takes the last seat of maths");
    match decider.append(&eve, &ctx).await {
        Err(DecisionError::Conflict { source, .. }) => {
            println!("eve's decision, made on the same events, is refused: {source}")
        }
        other => anyhow::bail!("eve's stale decision was not refused: {other:?}"),
    }
    match school.subscribe("maths", "eve", &ctx).await {
        Err(DecisionError::Rejected(e)) => println!("decided again on fresh events: {e}"),
        other => anyhow::bail!("eve got a seat in a full course: {other:?}"),
    }
    school.subscribe("physics", "eve", &ctx).await?;
    println!("eve takes physics instead");

    // Every subscription of a student, found by its tag across the courses' streams.
    let ada = Query::from(QueryItem::tagged([Tag::new("student:ada")?])?);
    let read = store
        .read_all(ReadAll::forward(100).filter(EventFilter::default().with_query(ada)))
        .await?;
    for e in &read.events {
        let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
        println!(
            "@{} {} {} tags {:?}",
            e.position, e.stream, e.event_type, tags
        );
    }
    Ok(())
}
