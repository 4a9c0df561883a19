//! The window against a model: random histories of offers, pulls by several consumers, acks,
//! nacks, failed durable writes and time passing, with the delivery rules checked after every
//! step, and every event settled in the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use proptest::prelude::*;

use super::{AckOutcome, Settle, Window};
use crate::config::{GroupConfig, RetryBackoff, Strategy as Spread};
use crate::name::ConsumerName;

const STREAMS: usize = 3;
const CONSUMERS: usize = 3;

#[derive(Clone, Debug)]
enum Nack {
    Retry,
    Park,
    Skip,
}

#[derive(Clone, Debug)]
enum Op {
    /// The reader offers the next event of a stream (when the window has room).
    Offer(usize),
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
        3 => (0..STREAMS).prop_map(Op::Offer),
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
        any::<bool>(),
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
                    strategy: if pinned {
                        Spread::Pinned
                    } else {
                        Spread::RoundRobin
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
        metadata: Metadata::new(),
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
    /// Position → its stream and fate.
    events: BTreeMap<u64, (usize, Fate)>,
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

    fn offer(&mut self, s: usize) {
        if !self.window.has_room() {
            return;
        }
        let pos = self.next_position;
        self.next_position += 1;
        let e = recorded(&self.streams[s], self.revisions[s], pos);
        self.revisions[s] += 1;
        self.window.offer(e);
        self.events.insert(pos, (s, Fate::Waiting));
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
            let (s, fate) = self.events.get(&pos).cloned().expect("an offered event");
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
                for (p, (s2, f2)) in self.events.range(..pos) {
                    assert!(
                        !(*s2 == s && *f2 == Fate::Waiting),
                        "position {pos} delivered while {p} of the same stream waits"
                    );
                }
                for (s2, f2) in self.events.values() {
                    if let Fate::Held { consumer, .. } = f2
                        && *s2 == s
                        && *consumer != c
                    {
                        assert!(
                            !self.live(*consumer),
                            "stream {s} goes to c{c} while live c{consumer} holds some of it"
                        );
                    }
                }
            }
            self.events.insert(
                pos,
                (
                    s,
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
                Op::Offer(s) => m.offer(*s),
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
