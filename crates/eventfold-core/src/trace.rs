//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) as an event carries it in its
//! metadata: `traceparent` and `tracestate`, validated once into [`TraceContext`].
//!
//! The parser is here, not in an OpenTelemetry crate, so the event model, the wire shapes and the
//! stores can check and store a context without depending on a telemetry SDK; the crates that
//! make spans convert it (its fields are the W3C ones, byte for byte).

use std::fmt;

use crate::error::ValidationError;
use crate::event::Metadata;

/// The metadata key of the W3C `traceparent`.
pub const TRACEPARENT_KEY: &str = "traceparent";
/// The metadata key of the W3C `tracestate`.
pub const TRACESTATE_KEY: &str = "tracestate";

/// The longest `tracestate` accepted, in bytes: the W3C limit ("at least 512 characters" must
/// be propagated; vendors may cut longer ones, we refuse them so nothing is silently cut).
pub const TRACESTATE_BYTES_MAX: usize = 512;
/// The most list members of a `tracestate` (the W3C limit).
pub const TRACESTATE_MEMBERS_MAX: usize = 32;

/// A valid W3C `traceparent`: trace id, parent (span) id and flags.
///
/// Parsed from `version-traceid-parentid-flags` (lowercase hex). Version `00` must be exactly
/// 55 characters; a later version (not `ff`) may append fields after a `-`, which are dropped
/// (the W3C rule for a vendor that knows version `00`). It is always written back as version
/// `00`. All-zero trace or parent ids are invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The `sampled` bit of [`TraceParent::flags`].
pub const TRACE_FLAG_SAMPLED: u8 = 0x01;

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

