//! The window against a model: random histories of offers (to a few streams, with a few pin
//! keys in their metadata, or none, or one that is not a string), pulls by several consumers,
//! acks, nacks, failed durable writes and time passing, with the delivery rules checked after
//! every step, and every event settled in the end. Under `pinned` the rules are per pin key
//! (the stream, or the `partition_key` metadata field when the group pins by it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use proptest::prelude::*;

use super::{AckOutcome, Settle, Window};
use crate::config::{GroupConfig, MetadataField, PinBy, RetryBackoff, Strategy as Spread};
use crate::name::ConsumerName;

const STREAMS: usize = 3;
const KEYS: usize = 3;
const CONSUMERS: usize = 3;
/// The metadata field the pinned-by-metadata configs name.
const FIELD: &str = "partition_key";

/// What an offered event carries in its `partition_key` metadata field.
#[derive(Clone, Debug)]
enum KeyField {
    Absent,
    /// A non-empty string: one of `KEYS` customers.
    Customer(usize),
    /// `""`: not a key.
    Empty,
    /// A number: not a key.
    Number(u8),
}

fn key_field() -> impl Strategy<Value = KeyField> {
    prop_oneof![
        1 => Just(KeyField::Absent),
        4 => (0..KEYS).prop_map(KeyField::Customer),
        1 => Just(KeyField::Empty),
        1 => any::<u8>().prop_map(KeyField::Number),
    ]
}

#[derive(Clone, Debug)]
enum Nack {
    Retry,
    Park,
    Skip,
}

#[derive(Clone, Debug)]
enum Op {
    /// The reader offers the next event of a stream (when the window has room), with this
    /// `partition_key`.
    Offer(usize, KeyField),
    /// A consumer pulls.
    Take { consumer: usize, max: usize },
    /// Acks some of the ids handed out so far (stale ones included); `fail`: the durable write
    /// fails.
    Ack { pick: Vec<usize>, fail: bool },
    /// Nacks some of the ids handed out so far.
    Nack {
        pick: Vec<usize>,
        action: Nack,
        fail: bool,
    },
    /// A consumer opens or closes a push stream.
    Push { consumer: usize, open: bool },
    /// Time passes, then the timers fire (parks may fail to be written).
    Advance { ms: u64, fail: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..STREAMS, key_field()).prop_map(|(s, k)| Op::Offer(s, k)),
        3 => (0..CONSUMERS, 1usize..5).prop_map(|(consumer, max)| Op::Take { consumer, max }),
        2 => (prop::collection::vec(any::<usize>(), 1..4), prop::bool::weighted(0.1))
            .prop_map(|(pick, fail)| Op::Ack { pick, fail }),
        1 => (
            prop::collection::vec(any::<usize>(), 1..3),
            prop_oneof![Just(Nack::Retry), Just(Nack::Park), Just(Nack::Skip)],
            prop::bool::weighted(0.1),
        )
            .prop_map(|(pick, action, fail)| Op::Nack { pick, action, fail }),
        1 => (0..CONSUMERS, any::<bool>()).prop_map(|(consumer, open)| Op::Push { consumer, open }),
        2 => (0u64..1500, prop::bool::weighted(0.1)).prop_map(|(ms, fail)| Op::Advance { ms, fail }),
    ]
}

fn config() -> impl Strategy<Value = GroupConfig> {
    (
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        1usize..6,
        any::<bool>(),
        1u32..4,
        100u64..1000,
        0u64..300,
        prop_oneof![Just(1.0), Just(2.0)],
    )
        .prop_flat_map(
            |(pinned, max_in_flight, per, max_deliveries, ack_timeout_ms, initial_ms, mult)| {
                let per = if per {
                    (1..=max_in_flight).prop_map(Some).boxed()
                } else {
                    Just(None).boxed()
                };
                per.prop_map(move |max_in_flight_per_consumer| GroupConfig {
                    strategy: if pinned.is_some() {
                        Spread::Pinned
                    } else {
                        Spread::RoundRobin
                    },
                    pin_by: if pinned == Some(true) {
                        PinBy::Metadata(MetadataField::new(FIELD).expect("a valid field"))
                    } else {
                        PinBy::Stream
                    },
                    max_in_flight,
                    max_in_flight_per_consumer,
                    max_deliveries,
                    ack_timeout_ms,
                    retry_backoff: RetryBackoff {
                        initial_ms,
                        max_ms: initial_ms * 2,
                        multiplier: mult,
                    },
                    ..GroupConfig::default()
                })
            },
        )
}

