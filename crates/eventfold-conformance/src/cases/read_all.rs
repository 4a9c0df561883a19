//! Reading `$all`: directions, positions, `next`, and filters.

use std::sync::Arc;

use eventfold_core::{
    Direction, EventFilter, EventStore, ExpectedRevision, Limits, Position, ReadAll, ReadFrom,
    TypePattern,
};

use crate::support::{StoreExt as _, ev, positions, stream, ty};

/// Forward and backward, from the start, the end and a position (inclusive); `next` continues
/// where the page stopped, and is `None` when nothing is left that way.
pub async fn read_all_directions_and_next<S: EventStore>(store: &Arc<S>, _: Limits) {
    let empty = store
        .read_all(ReadAll::forward(10))
        .await
        .expect("read an empty $all");
    assert_eq!((empty.events.len(), empty.next), (0, None));
    let empty = store
        .read_all(ReadAll::backward(10))
        .await
        .expect("read an empty $all backward");
    assert_eq!((empty.events.len(), empty.next), (0, None));
    for i in 0..10u64 {
        let batch = if i % 4 == 0 {
            vec![ev("a", i), ev("b", i)]
        } else {
            vec![ev("a", i)]
        };
        store
            .append(
                &stream(&format!("all-{}", i % 3)),
                ExpectedRevision::Any,
                batch,
            )
            .await
            .expect("append");
    }
    let all = store.all_events().await;
    assert_eq!(all.len(), 13);
    let p = positions(&all);
    assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");

    let first = store.read_all(ReadAll::forward(4)).await.expect("read");
    assert_eq!(first.events, all[..4]);
    let next = first.next.expect("more to read after 4 of 13");
    assert!(
        next > p[3] && next <= p[4],
        "next {next:?} between {:?} and {:?}",
        p[3],
        p[4]
    );
    let rest = store
        .read_all(ReadAll::forward(100).from(ReadFrom::At(next)))
        .await
        .expect("read");
    assert_eq!((rest.events.as_slice(), rest.next), (&all[4..], None));
    let exact = store.read_all(ReadAll::forward(13)).await.expect("read");
    assert_eq!(
        (exact.events.len(), exact.next),
        (13, None),
        "an exact fit ends"
    );

    let back = store.read_all(ReadAll::backward(3)).await.expect("read");
    assert_eq!(positions(&back.events), [p[12], p[11], p[10]]);
    let bnext = back.next.expect("more before");
    assert!(bnext < p[10] && bnext >= p[9], "next {bnext:?}");
    let brest = store
        .read_all(ReadAll::backward(100).from(ReadFrom::At(bnext)))
        .await
        .expect("read");
    let mut want: Vec<Position> = p[..10].to_vec();
    want.reverse();
    assert_eq!((positions(&brest.events), brest.next), (want, None));
    let bexact = store.read_all(ReadAll::backward(13)).await.expect("read");
    assert_eq!((bexact.events.len(), bexact.next), (13, None));

    let r = store
        .read_all(ReadAll::forward(2).from(ReadFrom::At(p[5])))
        .await
        .expect("read");
    assert_eq!(positions(&r.events), [p[5], p[6]], "from is inclusive");
    let r = store
        .read_all(ReadAll::backward(2).from(ReadFrom::At(p[5])))
        .await
        .expect("read");
    assert_eq!(
        positions(&r.events),
        [p[5], p[4]],
        "from is inclusive backward"
    );
    let r = store
        .read_all(ReadAll::forward(5).from(ReadFrom::End))
        .await
        .expect("read");
    assert_eq!((positions(&r.events), r.next), (vec![p[12]], None));
    let r = store
        .read_all(ReadAll::backward(5).from(ReadFrom::Start))
        .await
        .expect("read");
    assert_eq!((positions(&r.events), r.next), (vec![p[0]], None));
    let beyond = Position(p[12].0 + 1_000);
    let r = store
        .read_all(ReadAll::forward(5).from(ReadFrom::At(beyond)))
        .await
        .expect("read");
    assert_eq!((r.events.len(), r.next), (0, None));
}

