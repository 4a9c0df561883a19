//! `eventfold tail`: a live subscription to a stream or `$all`, printed as it comes.

use std::io::IsTerminal as _;

use eventfold_core::{
    EventFilter, EventStore as _, Position, Revision, StoreError, SubscribeFrom, TypeSelector,
};
use futures::StreamExt as _;

use super::{CliError, ConnArgs, Out, QueryArgs, StartAt, Target};

/// Follows a stream or `$all`: the events from --from, then every new one as it is appended,
/// in order, one line each (NDJSON with --json), until Ctrl-C (exit status 0). A dropped
/// connection is resumed after the last event printed.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A stream name, or '$all' for the global log.
    #[arg(value_name = "STREAM|$all")]
    target: Target,
    /// Where to start, included: `start`, `end` (only new events), or a revision (stream) or
    /// position ($all).
    #[arg(long, default_value = "end", value_name = "start|end|N")]
    from: StartAt,
    /// Only events of this type (repeat for several; `order.*` and `order.#` are patterns:
    /// `*` is one word, `#` zero or more); $all only.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<TypeSelector>,
    /// Only events of streams of this category; $all only.
    #[arg(long)]
    category: Option<String>,
    /// Only events of streams whose name starts with this; $all only.
    #[arg(long)]
    stream_prefix: Option<String>,
    #[command(flatten)]
    query: QueryArgs,
}

pub(super) async fn run(a: TailArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let mut sub = match &a.target {
        Target::Stream(stream) => {
            if !a.types.is_empty()
                || a.category.is_some()
                || a.stream_prefix.is_some()
                || a.query.given()
            {
                return Err(CliError::usage(
                    "--type, --category, --stream-prefix, --query and --tag filter '$all'; tail of a stream takes none",
                ));
            }
            let from = match a.from {
                StartAt::Start => SubscribeFrom::Start,
                StartAt::End => SubscribeFrom::End,
                StartAt::At(n) => SubscribeFrom::At(Revision(n)),
            };
            conn.client.subscribe_stream(stream, from)
        }
        Target::All => {
            let from = match a.from {
                StartAt::Start => SubscribeFrom::Start,
                StartAt::End => SubscribeFrom::End,
                StartAt::At(n) => SubscribeFrom::At(Position(n)),
            };
            let filter = EventFilter {
                category: a.category.clone(),
                stream_prefix: a.stream_prefix.clone(),
                query: a.query.query()?,
                ..EventFilter::default()
            }
            .with_types(a.types.iter().cloned());
            conn.client.subscribe_all(from, filter)
        }
    };
    if std::io::stderr().is_terminal() && !conn.json {
        let name = match &a.target {
            Target::All => "$all".to_owned(),
            Target::Stream(s) => s.to_string(),
        };
        eprintln!("following {name} on {}; Ctrl-C to stop", conn.server);
    }
    let mut out = Out::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return out.flush(),
            item = sub.next() => match item {
                Some(Ok(e)) => {
                    out.event(&e, conn.json)?;
                    out.flush()?;
                }
                Some(Err(StoreError::Closed)) => {
                    out.flush()?;
                    return Err(CliError::usage(format!(
                        "the server at {} closed the subscription (it is shutting down); run tail again with --from after the last event shown",
                        conn.server
                    )));
                }
                Some(Err(e)) => {
                    out.flush()?;
                    return Err(conn.fail(e));
                }
                None => {
                    out.flush()?;
                    return Err(CliError::usage(format!(
                        "the server at {} ended the subscription; run tail again with --from after the last event shown",
                        conn.server
                    )));
                }
            }
        }
    }
}
