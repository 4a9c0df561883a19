//! `eventfold group create|list|info|parked|replay|delete`: consumer groups on a server.

use serde_json::{Map, Value, json};

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
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Where a new group starts: start, end or a position [server default: end].
    #[arg(long)]
    start: Option<String>,
    /// Delivery attempts before an event is parked [server default: 10].
    #[arg(long)]
    max_deliveries: Option<u64>,
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
    /// Most unacknowledged deliveries at once [server default: 1000].
    #[arg(long)]
    max_in_flight: Option<u64>,
}

impl CreateArgs {
    fn config(&self) -> Value {
        let mut filter = Map::new();
        for (k, v) in [
            ("stream", &self.stream),
            ("category", &self.category),
            ("stream_prefix", &self.stream_prefix),
        ] {
            if let Some(v) = v {
                filter.insert(k.into(), v.clone().into());
            }
        }
        if !self.types.is_empty() {
            filter.insert("types".into(), json!(self.types));
        }
        let mut c = Map::new();
        if !filter.is_empty() {
            c.insert("filter".into(), Value::Object(filter));
        }
        if let Some(s) = &self.start {
            let v = s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n));
            c.insert("start".into(), v);
        }
        let mut backoff = Map::new();
        for (k, v) in [
            ("initial_ms", self.backoff_initial_ms.map(Value::from)),
            ("max_ms", self.backoff_max_ms.map(Value::from)),
            ("multiplier", self.backoff_multiplier.map(Value::from)),
        ] {
            if let Some(v) = v {
                backoff.insert(k.into(), v);
            }
        }
        if !backoff.is_empty() {
            c.insert("retry_backoff".into(), Value::Object(backoff));
        }
        for (k, v) in [
            ("max_deliveries", self.max_deliveries.map(Value::from)),
            ("ack_timeout_ms", self.ack_timeout_ms.map(Value::from)),
            ("strategy", self.strategy.clone().map(Value::from)),
            ("max_in_flight", self.max_in_flight.map(Value::from)),
        ] {
            if let Some(v) = v {
                c.insert(k.into(), v);
            }
        }
        Value::Object(c)
    }
}

fn n(v: &Value, k: &str) -> String {
    v[k].as_u64().map_or_else(|| "-".into(), |x| x.to_string())
}

pub(super) async fn run(cmd: GroupCommand) -> Result<(), CliError> {
    let mut out = Out::new();
    match cmd {
        GroupCommand::Create(a) => {
            let conn = a.conn.connect()?;
            let (info, created) = conn
                .client
                .put_group(&a.group, &a.config())
                .await
                .map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&info)?;
            } else {
                let verb = if created { "created" } else { "updated" };
                out.line(format_args!(
                    "{verb} consumer group {} (starts at position {})",
                    a.group,
                    n(&info, "start_position")
                ))?;
            }
        }
        GroupCommand::List { conn } => {
            let conn = conn.connect()?;
            let list = conn.client.list_groups().await.map_err(|e| conn.fail(e))?;
            if conn.json {
                out.json(&list)?;
            } else {
                out.line("GROUP  LAG  IN_FLIGHT  PARKED  CHECKPOINT  STRATEGY")?;
                for g in list["subscriptions"].as_array().into_iter().flatten() {
                    out.line(format_args!(
                        "{}  {}  {}  {}  {}  {}",
                        g["group"].as_str().unwrap_or("?"),
                        n(g, "lag"),
                        n(g, "in_flight"),
                        n(g, "parked"),
                        n(g, "checkpoint"),
                        g["strategy"].as_str().unwrap_or("?"),
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
                for k in [
                    "group",
                    "strategy",
                    "start_position",
                    "checkpoint",
                    "lag",
                    "in_flight",
                    "parked",
                    "delivered_total",
                    "acked_total",
                    "retried_total",
                    "parked_total",
                    "max_deliveries",
                    "ack_timeout_ms",
                    "max_in_flight",
                ] {
                    let v = match &info[k] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.line(format_args!("{k:<16} {v}"))?;
                }
                out.line(format_args!("{:<16} {}", "filter", info["filter"]))?;
                out.line(format_args!(
                    "{:<16} {}",
                    "retry_backoff", info["retry_backoff"]
                ))?;
                for c in info["consumers"].as_array().into_iter().flatten() {
                    out.line(format_args!(
                        "consumer         {} live={} in_flight={}",
                        c["name"].as_str().unwrap_or("?"),
                        c["live"],
                        c["in_flight"]
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
                for p in page["parked"].as_array().into_iter().flatten() {
                    let e = &p["event"];
                    out.line(format_args!(
                        "@{}  {}#{}  {}  attempts={}  parked_at={}  reason={}",
                        e["position"],
                        e["stream"].as_str().unwrap_or("?"),
                        e["revision"],
                        e["type"].as_str().unwrap_or("?"),
                        p["attempts"],
                        p["parked_at"].as_str().unwrap_or("?"),
                        p["reason"],
                    ))?;
                }
                if let Some(next) = page["next"].as_u64() {
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
