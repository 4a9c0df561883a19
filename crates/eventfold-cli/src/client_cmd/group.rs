//! `eventfold group create|list|info|parked|replay|delete`: consumer groups on a server.

use eventfold_protocol::groups::{
    GroupFilterBody, GroupSettings, PinByBody, RetryBackoffBody, StartFrom, StrategyBody,
};
use serde_json::json;

use super::{CliError, ConnArgs, Out, plural};

/// Consumer groups (persistent subscriptions) on a server.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group, or replace an existing group's settings (settings not given take the
    /// contract's defaults; `--start` applies only at creation).
    Create(Box<CreateArgs>),
    /// List the groups with their lag, in-flight and parked counts.
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a group's settings, checkpoint, lag, counters and consumers.
    Info {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group.
        group: String,
    },
    /// List a group's parked events (oldest first) with reason and attempts.
    Parked {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group.
        group: String,
        /// How many at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue from this `next` of an earlier page.
        #[arg(long)]
        from: Option<u64>,
    },
    /// Deliver a group's parked events again, oldest first.
    Replay {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group.
        group: String,
        /// How many at most (default: as many as the server takes in one request).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Delete a group with its acknowledgements and parked events.
    Delete {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group.
        group: String,
    },
}

/// `eventfold group create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The group: letters, digits, `-`, `_`, `.`.
    group: String,
    /// Only this stream.
    #[arg(long, conflicts_with_all = ["category", "stream_prefix"])]
    stream: Option<String>,
    /// Only streams of this category.
    #[arg(long, conflicts_with = "stream_prefix")]
    category: Option<String>,
    /// Only streams whose name starts with this.
    #[arg(long)]
    stream_prefix: Option<String>,
    /// Only events of this type (repeat for several); with `*` (one word) or `#` (zero or more
    /// words) a pattern: `order.*`, `order.#`.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Where a new group starts: start, end or a position [server default: end].
    #[arg(long)]
    start: Option<String>,
    /// Delivery attempts before an event is parked [server default: 10].
    #[arg(long)]
    max_deliveries: Option<u32>,
    /// A delivery not acknowledged within this counts as failed [server default: 30000].
    #[arg(long)]
    ack_timeout_ms: Option<u64>,
    /// First retry delay [server default: 100].
    #[arg(long)]
    backoff_initial_ms: Option<u64>,
    /// Longest retry delay [server default: 60000].
    #[arg(long)]
    backoff_max_ms: Option<u64>,
    /// Growth of the retry delay per attempt [server default: 2.0].
    #[arg(long)]
    backoff_multiplier: Option<f64>,
    /// round_robin or pinned [server default: round_robin].
    #[arg(long)]
    strategy: Option<String>,
    /// What `pinned` keeps in order: stream, or metadata.FIELD for the value of a metadata
    /// field, e.g. metadata.partition_key (events without it go by their stream); needs
    /// --strategy pinned, and cannot change while the group is pinned [server default: stream].
    #[arg(long, value_name = "stream|metadata.FIELD")]
    pin_by: Option<String>,
    /// Most unacknowledged deliveries at once [server default: 1000].
    #[arg(long)]
    max_in_flight: Option<usize>,
}

impl CreateArgs {
    fn settings(&self) -> Result<GroupSettings, CliError> {
        let start = self
            .start
            .as_deref()
            .map(|s| {
                serde_json::from_value::<StartFrom>(
                    s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n)),
                )
                .map_err(|_| {
                    CliError::usage(format!("--start {s:?}: give start, end or a position"))
                })
            })
            .transpose()?;
        let strategy = self
            .strategy
            .as_deref()
            .map(|s| {
                serde_json::from_value::<StrategyBody>(json!(s)).map_err(|_| {
                    CliError::usage(format!("--strategy {s:?}: give round_robin or pinned"))
                })
            })
            .transpose()?;
        let pin_by = self.pin_by.as_deref().map(parse_pin_by).transpose()?;
        let backoff = RetryBackoffBody {
            initial_ms: self.backoff_initial_ms,
            max_ms: self.backoff_max_ms,
            multiplier: self.backoff_multiplier,
        };
        Ok(GroupSettings {
            filter: GroupFilterBody {
                stream: self.stream.clone(),
                category: self.category.clone(),
                stream_prefix: self.stream_prefix.clone(),
                types: self.types.clone(),
            },
            start,
            max_deliveries: self.max_deliveries,
            ack_timeout_ms: self.ack_timeout_ms,
            retry_backoff: (backoff != RetryBackoffBody::default()).then_some(backoff),
            strategy,
            pin_by,
            max_in_flight: self.max_in_flight,
            max_in_flight_per_consumer: None,
        })
    }
}

/// `stream`, or `metadata.FIELD` (the field's name is checked by the server).
fn parse_pin_by(s: &str) -> Result<PinByBody, CliError> {
    if s == "stream" {
        return Ok(PinByBody::Stream);
    }
    match s.strip_prefix("metadata.") {
        Some(field) if !field.is_empty() => Ok(PinByBody::Metadata(field.to_owned())),
        _ => Err(CliError::usage(format!(
            "--pin-by {s:?}: give stream or metadata.FIELD (e.g. metadata.partition_key)"
        ))),
    }
}

