//! The championship: `MatchCompleted` events → a standings projection → `StandingsUpdated`
//! events (the whole table) in the `standings` stream, which a small web page follows live
//! over the server's SSE subscription.
//!
//! - [`Standings`] is the read model and [`StandingsProjection`] the pure projection that
//!   builds it (tested with `eventfold::testing::ProjectionTest`).
//! - [`StandingsPublisher`] is a [`ReadModel`] whose store is the `standings` stream itself:
//!   each batch of matches becomes one `StandingsUpdated` that carries the table *and* the
//!   position it reflects (`as_of`). That one append is the atomic "read model + checkpoint"
//!   step, so a restart reloads both from the stream's last event and neither skips a match
//!   nor counts one twice. The append expects the stream's last revision, so two publishers
//!   cannot interleave.
//! - [`Championship`] runs it all in-process: the processor, an eventfold HTTP server with the
//!   page at `/`, and a simulator that completes a match every so often.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Html;
use eventfold::core::{
    EventFilter, EventStore, ExpectedRevision, Position, ReadStream, StoreError, StreamName,
};
use eventfold::projection::filter_for;
use eventfold::{
    BoxError, Codec, Context, DomainEvent, Envelope, MemoryProjection, ProcessorHandle, Projection,
    ProjectionProcessor, ReadModel, Upcasters, encode_event,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// The stream the standings are published to.
pub const STANDINGS_STREAM: &str = "standings";

/// The category of match streams (`match-{n}`).
pub const MATCH_CATEGORY: &str = "match";

/// A match was played to the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchCompleted {
    /// The home team.
    pub home: String,
    /// The away team.
    pub away: String,
    /// Goals of the home team.
    pub home_goals: u32,
    /// Goals of the away team.
    pub away_goals: u32,
}

/// Events of a match stream.
#[derive(Clone, Debug, PartialEq, DomainEvent)]
pub enum MatchEvent {
    /// A match was played to the end.
    #[event(name = "MatchCompleted")]
    Completed(MatchCompleted),
}

/// One team's line in the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The team.
    pub team: String,
    /// Matches played.
    pub played: u32,
    /// Won.
    pub won: u32,
    /// Drawn.
    pub drawn: u32,
    /// Lost.
    pub lost: u32,
    /// Goals scored.
    pub goals_for: u32,
    /// Goals conceded.
    pub goals_against: u32,
    /// `goals_for - goals_against`.
    pub goal_difference: i64,
    /// 3 per win, 1 per draw.
    pub points: u32,
}

/// The new table after one or more matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StandingsUpdated {
    /// The position of the last `MatchCompleted` counted, `None` for an empty table after a
    /// reset.
    pub as_of: Option<u64>,
    /// Matches counted.
    pub matches: u64,
    /// The table, best first.
    pub table: Vec<Row>,
}

/// Events of the `standings` stream.
#[derive(Clone, Debug, PartialEq, DomainEvent)]
pub enum StandingsEvent {
    /// The new table.
    #[event(name = "StandingsUpdated")]
    Updated(StandingsUpdated),
}

/// The standings: one row per team that has played.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standings {
    rows: BTreeMap<String, Row>,
    matches: u64,
}

impl Standings {
    /// Counts one match: 3 points for a win, 1 each for a draw.
    pub fn record(&mut self, m: &MatchCompleted) {
        self.matches += 1;
        self.side(&m.home, m.home_goals, m.away_goals);
        self.side(&m.away, m.away_goals, m.home_goals);
    }

    fn side(&mut self, team: &str, scored: u32, conceded: u32) {
        let row = self.rows.entry(team.to_owned()).or_insert_with(|| Row {
            team: team.to_owned(),
            ..Row::default()
        });
        row.played += 1;
        row.goals_for += scored;
        row.goals_against += conceded;
        row.goal_difference = i64::from(row.goals_for) - i64::from(row.goals_against);
        match scored.cmp(&conceded) {
            std::cmp::Ordering::Greater => {
                row.won += 1;
                row.points += 3;
            }
            std::cmp::Ordering::Equal => {
                row.drawn += 1;
                row.points += 1;
            }
            std::cmp::Ordering::Less => row.lost += 1,
        }
    }

    /// The row of `team`.
    pub fn row(&self, team: &str) -> Option<&Row> {
        self.rows.get(team)
    }

    /// Matches counted.
    pub fn matches(&self) -> u64 {
        self.matches
    }

    /// The table: most points first, then goal difference, then goals scored, then name.
    pub fn table(&self) -> Vec<Row> {
        let mut table: Vec<Row> = self.rows.values().cloned().collect();
        table.sort_by_key(|r| {
            (
                Reverse(r.points),
                Reverse(r.goal_difference),
                Reverse(r.goals_for),
                r.team.clone(),
            )
        });
        table
    }

    /// The standings a published table describes.
    pub fn from_published(published: &StandingsUpdated) -> Self {
        Standings {
            rows: published
                .table
                .iter()
                .map(|r| (r.team.clone(), r.clone()))
                .collect(),
            matches: published.matches,
        }
    }
}