/// Filters by type (any of a list), category (before the first `-`) and stream prefix,
/// combined with AND; `limit` counts matching events and `next` continues after what was
/// scanned.
pub async fn read_all_filters<S: EventStore>(store: &Arc<S>, _: Limits) {
    for (s, t) in [
        ("order-1", "placed"),
        ("order-2", "paid"),
        ("user-1", "placed"),
        ("orders", "placed"),
        ("order-1", "shipped"),
        ("user-2", "paid"),
        ("order", "paid"),
        ("orderx-1", "placed"),
    ] {
        store
            .append(&stream(s), ExpectedRevision::Any, vec![ev(t, 0)])
            .await
            .expect("append");
    }
    let pick = |f: EventFilter, direction: Direction| async move {
        let read = ReadAll {
            from: match direction {
                Direction::Forward => ReadFrom::Start,
                Direction::Backward => ReadFrom::End,
            },
            direction,
            limit: 100,
            filter: f,
            until: None,
        };
        store
            .read_all(read.clone())
            .await
            .unwrap_or_else(|e| panic!("read {read:?}: {e}"))
            .events
            .iter()
            .map(|e| format!("{}/{}", e.stream, e.event_type))
            .collect::<Vec<_>>()
    };
    let types = EventFilter {
        types: vec![ty("paid"), ty("shipped")],
        ..EventFilter::default()
    };
    assert_eq!(
        pick(types.clone(), Direction::Forward).await,
        [
            "order-2/paid",
            "order-1/shipped",
            "user-2/paid",
            "order/paid"
        ]
    );
    assert_eq!(
        pick(types, Direction::Backward).await,
        [
            "order/paid",
            "user-2/paid",
            "order-1/shipped",
            "order-2/paid"
        ]
    );
    let category = EventFilter {
        category: Some("order".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        pick(category, Direction::Forward).await,
        [
            "order-1/placed",
            "order-2/paid",
            "order-1/shipped",
            "order/paid"
        ],
        "`orders` and `orderx-1` are other categories; `order` is its own"
    );
    let prefix = EventFilter {
        stream_prefix: Some("order".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        pick(prefix, Direction::Forward).await,
        [
            "order-1/placed",
            "order-2/paid",
            "orders/placed",
            "order-1/shipped",
            "order/paid",
            "orderx-1/placed",
        ]
    );
    let category_and_type = EventFilter {
        category: Some("order".into()),
        types: vec![ty("placed")],
        ..EventFilter::default()
    };
    assert_eq!(
        pick(category_and_type, Direction::Forward).await,
        ["order-1/placed"]
    );
    let all_three = EventFilter {
        category: Some("order".into()),
        types: vec![ty("placed"), ty("paid")],
        stream_prefix: Some("order-2".into()),
        ..EventFilter::default()
    };
    assert_eq!(pick(all_three, Direction::Forward).await, ["order-2/paid"]);
    let contradictory = EventFilter {
        category: Some("user".into()),
        stream_prefix: Some("order".into()),
        ..EventFilter::default()
    };
    assert!(pick(contradictory, Direction::Forward).await.is_empty());
    let none = EventFilter {
        types: vec![ty("nope")],
        ..EventFilter::default()
    };
    assert!(pick(none, Direction::Forward).await.is_empty());

    // `limit` counts matches; following `next` finds every match once, both ways.
    let paid = EventFilter {
        types: vec![ty("paid")],
        ..EventFilter::default()
    };
    for (first, want) in [
        (
            ReadAll::forward(1),
            ["order-2/paid", "user-2/paid", "order/paid"],
        ),
        (
            ReadAll::backward(1),
            ["order/paid", "user-2/paid", "order-2/paid"],
        ),
    ] {
        let direction = first.direction;
        let mut read = first.filter(paid.clone());
        let mut seen = Vec::new();
        for _ in 0..20 {
            let page = store.read_all(read.clone()).await.expect("read a page");
            assert!(page.events.len() <= 1, "limit 1 gave {page:?}");
            seen.extend(
                page.events
                    .iter()
                    .map(|e| format!("{}/{}", e.stream, e.event_type)),
            );
            match page.next {
                Some(p) => read = read.from(ReadFrom::At(p)),
                None => break,
            }
        }
        assert_eq!(seen, want, "paging {direction:?}");
    }
}

/// Type patterns (`*`: one word, `#`: zero or more words) select by the words of the type, alone,
/// with exact types (OR) and with a category (AND); regular-expression and `LIKE` characters in
/// a pattern's words are literal; `limit` counts matches and `next` pages through them both ways.
pub async fn read_all_type_patterns<S: EventStore>(store: &Arc<S>, _: Limits) {
    for (s, t) in [
        ("order-1", "order.placed"),
        ("order-1", "order.item.added"),
        ("order-2", "order"),
        ("pay-1", "payment.failed"),
        ("pay-1", "failed"),
        ("order-2", "orders.placed"),
        ("odd-1", "a+b.x_y"),
        ("odd-1", "aab.x_y"),
        ("odd-1", "a+b.%"),
        ("order-3", "order.shipped"),
        ("pay-2", "payment.failed.twice"),
        ("odd-1", "o..x"),
        ("odd-1", "f(x.[y"),
    ] {
        store
            .append(&stream(s), ExpectedRevision::Any, vec![ev(t, 0)])
            .await
            .expect("append");
    }
    let pick = |patterns: &[&str], direction: Direction, f: EventFilter| {
        let mut filter = f;
        for p in patterns {
            filter.push_type(p).expect("a valid pattern");
        }
        let read = ReadAll {
            from: match direction {
                Direction::Forward => ReadFrom::Start,
                Direction::Backward => ReadFrom::End,
            },
            direction,
            limit: 100,
            filter,
            until: None,
        };
        async move {
            store
                .read_all(read.clone())
                .await
                .unwrap_or_else(|e| panic!("read {read:?}: {e}"))
                .events
                .iter()
                .map(|e| e.event_type.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let any = EventFilter::default;
    assert_eq!(
        pick(&["order.*"], Direction::Forward, any()).await,
        ["order.placed", "order.shipped"],
        "`*` is exactly one word"
    );
    assert_eq!(
        pick(&["order.#"], Direction::Forward, any()).await,
        ["order.placed", "order.item.added", "order", "order.shipped"],
        "`#` is zero or more words; `orders` is another word"
    );
    assert_eq!(
        pick(&["order.#"], Direction::Backward, any()).await,
        ["order.shipped", "order", "order.item.added", "order.placed"]
    );
    assert_eq!(
        pick(&["#.failed"], Direction::Forward, any()).await,
        ["payment.failed", "failed"]
    );
    assert_eq!(
        pick(&["*.failed.#"], Direction::Forward, any()).await,
        ["payment.failed", "payment.failed.twice"]
    );
    assert_eq!(
        pick(&["a+b.*"], Direction::Forward, any()).await,
        ["a+b.x_y", "a+b.%"],
        "`+` is literal, not a repetition"
    );
    assert_eq!(
        pick(&["*.x_y"], Direction::Forward, any()).await,
        ["a+b.x_y", "aab.x_y"],
        "`_` is literal, not LIKE's any character"
    );
    assert_eq!(
        pick(&["f(x.*"], Direction::Forward, any()).await,
        ["f(x.[y"],
        "an unbalanced `(` or `[` in a word is literal (and not a malformed regular expression)"
    );
    assert_eq!(
        pick(&["o.*.x"], Direction::Forward, any()).await,
        ["o..x"],
        "`*` matches an empty word of a type"
    );
    assert_eq!(
        pick(&["failed", "order.*"], Direction::Forward, any()).await,
        ["order.placed", "failed", "order.shipped"],
        "exact types and patterns: either"
    );
    let order = || EventFilter {
        category: Some("order".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        pick(&["#.placed"], Direction::Forward, order()).await,
        ["order.placed", "orders.placed"],
        "with a category: both"
    );
    assert!(
        pick(&["nothing.#"], Direction::Forward, any())
            .await
            .is_empty(),
        "no match"
    );
    assert_eq!(
        pick(&["#"], Direction::Forward, any()).await.len(),
        13,
        "`#` alone matches every type"
    );

    // `limit` counts matches; following `next` finds every match once, both ways.
    let filter = EventFilter {
        type_patterns: vec![TypePattern::new("#.failed.#").expect("a pattern")],
        ..EventFilter::default()
    };
    for (first, want) in [
        (
            ReadAll::forward(1),
            ["payment.failed", "failed", "payment.failed.twice"],
        ),
        (
            ReadAll::backward(1),
            ["payment.failed.twice", "failed", "payment.failed"],
        ),
    ] {
        let direction = first.direction;
        let mut read = first.filter(filter.clone());
        let mut seen = Vec::new();
        for _ in 0..30 {
            let page = store.read_all(read.clone()).await.expect("read a page");
            assert!(page.events.len() <= 1, "limit 1 gave {page:?}");
            seen.extend(page.events.iter().map(|e| e.event_type.to_string()));
            match page.next {
                Some(p) => read = read.from(ReadFrom::At(p)),
                None => break,
            }
        }
        assert_eq!(seen, want, "paging {direction:?}");
    }
}