fn recorded(stream: &StreamName, revision: u64, position: u64) -> RecordedEvent {
    keyed(stream, revision, position, &KeyField::Absent)
}

fn keyed(stream: &StreamName, revision: u64, position: u64, key: &KeyField) -> RecordedEvent {
    let mut metadata = Metadata::new();
    match key {
        KeyField::Absent => {}
        KeyField::Customer(k) => {
            metadata.insert(FIELD.into(), format!("cust-{k}").into());
        }
        KeyField::Empty => {
            metadata.insert(FIELD.into(), "".into());
        }
        KeyField::Number(n) => {
            metadata.insert(FIELD.into(), (*n).into());
        }
    }
    RecordedEvent {
        id: EventId::new_v7(),
        stream: stream.clone(),
        event_type: EventType::new("t").expect("valid type"),
        revision: Revision(revision),
        position: Position(position),
        timestamp: Timestamp(0),
        schema_version: 1,
        content_type: ContentType::json(),
        data: b"{}".to_vec(),
        metadata,
        tags: Default::default(),
    }
}

/// What the model knows of one offered event.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    /// Ready, backing off, or waiting after a failed write: not held by anyone.
    Waiting,
    /// Delivered to a consumer, with its attempt and ack deadline.
    Held {
        consumer: usize,
        attempt: u32,
        deadline: Instant,
    },
    /// Acked, skipped or parked, durably.
    Settled,
}

struct Model {
    config: GroupConfig,
    window: Window,
    names: Vec<ConsumerName>,
    streams: Vec<StreamName>,
    revisions: Vec<u64>,
    next_position: u64,
    t0: Instant,
    now: Instant,
    /// Position → its pin key (as the model works it out) and fate.
    events: BTreeMap<u64, (String, Fate)>,
    /// Per pin key, the last position delivered for the first time.
    first_delivered: HashMap<String, u64>,
    /// Every id handed out, in order: (id, position, consumer).
    ids: Vec<(String, u64, usize)>,
    last_pull: HashMap<usize, Instant>,
    push: [usize; CONSUMERS],
    /// Positions whose settle could not be written: ready again, so they may be delivered
    /// more than `max_deliveries` times (the next failed attempt parks them).
    write_failed: BTreeSet<u64>,
}

impl Model {
    fn new(config: GroupConfig) -> Model {
        let t0 = Instant::now();
        Model {
            window: Window::new(config.clone(), "e".into()),
            config,
            names: (0..CONSUMERS)
                .map(|i| ConsumerName::new(format!("c{i}")).expect("valid name"))
                .collect(),
            streams: (0..STREAMS)
                .map(|i| StreamName::new(format!("s-{i}")).expect("valid name"))
                .collect(),
            revisions: vec![0; STREAMS],
            next_position: 0,
            t0,
            now: t0,
            events: BTreeMap::new(),
            first_delivered: HashMap::new(),
            ids: Vec::new(),
            last_pull: HashMap::new(),
            push: [0; CONSUMERS],
            write_failed: BTreeSet::new(),
        }
    }

    fn live(&self, c: usize) -> bool {
        self.push[c] > 0
            || self
                .last_pull
                .get(&c)
                .is_some_and(|t| self.now < *t + self.config.ack_timeout())
    }

    fn in_flight(&self) -> usize {
        self.events
            .values()
            .filter(|(_, f)| matches!(f, Fate::Held { .. }))
            .count()
    }

    fn in_flight_of(&self, c: usize) -> usize {
        self.events
            .values()
            .filter(|(_, f)| matches!(f, Fate::Held { consumer, .. } if *consumer == c))
            .count()
    }

    fn offer(&mut self, s: usize, field: &KeyField) {
        if !self.window.has_room() {
            return;
        }
        let pos = self.next_position;
        self.next_position += 1;
        let e = keyed(&self.streams[s], self.revisions[s], pos, field);
        self.revisions[s] += 1;
        self.window.offer(e);
        // The documented rule: a non-empty string value when pinning by the field, else the
        // stream's name.
        let key = match (&self.config.pin_by, field) {
            (PinBy::Metadata(_), KeyField::Customer(k)) => format!("cust-{k}"),
            _ => self.streams[s].as_str().to_owned(),
        };
        self.events.insert(pos, (key, Fate::Waiting));
    }

