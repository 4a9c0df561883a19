//! A [`Message`] as NATS headers and payload, and back. The headers are the wire mapping's
//! (`eventfold_transport::wire`), unchanged; NATS has no message key, so the key travels in
//! the CloudEvents partitioning header `ce_partitionkey`.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use eventfold_transport::{Message, TransportError, TransportResult};

/// The header carrying [`Message::key`] (CloudEvents' partitioning extension, `partitionkey`,
/// as the Kafka binding names it). Absent when the key is empty.
pub const H_KEY: &str = eventfold_transport::wire::H_PARTITION_KEY;
/// JetStream's de-duplication id header: the event's `ce_id`.
pub const H_MSG_ID: &str = "Nats-Msg-Id";
/// On a dead letter: why it was dead-lettered.
pub const H_DEAD_REASON: &str = "eventfold-dead-reason";
/// On a dead letter: the deliveries made before it was dead-lettered (decimal).
pub const H_DEAD_ATTEMPTS: &str = "eventfold-dead-attempts";
/// Headers starting with this are the server's or the client's (`Nats-Msg-Id`, `Nats-Stream`,
/// ...), not the message's.
const NATS_PREFIX: &str = "Nats-";

/// The headers a message is published with: its own (names and values checked: NATS headers
/// cannot carry a `:` or control characters in a name, nor a line break in a value), its key,
/// and `Nats-Msg-Id` = `ce_id` when it has one.
pub fn headers_of(m: &Message) -> TransportResult<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &m.headers {
        if name == H_KEY || name.starts_with(NATS_PREFIX) {
            continue;
        }
        insert(&mut headers, name, value)?;
    }
    if !m.key.is_empty() {
        insert(&mut headers, H_KEY, &m.key)?;
    }
    if let Some(id) = m.id() {
        insert(&mut headers, H_MSG_ID, id)?;
    }
    Ok(headers)
}

/// Adds a header, refusing what NATS cannot carry (instead of the client's panic).
pub fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> TransportResult<()> {
    let header_name: HeaderName = if name.is_empty() {
        None
    } else {
        name.parse().ok()
    }
    .ok_or_else(|| {
        TransportError::Invalid(format!(
            "the header name {name:?} cannot be sent on NATS: use 1 or more printable ASCII \
             characters without `:`"
        ))
    })?;
    let header_value: HeaderValue = value.parse().map_err(|_| {
        TransportError::Invalid(format!(
            "the header `{name}` has a line break in its value {value:?}, which NATS headers \
             cannot carry: remove it from the value (for an event, from its metadata)"
        ))
    })?;
    headers.insert(header_name, header_value);
    Ok(())
}

/// A line-break-free version of a text of our own (a dead-letter reason) for a header value.
pub fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The message carried by NATS headers and a payload: the key from `ce_partitionkey`, the
/// server's `Nats-*` headers and eventfold's dead-letter headers left out, the others sorted by
/// name (NATS does not keep their order). A header given more than once keeps its last value.
pub fn message_of(headers: Option<&HeaderMap>, payload: &[u8]) -> Message {
    let mut key = String::new();
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let Some(value) = values.last() else {
                continue;
            };
            let value: &str = value.as_ref();
            if name == H_KEY {
                key = value.to_owned();
            } else if !(name.starts_with(NATS_PREFIX)
                || name == H_DEAD_REASON
                || name == H_DEAD_ATTEMPTS)
            {
                out.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    out.sort();
    Message {
        key,
        headers: out,
        payload: payload.to_vec(),
    }
}

/// The value of a header, if present.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            key: "order-42".into(),
            headers: vec![
                (
                    "ce_id".into(),
                    "0192d6a3-0000-7000-8000-000000000001".into(),
                ),
                ("ce_type".into(), "order.placed".into()),
                ("content-type".into(), "application/json".into()),
            ],
            payload: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_message_goes_and_comes_back() {
        let m = message();
        let h = headers_of(&m).expect("valid headers");
        assert_eq!(header(&h, H_KEY), Some("order-42"));
        assert_eq!(
            header(&h, H_MSG_ID),
            Some("0192d6a3-0000-7000-8000-000000000001")
        );
        assert_eq!(header(&h, "content-type"), Some("application/json"));
        let mut want = m.clone();
        want.headers.sort();
        assert_eq!(message_of(Some(&h), &m.payload), want);
    }

    #[test]
    fn what_nats_cannot_carry_is_refused_not_a_panic() {
        let mut m = message();
        m.headers.push(("ce_correlationid".into(), "a\nb".into()));
        let err = headers_of(&m).unwrap_err().to_string();
        assert!(
            err.contains("ce_correlationid") && err.contains("line break"),
            "{err}"
        );
        for bad in ["", "a:b", "a b", "é"] {
            let mut m = message();
            m.headers.push((bad.into(), "v".into()));
            let err = headers_of(&m).unwrap_err().to_string();
            assert!(err.contains("cannot be sent on NATS"), "{err}");
        }
    }

    #[test]
    fn an_empty_key_and_a_message_without_id_add_nothing() {
        let m = Message {
            key: String::new(),
            headers: vec![("x-origin".into(), "elsewhere".into())],
            payload: b"hello".to_vec(),
        };
        let h = headers_of(&m).expect("valid");
        assert_eq!(h.len(), 1);
        assert_eq!(message_of(Some(&h), b"hello"), m);
        assert_eq!(message_of(None, b"x").headers, Vec::new());
    }

    #[test]
    fn dead_letter_headers_are_not_the_messages() {
        let m = message();
        let mut h = headers_of(&m).expect("valid");
        insert(&mut h, H_DEAD_REASON, "boom").unwrap();
        insert(&mut h, H_DEAD_ATTEMPTS, "3").unwrap();
        let back = message_of(Some(&h), &m.payload);
        assert!(back.header(H_DEAD_REASON).is_none());
        assert_eq!(back.headers.len(), 3);
        assert_eq!(one_line("a\r\nb"), "a  b");
    }
}