/// Builds [`Standings`] from the `MatchCompleted` events of `match-*` streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct StandingsProjection;

impl Projection for StandingsProjection {
    type Event = MatchEvent;

    fn name(&self) -> &str {
        "standings"
    }

    fn filter(&self) -> EventFilter {
        EventFilter {
            category: Some(MATCH_CATEGORY.to_owned()),
            ..filter_for::<MatchEvent>()
        }
    }
}

impl MemoryProjection for StandingsProjection {
    type State = Standings;

    fn apply(
        &self,
        state: &mut Standings,
        events: &[Envelope<MatchEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            let MatchEvent::Completed(m) = &e.event;
            state.record(m);
        }
        Ok(())
    }
}

struct Published {
    standings: Standings,
    checkpoint: Option<Position>,
    /// The revision of the last `StandingsUpdated`, `None` before the first.
    revision: Option<u64>,
}

/// A [`ReadModel`] kept in the `standings` stream: see the module docs.
pub struct StandingsPublisher {
    store: Arc<dyn EventStore>,
    stream: StreamName,
    published: Mutex<Published>,
}

impl std::fmt::Debug for StandingsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandingsPublisher")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl StandingsPublisher {
    /// Publishes to [`STANDINGS_STREAM`] in `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        StandingsPublisher {
            store,
            stream: StreamName::new(STANDINGS_STREAM).expect("a valid constant stream name"),
            published: Mutex::new(Published {
                standings: Standings::default(),
                checkpoint: None,
                revision: None,
            }),
        }
    }

    /// The standings as last published.
    pub async fn standings(&self) -> Standings {
        self.published.lock().await.standings.clone()
    }

    async fn publish(
        &self,
        published: &mut Published,
        update: StandingsUpdated,
        context: &Context,
    ) -> Result<(), BoxError> {
        let event = encode_event(&StandingsEvent::Updated(update), Codec::Json, context)?;
        let expected = match published.revision {
            Some(r) => ExpectedRevision::Exact(r),
            None => ExpectedRevision::NoStream,
        };
        let result = self
            .store
            .append(&self.stream, expected, vec![event])
            .await?;
        published.revision = Some(result.last_revision.0);
        Ok(())
    }
}

#[async_trait::async_trait]
impl ReadModel for StandingsPublisher {
    type Event = MatchEvent;

    fn name(&self) -> &str {
        StandingsProjection.name()
    }

    fn filter(&self) -> EventFilter {
        StandingsProjection.filter()
    }

    /// Loads the last published table and the position it reflects.
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        let mut published = self.published.lock().await;
        let slice = match self
            .store
            .read_stream(&self.stream, ReadStream::backward(1))
            .await
        {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(last) = slice.events.into_iter().next() else {
            return Ok(None);
        };
        let revision = last.revision.0;
        let StandingsEvent::Updated(update) = Upcasters::new().decode(last)?.event;
        *published = Published {
            standings: Standings::from_published(&update),
            checkpoint: update.as_of.map(Position),
            revision: Some(revision),
        };
        Ok(published.checkpoint)
    }

    async fn apply(
        &self,
        events: Vec<Envelope<MatchEvent>>,
        checkpoint: Position,
    ) -> Result<(), BoxError> {
        let mut published = self.published.lock().await;
        let mut next = published.standings.clone();
        StandingsProjection.apply(&mut next, &events)?;
        let context = events.last().map(Envelope::context).unwrap_or_default();
        let update = StandingsUpdated {
            as_of: Some(checkpoint.0),
            matches: next.matches(),
            table: next.table(),
        };
        // Nothing changes in memory unless the append (the commit) succeeded.
        self.publish(&mut published, update, &context).await?;
        published.standings = next;
        published.checkpoint = Some(checkpoint);
        Ok(())
    }

    /// Publishes an empty table with no position: the next start counts every match again.
    async fn reset(&self) -> Result<(), BoxError> {
        let mut published = self.published.lock().await;
        let update = StandingsUpdated {
            as_of: None,
            matches: 0,
            table: Vec::new(),
        };
        self.publish(&mut published, update, &Context::new())
            .await?;
        published.standings = Standings::default();
        published.checkpoint = None;
        Ok(())
    }
}

/// Appends `m` as the only event of `match-{number}`.
pub async fn record_match(
    store: &dyn EventStore,
    number: u64,
    m: MatchCompleted,
) -> Result<Position, BoxError> {
    let stream = StreamName::new(format!("{MATCH_CATEGORY}-{number}"))?;
    let event = encode_event(&MatchEvent::Completed(m), Codec::Json, &Context::new())?;
    let result = store
        .append(&stream, ExpectedRevision::NoStream, vec![event])
        .await?;
    Ok(result.last_position)
}

/// The teams of the simulated league.
pub const TEAMS: [&str; 6] = ["Ajax", "Feyenoord", "PSV", "AZ", "Twente", "Utrecht"];

