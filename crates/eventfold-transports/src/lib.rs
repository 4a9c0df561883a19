//! Opens any of eventfold's broker transports from a URL, for programs whose command line names
//! the broker (`eventfold relay --to URL`, the examples' `--transport URL`).
//!
//! - [`TransportUrl`] is the URL parsed and checked once ([`FromStr`]): `memory` (the in-process
//!   broker), `redis://…` (and `redis+unix://…`), `amqp://…`, `kafka://host:port[,host:port…]`
//!   (the bootstrap servers) or `nats://…` (and `tls://…`). Its [`Display`](fmt::Display) and
//!   `Debug` never show a password (nor a NATS token), so it can go into any message or log.
//! - [`TransportUrl::connect`] opens the adapter it names and hands back an
//!   `Arc<dyn Transport>`; its [`ConnectError`] names the broker, the URL without its password
//!   and what to check.
//!
//! Each adapter is a cargo feature (`redis`, `rabbitmq`, `kafka`, `nats`), all on by default; a
//! URL of an adapter left out of the build is refused when it is parsed, saying which feature
//! brings it. This crate is the only place that maps a URL onto an adapter.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use eventfold_transport::{MemoryTransport, Transport, TransportError};

/// The forms [`TransportUrl`] accepts, for messages and `--help`.
pub const URL_FORMS: &str = "memory, redis://[user[:password]@]host[:port][/db], \
    amqp://[user:password@]host[:port][/vhost], kafka://host:port[,host:port...] or \
    nats://[user:password@]host[:port]";

/// The broker a [`TransportUrl`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Broker {
    /// The in-process broker (`memory`): for tests and single-process examples.
    Memory,
    /// Redis Streams.
    Redis,
    /// RabbitMQ (AMQP 0.9.1).
    Rabbitmq,
    /// Kafka.
    Kafka,
    /// NATS JetStream.
    Nats,
}

impl Broker {
    /// The name the adapter gives itself ([`Transport::broker`]): `memory`, `redis`,
    /// `rabbitmq`, `kafka`, `nats`.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Memory => "memory",
            Broker::Redis => "redis",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Kafka => "kafka",
            Broker::Nats => "nats",
        }
    }

    /// The broker's name for people.
    pub fn title(self) -> &'static str {
        match self {
            Broker::Memory => "the in-process broker",
            Broker::Redis => "Redis",
            Broker::Rabbitmq => "RabbitMQ",
            Broker::Kafka => "Kafka",
            Broker::Nats => "NATS",
        }
    }

    /// The cargo feature of this crate that builds the adapter (`None`: always built).
    fn feature(self) -> Option<&'static str> {
        match self {
            Broker::Memory => None,
            Broker::Redis => Some("redis"),
            Broker::Rabbitmq => Some("rabbitmq"),
            Broker::Kafka => Some("kafka"),
            Broker::Nats => Some("nats"),
        }
    }

    /// Whether this build has the adapter.
    pub fn is_built(self) -> bool {
        match self {
            Broker::Memory => true,
            Broker::Redis => cfg!(feature = "redis"),
            Broker::Rabbitmq => cfg!(feature = "rabbitmq"),
            Broker::Kafka => cfg!(feature = "kafka"),
            Broker::Nats => cfg!(feature = "nats"),
        }
    }

    /// What to check when the broker cannot be reached.
    fn unreachable_hint(self) -> &'static str {
        match self {
            Broker::Memory => "the in-process broker cannot fail to open",
            Broker::Redis => {
                "check that redis-server runs at that address and accepts connections from this \
                 machine, and the URL's user and password"
            }
            Broker::Rabbitmq => {
                "check that RabbitMQ runs at that address and accepts connections from this \
                 machine, and the URL's user, password and vhost (`%2f` is the default vhost `/`)"
            }
            Broker::Kafka => {
                "check that the Kafka bootstrap servers run at those addresses and are reachable \
                 from this machine"
            }
            Broker::Nats => {
                "check that nats-server runs at that address with JetStream on (`nats-server -js`) \
                 and accepts connections from this machine, and the URL's credentials"
            }
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// A broker URL, checked: which broker, and where. `Display` and `Debug` show it without its
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportUrl {
    broker: Broker,
    /// What the adapter connects to: the URL as given, or Kafka's bootstrap servers.
    target: String,
    /// The URL for messages: no password, no NATS token, no `pass`/`password` parameter.
    shown: String,
}

/// Why a string is not a [`TransportUrl`]. Messages show the URL without its password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportUrlError {
    /// No broker has this scheme.
    #[error("{given:?} is not a broker URL: give {URL_FORMS}")]
    Unknown {
        /// The value, without its password.
        given: String,
    },
    /// The broker's scheme, but not a URL its adapter can use.
    #[error("{given:?} is not a usable {broker} URL: {detail}")]
    Invalid {
        /// The value, without its password.
        given: String,
        /// The broker its scheme names.
        broker: Broker,
        /// What is wrong and what to give instead.
        detail: String,
    },
    /// The broker's adapter is not in this build.
    #[error(
        "{given:?} names {broker}, but this build has no {broker} transport: build \
         eventfold-transports with its `{feature}` feature (on by default)"
    )]
    NotBuilt {
        /// The value, without its password.
        given: String,
        /// The broker its scheme names.
        broker: Broker,
        /// The cargo feature that brings the adapter.
        feature: &'static str,
    },
}