    fn take(&mut self, c: usize, max: usize) {
        let ds = self.window.take(&self.names[c], max, self.now);
        self.last_pull.insert(c, self.now);
        assert!(ds.len() <= max, "at most max deliveries");
        let mut last = None;
        for d in ds {
            let pos = d.event.position.0;
            assert!(last < Some(pos), "deliveries of one pull in position order");
            last = Some(pos);
            let (key, fate) = self.events.get(&pos).cloned().expect("an offered event");
            assert_eq!(
                fate,
                Fate::Waiting,
                "position {pos} delivered while {fate:?} (never after a settle, never twice at once)"
            );
            assert!(
                d.attempt <= self.config.max_deliveries || self.write_failed.contains(&pos),
                "attempt {} beyond max_deliveries {} without parking",
                d.attempt,
                self.config.max_deliveries
            );
            if self.config.strategy == Spread::Pinned {
                for (p, (k2, f2)) in self.events.range(..pos) {
                    assert!(
                        !(*k2 == key && *f2 == Fate::Waiting),
                        "position {pos} delivered while {p} of the same key {key} waits"
                    );
                }
                for (k2, f2) in self.events.values() {
                    if let Fate::Held { consumer, .. } = f2
                        && *k2 == key
                        && *consumer != c
                    {
                        assert!(
                            !self.live(*consumer),
                            "key {key} goes to c{c} while live c{consumer} holds some of it"
                        );
                    }
                }
                if d.attempt == 1 {
                    let last = self.first_delivered.insert(key.clone(), pos);
                    assert!(
                        last < Some(pos),
                        "key {key}: position {pos} delivered first after {last:?}"
                    );
                }
            }
            self.events.insert(
                pos,
                (
                    key,
                    Fate::Held {
                        consumer: c,
                        attempt: d.attempt,
                        deadline: self.now + self.config.ack_timeout(),
                    },
                ),
            );
            self.ids.push((d.delivery_id, pos, c));
        }
        assert!(self.in_flight() <= self.config.max_in_flight);
        assert!(
            self.in_flight_of(c) <= self.config.consumer_in_flight_max(),
            "per-consumer bound"
        );
    }

