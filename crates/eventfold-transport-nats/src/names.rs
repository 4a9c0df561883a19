//! Where a topic, a group and an event type live on JetStream: stream, subject and consumer names
//! (documented in `docs/transports/nats.md`). Pure functions, no I/O.

use eventfold_transport::{ConsumerGroup, Topic, TransportError, TransportResult};

/// Longest namespace: with the longest topic and the suffixes added, stream names stay far below
/// the 255 bytes a file-storage stream's directory name may have.
pub const NAMESPACE_BYTES_MAX: usize = 32;

/// The token after `{namespace}.{topic}` of an event's subject.
const EVENT_TOKEN: &str = "e";
/// The token after `{namespace}.{topic}` of a message without a `ce_type` header.
const UNTYPED_TOKEN: &str = "untyped";

/// The names of one namespace (`eventfold` unless configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    /// A namespace: 1..=32 ASCII letters and digits (no `_` or `-`, which separate the parts of
    /// stream names, no `.`, which separates subject tokens).
    pub fn new(ns: &str) -> TransportResult<Names> {
        if ns.is_empty()
            || ns.len() > NAMESPACE_BYTES_MAX
            || !ns.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TransportError::Invalid(format!(
                "the NATS namespace {ns:?} is not valid: use 1..={NAMESPACE_BYTES_MAX} ASCII letters \
                 and digits (it starts every stream name and subject eventfold creates)"
            )));
        }
        Ok(Names { ns: ns.to_owned() })
    }

    /// The topic's stream: `{ns}_{topic}`.
    pub fn stream(&self, topic: &Topic) -> String {
        format!("{}_{topic}", self.ns)
    }

    /// The stream of the topic's dead letters and replays: `{ns}-dlq_{topic}`. The first
    /// character after the namespace (`_` or `-`) tells the two kinds apart, since a namespace
    /// has neither.
    pub fn dlq_stream(&self, topic: &Topic) -> String {
        format!("{}-dlq_{topic}", self.ns)
    }

    /// The subjects of the topic's stream: `{ns}.{topic}.>`.
    pub fn subjects(&self, topic: &Topic) -> String {
        format!("{}.{topic}.>", self.ns)
    }

    /// The subjects of the topic's dead-letter stream: `{ns}-dlq.{topic}.>`.
    pub fn dlq_subjects(&self, topic: &Topic) -> String {
        format!("{}-dlq.{topic}.>", self.ns)
    }

    /// The subject a message is published on: `{ns}.{topic}.e.{type}` with the event type's
    /// tokens escaped by [`type_tokens`], or `{ns}.{topic}.untyped` for a message without a
    /// type.
    pub fn subject(&self, topic: &Topic, event_type: Option<&str>) -> String {
        match event_type {
            Some(t) => format!("{}.{topic}.{EVENT_TOKEN}.{}", self.ns, type_tokens(t)),
            None => format!("{}.{topic}.{UNTYPED_TOKEN}", self.ns),
        }
    }

    /// Where the group's dead letters are kept: `{ns}-dlq.{topic}.{group}.dead`.
    pub fn dead_subject(&self, topic: &Topic, group: &ConsumerGroup) -> String {
        format!("{}-dlq.{topic}.{group}.dead", self.ns)
    }

    /// Where dead letters replayed to the group are published: `{ns}-dlq.{topic}.{group}.replay`.
    pub fn replay_subject(&self, topic: &Topic, group: &ConsumerGroup) -> String {
        format!("{}-dlq.{topic}.{group}.replay", self.ns)
    }

    /// Whether `stream` is a stream of this namespace (for cleaning up test namespaces).
    pub fn owns_stream(&self, stream: &str) -> bool {
        stream
            .strip_prefix(&self.ns)
            .is_some_and(|rest| rest.starts_with('_') || rest.starts_with("-dlq_"))
    }
}