/// A broker that could not be opened: which, where (without the password) and what to check;
/// the adapter's error is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {broker} at {url}: {hint}")]
pub struct ConnectError {
    /// The broker.
    pub broker: Broker,
    /// Its URL, without the password.
    pub url: String,
    hint: &'static str,
    /// The adapter's error.
    #[source]
    pub source: TransportError,
}

impl ConnectError {
    /// Whether trying again later may succeed (the broker was unreachable, not refusing).
    pub fn is_retryable(&self) -> bool {
        self.source.is_retryable()
    }
}

impl TransportUrl {
    /// The broker it names.
    pub fn broker(&self) -> Broker {
        self.broker
    }

    /// Opens the transport: connects to the broker (each adapter bounds the wait with its own
    /// connect timeout, a few seconds) and checks it answers.
    pub async fn connect(&self) -> Result<Arc<dyn Transport>, ConnectError> {
        let opened: Result<Arc<dyn Transport>, TransportError> = match self.broker {
            Broker::Memory => Ok(Arc::new(MemoryTransport::new())),
            #[cfg(feature = "redis")]
            Broker::Redis => eventfold_transport_redis::RedisTransport::connect(&self.target)
                .await
                .map(|t| Arc::new(t) as Arc<dyn Transport>),
            #[cfg(feature = "rabbitmq")]
            Broker::Rabbitmq => {
                eventfold_transport_rabbitmq::RabbitTransport::connect(&self.target)
                    .await
                    .map(|t| Arc::new(t) as Arc<dyn Transport>)
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka => eventfold_transport_kafka::KafkaTransport::connect(&self.target)
                .await
                .map(|t| Arc::new(t) as Arc<dyn Transport>),
            #[cfg(feature = "nats")]
            Broker::Nats => eventfold_transport_nats::NatsTransport::connect(&self.target)
                .await
                .map(|t| Arc::new(t) as Arc<dyn Transport>),
            // Only reachable in a build without some adapter; parsing refuses such URLs, so
            // this is the same refusal, never a panic.
            #[allow(unreachable_patterns)]
            _ => Err(TransportError::Invalid(format!(
                "this build has no {} transport",
                self.broker
            ))),
        };
        opened.map_err(|source| ConnectError {
            broker: self.broker,
            url: self.shown.clone(),
            hint: match &source {
                TransportError::Unavailable { .. } | TransportError::Closed { .. } => {
                    self.broker.unreachable_hint()
                }
                TransportError::Rejected { .. } => {
                    "the broker refused: check the URL's user, password and rights"
                }
                TransportError::Invalid(_) => "check the URL",
            },
            source,
        })
    }
}

impl FromStr for TransportUrl {
    type Err = TransportUrlError;