impl TraceParent {
    /// A context from its parts; `None` when either id is all zeros (invalid in W3C).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace: random trace and parent ids, `sampled` set (so a process that records
    /// spans downstream keeps the trace this one started without recording).
    pub fn generate() -> Self {
        let t = uuid::Uuid::new_v4().into_bytes();
        let p = uuid::Uuid::new_v4().into_bytes();
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&p[..8]);
        // A v4 UUID has version and variant bits set, so neither id can be all zeros.
        TraceParent::new(t, parent_id, TRACE_FLAG_SAMPLED)
            .expect("random v4 UUID bytes are never all zero")
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the parent span.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `b` as lowercase hex digits into `out` (two per byte), from a table: every append stores a
/// `traceparent`, and `write!` of each byte as `{:02x}` was 3% of a single-event append's CPU.
fn put_hex(out: &mut [u8], b: &[u8]) {
    for (pair, x) in out.chunks_exact_mut(2).zip(b) {
        pair[0] = HEX_DIGITS[usize::from(x >> 4)];
        pair[1] = HEX_DIGITS[usize::from(x & 0x0f)];
    }
}

fn hex(b: &[u8]) -> String {
    let mut out = vec![0; b.len() * 2];
    put_hex(&mut out, b);
    String::from_utf8(out).expect("hex digits are ASCII")
}

impl std::str::FromStr for TraceParent {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ValidationError::new("traceparent", s, why);
        let shape = "expected version-traceid-parentid-flags in lowercase hex, as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // Only ASCII can be valid: checked before slicing, so a multi-byte character across a
        // field boundary is refused, not a panic (found by fuzzing the traceparent header).
        let Some((head, rest)) = s.split_at_checked(55).filter(|(h, _)| h.is_ascii()) else {
            return Err(bad(shape));
        };
        let version = hex_bytes::<1>(&head[..2]).ok_or_else(|| bad(shape))?[0];
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        if version == 0 && !rest.is_empty() {
            return Err(bad("version 00 is exactly 55 characters"));
        }
        if !rest.is_empty() && !rest.starts_with('-') {
            return Err(bad(shape));
        }
        let b = head.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(bad(shape));
        }
        let trace_id = hex_bytes::<16>(&head[3..35]).ok_or_else(|| bad(shape))?;
        let parent_id = hex_bytes::<8>(&head[36..52]).ok_or_else(|| bad(shape))?;
        let flags = hex_bytes::<1>(&head[53..55]).ok_or_else(|| bad(shape))?[0];
        if trace_id == [0; 16] {
            return Err(bad("the trace id is all zeros"));
        }
        if parent_id == [0; 8] {
            return Err(bad("the parent id is all zeros"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 00-{trace id: 32}-{parent id: 16}-{flags: 2}
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        put_hex(&mut b[3..35], &self.trace_id);
        put_hex(&mut b[36..52], &self.parent_id);
        put_hex(&mut b[53..55], &[self.flags]);
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// A valid W3C `tracestate`: 1 to 32 comma-separated `key=value` members (empty members
/// between commas are allowed and dropped), at most 512 bytes, keys and values as the W3C
/// grammar says. Kept as its text, trimmed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceState(String);

fn valid_key(k: &str) -> bool {
    // simple-key = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
    // multi-tenant-key = tenant-id "@" system-id (tenant may start with a digit)
    let part = |p: &str, digit_first: bool| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.len() <= 256
            && (b[0].is_ascii_lowercase() || (digit_first && b[0].is_ascii_digit()))
            && b.iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match k.split_once('@') {
        None => part(k, false),
        Some((tenant, system)) => {
            tenant.len() <= 241 && system.len() <= 14 && part(tenant, true) && part(system, false)
        }
    }
}

fn valid_value(v: &str) -> bool {
    // value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    !v.is_empty()
        && v.len() <= 256
        && !v.ends_with(' ')
        && v.bytes()
            .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

impl std::str::FromStr for TraceState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ValidationError::new("tracestate", s, why);
        let t = s.trim_matches([' ', '\t']);
        if t.len() > TRACESTATE_BYTES_MAX {
            return Err(bad(format!("is longer than {TRACESTATE_BYTES_MAX} bytes")));
        }
        let mut members = 0usize;
        for m in t.split(',') {
            let m = m.trim_matches([' ', '\t']);
            if m.is_empty() {
                continue;
            }
            members += 1;
            let Some((k, v)) = m.split_once('=') else {
                return Err(bad(format!("member {m:?} is not key=value")));
            };
            if !valid_key(k) {
                return Err(bad(format!(
                    "key {k:?} is not a W3C tracestate key (lowercase letters, digits, _-*/, optionally tenant@system)"
                )));
            }
            if !valid_value(v) {
                return Err(bad(format!(
                    "the value of {k:?} is not a W3C tracestate value (printable ASCII without , or =)"
                )));
            }
        }
        if members == 0 {
            return Err(bad("has no key=value member".into()));
        }
        if members > TRACESTATE_MEMBERS_MAX {
            return Err(bad(format!(
                "has {members} members; at most {TRACESTATE_MEMBERS_MAX} are allowed"
            )));
        }
        Ok(TraceState(t.to_owned()))
    }
}

impl TraceState {
    /// The text, as validated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.0)
    }
}

/// A W3C trace context: a `traceparent` and, optionally, its `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace and the span it continues.
    pub parent: TraceParent,
    /// Vendor-specific state that travels with it.
    pub state: Option<TraceState>,
}

impl TraceContext {
    /// A context without state.
    pub fn new(parent: TraceParent) -> Self {
        TraceContext {
            parent,
            state: None,
        }
    }