/// An event type as subject tokens: split at `.` (so `order.placed` is the two tokens `order`
/// and `placed`, and consumers filter with `order.*` or `order.>`); in each token the bytes
/// `[A-Za-z0-9_-]` are kept and every other byte (UTF-8) is written `~HH` (upper-case hex, so
/// `~` itself is `~7E`); an empty token (from `a..b`, a leading or trailing `.`) is `~`, which no
/// other token can be. The mapping is one-to-one, and the common types (`OrderPlaced`,
/// `order.placed`, `order-placed.v2`) are their own subject.
pub fn type_tokens(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len() + 8);
    for (i, token) in event_type.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token.is_empty() {
            out.push('~');
            continue;
        }
        for b in token.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                out.push(char::from(b));
            } else {
                out.push('~');
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::new("eventfold").expect("a valid namespace")
    }

    #[test]
    fn names_of_a_topic_and_a_group() {
        let n = names();
        let t = Topic::new("orders").unwrap();
        let g = ConsumerGroup::new("email").unwrap();
        assert_eq!(n.stream(&t), "eventfold_orders");
        assert_eq!(n.dlq_stream(&t), "eventfold-dlq_orders");
        assert_eq!(n.subjects(&t), "eventfold.orders.>");
        assert_eq!(n.dlq_subjects(&t), "eventfold-dlq.orders.>");
        assert_eq!(
            n.subject(&t, Some("order.placed")),
            "eventfold.orders.e.order.placed"
        );
        assert_eq!(n.subject(&t, None), "eventfold.orders.untyped");
        assert_eq!(n.dead_subject(&t, &g), "eventfold-dlq.orders.email.dead");
        assert_eq!(
            n.replay_subject(&t, &g),
            "eventfold-dlq.orders.email.replay"
        );
        assert!(n.owns_stream("eventfold_orders"));
        assert!(n.owns_stream("eventfold-dlq_orders"));
        assert!(!n.owns_stream("eventfoldx_orders"));
        assert!(!n.owns_stream("other_orders"));
    }

    #[test]
    fn stream_names_of_two_kinds_never_collide() {
        let n = names();
        // A topic that looks like the dead-letter suffix still gets a stream of its own kind.
        let t = Topic::new("-dlq_orders").unwrap();
        assert_ne!(n.stream(&t), n.dlq_stream(&Topic::new("orders").unwrap()));
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(Names::new("eventfold").is_ok());
        assert!(Names::new("EfTest2").is_ok());
        for bad in ["", "a_b", "a-b", "a.b", "a b", &"x".repeat(33)] {
            let err = Names::new(bad).unwrap_err().to_string();
            assert!(err.contains("namespace"), "{err}");
        }
    }

    #[test]
    fn event_types_become_valid_subject_tokens() {
        let cases = [
            ("order.placed", "order.placed"),
            ("OrderPlaced", "OrderPlaced"),
            ("order-placed.v2_x", "order-placed.v2_x"),
            ("order placed", "order~20placed"),
            ("a..b", "a.~.b"),
            (".a.", "~.a.~"),
            ("a*.>", "a~2A.~3E"),
            ("~", "~7E"),
            ("café", "caf~C3~A9"),
            ("urn:x/y", "urn~3Ax~2Fy"),
        ];
        for (t, want) in cases {
            assert_eq!(type_tokens(t), want, "{t:?}");
            for token in type_tokens(t).split('.') {
                assert!(!token.is_empty());
                assert!(
                    token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
                    "{token:?} of {t:?}"
                );
            }
        }
    }

    #[test]
    fn distinct_types_get_distinct_subjects() {
        let types = [
            "a.b", "a~2Eb", "a..b", "a.~.b", "a~", "a~7E", "~", "", ".", "..",
        ];
        let subjects: std::collections::BTreeSet<String> =
            types.iter().map(|t| type_tokens(t)).collect();
        assert_eq!(subjects.len(), types.len(), "{subjects:?}");
    }
}