    fn from_str(value: &str) -> Result<TransportUrl, TransportUrlError> {
        let given = || redact(value, None);
        let invalid = |broker, detail: &str| TransportUrlError::Invalid {
            given: redact(value, Some(broker)),
            broker,
            detail: detail.to_owned(),
        };
        if value == "memory" {
            return Ok(TransportUrl {
                broker: Broker::Memory,
                target: String::new(),
                shown: "memory".to_owned(),
            });
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(TransportUrlError::Unknown { given: given() });
        };
        let broker = match scheme {
            "redis" | "redis+unix" => Broker::Redis,
            "amqp" => Broker::Rabbitmq,
            "kafka" => Broker::Kafka,
            "nats" | "tls" => Broker::Nats,
            "rediss" => {
                return Err(invalid(
                    Broker::Redis,
                    "TLS (rediss://) is not built into the Redis transport; use redis://",
                ));
            }
            "amqps" => {
                return Err(invalid(
                    Broker::Rabbitmq,
                    "TLS (amqps://) is not built into the RabbitMQ transport; use amqp://",
                ));
            }
            _ => return Err(TransportUrlError::Unknown { given: given() }),
        };
        if let (false, Some(feature)) = (broker.is_built(), broker.feature()) {
            return Err(TransportUrlError::NotBuilt {
                given: redact(value, Some(broker)),
                broker,
                feature,
            });
        }
        let target = match (broker, scheme) {
            (Broker::Kafka, _) => {
                kafka_servers(rest).map_err(|detail| invalid(Broker::Kafka, &detail))?
            }
            (_, "redis+unix") => {
                if !rest.starts_with('/') || rest.len() < 2 {
                    return Err(invalid(
                        Broker::Redis,
                        "give the socket's absolute path: redis+unix:///path/to/redis.sock",
                    ));
                }
                value.to_owned()
            }
            _ => {
                check_authority(rest).map_err(|detail| invalid(broker, &detail))?;
                value.to_owned()
            }
        };
        Ok(TransportUrl {
            broker,
            target,
            shown: redact(value, Some(broker)),
        })
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportUrl")
            .field("broker", &self.broker)
            .field("url", &self.shown)
            .finish()
    }
}

/// Kafka's bootstrap servers from what follows `kafka://`: `host:port[,host:port...]`.
fn kafka_servers(rest: &str) -> Result<String, String> {
    let servers = rest.strip_suffix('/').unwrap_or(rest);
    const FORM: &str = "give the bootstrap servers as kafka://host:port[,host:port...]";
    if servers.is_empty() || servers.contains(['/', '@', '?', '#']) {
        return Err(format!("{FORM} (no path, user or parameters)"));
    }
    for server in servers.split(',') {
        host_port(server, true).map_err(|e| format!("{e}; {FORM}"))?;
    }
    Ok(servers.to_owned())
}

/// Checks the `[userinfo@]host[:port]` part of what follows `scheme://`.
fn check_authority(rest: &str) -> Result<(), String> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // NATS takes a list of servers, `nats://a:4222,b:4222`.
    for server in host_and_port.split(',') {
        host_port(server, false)?;
    }
    Ok(())
}

/// Checks `host[:port]` (`[v6]:port` too); the port is required when `port_required`.
fn host_port(s: &str, port_required: bool) -> Result<(), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!(
                "{s:?} opens an IPv6 address with `[` but has no `]`"
            ));
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{s:?} has something after `]` that is not :port")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    match port {
        None if port_required => Err(format!("{s:?} has no port")),
        None => Ok(()),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(format!("{p:?} in {s:?} is not a port number (1 to 65535)")),
        },
    }
}

