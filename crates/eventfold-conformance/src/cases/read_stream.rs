//! Reading one stream: directions, where to start, limits, `next`, and the events' contents.

use std::sync::Arc;

use eventfold_core::{
    ContentType, Direction, EventId, EventStore, ExpectedRevision, Limits, Metadata, NewEvent,
    ReadFrom, ReadStream, Revision, Timestamp,
};

use crate::support::{StoreExt as _, assert_not_found, evs, stream, ty};

fn at(n: u64) -> ReadFrom<Revision> {
    ReadFrom::At(Revision(n))
}

/// Forward and backward from the start, the end and a revision (inclusive), with `next`
/// pointing at the first event not returned, or `None` when nothing is left that way.
pub async fn read_stream_directions_limits_and_next<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("read-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 6))
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Any, evs("b", 4))
        .await
        .expect("append");
    let fwd = ReadStream::forward;
    let back = ReadStream::backward;
    let cases: Vec<(ReadStream, Vec<u64>, Option<u64>)> = vec![
        (fwd(4), vec![0, 1, 2, 3], Some(4)),
        (fwd(4).from(at(4)), vec![4, 5, 6, 7], Some(8)),
        (fwd(4).from(at(8)), vec![8, 9], None),
        (fwd(4).from(at(6)), vec![6, 7, 8, 9], None),
        (fwd(10), (0..10).collect(), None),
        (fwd(100), (0..10).collect(), None),
        (fwd(4).from(at(50)), vec![], None),
        (fwd(4).from(ReadFrom::End), vec![9], None),
        (fwd(1).from(at(9)), vec![9], None),
        (back(3), vec![9, 8, 7], Some(6)),
        (back(3).from(at(6)), vec![6, 5, 4], Some(3)),
        (back(3).from(at(2)), vec![2, 1, 0], None),
        (back(10), (0..10).rev().collect(), None),
        (back(3).from(ReadFrom::Start), vec![0], None),
        (back(3).from(at(99)), vec![9, 8, 7], Some(6)),
        (back(1).from(at(0)), vec![0], None),
    ];
    for (read, want, want_next) in cases {
        assert_eq!(
            store.page(&s, read).await,
            (want, want_next),
            "read {read:?}: (revisions, next)"
        );
    }
    let empty = store
        .read_stream(&s, fwd(0))
        .await
        .expect("a read of 0 events");
    assert!(empty.events.is_empty(), "{empty:?}");
    // Following `next` visits every event once, both ways.
    for (first, direction) in [(fwd(3), Direction::Forward), (back(3), Direction::Backward)] {
        let mut seen = Vec::new();
        let mut read = first;
        loop {
            let (page, next) = store.page(&s, read).await;
            seen.extend(page);
            match next {
                Some(n) => read = read.from(at(n)),
                None => break,
            }
        }
        let mut want: Vec<u64> = (0..10).collect();
        if direction == Direction::Backward {
            want.reverse();
        }
        assert_eq!(seen, want, "paging {direction:?}");
    }
}

/// Every field comes back as written: id, stream, type, revision, position, schema version,
/// content type, data bytes (JSON and binary), metadata; timestamps are the commit time and do
/// not decrease.
pub async fn events_round_trip_every_field<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("roundtrip-1");
    let mut md = Metadata::new();
    md.insert("correlation_id".into(), "req_xyz".into());
    md.insert("causation_id".into(), "cmd_1".into());
    md.insert(
        "nested".into(),
        serde_json::json!({"a": [1, 2.5, {"b": null}], "t": true}),
    );
    let data = serde_json::json!({"orderId": "ord_123", "total": 99.99, "unicode": "été ✓ 🚀", "list": [1, "two", null]});
    let id = EventId::from_uuid(uuid::Uuid::from_u128(
        0x0192f6a0_7c1e_7a3b_9c1d_2f1e3a4b5c6d,
    ));
    let json = NewEvent::json(ty("order.placed"), &data)
        .with_id(id)
        .with_metadata(md.clone())
        .with_schema_version(3);
    let binary = NewEvent::bytes(
        ty("blob"),
        ContentType::new("application/octet-stream").expect("a valid media type"),
        (0..=255u8).rev().chain(0..=255u8).collect(),
    );
    let empty_text = NewEvent::bytes(
        ty("note"),
        ContentType::new("text/plain; charset=utf-8").expect("a valid media type"),
        Vec::new(),
    );
    let invalid_utf8 = NewEvent::bytes(
        ty("raw"),
        ContentType::new("image/png").expect("a valid media type"),
        vec![0x89, b'P', b'N', b'G', 0xff, 0xfe, 0, 0, 0xc3],
    )
    .with_schema_version(7);
    let before = Timestamp::now();
    let first = store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![json.clone(), binary.clone(), empty_text.clone()],
        )
        .await
        .expect("append");
    let second = store
        .append(&s, ExpectedRevision::Any, vec![invalid_utf8.clone()])
        .await
        .expect("append");
    let after = Timestamp::now();
    let r = store.stream_events(&s).await;
    assert_eq!(r.len(), 4);
    for (e, (new, rev)) in r.iter().zip([
        (&json, 0u64),
        (&binary, 1),
        (&empty_text, 2),
        (&invalid_utf8, 3),
    ]) {
        assert_eq!(e.id, new.id, "id of revision {rev}");
        assert_eq!(e.stream, s);
        assert_eq!(e.revision, Revision(rev));
        assert_eq!(e.event_type, new.event_type);
        assert_eq!(
            e.schema_version, new.schema_version,
            "schema_version of {rev}"
        );
        assert_eq!(e.content_type, new.content_type, "content_type of {rev}");
        // A store may add a W3C trace context to an event that has none (the HTTP server
        // stores one in every event); everything sent comes back as sent.
        let mut got = e.metadata.clone();
        if !new.metadata.contains_key("traceparent") {
            got.remove("traceparent");
            got.remove("tracestate");
        }
        assert_eq!(got, new.metadata, "metadata of {rev}");
        if rev != 0 {
            assert!(e.data == new.data, "data bytes of revision {rev} differ");
        }
    }
    assert_eq!(r[0].id.to_string(), "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d");
    assert_eq!(r[0].data_json(), Some(data), "JSON data");
    let mut got = r[0].metadata.clone();
    got.remove("traceparent");
    got.remove("tracestate");
    assert_eq!(got, md);
    assert_eq!(
        [r[0].position, r[2].position, r[3].position],
        [
            first.first_position,
            first.last_position,
            second.first_position
        ]
    );
    let times: Vec<Timestamp> = r.iter().map(|e| e.timestamp).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps do not decrease: {times:?}"
    );
    // A second of slack for clocks measured on the other side of a network.
    assert!(
        times[0].micros() >= before.micros() - 1_000_000
            && times[3].micros() <= after.micros() + 1_000_000,
        "timestamps are the commit time: {times:?} not within {before}..{after}"
    );
    // $all and a backward read return the very same events.
    assert_eq!(store.all_events().await, r);
    let mut back = store
        .read_stream(&s, ReadStream::backward(10))
        .await
        .expect("read backward")
        .events;
    back.reverse();
    assert_eq!(back, r);
}

/// A stream never written is not found, whichever way it is read.
pub async fn missing_stream_is_not_found<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("missing-1");
    store
        .append(&stream("missing-10"), ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append to a stream with a longer name");
    for read in [
        ReadStream::forward(1),
        ReadStream::backward(1),
        ReadStream::forward(1).from(at(0)),
    ] {
        assert_not_found(store.read_stream(&s, read).await, &s);
    }
    assert_not_found(store.stream_info(&s).await, &s);
}
