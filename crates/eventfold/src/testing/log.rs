use std::collections::HashMap;

use eventfold_core::{Position, RecordedEvent, Revision, StreamName, Timestamp};

use crate::context::Context;
use crate::event::{Codec, DomainEvent, encode_event};

/// The stream events go to until a harness's `in_stream` says otherwise.
const DEFAULT_STREAM: &str = "test-1";

/// The harnesses' stand-in for a store: records events as a store would, with per-stream
/// revisions and `$all` positions counting from 0.
#[derive(Debug)]
pub(crate) struct TestLog {
    stream: StreamName,
    revisions: HashMap<StreamName, u64>,
    next_position: u64,
}

impl Default for TestLog {
    fn default() -> Self {
        TestLog {
            stream: StreamName::new(DEFAULT_STREAM).expect("a valid constant stream name"),
            revisions: HashMap::new(),
            next_position: 0,
        }
    }
}

impl TestLog {
    /// Events from now on go to `stream`; panics naming `caller` when it is not a valid name.
    pub(crate) fn set_stream(&mut self, caller: &str, stream: &str) {
        self.stream = StreamName::new(stream)
            .unwrap_or_else(|e| panic!("{caller}::in_stream({stream:?}): {e}"));
    }

    /// The position the next event gets (and the count of events so far).
    pub(crate) fn take_position(&mut self) -> Position {
        let position = Position(self.next_position);
        self.next_position += 1;
        position
    }

    /// `event` encoded with `codec` under a new [`Context`] and recorded in the current stream
    /// at `timestamp`; panics naming `caller` when it does not encode.
    pub(crate) fn record<E: DomainEvent>(
        &mut self,
        caller: &str,
        event: &E,
        codec: Codec,
        timestamp: Timestamp,
    ) -> RecordedEvent {
        let new =
            encode_event(event, codec, &Context::new()).unwrap_or_else(|e| panic!("{caller}: {e}"));
        let revision = self.revisions.entry(self.stream.clone()).or_insert(0);
        let recorded_revision = Revision(*revision);
        *revision += 1;
        RecordedEvent {
            id: new.id,
            stream: self.stream.clone(),
            event_type: new.event_type,
            revision: recorded_revision,
            position: self.take_position(),
            timestamp,
            schema_version: new.schema_version,
            content_type: new.content_type,
            data: new.data,
            metadata: new.metadata,
            tags: new.tags,
        }
    }
}
