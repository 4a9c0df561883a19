use eventfold_core::{EventFilter, EventStore, Position, RecordedEvent, StoreError, SubscribeFrom};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Batches of `$all` events matching `filter` after `after` (exclusive; `None`: from the
/// start): history first, then live, in order, with no gap. Each batch holds what was ready
/// when it was taken, at most `batch_events_max` events, so catch-up runs in large batches and a
/// live consumer gets small ones at once. The stream ends only with an error.
pub fn batches(
    store: &dyn EventStore,
    after: Option<Position>,
    filter: EventFilter,
    batch_events_max: usize,
) -> BoxStream<'static, Result<Vec<RecordedEvent>, StoreError>> {
    let from = match after {
        None => SubscribeFrom::Start,
        Some(p) => SubscribeFrom::At(Position(p.0 + 1)),
    };
    store
        .subscribe_all(from, filter)
        .ready_chunks(batch_events_max.max(1))
        .flat_map(|chunk| {
            // A chunk that holds an error: the events before it, then the error.
            let mut out = Vec::with_capacity(2);
            let mut events = Vec::with_capacity(chunk.len());
            for item in chunk {
                match item {
                    Ok(e) => events.push(e),
                    Err(err) => {
                        if !events.is_empty() {
                            out.push(Ok(std::mem::take(&mut events)));
                        }
                        out.push(Err(err));
                        break;
                    }
                }
            }
            if !events.is_empty() {
                out.push(Ok(events));
            }
            futures::stream::iter(out)
        })
        .boxed()
}
