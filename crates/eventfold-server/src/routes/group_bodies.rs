//! Between the consumer groups' own types and the wire's (`eventfold_protocol::groups`): the
//! settings a client sends become a validated `GroupConfig` (absent fields take the groups'
//! defaults), and the groups' figures, deliveries and parked events become the bodies the
//! client reads.

use eventfold_core::{EventFilter, RecordedEvent, StreamName};
use eventfold_groups::{
    ConsumerInfo, Delivery, GroupConfig, GroupFilter, GroupInfo, MetadataField, NackAction,
    ParkedEvent, ParkedPage, PinBy, RetryBackoff, Start, Strategy,
};
use eventfold_protocol::groups::{
    ConsumerBody, DeliveryBody, GroupFilterBody, GroupInfoBody, GroupSettings, NackActionBody,
    ParkedBody, ParkedPageBody, PinByBody, RetryBackoffBody, StartFrom, StrategyBody,
};

use crate::error::ApiResult;

/// The settings of a `PUT`, validated into the groups' config; absent fields are defaults.
pub fn config_from_wire(s: GroupSettings) -> ApiResult<GroupConfig> {
    let d = GroupConfig::default();
    // Each entry is an exact type or, with `*` or `#`, a pattern: the rule of `$all` reads.
    let mut types = EventFilter::default();
    for t in &s.filter.types {
        types.push_type(t)?;
    }
    let filter = GroupFilter {
        stream: s.filter.stream.map(StreamName::new).transpose()?,
        category: s.filter.category,
        stream_prefix: s.filter.stream_prefix,
        types: types.types,
        type_patterns: types.type_patterns,
    };
    let b = s.retry_backoff.unwrap_or_default();
    Ok(GroupConfig {
        filter,
        start: match s.start {
            None => d.start,
            Some(StartFrom::Start) => Start::Start,
            Some(StartFrom::End) => Start::End,
            Some(StartFrom::Position(p)) => Start::Position(p),
        },
        max_deliveries: s.max_deliveries.unwrap_or(d.max_deliveries),
        ack_timeout_ms: s.ack_timeout_ms.unwrap_or(d.ack_timeout_ms),
        retry_backoff: RetryBackoff {
            initial_ms: b.initial_ms.unwrap_or(d.retry_backoff.initial_ms),
            max_ms: b.max_ms.unwrap_or(d.retry_backoff.max_ms),
            multiplier: b.multiplier.unwrap_or(d.retry_backoff.multiplier),
        },
        strategy: match s.strategy {
            None => d.strategy,
            Some(StrategyBody::RoundRobin) => Strategy::RoundRobin,
            Some(StrategyBody::Pinned) => Strategy::Pinned,
        },
        pin_by: match s.pin_by {
            None | Some(PinByBody::Stream) => PinBy::Stream,
            Some(PinByBody::Metadata(field)) => PinBy::Metadata(MetadataField::new(field)?),
        },
        max_in_flight: s.max_in_flight.unwrap_or(d.max_in_flight),
        max_in_flight_per_consumer: s.max_in_flight_per_consumer,
    })
}

/// A config as the wire shows it: every field filled in.
pub fn config_to_wire(c: &GroupConfig) -> GroupSettings {
    GroupSettings {
        filter: GroupFilterBody {
            stream: c.filter.stream.as_ref().map(|s| s.as_str().to_owned()),
            category: c.filter.category.clone(),
            stream_prefix: c.filter.stream_prefix.clone(),
            types: c
                .filter
                .types
                .iter()
                .map(|t| t.as_str().to_owned())
                .chain(c.filter.type_patterns.iter().map(|p| p.as_str().to_owned()))
                .collect(),
        },
        start: Some(match c.start {
            Start::Start => StartFrom::Start,
            Start::End => StartFrom::End,
            Start::Position(p) => StartFrom::Position(p),
        }),
        max_deliveries: Some(c.max_deliveries),
        ack_timeout_ms: Some(c.ack_timeout_ms),
        retry_backoff: Some(RetryBackoffBody {
            initial_ms: Some(c.retry_backoff.initial_ms),
            max_ms: Some(c.retry_backoff.max_ms),
            multiplier: Some(c.retry_backoff.multiplier),
        }),
        strategy: Some(match c.strategy {
            Strategy::RoundRobin => StrategyBody::RoundRobin,
            Strategy::Pinned => StrategyBody::Pinned,
        }),
        pin_by: Some(match &c.pin_by {
            PinBy::Stream => PinByBody::Stream,
            PinBy::Metadata(field) => PinByBody::Metadata(field.as_str().to_owned()),
        }),
        max_in_flight: Some(c.max_in_flight),
        max_in_flight_per_consumer: c.max_in_flight_per_consumer,
    }
}