    fn picked(&self, pick: &[usize]) -> Vec<String> {
        if self.ids.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<String> = pick
            .iter()
            .map(|i| self.ids[i % self.ids.len()].0.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Checks an ack/nack outcome against the model: exactly the current deliveries are acted on.
    fn claim(&mut self, ids: &[String]) -> Vec<u64> {
        let mut out = AckOutcome::default();
        let positions = self.window.claim(ids, &mut out);
        let mut seen = BTreeSet::new();
        for id in ids {
            let (_, pos, c) = self
                .ids
                .iter()
                .find(|(i, _, _)| i == id)
                .cloned()
                .expect("an id handed out");
            let attempt: u32 = id
                .rsplit('-')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("id");
            let current = matches!(
                self.events[&pos].1,
                Fate::Held { consumer, attempt: a, .. } if consumer == c && a == attempt
            ) && seen.insert(pos);
            assert_eq!(
                out.acked.contains(id),
                current,
                "{id} acted on iff it is a current delivery"
            );
        }
        positions
    }

    fn settle(&mut self, positions: &[u64], how: Settle, fail: bool) {
        if fail {
            self.write_failed.extend(positions.iter().copied());
            self.window.unsettle(positions);
            for p in positions {
                self.events.get_mut(p).expect("known").1 = Fate::Waiting;
            }
        } else {
            self.window.settled(positions, how);
            for p in positions {
                self.events.get_mut(p).expect("known").1 = Fate::Settled;
            }
        }
    }

    fn ack(&mut self, ids: &[String], fail: bool) {
        let positions = self.claim(ids);
        self.settle(&positions, Settle::Ack, fail);
    }

    fn nack(&mut self, ids: &[String], action: &Nack, fail: bool) {
        let positions = self.claim(ids);
        match action {
            Nack::Skip => self.settle(&positions, Settle::Skip, fail),
            Nack::Park => {
                self.window.set_reason(&positions, "bad");
                self.settle(&positions, Settle::Park, fail);
            }
            Nack::Retry => {
                let attempts: HashMap<u64, u32> = positions
                    .iter()
                    .map(|p| match self.events[p].1 {
                        Fate::Held { attempt, .. } => (*p, attempt),
                        ref f => panic!("claimed {p} is {f:?}"),
                    })
                    .collect();
                for p in &positions {
                    self.events.get_mut(p).expect("known").1 = Fate::Waiting;
                }
                let retry = self.window.retry(positions, "failed", self.now);
                for (p, n) in &retry.failed {
                    assert_eq!(*n, attempts[p], "a retry records the attempts made");
                }
                let park = retry.park;
                for p in &park {
                    assert!(
                        attempts[p] >= self.config.max_deliveries,
                        "parked exactly when the attempts are used up"
                    );
                }
                self.settle(&park, Settle::Park, fail);
            }
        }
    }

    fn advance(&mut self, ms: u64, fail: bool) {
        self.now += Duration::from_millis(ms);
        let tick = self.window.tick(self.now);
        // Every delivery past its deadline is a failed attempt; the last one parks.
        let mut used_up = BTreeSet::new();
        for (p, (_, f)) in self.events.iter_mut() {
            if let Fate::Held {
                attempt, deadline, ..
            } = *f
                && deadline <= self.now
            {
                *f = Fate::Waiting;
                if attempt >= self.config.max_deliveries {
                    used_up.insert(*p);
                }
            }
        }
        let parked: BTreeSet<u64> = tick.park.iter().copied().collect();
        assert_eq!(
            parked, used_up,
            "parked exactly the timed-out deliveries with no attempt left"
        );
        self.settle(&tick.park, Settle::Park, fail);
        if let Some(t) = self.window.next_deadline() {
            assert!(t > self.now, "no timer left due after a tick");
        }
    }

    fn push(&mut self, c: usize, open: bool) {
        if open {
            self.window.push_opened(&self.names[c], self.now);
            self.push[c] += 1;
        } else if self.push[c] > 0 {
            self.window.push_closed(&self.names[c], self.now);
            self.push[c] -= 1;
            self.last_pull.insert(c, self.now);
        }
    }

    fn check(&self) {
        assert_eq!(self.window.in_flight(), self.in_flight(), "in-flight count");
        if self.config.strategy == Spread::Pinned {
            // A consumer holding a delivery is live here (every timer due is fired as time
            // passes, and a delivery's deadline is within its consumer's liveness), so no two
            // consumers ever hold events of one key at once.
            let mut holder: HashMap<&str, usize> = HashMap::new();
            for (p, (key, f)) in &self.events {
                if let Fate::Held { consumer, .. } = f {
                    assert!(
                        self.live(*consumer),
                        "c{consumer} holds {p} and is not live"
                    );
                    let h = *holder.entry(key).or_insert(*consumer);
                    assert_eq!(
                        h, *consumer,
                        "key {key} held by c{h} and c{consumer} at once"
                    );
                }
            }
        }
        assert!(self.window.in_flight() <= self.config.max_in_flight);
        let unsettled = self
            .events
            .values()
            .filter(|(_, f)| *f != Fate::Settled)
            .count();
        assert_eq!(
            self.window.len(),
            unsettled,
            "the window holds the unsettled"
        );
    }

    /// Acks everything, closes push streams and lets time pass until everything is settled.
    fn drain(&mut self) {
        for c in 0..CONSUMERS {
            while self.push[c] > 0 {
                self.push(c, false);
            }
        }
        for round in 0..10_000 {
            if self.events.values().all(|(_, f)| *f == Fate::Settled) {
                return;
            }
            // Longer than any ack timeout or backoff: every owner is gone, every timer fires.
            self.advance(5000, false);
            self.check();
            let c = round % CONSUMERS;
            let before = self.ids.len();
            self.take(c, self.config.max_in_flight);
            let ids: Vec<String> = self.ids[before..]
                .iter()
                .map(|(i, _, _)| i.clone())
                .collect();
            if !ids.is_empty() {
                self.ack(&ids, false);
            }
            self.check();
        }
        panic!("some events were never settled: {:?}", self.events);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_window_keeps_the_delivery_rules(config in config(), ops in prop::collection::vec(op(), 1..120)) {
        let mut m = Model::new(config);
        for op in &ops {
            match op {
                Op::Offer(s, k) => m.offer(*s, k),
                Op::Take { consumer, max } => m.take(*consumer, *max),
                Op::Ack { pick, fail } => {
                    let ids = m.picked(pick);
                    m.ack(&ids, *fail);
                }
                Op::Nack { pick, action, fail } => {
                    let ids = m.picked(pick);
                    m.nack(&ids, action, *fail);
                }
                Op::Push { consumer, open } => m.push(*consumer, *open),
                Op::Advance { ms, fail } => m.advance(*ms, *fail),
            }
            m.check();
        }
        m.drain();
        prop_assert!(m.window.len() == 0);
        prop_assert!(m.now >= m.t0);
    }
}

/// The operations a shared state store needs: another server's claims hold events back, its
/// settles forget them, and a take that could not be claimed is undone without a trace.
mod shared {
    use super::*;

    fn window_with(events: u64) -> (Window, StreamName) {
        let mut w = Window::new(GroupConfig::default(), "e".into());
        let s = StreamName::new("s-1").expect("valid stream");
        for p in 0..events {
            w.offer(recorded(&s, p, p));
        }
        (w, s)
    }

    fn consumer() -> ConsumerName {
        ConsumerName::new("c").expect("valid consumer")
    }

    /// A take stops at the event whose data reaches `PULL_DATA_BYTES_MAX`: one pull never
    /// holds more than that (plus one event) for a slow reader, whatever `max` asks.
    #[test]
    fn a_take_is_bounded_in_bytes() {
        let mut w = Window::new(GroupConfig::default(), "e".into());
        let s = StreamName::new("s-1").expect("valid stream");
        let event_bytes = 1 << 20;
        for p in 0..10 {
            let mut e = recorded(&s, p, p);
            e.data = vec![b'x'; event_bytes];
            w.offer(e);
        }
        let t0 = Instant::now();
        let got = w.take(&consumer(), 10, t0);
        assert_eq!(got.len(), crate::PULL_DATA_BYTES_MAX.div_ceil(event_bytes));
        let rest = w.take(&consumer(), 10, t0);
        assert_eq!(got.len() + rest.len(), 8, "the next pull takes the rest");
        let last = w.take(&consumer(), 10, t0);
        assert_eq!(last.len(), 2);
    }

    #[test]
    fn untake_puts_deliveries_back_as_never_taken() {
        let (mut w, _) = window_with(3);
        let t0 = Instant::now();
        let got = w.take(&consumer(), 2, t0);
        assert_eq!(got.len(), 2);
        assert_eq!(w.in_flight(), 2);
        w.untake(&got);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.counters().delivered, 0);
        let again = w.take(&consumer(), 3, t0);
        let firsts: Vec<(u64, u32)> = again
            .iter()
            .map(|d| (d.event.position.0, d.attempt))
            .collect();
        assert_eq!(firsts, vec![(0, 1), (1, 1), (2, 1)]);
        // Untaking a stale delivery (acked meanwhile) does nothing.
        let mut out = AckOutcome::default();
        let claimed = w.claim(&[again[0].delivery_id.clone()], &mut out);
        w.settled(&claimed, Settle::Ack);
        w.untake(&again[..1]);
        assert!(!w.contains(0));
    }

    #[test]
    fn a_held_event_waits_for_the_other_servers_deadline() {
        let (mut w, _) = window_with(2);
        let t0 = Instant::now();
        w.hold(0, t0 + Duration::from_secs(5));
        let got = w.take(&consumer(), 10, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.position.0, 1);
        // An earlier deadline does not shorten the hold; a delivered entry is not held.
        w.hold(0, t0 + Duration::from_secs(1));
        w.hold(1, t0 + Duration::from_secs(9));
        assert!(w.tick(t0 + Duration::from_secs(2)).timed_out.is_empty());
        assert!(
            w.take(&consumer(), 10, t0 + Duration::from_secs(2))
                .is_empty()
        );
        w.tick(t0 + Duration::from_secs(5));
        let got = w.take(&consumer(), 10, t0 + Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.position.0, 0);
        assert_eq!(got[0].attempt, 1);
    }

    #[test]
    fn forgotten_events_are_gone_whatever_their_state() {
        let (mut w, _) = window_with(4);
        let t0 = Instant::now();
        let got = w.take(&consumer(), 1, t0);
        w.hold(1, t0 + Duration::from_secs(5));
        w.forget(&[0, 1, 2]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.counters().acked, 0);
        let mut out = AckOutcome::default();
        assert!(w.claim(&[got[0].delivery_id.clone()], &mut out).is_empty());
        assert_eq!(out.unknown.len(), 1);
        let rest = w.take(&consumer(), 10, t0);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].event.position.0, 3);
    }
}

