//! A [`Message`] as AMQP properties and body, and back; lapin's errors as transport errors.
//!
//! The headers are the wire mapping's (`eventfold_transport::wire`), unchanged, as AMQP
//! long-string headers; AMQP messages have no key, so the key travels in the CloudEvents
//! partitioning header `ce_partitionkey` (as on NATS).

use std::collections::BTreeMap;

use eventfold_transport::{Message, TransportError, TransportResult, wire};
use lapin::BasicProperties;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::BROKER;

/// The header carrying [`Message::key`]; absent when the key is empty.
pub const H_KEY: &str = eventfold_transport::wire::H_PARTITION_KEY;
/// On a copy made by a delayed retry or a dead letter: the deliveries made before it.
pub const H_ATTEMPTS: &str = "x-eventfold-attempts";
/// On a dead letter: why it was dead-lettered.
pub const H_DEAD_REASON: &str = "x-eventfold-dead-reason";
/// AMQP's persistent delivery mode.
const PERSISTENT: u8 = 2;
/// The most bytes of a dead-letter reason kept.
pub const REASON_BYTES_MAX: usize = 1_000;

/// Headers RabbitMQ adds (`x-death`, `x-first-death-*`, `x-delivery-count`, ...) and the
/// adapter's own (`x-eventfold-*`) are not the message's.
fn is_control(name: &str) -> bool {
    name.starts_with("x-") || name == H_KEY
}

/// A short string, or what to do instead of lapin's panic.
pub fn short(what: &str, s: &str) -> TransportResult<ShortString> {
    ShortString::try_new(s).map_err(|_| {
        TransportError::Invalid(format!(
            "{what} {:?}... is {} bytes; AMQP allows at most 255: shorten it",
            s.chars().take(40).collect::<String>(),
            s.len()
        ))
    })
}

/// The properties a message is published with: persistent, `message_id` = `ce_id`,
/// `content_type` from the `content-type` header, the headers as long strings, the key as
/// `ce_partitionkey`, plus `extra` (the adapter's own headers).
pub fn properties_of(m: &Message, extra: &[(&str, AMQPValue)]) -> TransportResult<BasicProperties> {
    let mut headers = FieldTable::default();
    for (name, value) in &m.headers {
        if is_control(name) {
            continue;
        }
        headers.insert(
            short("the header name", name)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    if !m.key.is_empty() {
        headers.insert(
            ShortString::from(H_KEY),
            AMQPValue::LongString(LongString::from(m.key.as_bytes())),
        );
    }
    for (name, value) in extra {
        headers.insert(ShortString::from(*name), value.clone());
    }
    let mut props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    if let Some(id) = m.id() {
        props = props.with_message_id(short("the ce_id", id)?);
    }
    if let Some(ct) = m.header(wire::H_CONTENT_TYPE) {
        props = props.with_content_type(short("the content type", ct)?);
    }
    Ok(props)
}

/// A header's value as text: strings as they are, numbers in decimal; other kinds (tables,
/// arrays) are not carried.
fn text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

/// A header's value as a count (stored as a number or as decimal text).
pub fn count(props: &BasicProperties, name: &str) -> Option<u64> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    match v {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// A header's value as text.
pub fn header(props: &BasicProperties, name: &str) -> Option<String> {
    text(props.headers().as_ref()?.inner().get(name)?)
}

/// The message carried by AMQP properties and a body: the key from `ce_partitionkey`,
/// RabbitMQ's and the adapter's `x-` headers left out, the others sorted by name (an AMQP table
/// is a map). A message from a plain AMQP publisher without a `content-type` header gets the
/// `content_type` property as one.
pub fn message_of(props: &BasicProperties, body: &[u8]) -> Message {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut key = String::new();
    if let Some(headers) = props.headers() {
        for (name, value) in headers.inner() {
            let name = name.as_str();
            if name == H_KEY {
                key = text(value).unwrap_or_default();
                continue;
            }
            if is_control(name) {
                continue;
            }
            if let Some(v) = text(value) {
                out.insert(name.to_owned(), v);
            }
        }
    }
    if !out.contains_key(wire::H_CONTENT_TYPE)
        && let Some(ct) = props.content_type()
    {
        out.insert(wire::H_CONTENT_TYPE.to_owned(), ct.as_str().to_owned());
    }
    Message {
        key,
        headers: out.into_iter().collect(),
        payload: body.to_vec(),
    }
}

/// A dead-letter reason fit for a header: at most [`REASON_BYTES_MAX`] bytes, on one line.
pub fn reason(s: &str) -> String {
    let mut out: String = s.replace(['\r', '\n'], " ");
    if out.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Whether RabbitMQ refused because what exists differs (`PRECONDITION_FAILED`).
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    soft(e) == Some(AMQPSoftError::PRECONDITIONFAILED)
}

/// Whether RabbitMQ said the queue or exchange does not exist (`NOT_FOUND`).
pub fn is_not_found(e: &lapin::Error) -> bool {
    soft(e) == Some(AMQPSoftError::NOTFOUND)
}

fn soft(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(s) => Some(s.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// A lapin error as a transport error: what RabbitMQ refused on a channel (a soft error:
/// not found, access refused, a topology that conflicts) is `Rejected`; a lost connection, a
/// closed channel, a broker shutting down is `Unavailable` (retry later).
pub fn error(url: &str, action: &'static str, e: &lapin::Error) -> TransportError {
    match soft(e) {
        Some(AMQPSoftError::ACCESSREFUSED) => TransportError::Rejected {
            broker: BROKER,
            action,
            detail: format!(
                "access refused at {url}: {e}; check the user, password and vhost in the URL and \
                 the user's permissions"
            ),
        },
        Some(_) => TransportError::Rejected {
            broker: BROKER,
            action,
            detail: e.to_string(),
        },
        None => unavailable(url, action, &e.to_string()),
    }
}

/// RabbitMQ cannot be reached (or dropped the connection) at `url`.
pub fn unavailable(url: &str, action: &str, detail: &str) -> TransportError {
    TransportError::Unavailable {
        broker: BROKER,
        url: url.to_owned(),
        detail: format!(
            "{action}: {detail}; check that RabbitMQ runs there and the URL is right; retry later \
             (the next call reconnects)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_and_comes_back_with_its_key_and_without_control_headers() {
        let m = Message {
            key: "order-1".into(),
            headers: vec![
                ("ce_id".into(), "0192".into()),
                ("content-type".into(), "application/json".into()),
                ("x-death".into(), "not carried".into()),
            ],
            payload: b"{}".to_vec(),
        };
        let p = properties_of(&m, &[(H_ATTEMPTS, AMQPValue::LongLongInt(3))]).unwrap();
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), "0192");
        assert_eq!(p.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(count(&p, H_ATTEMPTS), Some(3));
        let back = message_of(&p, b"{}");
        assert_eq!(back.key, "order-1");
        assert_eq!(
            back.headers,
            vec![
                ("ce_id".to_owned(), "0192".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
    }

    #[test]
    fn what_amqp_cannot_carry_is_refused_not_a_panic() {
        let m = Message {
            key: String::new(),
            headers: vec![("h".repeat(300), "v".into())],
            payload: Vec::new(),
        };
        let err = properties_of(&m, &[]).unwrap_err();
        assert!(err.to_string().contains("at most 255"), "{err}");
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(reason("a\nb"), "a b");
        assert_eq!(reason(&"é".repeat(1_000)).len(), REASON_BYTES_MAX);
    }
}
