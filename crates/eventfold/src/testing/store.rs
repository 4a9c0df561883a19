use eventfold_core::{EventStore, ExpectedRevision, Position, StreamName};

use crate::context::Context;
use crate::event::{Codec, DomainEvent, encode_event};
use crate::{BoxError, CheckpointStore};

/// Gives a real store some history in a test: appends `events` to `stream` as one batch (JSON,
/// each under a new [`Context`], any expected revision) and answers the position of the last
/// one. An invalid stream name, an event that does not encode, or a refused append (an empty
/// batch among them) is an error.
pub async fn append_events<E: DomainEvent>(
    store: &dyn EventStore,
    stream: &str,
    events: impl IntoIterator<Item = E>,
) -> Result<Position, BoxError> {
    let stream = StreamName::new(stream)?;
    let events = events
        .into_iter()
        .map(|event| encode_event(&event, Codec::Json, &Context::new()))
        .collect::<Result<Vec<_>, _>>()?;
    let written = store.append(&stream, ExpectedRevision::Any, events).await?;
    Ok(written.last_position)
}

/// Checks that `checkpoints` keeps the [`CheckpointStore`] contract, under the names
/// `contract-a` and `contract-b` (use an empty store): a name never saved loads as `None`, a
/// save overwrites the previous one (a checkpoint may also move back, for a rebuild), names are
/// independent, and a reset forgets one name only (resetting an unknown name is no error).
/// Panics, naming the step, on the first breach.
pub async fn check_checkpoint_store(checkpoints: &dyn CheckpointStore) {
    let load = |name: &'static str| async move {
        checkpoints
            .load(name)
            .await
            .unwrap_or_else(|e| panic!("load({name:?}) failed: {e}"))
    };
    let save = |name: &'static str, at: u64| async move {
        checkpoints
            .save(name, Position(at))
            .await
            .unwrap_or_else(|e| panic!("save({name:?}, {at}) failed: {e}"));
    };
    assert_eq!(load("contract-a").await, None, "a name never saved");
    save("contract-a", 41).await;
    save("contract-a", 42).await;
    assert_eq!(
        load("contract-a").await,
        Some(Position(42)),
        "the last save"
    );
    save("contract-b", 7).await;
    save("contract-b", 3).await;
    assert_eq!(load("contract-b").await, Some(Position(3)), "a save back");
    checkpoints
        .reset("contract-a")
        .await
        .unwrap_or_else(|e| panic!("reset(\"contract-a\") failed: {e}"));
    assert_eq!(load("contract-a").await, None, "a reset name");
    assert_eq!(load("contract-b").await, Some(Position(3)), "another name");
    checkpoints
        .reset("contract-never-saved")
        .await
        .unwrap_or_else(|e| panic!("reset of a name never saved failed: {e}"));
}