/// Pinning by a metadata field, step by step: a key spans streams, an event without a key goes
/// by its stream, a retry holds back its key only, and a changed `pin_by` keys what is held
/// again.
mod pin_by {
    use super::*;

    fn window(pin_by: PinBy) -> Window {
        let config = GroupConfig {
            strategy: Spread::Pinned,
            pin_by,
            retry_backoff: RetryBackoff {
                initial_ms: 100,
                max_ms: 100,
                multiplier: 1.0,
            },
            ..GroupConfig::default()
        };
        Window::new(config, "e".into())
    }

    fn by_field() -> PinBy {
        PinBy::Metadata(MetadataField::new(FIELD).expect("a valid field"))
    }

    fn consumer(name: &str) -> ConsumerName {
        ConsumerName::new(name).expect("valid consumer")
    }

    /// Offers events `(stream, key field)` at positions 0, 1, ...
    fn offer(w: &mut Window, events: &[(&str, KeyField)]) {
        for (p, (s, k)) in events.iter().enumerate() {
            let s = StreamName::new(*s).expect("valid stream");
            w.offer(keyed(&s, 0, p as u64, k));
        }
    }

    fn positions(ds: &[super::super::Delivery]) -> Vec<u64> {
        ds.iter().map(|d| d.event.position.0).collect()
    }