    /// Parses the two W3C values (as headers or metadata give them); a `tracestate` without a
    /// `traceparent` is an error, since it means nothing alone.
    pub fn parse(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Result<Option<Self>, ValidationError> {
        match (traceparent, tracestate) {
            (None, None) => Ok(None),
            (None, Some(s)) => Err(ValidationError::new(
                "tracestate",
                s,
                "is given without a traceparent; send both, or neither",
            )),
            (Some(p), s) => Ok(Some(TraceContext {
                parent: p.parse()?,
                state: s.map(str::parse).transpose()?,
            })),
        }
    }

    /// The context an event's metadata carries: `Ok(None)` without a `traceparent` key, an
    /// error when the keys are there but not valid W3C values (or not strings).
    pub fn from_metadata(metadata: &Metadata) -> Result<Option<Self>, ValidationError> {
        let get = |key: &'static str| match metadata.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(ValidationError::new(
                key,
                &other.to_string(),
                "must be a string",
            )),
        };
        TraceContext::parse(get(TRACEPARENT_KEY)?, get(TRACESTATE_KEY)?)
    }

    /// Writes the context into `metadata` (`traceparent`, and `tracestate` when there is one,
    /// removing a stale `tracestate` otherwise).
    pub fn write_to(&self, metadata: &mut Metadata) {
        metadata.insert(
            TRACEPARENT_KEY.into(),
            serde_json::Value::String(self.parent.to_string()),
        );
        match &self.state {
            Some(s) => {
                metadata.insert(
                    TRACESTATE_KEY.into(),
                    serde_json::Value::String(s.as_str().to_owned()),
                );
            }
            None => {
                metadata.remove(TRACESTATE_KEY);
            }
        }
    }

    /// Writes the context into `metadata` unless it already has a `traceparent` (which the
    /// caller validated with [`TraceContext::from_metadata`]). Returns whether it wrote.
    pub fn fill(&self, metadata: &mut Metadata) -> bool {
        if metadata.contains_key(TRACEPARENT_KEY) {
            return false;
        }
        self.write_to(metadata);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_back_a_valid_traceparent() {
        let p: TraceParent = VALID.parse().unwrap();
        assert_eq!(p.to_string(), VALID);
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            p.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(p.flags(), 1);
        // A later version may carry more fields; it is written back as version 00.
        let later: TraceParent = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"
            .parse()
            .unwrap();
        assert_eq!(later, p);
    }

    #[test]
    fn refuses_malformed_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // A two-byte character across byte 55, the end of the version-00 fields (found by
            // the `headers` fuzz target: the slice at 55 panicked).
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{4da}",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7\u{4da}1",
            "\u{4da}-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let e = bad.parse::<TraceParent>().unwrap_err();
            assert_eq!(e.what, "traceparent", "{bad:?}");
        }
    }

    #[test]
    fn tracestate_follows_the_w3c_grammar() {
        let s: TraceState = " rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE,t@sys=x "
            .parse()
            .unwrap();
        assert_eq!(
            s.as_str(),
            "rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE,t@sys=x"
        );
        for bad in ["", ",", "Rojo=1", "rojo", "rojo=a,b", "rojo=a=b", "rojo= "] {
            assert!(bad.parse::<TraceState>().is_err(), "{bad:?}");
        }
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(many.parse::<TraceState>().is_err());
        let long = format!("k={}", "v".repeat(TRACESTATE_BYTES_MAX));
        assert!(long.parse::<TraceState>().is_err());
    }

    #[test]
    fn a_context_round_trips_through_metadata() {
        assert_eq!(TraceContext::parse(None, None).unwrap(), None);
        assert!(TraceContext::parse(None, Some("a=b")).is_err());
        let c = TraceContext::parse(Some(VALID), Some("a=b"))
            .unwrap()
            .unwrap();
        let mut m = Metadata::new();
        assert!(c.fill(&mut m));
        assert_eq!(m.get_str(TRACEPARENT_KEY), Some(VALID));
        assert_eq!(TraceContext::from_metadata(&m).unwrap(), Some(c.clone()));
        // An event's own context wins.
        let other = TraceContext::new(TraceParent::generate());
        assert!(!other.fill(&mut m));
        assert_eq!(TraceContext::from_metadata(&m).unwrap(), Some(c));
        m.insert(TRACEPARENT_KEY.into(), serde_json::json!(7));
        assert!(TraceContext::from_metadata(&m).is_err());
        let g = TraceParent::generate();
        assert_ne!(g, TraceParent::generate());
        assert_eq!(g.to_string().parse::<TraceParent>().unwrap(), g);
    }

    proptest::proptest! {
        /// The table-driven text is what `{:02x}` of each byte gives, and parses back.
        #[test]
        fn a_traceparent_prints_as_lowercase_hex_and_parses_back(
            trace_id in proptest::array::uniform16(proptest::num::u8::ANY),
            parent_id in proptest::array::uniform8(proptest::num::u8::ANY),
            flags in proptest::num::u8::ANY,
        ) {
            let Some(p) = TraceParent::new(trace_id, parent_id, flags) else {
                return Ok(());
            };
            let by_format = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            let expected = format!(
                "00-{}-{}-{flags:02x}",
                by_format(&trace_id),
                by_format(&parent_id)
            );
            proptest::prop_assert_eq!(p.to_string(), expected);
            proptest::prop_assert_eq!(p.trace_id_hex(), by_format(&trace_id));
            proptest::prop_assert_eq!(p.to_string().parse::<TraceParent>().unwrap(), p);
        }
    }
}
