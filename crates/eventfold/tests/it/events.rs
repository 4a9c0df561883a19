use eventfold::core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold::{Codec, CodecError, Context, DomainEvent, Upcasters, encode_event};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlacedV1 {
    order_id: String,
    item_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: String,
    quantity: u32,
    price_cents: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderCancelled {
    reason: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "order.")]
enum OrderEvent {
    #[event(version = 2)]
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
    #[event(name = "shipping.DispatchedToCarrier")]
    HTTPDispatched,
}

fn recorded(e: eventfold::core::NewEvent) -> RecordedEvent {
    RecordedEvent {
        id: e.id,
        stream: StreamName::new("order-1").unwrap(),
        event_type: e.event_type,
        revision: Revision(0),
        position: Position(0),
        timestamp: Timestamp::now(),
        schema_version: e.schema_version,
        content_type: e.content_type,
        data: e.data,
        metadata: e.metadata,
        tags: Default::default(),
    }
}

fn placed() -> OrderEvent {
    OrderEvent::Placed(OrderPlaced {
        order_id: "o-1".into(),
        items: vec![Item {
            id: "sku-1".into(),
            quantity: 2,
            price_cents: 999,
        }],
    })
}

#[test]
fn the_derive_names_and_versions_each_variant() {
    assert_eq!(
        OrderEvent::EVENT_TYPES,
        [
            "order.placed",
            "order.cancelled",
            "shipping.DispatchedToCarrier"
        ]
    );
    assert_eq!(placed().event_type(), "order.placed");
    assert_eq!(placed().schema_version(), 2);
    assert_eq!(OrderEvent::HTTPDispatched.schema_version(), 1);
    assert_eq!(OrderEvent::schema_version_of("order.cancelled"), Some(1));
    assert!(!OrderEvent::knows("order.refunded"));
}

#[test]
fn events_round_trip_in_json_and_messagepack_with_the_context_in_metadata() {
    let ctx = Context::with_correlation_id("req-42").user("alice");
    for codec in [Codec::Json, Codec::MessagePack] {
        for event in [
            placed(),
            OrderEvent::Cancelled(OrderCancelled {
                reason: "late".into(),
            }),
            OrderEvent::HTTPDispatched,
        ] {
            let new = encode_event(&event, codec, &ctx).unwrap();
            assert_eq!(Codec::of(&new.content_type), Some(codec));
            assert_eq!(new.metadata["correlation_id"], "req-42");
            assert_eq!(new.metadata["user_id"], "alice");
            let env = Upcasters::new()
                .decode::<OrderEvent>(recorded(new))
                .unwrap();
            assert_eq!(env.event, event);
            let next = env.context();
            assert_eq!(next.correlation_id, "req-42");
            assert_eq!(next.causation_id, env.id.to_string());
        }
    }
    let json = encode_event(&placed(), Codec::Json, &ctx).unwrap();
    assert_eq!(
        String::from_utf8(json.data).unwrap(),
        r#"{"order_id":"o-1","items":[{"id":"sku-1","quantity":2,"price_cents":999}]}"#
    );
}

fn v1_event(codec: Codec) -> RecordedEvent {
    let v1 = OrderPlacedV1 {
        order_id: "o-7".into(),
        item_ids: vec!["a".into(), "b".into()],
    };
    recorded(
        eventfold::core::NewEvent::bytes(
            EventType::new("order.placed").unwrap(),
            codec.content_type(),
            codec.encode(&v1).unwrap(),
        )
        .with_schema_version(1)
        .with_id(EventId::new_v7()),
    )
}

#[test]
fn order_placed_v1_is_upcast_to_v2_on_read() {
    let upcasters = Upcasters::new().register("order.placed", 1, |v1: OrderPlacedV1| OrderPlaced {
        order_id: v1.order_id,
        items: v1
            .item_ids
            .into_iter()
            .map(|id| Item {
                id,
                quantity: 1,
                price_cents: 0,
            })
            .collect(),
    });
    for codec in [Codec::Json, Codec::MessagePack] {
        let env = upcasters.decode::<OrderEvent>(v1_event(codec)).unwrap();
        let OrderEvent::Placed(p) = env.event else {
            panic!("not placed")
        };
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            p.items[1],
            Item {
                id: "b".into(),
                quantity: 1,
                price_cents: 0
            }
        );
    }
    // Without the upcaster the old version is refused with what to do.
    let err = Upcasters::new()
        .decode::<OrderEvent>(v1_event(Codec::Json))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::NoUpcaster {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Upcasters::register"));
}

#[test]
fn upcasters_chain_v1_to_v2_to_v3_and_refuse_newer_versions() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V3 {
        n: u32,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        count: u32,
    }
    #[derive(Debug, PartialEq, DomainEvent)]
    enum Counter {
        #[event(version = 3)]
        Counted(V3),
    }
    let upcasters = Upcasters::new()
        .register_raw("counted", 1, |mut raw| {
            raw.data = serde_json::json!({ "count": raw.data["c"] });
            raw.schema_version = 2;
            Ok(raw)
        })
        .register("counted", 2, |v2: V2| V3 { n: v2.count * 10 });
    let make = |version: u32, data: &str| RecordedEvent {
        schema_version: version,
        event_type: EventType::new("counted").unwrap(),
        data: data.as_bytes().to_vec(),
        content_type: ContentType::json(),
        metadata: Metadata::new(),
        ..recorded(
            encode_event(&Counter::Counted(V3 { n: 0 }), Codec::Json, &Context::new()).unwrap(),
        )
    };
    assert_eq!(
        upcasters
            .decode::<Counter>(make(1, r#"{"c":4}"#))
            .unwrap()
            .event,
        Counter::Counted(V3 { n: 40 })
    );
    assert_eq!(
        upcasters
            .decode::<Counter>(make(3, r#"{"n":5}"#))
            .unwrap()
            .event,
        Counter::Counted(V3 { n: 5 })
    );
    let err = upcasters
        .decode::<Counter>(make(4, r#"{"n":5}"#))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::NewerVersion {
                found: 4,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = upcasters
        .decode::<Counter>(make(1, r#"{"c":"x"}"#))
        .unwrap_err();
    assert!(matches!(err, CodecError::Upcast { from: 2, .. }), "{err}");
    let err = upcasters
        .decode::<Counter>(make(3, r#"{"m":5}"#))
        .unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
}
