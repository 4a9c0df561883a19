/// The contract's size limits. Every implementation enforces them the same way, so a batch that
/// one backend accepts is accepted by all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Data plus serialized metadata of one event. Default 1 MiB: large enough for any document
    /// an event should carry, small enough that one event never dominates a group commit.
    pub event_bytes_max: usize,
    /// Events in one append. Default 10,000: one append is one atomic write; bounding it bounds
    /// the writer's batch and the time one append holds it.
    pub batch_events_max: usize,
    /// Bytes (data + metadata) of one append. Default 16 MiB, for the same reason.
    pub batch_bytes_max: usize,
    /// Events returned by one read. Default 10,000: bounds the memory of one answer; larger
    /// reads page with `next`.
    pub read_limit_max: usize,
}

impl Limits {
    /// The contract's defaults.
    pub const DEFAULT: Limits = Limits {
        event_bytes_max: 1 << 20,
        batch_events_max: 10_000,
        batch_bytes_max: 16 << 20,
        read_limit_max: 10_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