/// A small deterministic generator of match results (xorshift64*).
#[derive(Clone, Debug)]
pub struct MatchSimulator {
    state: u64,
}

impl MatchSimulator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        MatchSimulator { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next match: two different teams, 0 to 4 goals each.
    pub fn next_match(&mut self) -> MatchCompleted {
        let n = TEAMS.len() as u64;
        let home = (self.next() % n) as usize;
        let away = (home + 1 + (self.next() % (n - 1)) as usize) % TEAMS.len();
        MatchCompleted {
            home: TEAMS[home].to_owned(),
            away: TEAMS[away].to_owned(),
            home_goals: (self.next() % 5) as u32,
            away_goals: (self.next() % 5) as u32,
        }
    }
}

/// How to run the [`Championship`].
#[derive(Clone, Debug)]
pub struct ChampionshipOptions {
    /// Where the HTTP server listens (port 0: any free port).
    pub addr: SocketAddr,
    /// Time between two completed matches.
    pub match_interval: Duration,
    /// Stop simulating after this many matches (`None`: never).
    pub max_matches: Option<u64>,
    /// Seed of the simulated results.
    pub seed: u64,
}

impl Default for ChampionshipOptions {
    fn default() -> Self {
        ChampionshipOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            match_interval: Duration::from_secs(1),
            max_matches: None,
            seed: 2026,
        }
    }
}

/// The page at `/`: subscribes to the `standings` stream over SSE and renders each table.
pub const PAGE: &str = include_str!("championship.html");

/// The championship running in-process: the standings processor, the HTTP server (the
/// eventfold API plus the page at `/`) and the match simulator.
#[derive(Debug)]
pub struct Championship {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    simulator: JoinHandle<Result<u64, BoxError>>,
    processor: ProcessorHandle,
    /// Reads the published standings (the processor owns its own publisher).
    reader: StandingsPublisher,
}

impl Championship {
    /// Starts everything over `store`.
    pub async fn start(
        store: Arc<dyn EventStore>,
        options: ChampionshipOptions,
    ) -> anyhow::Result<Championship> {
        let processor =
            ProjectionProcessor::new(store.clone(), StandingsPublisher::new(store.clone()))
                .batch_size(100);
        let reader = StandingsPublisher::new(store.clone());
        let processor_handle = processor.start();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = eventfold_server::AppState::new(store.clone(), Default::default());
        let closing = state.closing.clone();
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { Html(PAGE) }))
            // The API without the console: this page is the example's `/`.
            .merge(eventfold_server::api_router(state));
        let listener = tokio::net::TcpListener::bind(options.addr).await?;
        let addr = listener.local_addr()?;
        let mut server_stop = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                    // Subscriptions end with a final message.
                    closing.send_replace(true);
                })
                .await
        });

        let mut sim_stop = shutdown_rx;
        let simulator = tokio::spawn(async move {
            let mut results = MatchSimulator::new(options.seed);
            let mut interval = tokio::time::interval(options.match_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut played = 0u64;
            // Continue the numbering of an earlier run on the same store.
            let mut number = first_free_match_number(&*store).await?;
            while options.max_matches.is_none_or(|max| played < max) {
                tokio::select! {
                    _ = sim_stop.wait_for(|s| *s) => break,
                    _ = interval.tick() => {}
                }
                record_match(&*store, number, results.next_match()).await?;
                number += 1;
                played += 1;
            }
            Ok(played)
        });

        Ok(Championship {
            addr,
            shutdown,
            server,
            simulator,
            processor: processor_handle,
            reader,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The standings processor (status, lag).
    pub fn processor(&self) -> &ProcessorHandle {
        &self.processor
    }

    /// The standings as last published (read from the `standings` stream).
    pub async fn standings(&self) -> anyhow::Result<Standings> {
        self.reader
            .checkpoint()
            .await
            .map_err(|e| anyhow::anyhow!("reading the standings: {e}"))?;
        Ok(self.reader.standings().await)
    }

    /// Stops the simulator, the server (subscriptions end with a final message) and the
    /// processor; the number of matches simulated.
    pub async fn shutdown(self) -> anyhow::Result<u64> {
        self.shutdown.send_replace(true);
        let played = self
            .simulator
            .await?
            .map_err(|e| anyhow::anyhow!("the match simulator failed: {e}"))?;
        self.server.await??;
        self.processor.stop().await?;
        Ok(played)
    }
}

/// The number after the highest `match-{n}` in the store.
async fn first_free_match_number(store: &dyn EventStore) -> Result<u64, BoxError> {
    let mut next = 1;
    let mut after = None;
    loop {
        let list = store
            .list_streams(eventfold::core::ListStreams {
                prefix: Some(format!("{MATCH_CATEGORY}-")),
                after: after.take(),
                limit: 1000,
            })
            .await?;
        for s in &list.streams {
            if let Some(n) = s
                .as_str()
                .strip_prefix("match-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
        }
        match list.next {
            Some(n) => after = Some(n.as_str().to_owned()),
            None => return Ok(next),
        }
    }
}
