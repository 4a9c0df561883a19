//! A message as the fields of a stream entry, and back: `key` (the message key), one field per
//! header (name and value as they are), `data` (the payload bytes, binary-safe). Dead letters
//! carry three more fields, `dead_reason`, `dead_attempts` and `dead_from`.

use eventfold_transport::{Message, TransportError, TransportResult};
use redis::Value;

/// The field holding the message key.
pub(crate) const F_KEY: &str = "key";
/// The field holding the payload.
pub(crate) const F_DATA: &str = "data";
/// Dead letters: why.
pub(crate) const F_DEAD_REASON: &str = "dead_reason";
/// Dead letters: deliveries made before.
pub(crate) const F_DEAD_ATTEMPTS: &str = "dead_attempts";
/// Dead letters: the entry it was (`{stream key} {entry id}`).
pub(crate) const F_DEAD_FROM: &str = "dead_from";
/// Field names a header cannot have.
const RESERVED: [&str; 5] = [F_KEY, F_DATA, F_DEAD_REASON, F_DEAD_ATTEMPTS, F_DEAD_FROM];

/// Refuses a message whose header would collide with a field of the mapping.
pub(crate) fn check(m: &Message) -> TransportResult<()> {
    for (name, _) in &m.headers {
        if RESERVED.contains(&name.as_str()) {
            return Err(TransportError::Invalid(format!(
                "a message header is named {name:?}, which the Redis mapping uses for its own field \
                 (reserved: {RESERVED:?}); rename the header"
            )));
        }
    }
    Ok(())
}

/// Appends `m`'s fields to an `XADD`.
pub(crate) fn push(cmd: &mut redis::Cmd, m: &Message) {
    cmd.arg(F_KEY).arg(&m.key);
    for (name, value) in &m.headers {
        cmd.arg(name).arg(value);
    }
    cmd.arg(F_DATA).arg(&m.payload);
}

/// What an entry's fields say: the message, and the dead-letter fields when present.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) message: Message,
    pub(crate) reason: Option<String>,
    pub(crate) attempts: Option<u32>,
}

/// An entry's fields (a flat array of names and values) as a message. Never fails, so no
/// entry can stall a subscriber: a field that is not UTF-8 (written by another producer) is
/// read lossily, a field missing is empty, and fields Redis did not send (a deleted entry) make
/// an empty message, which is not an eventfold event and is dead-lettered with the reason.
pub(crate) fn decode(fields: &Value) -> Decoded {
    let mut d = Decoded {
        message: Message {
            key: String::new(),
            headers: Vec::new(),
            payload: Vec::new(),
        },
        reason: None,
        attempts: None,
    };
    let Value::Array(items) = fields else {
        return d;
    };
    for pair in items.chunks_exact(2) {
        let name = lossy(&pair[0]);
        let value = bytes(&pair[1]).unwrap_or_default();
        match name.as_str() {
            F_KEY => d.message.key = String::from_utf8_lossy(&value).into_owned(),
            F_DATA => d.message.payload = value,
            F_DEAD_REASON => d.reason = Some(String::from_utf8_lossy(&value).into_owned()),
            F_DEAD_ATTEMPTS => {
                d.attempts = String::from_utf8_lossy(&value).parse().ok();
            }
            F_DEAD_FROM => {}
            _ => d
                .message
                .headers
                .push((name, String::from_utf8_lossy(&value).into_owned())),
        }
    }
    d
}

fn lossy(v: &Value) -> String {
    bytes(v)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A bulk string's bytes.
pub(crate) fn bytes(v: &Value) -> TransportResult<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.clone().into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected("a string", other)),
    }
}

/// A bulk string as text.
pub(crate) fn text(v: &Value) -> TransportResult<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An integer (sent as one or as a decimal string).
pub(crate) fn int(v: &Value) -> TransportResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|_| unexpected("an integer", other)),
    }
}

pub(crate) fn unexpected(what: &str, got: &Value) -> TransportError {
    TransportError::Rejected {
        broker: crate::BROKER,
        action: "read",
        detail: format!("expected {what}, Redis answered {got:?}"),
    }
}
