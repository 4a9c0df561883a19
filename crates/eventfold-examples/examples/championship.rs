//! The championship, live: matches complete every second, a projection keeps the standings and
//! publishes each new table as a `StandingsUpdated` event, and a page follows them over SSE.
//!
//! ```text
//! cargo run -p eventfold-examples --example championship [-- --addr 127.0.0.1:8080] [--data DIR]
//! ```
//!
//! Open the printed URL in a browser. Without `--data` the store lives in a temporary directory
//! removed at exit; with it, a restart continues the season where it stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use eventfold::core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::championship::{Championship, ChampionshipOptions};

struct Args {
    addr: SocketAddr,
    data: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        addr: ChampionshipOptions::default().addr,
        data: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--addr", Some(a)) => parsed.addr = a.parse().context("--addr: not an address")?,
            ("--data", Some(d)) => parsed.data = Some(PathBuf::from(d)),
            _ => bail!("usage: championship [--addr HOST:PORT] [--data DIR]"),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let temp;
    let dir = match args.data {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().context("create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(&dir, EngineOptions::default())
            .with_context(|| format!("open the store in {}", dir.display()))?,
    );
    let options = ChampionshipOptions {
        addr: args.addr,
        ..ChampionshipOptions::default()
    };
    let app = Championship::start(store, options).await?;
    println!("standings live at {}  (Ctrl-C to stop)", app.url());
    println!(
        "raw SSE: curl -N -H 'Accept: text/event-stream' '{}streams/standings/subscribe?from=start'",
        app.url()
    );
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    let standings = app.standings().await?;
    let played = app.shutdown().await?;
    println!(
        "\n{played} matches this run, {} in all; the table:",
        standings.matches()
    );
    println!(
        "{:<4}{:<12}{:>4}{:>4}{:>4}{:>4}{:>5}{:>5}",
        "#", "team", "P", "W", "D", "L", "GD", "Pts"
    );
    for (i, r) in standings.table().iter().enumerate() {
        println!(
            "{:<4}{:<12}{:>4}{:>4}{:>4}{:>4}{:>5}{:>5}",
            i + 1,
            r.team,
            r.played,
            r.won,
            r.drawn,
            r.lost,
            r.goal_difference,
            r.points
        );
    }
    Ok(())
}