/// `value` for messages: [`eventfold_transport::redact_url`] (no password), and also no
/// `pass`/`password` query parameter (redis+unix takes one) and, for NATS, no user at all (a
/// NATS URL's user part may be its token).
fn redact(value: &str, broker: Option<Broker>) -> String {
    let mut shown = eventfold_transport::redact_url(value);
    if broker == Some(Broker::Nats)
        && let Some((scheme, rest)) = shown.split_once("://")
    {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some((_, host)) = rest[..end].rsplit_once('@') {
            shown = format!("{scheme}://{host}{}", &rest[end..]);
        }
    }
    if let Some((before, query)) = shown.split_once('?') {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                let key = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
                key != "pass" && key != "password"
            })
            .collect();
        let mut out = before.to_owned();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        shown = out;
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TransportUrl, TransportUrlError> {
        s.parse()
    }

    #[test]
    fn each_scheme_names_its_broker() {
        for (url, broker) in [
            ("memory", Broker::Memory),
            ("redis://127.0.0.1:6379", Broker::Redis),
            ("redis://h", Broker::Redis),
            ("redis+unix:///run/redis.sock", Broker::Redis),
            ("amqp://guest:guest@127.0.0.1:5672/%2f", Broker::Rabbitmq),
            ("kafka://k1:9092,k2:9092", Broker::Kafka),
            ("nats://127.0.0.1:4222", Broker::Nats),
            ("nats://a:4222,b:4222", Broker::Nats),
            ("tls://[::1]:4222", Broker::Nats),
        ] {
            let parsed = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.broker(), broker, "{url}");
        }
        assert_eq!(
            parse("kafka://k1:9092,k2:9092/").unwrap().target,
            "k1:9092,k2:9092"
        );
        assert_eq!(parse("redis://h:1/0").unwrap().target, "redis://h:1/0");
    }

    #[test]
    fn bad_urls_are_refused_with_what_to_give() {
        for (url, says) in [
            ("postgres://h/db", "is not a broker URL: give memory"),
            ("redis", "is not a broker URL"),
            ("memory://", "is not a broker URL"),
            ("rediss://h", "TLS (rediss://) is not built"),
            ("amqps://h", "TLS (amqps://) is not built"),
            ("redis://", "the host is missing"),
            ("redis://h:port", "is not a port number"),
            ("amqp://u:p@:5672", "the host is missing"),
            ("kafka://", "kafka://host:port"),
            ("kafka://k1", "has no port"),
            ("kafka://k1:9092,", "the host is missing"),
            ("kafka://u@k1:9092", "no path, user or parameters"),
            ("kafka://k1:0", "is not a port number"),
            ("nats://[::1", "no `]`"),
            ("redis+unix://", "absolute path"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn no_message_shows_a_password() {
        for (url, shown) in [
            ("amqp://guest:s3cret@h:5672/%2f", "amqp://guest@h:5672/%2f"),
            ("redis://:s3cret@h:6379/0", "redis://h:6379/0"),
            ("redis://u:s3cret@h", "redis://u@h"),
            ("nats://s3cret@h:4222", "nats://h:4222"),
            ("nats://u:s3cret@h:4222", "nats://h:4222"),
            (
                "redis+unix:///run/r.sock?db=1&pass=s3cret",
                "redis+unix:///run/r.sock?db=1",
            ),
            ("kafka://k:9092", "kafka://k:9092"),
            ("memory", "memory"),
        ] {
            let parsed = parse(url).unwrap();
            assert_eq!(parsed.to_string(), shown, "{url}");
            assert!(!format!("{parsed:?}").contains("s3cret"), "{parsed:?}");
        }
        for bad in [
            "rediss://u:s3cret@h",
            "amqps://u:s3cret@h",
            "amqp://u:s3cret@:1",
            "mqtt://u:s3cret@h",
            "nats://s3cret@:x",
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
