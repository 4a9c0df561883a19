//! The Redis keys of a topic and of its groups. The topic is a Redis Cluster hash tag
//! (`{topic}`), so every key of a topic lives in one slot and the scripts that touch several of
//! them (dead-lettering, replay, retries) would be valid on a cluster (the transport itself
//! connects to one server).

use eventfold_transport::{ConsumerGroup, Topic};

/// The stream a topic's messages are appended to.
pub(crate) fn stream(topic: &Topic) -> String {
    format!("eventfold:{{{topic}}}")
}

/// The Redis keys of one group of one topic (as `docs/transports/redis.md` lists them), for
/// operators' tools and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKeys {
    /// The topic's stream (the group is a consumer group on it).
    pub stream: String,
    /// The group's own stream of replayed dead letters (the group is a consumer group on it too;
    /// no other group reads it).
    pub replay: String,
    /// The group's scheduled retries: a sorted set of pending entries (`m:{id}` on the topic's
    /// stream, `r:{id}` on the replay stream) scored by the Unix time in ms they are due.
    pub retry: String,
    /// The group's dead letters.
    pub dead: String,
    /// The group's name.
    pub group: String,
}

impl GroupKeys {
    /// The keys of `group` on `topic`.
    pub fn new(topic: &Topic, group: &ConsumerGroup) -> GroupKeys {
        let stream = stream(topic);
        GroupKeys {
            replay: format!("{stream}:replay:{group}"),
            retry: format!("{stream}:retry:{group}"),
            dead: format!("{stream}:dead:{group}"),
            stream,
            group: group.as_str().to_owned(),
        }
    }

    /// The stream behind a token's tag.
    pub(crate) fn stream_of(&self, tag: Tag) -> &str {
        match tag {
            Tag::Main => &self.stream,
            Tag::Replay => &self.replay,
        }
    }
}

/// Which of a group's two streams an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// The topic's stream.
    Main,
    /// The group's replay stream.
    Replay,
}

impl Tag {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tag::Main => "m",
            Tag::Replay => "r",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Tag> {
        match s {
            "m" => Some(Tag::Main),
            "r" => Some(Tag::Replay),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_per_topic() {
        let k = GroupKeys::new(
            &Topic::new("orders").unwrap(),
            &ConsumerGroup::new("email").unwrap(),
        );
        assert_eq!(k.stream, "eventfold:{orders}");
        assert_eq!(k.replay, "eventfold:{orders}:replay:email");
        assert_eq!(k.retry, "eventfold:{orders}:retry:email");
        assert_eq!(k.dead, "eventfold:{orders}:dead:email");
        assert_eq!(k.stream_of(Tag::Replay), k.replay);
    }
}