/// A group's info as the wire shows it.
pub fn info_to_wire(i: GroupInfo) -> GroupInfoBody {
    GroupInfoBody {
        settings: config_to_wire(&i.config),
        group: i.group,
        start_position: i.start_position,
        checkpoint: i.checkpoint,
        lag: i.lag,
        in_flight: i.in_flight,
        unsettled: i.unsettled,
        parked: i.parked,
        delivered_total: i.delivered_total,
        acked_total: i.acked_total,
        retried_total: i.retried_total,
        parked_total: i.parked_total,
        consumers: i.consumers.into_iter().map(consumer_to_wire).collect(),
    }
}

fn consumer_to_wire(c: ConsumerInfo) -> ConsumerBody {
    ConsumerBody {
        name: c.name,
        live: c.live,
        in_flight: c.in_flight,
        push_streams: c.push_streams,
    }
}

/// A delivery as the wire shows it, borrowing the event (encoded once, straight from the
/// stored event).
pub fn delivery_to_wire(d: &Delivery) -> DeliveryBody<&RecordedEvent> {
    DeliveryBody {
        delivery_id: d.delivery_id.clone(),
        attempt: d.attempt,
        event: &d.event,
    }
}

/// The nack action the wire names.
pub fn nack_action(a: NackActionBody) -> NackAction {
    match a {
        NackActionBody::Retry => NackAction::Retry,
        NackActionBody::Park => NackAction::Park,
        NackActionBody::Skip => NackAction::Skip,
    }
}

/// A page of parked events as the wire shows it (each event is the API's event JSON as it was
/// when parked).
pub fn parked_to_wire(p: ParkedPage) -> ParkedPageBody<Box<serde_json::value::RawValue>> {
    ParkedPageBody {
        parked: p.parked.into_iter().map(parked_event_to_wire).collect(),
        next: p.next,
    }
}

fn parked_event_to_wire(e: ParkedEvent) -> ParkedBody<Box<serde_json::value::RawValue>> {
    ParkedBody {
        event: e.event,
        position: e.position,
        reason: e.reason,
        attempts: e.attempts,
        parked_at: e.parked_at,
    }
}

#[cfg(test)]
mod tests {
    use eventfold_core::{EventType, TypePattern};

    use super::*;

    #[test]
    fn absent_settings_are_the_groups_defaults_and_a_config_round_trips() {
        let c = config_from_wire(GroupSettings::default()).expect("valid");
        assert_eq!(c, GroupConfig::default());
        let full = GroupConfig {
            filter: GroupFilter {
                types: vec![EventType::new("order.placed").expect("type")],
                type_patterns: vec![TypePattern::new("invoice.#").expect("pattern")],
                category: Some("order".into()),
                ..GroupFilter::default()
            },
            start: Start::Position(7),
            strategy: Strategy::Pinned,
            pin_by: PinBy::Metadata(MetadataField::new("partition_key").expect("field")),
            max_in_flight_per_consumer: Some(3),
            ..GroupConfig::default()
        };
        assert_eq!(
            config_from_wire(config_to_wire(&full)).expect("valid"),
            full
        );
        let bad = GroupSettings {
            filter: GroupFilterBody {
                stream: Some("$all".into()),
                ..GroupFilterBody::default()
            },
            ..GroupSettings::default()
        };
        assert_eq!(config_from_wire(bad).expect_err("invalid").0.status, 400);
        let bad = GroupSettings {
            strategy: Some(StrategyBody::Pinned),
            pin_by: Some(PinByBody::Metadata(String::new())),
            ..GroupSettings::default()
        };
        let e = config_from_wire(bad).expect_err("an empty field name");
        assert_eq!(
            (e.0.status, e.0.code()),
            (400, Some(eventfold_protocol::ErrorCode::InvalidRequest))
        );
        let bad = GroupSettings {
            filter: GroupFilterBody {
                types: vec!["order.*x".into()],
                ..GroupFilterBody::default()
            },
            ..GroupSettings::default()
        };
        let e = config_from_wire(bad).expect_err("a malformed pattern");
        assert_eq!(e.0.status, 400);
        assert!(
            e.0.body.error.message.contains("order.*x"),
            "{}",
            e.0.body.error.message
        );
    }
}
