use std::time::Duration;

use eventfold::ProjectionProcessor;
use eventfold::core::ReadStream;
use eventfold::testing::ProjectionTest;
use eventfold_examples::championship::{
    Championship, ChampionshipOptions, MatchCompleted, MatchEvent, MatchSimulator, Row,
    StandingsProjection, StandingsPublisher, StandingsUpdated, record_match,
};
use futures::StreamExt;

use crate::support::{read, temp_store};

fn played(home: &str, home_goals: u32, away_goals: u32, away: &str) -> MatchEvent {
    MatchEvent::Completed(MatchCompleted {
        home: home.into(),
        away: away.into(),
        home_goals,
        away_goals,
    })
}

#[test]
fn standings_count_three_points_a_win_one_a_draw_and_sort_by_goal_difference() {
    ProjectionTest::new(StandingsProjection)
        .given_in("match-1", [played("Ajax", 3, 0, "PSV")])
        .given_in("match-2", [played("PSV", 1, 1, "AZ")])
        .given_in("match-3", [played("AZ", 2, 1, "Ajax")])
        // Not a match stream: the projection's category filter leaves it out.
        .given_in("friendly-1", [played("Ajax", 9, 0, "AZ")])
        .batch_size(2)
        .then(|standings| {
            assert_eq!(standings.matches(), 3);
            let table = standings.table();
            let teams: Vec<(&str, u32, i64)> = table
                .iter()
                .map(|r| (r.team.as_str(), r.points, r.goal_difference))
                .collect();
            // AZ: a draw and a win; Ajax: a win and a loss (+3, -1); PSV: a loss and a draw.
            assert_eq!(teams, [("AZ", 4, 1), ("Ajax", 3, 2), ("PSV", 1, -3)]);
        });
}

#[test]
fn ties_on_points_are_broken_by_goal_difference_then_goals_scored() {
    ProjectionTest::new(StandingsProjection)
        .in_stream("match-1")
        .given([
            played("Ajax", 1, 0, "PSV"),
            played("AZ", 3, 2, "Utrecht"),
            played("Twente", 2, 1, "Feyenoord"),
        ])
        .then(|s| {
            let table = s.table();
            let order: Vec<&str> = table.iter().map(|r| r.team.as_str()).collect();
            // Three winners on 3 points and +1: AZ scored most, then Twente, then Ajax.
            assert_eq!(&order[..3], ["AZ", "Twente", "Ajax"]);
            assert_eq!(
                s.row("Utrecht"),
                Some(&Row {
                    team: "Utrecht".into(),
                    played: 1,
                    lost: 1,
                    goals_for: 2,
                    goals_against: 3,
                    goal_difference: -1,
                    ..Row::default()
                })
            );
        });
}

#[tokio::test]
async fn a_restarted_publisher_continues_from_the_last_published_table() {
    let (_dir, store) = temp_store();
    let mut results = MatchSimulator::new(7);
    for n in 1..=10 {
        record_match(&*store, n, results.next_match())
            .await
            .unwrap();
    }
    let first = ProjectionProcessor::new(store.clone(), StandingsPublisher::new(store.clone()));
    assert_eq!(first.catch_up(|_| {}).await.unwrap().events, 10);

    for n in 11..=15 {
        record_match(&*store, n, results.next_match())
            .await
            .unwrap();
    }
    // A new publisher (a restart) loads table and position from the stream's last event.
    let second = ProjectionProcessor::new(store.clone(), StandingsPublisher::new(store.clone()));
    assert_eq!(second.catch_up(|_| {}).await.unwrap().events, 5);
    let standings = second.read_model().standings().await;
    assert_eq!(standings.matches(), 15);
    let games: u32 = standings.table().iter().map(|r| r.played).sum();
    assert_eq!(games, 30);

    // A rebuild publishes an empty table, then the whole season again.
    let report = second.rebuild(|_| {}).await.unwrap();
    assert_eq!(report.events, 15);
    assert_eq!(second.read_model().standings().await, standings);
    let last = read(&*store, "standings", ReadStream::backward(1)).await;
    assert_eq!(last[0].data_json().unwrap()["matches"], 15);
}

/// The `StandingsUpdated` events of an SSE body, as they arrive, until `done` says so.
async fn read_sse_updates(
    response: reqwest::Response,
    mut done: impl FnMut(&StandingsUpdated) -> bool,
) -> Vec<StandingsUpdated> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut updates = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let is_update = frame.lines().any(|l| l == "event: StandingsUpdated");
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (true, Some(data)) = (is_update, data) {
                let event: serde_json::Value = serde_json::from_str(data).unwrap();
                let update: StandingsUpdated =
                    serde_json::from_value(event["data"].clone()).unwrap();
                let stop = done(&update);
                updates.push(update);
                if stop {
                    return updates;
                }
            }
        }
    }
    updates
}

#[tokio::test]
async fn the_running_example_streams_standings_over_sse_as_matches_complete() {
    let (_dir, store) = temp_store();
    let matches = 6;
    let app = Championship::start(
        store,
        ChampionshipOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            match_interval: Duration::from_millis(30),
            max_matches: Some(matches),
            seed: 1,
        },
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();

    let page = client.get(app.url()).send().await.unwrap();
    assert!(page.status().is_success());
    let html = page.text().await.unwrap();
    assert!(html.contains("new EventSource(\"/streams/standings/subscribe"));

    let response = client
        .get(format!(
            "{}streams/standings/subscribe?from=start",
            app.url()
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let updates = tokio::time::timeout(
        Duration::from_secs(20),
        read_sse_updates(response, |u| u.matches == matches),
    )
    .await
    .expect("the standings reach every match within 20 s");

    let last = updates.last().expect("at least one update");
    assert_eq!(last.matches, matches);
    // Updates arrive as matches complete (a batch may cover more than one), always growing.
    assert!(updates.len() >= 2, "{updates:?}");
    assert!(updates.windows(2).all(|w| w[0].matches < w[1].matches));
    let games: u32 = last.table.iter().map(|r| r.played).sum();
    assert_eq!(u64::from(games), 2 * matches);
    let points: u32 = last.table.iter().map(|r| r.points).sum();
    let draws: u32 = last.table.iter().map(|r| r.drawn).sum::<u32>() / 2;
    assert_eq!(
        u64::from(points),
        3 * (matches - u64::from(draws)) + 2 * u64::from(draws)
    );
    assert_eq!(app.standings().await.unwrap().table(), last.table);

    assert_eq!(app.shutdown().await.unwrap(), matches);
}
