//! `eventfold read`: a stream or `$all`, page after page, as text lines, NDJSON, or NDJSON of
//! CloudEvents.

use eventfold_core::{
    Direction, EventFilter, EventStore as _, Position, ReadAll, ReadFrom, ReadStream, Revision,
    Timestamp, TypeSelector,
};

use super::{CliError, ConnArgs, Out, PAGE_EVENTS, QueryArgs, StartAt, Target};

/// Reads events: one line each, `@position  stream#revision  timestamp  type  data`, or with
/// --json one event object per line (NDJSON). Without --limit it reads to the end.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A stream name, or '$all' for the global log.
    #[arg(value_name = "STREAM|$all")]
    target: Target,
    /// Where to start, included: `start`, `end`, or a revision (stream) or position ($all)
    /// [default: start, or end with --backwards].
    #[arg(long, value_name = "start|end|N")]
    from: Option<StartAt>,
    /// Newest first.
    #[arg(long)]
    backwards: bool,
    /// At most this many events (of those that pass the filters) [default: all].
    #[arg(long)]
    limit: Option<u64>,
    /// Only events of this type (repeat for several); with `*` (one word) or `#` (zero or more
    /// words) a pattern: `order.*`, `order.#`.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<TypeSelector>,
    /// Only events of streams of this category (the part of the name before the first `-`);
    /// $all only.
    #[arg(long)]
    category: Option<String>,
    /// Only events of streams whose name starts with this; $all only.
    #[arg(long)]
    stream_prefix: Option<String>,
    #[command(flatten)]
    query: QueryArgs,
    /// Only events committed at or before this time (RFC 3339 in UTC, e.g.
    /// `2026-01-31T12:00:00Z`): the stream or `$all` as it was then.
    #[arg(long, value_name = "RFC3339", value_parser = parse_until)]
    until: Option<Timestamp>,
    /// Each event as a structured CloudEvent, one per line, as the server writes them
    /// (`Accept: application/cloudevents-batch+json`; see docs/http-api.md, "CloudEvents out").
    #[arg(long)]
    cloudevents: bool,
}

fn parse_until(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).ok_or_else(|| {
        format!("`{s}` is not an RFC 3339 time in UTC such as `2026-01-31T12:00:00Z`")
    })
}

pub(super) async fn run(a: ReadArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let direction = if a.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let from = a.from.unwrap_or(if a.backwards {
        StartAt::End
    } else {
        StartAt::Start
    });
    let mut remaining = a.limit.unwrap_or(u64::MAX);
    let mut out = Out::new();
    if matches!(a.target, Target::Stream(_))
        && (a.category.is_some() || a.stream_prefix.is_some() || a.query.given())
    {
        return Err(CliError::usage(
            "--category, --stream-prefix, --query and --tag filter '$all'; a stream read takes only --type",
        ));
    }
    if a.cloudevents {
        return read_cloudevents(&a, &conn, from, direction, remaining, out).await;
    }
    match &a.target {
        Target::Stream(stream) => {
            let mut from = match from {
                StartAt::Start => ReadFrom::Start,
                StartAt::End => ReadFrom::End,
                StartAt::At(n) => ReadFrom::At(Revision(n)),
            };
            while remaining > 0 {
                // The type filter is applied here, so a page may match fewer than it holds.
                let limit = if a.types.is_empty() {
                    page(remaining)
                } else {
                    PAGE_EVENTS
                };
                let slice = conn
                    .client
                    .read_stream(
                        stream,
                        ReadStream {
                            from,
                            direction,
                            limit,
                            until: a.until,
                        },
                    )
                    .await
                    .map_err(|e| conn.fail(e))?;
                for e in &slice.events {
                    if remaining > 0
                        && (a.types.is_empty()
                            || a.types.iter().any(|t| t.matches(e.event_type.as_str())))
                    {
                        out.event(e, conn.json)?;
                        remaining -= 1;
                    }
                }
                match slice.next {
                    Some(next) if !slice.events.is_empty() => from = ReadFrom::At(next),
                    _ => break,
                }
            }
        }
        Target::All => {
            let filter = EventFilter {
                category: a.category.clone(),
                stream_prefix: a.stream_prefix.clone(),
                query: a.query.query()?,
                ..EventFilter::default()
            }
            .with_types(a.types.iter().cloned());
            let mut from = match from {
                StartAt::Start => ReadFrom::Start,
                StartAt::End => ReadFrom::End,
                StartAt::At(n) => ReadFrom::At(Position(n)),
            };
            while remaining > 0 {
                let slice = conn
                    .client
                    .read_all(ReadAll {
                        from,
                        direction,
                        limit: page(remaining),
                        filter: filter.clone(),
                        until: a.until,
                    })
                    .await
                    .map_err(|e| conn.fail(e))?;
                for e in &slice.events {
                    out.event(e, conn.json)?;
                }
                remaining = remaining.saturating_sub(slice.events.len() as u64);
                match slice.next {
                    Some(next) if ReadFrom::At(next) != from => from = ReadFrom::At(next),
                    _ => break,
                }
            }
        }
    }
    out.flush()
}