/// What `parse_pin_by` reads.
fn pin_by_name(p: Option<&PinByBody>) -> String {
    match p {
        Some(PinByBody::Stream) => "stream".into(),
        Some(PinByBody::Metadata(field)) => format!("metadata.{field}"),
        None => "?".into(),
    }
}

fn strategy_name(s: Option<StrategyBody>) -> &'static str {
    match s {
        Some(StrategyBody::RoundRobin) => "round_robin",
        Some(StrategyBody::Pinned) => "pinned",
        None => "?",
    }
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |x| x.to_string())
}

pub(super) async fn run(cmd: GroupCommand) -> Result<(), CliError> {
    let mut out = Out::new();
    match cmd {
        GroupCommand::Create(a) => {
            let conn = a.conn.connect()?;
            let (info, created) = conn
                .client
                .put_group(&a.group, &a.settings()?)
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&info)?;
            } else {
                let verb = if created { "created" } else { "updated" };
                out.line(format_args!(
                    "{verb} consumer group {} (starts at position {})",
                    a.group, info.start_position
                ))?;
            }
        }
        GroupCommand::List { conn } => {
            let conn = conn.connect()?;
            let list = conn.client.list_groups().await.map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&json!({ "subscriptions": list }))?;
            } else {
                out.line("GROUP  LAG  IN_FLIGHT  PARKED  CHECKPOINT  STRATEGY")?;
                for g in &list {
                    out.line(format_args!(
                        "{}  {}  {}  {}  {}  {}",
                        g.group,
                        g.lag,
                        g.in_flight,
                        g.parked,
                        g.checkpoint,
                        strategy_name(g.settings.strategy),
                    ))?;
                }
            }
        }
        GroupCommand::Info { conn, group } => {
            let conn = conn.connect()?;
            let info = conn
                .client
                .group_info(&group)
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&info)?;
            } else {
                let st = &info.settings;
                let rows: [(&str, String); 15] = [
                    ("group", info.group.clone()),
                    ("strategy", strategy_name(st.strategy).to_owned()),
                    ("pin_by", pin_by_name(st.pin_by.as_ref())),
                    ("start_position", info.start_position.to_string()),
                    ("checkpoint", info.checkpoint.to_string()),
                    ("lag", info.lag.to_string()),
                    ("in_flight", info.in_flight.to_string()),
                    ("parked", info.parked.to_string()),
                    ("delivered_total", info.delivered_total.to_string()),
                    ("acked_total", info.acked_total.to_string()),
                    ("retried_total", info.retried_total.to_string()),
                    ("parked_total", info.parked_total.to_string()),
                    ("max_deliveries", or_dash(st.max_deliveries)),
                    ("ack_timeout_ms", or_dash(st.ack_timeout_ms)),
                    ("max_in_flight", or_dash(st.max_in_flight)),
                ];
                for (k, v) in rows {
                    out.line(format_args!("{k:<16} {v}"))?;
                }
                out.line(format_args!("{:<16} {}", "filter", json!(st.filter)))?;
                out.line(format_args!(
                    "{:<16} {}",
                    "retry_backoff",
                    json!(st.retry_backoff)
                ))?;
                for c in &info.consumers {
                    out.line(format_args!(
                        "consumer         {} live={} in_flight={}",
                        c.name, c.live, c.in_flight
                    ))?;
                }
            }
        }
        GroupCommand::Parked {
            conn,
            group,
            limit,
            from,
        } => {
            let conn = conn.connect()?;
            let page = conn
                .client
                .group_parked(&group, limit, from)
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&page)?;
            } else {
                for p in &page.parked {
                    let e = &p.event;
                    out.line(format_args!(
                        "@{}  {}#{}  {}  attempts={}  parked_at={}  reason={}",
                        p.position,
                        e.stream,
                        e.revision.0,
                        e.event_type,
                        p.attempts,
                        p.parked_at,
                        json!(p.reason),
                    ))?;
                }
                if let Some(next) = page.next {
                    out.line(format_args!("(more: --from {next})"))?;
                }
            }
        }
        GroupCommand::Replay { conn, group, max } => {
            let conn = conn.connect()?;
            let n = conn
                .client
                .group_replay(&group, max)
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&json!({ "replayed": n }))?;
            } else {
                out.line(format_args!(
                    "replayed {} of consumer group {group}",
                    plural(n, "parked event")
                ))?;
            }
        }
        GroupCommand::Delete { conn, group } => {
            let conn = conn.connect()?;
            conn.client
                .delete_group(&group)
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&json!({ "deleted": group }))?;
            } else {
                out.line(format_args!("deleted consumer group {group}"))?;
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_by_reads_stream_or_a_metadata_field() {
        assert_eq!(parse_pin_by("stream").ok(), Some(PinByBody::Stream));
        let field = parse_pin_by("metadata.partition_key").ok();
        assert_eq!(field, Some(PinByBody::Metadata("partition_key".into())));
        assert_eq!(pin_by_name(field.as_ref()), "metadata.partition_key");
        assert_eq!(
            parse_pin_by("metadata.a.b").ok(),
            Some(PinByBody::Metadata("a.b".into())),
            "everything after the first `metadata.` is the field"
        );
        for bad in ["", "metadata.", "metadata", "partition_key", "Stream"] {
            let e = parse_pin_by(bad).expect_err(bad);
            assert!(e.message.contains("metadata.FIELD"), "{}", e.message);
        }
    }
}