    #[test]
    fn a_key_spans_streams_and_an_event_without_one_goes_by_its_stream() {
        let mut w = window(by_field());
        offer(
            &mut w,
            &[
                ("order-1", KeyField::Customer(0)),
                ("order-2", KeyField::Customer(1)),
                ("order-2", KeyField::Customer(0)),
                ("order-1", KeyField::Customer(1)),
                ("order-1", KeyField::Absent),
                ("order-1", KeyField::Number(7)),
                ("order-3", KeyField::Empty),
            ],
        );
        let t0 = Instant::now();
        // c1 takes customer 0 with its first event.
        assert_eq!(positions(&w.take(&consumer("c1"), 1, t0)), [0]);
        // c2 gets customer 1 from both streams, and the events without a key (keyed by their
        // streams, which nobody holds); customer 0's event in order-2 stays with c1.
        assert_eq!(positions(&w.take(&consumer("c2"), 10, t0)), [1, 3, 4, 5, 6]);
        assert_eq!(positions(&w.take(&consumer("c1"), 10, t0)), [2]);
    }

    #[test]
    fn a_retry_holds_back_its_key_only() {
        let mut w = window(by_field());
        offer(
            &mut w,
            &[
                ("order-1", KeyField::Customer(0)),
                ("order-2", KeyField::Customer(1)),
                ("order-2", KeyField::Customer(0)),
                ("order-1", KeyField::Customer(1)),
            ],
        );
        let t0 = Instant::now();
        let c = consumer("c1");
        let first = w.take(&c, 2, t0);
        assert_eq!(positions(&first), [0, 1]);
        let mut out = AckOutcome::default();
        let claimed = w.claim(&[first[0].delivery_id.clone()], &mut out);
        w.retry(claimed, "later", t0);
        // Customer 0 (position 2, in order-2) waits for position 0's retry; customer 1 flows,
        // although its event is in order-1 with position 0.
        assert_eq!(positions(&w.take(&c, 10, t0)), [3]);
        let t1 = t0 + Duration::from_millis(100);
        w.tick(t1);
        let again = w.take(&c, 10, t1);
        let got: Vec<(u64, u32)> = again
            .iter()
            .map(|d| (d.event.position.0, d.attempt))
            .collect();
        assert_eq!(got, [(0, 2), (2, 1)]);
    }

    #[test]
    fn a_changed_pin_by_keys_the_held_events_again() {
        let mut w = window(PinBy::Stream);
        offer(
            &mut w,
            &[
                ("order-1", KeyField::Customer(0)),
                ("order-2", KeyField::Customer(0)),
                ("order-3", KeyField::Customer(1)),
            ],
        );
        let t0 = Instant::now();
        let (c1, c2) = (consumer("c1"), consumer("c2"));
        let mut config = w.config().clone();
        config.pin_by = by_field();
        w.set_config(config.clone());
        assert_eq!(positions(&w.take(&c1, 1, t0)), [0]);
        // By stream, order-2 would be free; by customer it is c1's.
        assert_eq!(positions(&w.take(&c2, 10, t0)), [2]);
        assert_eq!(positions(&w.take(&c1, 10, t0)), [1]);
        // Back to streams: each stream is pinned to whoever holds its delivery.
        config.pin_by = PinBy::Stream;
        w.set_config(config);
        let s = StreamName::new("order-3").expect("valid stream");
        w.offer(keyed(&s, 1, 3, &KeyField::Customer(0)));
        assert!(w.take(&c1, 10, t0).is_empty(), "order-3 is c2's");
        assert_eq!(positions(&w.take(&c2, 10, t0)), [3]);
    }
}