/// `--cloudevents`: the same pages, read as CloudEvents batches and printed one CloudEvent
/// per line as the server wrote it.
async fn read_cloudevents(
    a: &ReadArgs,
    conn: &super::Conn,
    from: StartAt,
    direction: Direction,
    mut remaining: u64,
    mut out: Out,
) -> Result<(), CliError> {
    let mut at = match from {
        StartAt::Start => ReadFrom::Start,
        StartAt::End => ReadFrom::End,
        StartAt::At(n) => ReadFrom::At(n),
    };
    // The types (exact and patterns) with the category and prefix: what `$all` is asked for,
    // and what a stream's events are checked against here.
    let types_only = EventFilter {
        category: a.category.clone(),
        stream_prefix: a.stream_prefix.clone(),
        query: a.query.query()?,
        ..EventFilter::default()
    }
    .with_types(a.types.iter().cloned());
    while remaining > 0 {
        let page = match &a.target {
            // The type filter is applied here, so a page may match fewer than it holds.
            Target::Stream(stream) => conn
                .client
                .read_stream_cloudevents(
                    stream,
                    ReadStream {
                        from: at_as(at, Revision),
                        direction,
                        limit: if a.types.is_empty() {
                            page(remaining)
                        } else {
                            PAGE_EVENTS
                        },
                        until: a.until,
                    },
                )
                .await
                .map_err(|e| conn.fail(e))?,
            Target::All => conn
                .client
                .read_all_cloudevents(ReadAll {
                    from: at_as(at, Position),
                    direction,
                    limit: page(remaining),
                    filter: types_only.clone(),
                    until: a.until,
                })
                .await
                .map_err(|e| conn.fail(e))?,
        };
        for ce in &page.events {
            let wanted = a.types.is_empty()
                || ce
                    .attribute("type")
                    .as_ref()
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| types_only.matches_type(t));
            if remaining > 0 && wanted {
                out.json(ce)?;
                remaining -= 1;
            }
        }
        match page.next {
            Some(next) if !page.events.is_empty() && ReadFrom::At(next) != at => {
                at = ReadFrom::At(next);
            }
            _ => break,
        }
    }
    out.flush()
}

/// A start as a revision or a position.
fn at_as<T>(at: ReadFrom<u64>, f: impl FnOnce(u64) -> T) -> ReadFrom<T> {
    match at {
        ReadFrom::Start => ReadFrom::Start,
        ReadFrom::End => ReadFrom::End,
        ReadFrom::At(n) => ReadFrom::At(f(n)),
    }
}

/// The limit of the next read: what is left, at most a page.
fn page(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(PAGE_EVENTS, |r| r.min(PAGE_EVENTS))
}
