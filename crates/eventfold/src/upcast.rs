use std::collections::HashMap;
use std::sync::Arc;

use eventfold_core::RecordedEvent;

use crate::event::{Codec, CodecError, DomainEvent, Envelope};

/// An event on its way through the upcasters: its type, schema version and data as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct RawEvent {
    /// The event type (an upcaster may rename it).
    pub event_type: String,
    /// The schema version of `data`.
    pub schema_version: u32,
    /// The data.
    pub data: serde_json::Value,
}

type UpcastFn = dyn Fn(RawEvent) -> Result<RawEvent, String> + Send + Sync;

/// Longest chain of upcasters applied to one event: a guard against a registration that loops
/// (an upcaster that does not raise the version).
const UPCAST_CHAIN_MAX: usize = 64;

/// Functions that turn an old schema version of an event into the next, applied on read and
/// chained (v1 → v2 → v3) until the version the code reads. Stored events are never rewritten.
///
/// Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Upcasters {
    by_type_version: Arc<HashMap<(String, u32), Arc<UpcastFn>>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.by_type_version.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("from", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Registers `f` for `event_type` at schema version `from`. It returns the event at a
    /// higher version (usually `from + 1`), possibly under a new type name.
    pub fn register_raw(
        mut self,
        event_type: &str,
        from: u32,
        f: impl Fn(RawEvent) -> Result<RawEvent, String> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.by_type_version).insert((event_type.to_owned(), from), Arc::new(f));
        self
    }

    /// Registers a typed upcaster: the data of `event_type` at version `from` is read as `Old`,
    /// turned into `New` by `f`, and continues at version `from + 1`.
    pub fn register<Old, New>(
        self,
        event_type: &str,
        from: u32,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Self
    where
        Old: serde::de::DeserializeOwned,
        New: serde::Serialize,
    {
        self.register_raw(event_type, from, move |raw| {
            let old: Old = serde_json::from_value(raw.data).map_err(|e| e.to_string())?;
            let data = serde_json::to_value(f(old)).map_err(|e| e.to_string())?;
            Ok(RawEvent {
                event_type: raw.event_type,
                schema_version: from + 1,
                data,
            })
        })
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.by_type_version.is_empty()
    }

    /// Decodes a recorded event as `E`, upcasting its data first when its schema version is
    /// older than the one `E` reads.
    pub fn decode<E: DomainEvent>(
        &self,
        recorded: RecordedEvent,
    ) -> Result<Envelope<E>, CodecError> {
        let event = self.decode_event::<E>(
            recorded.event_type.as_str(),
            recorded.schema_version,
            &recorded.content_type,
            &recorded.data,
        )?;
        Ok(Envelope::from_recorded(recorded, event))
    }

    /// Decodes event data (see [`Upcasters::decode`]).
    pub fn decode_event<E: DomainEvent>(
        &self,
        event_type: &str,
        schema_version: u32,
        content_type: &eventfold_core::ContentType,
        data: &[u8],
    ) -> Result<E, CodecError> {
        let codec = Codec::of(content_type).ok_or_else(|| CodecError::UnsupportedContentType {
            event_type: event_type.to_owned(),
            content_type: content_type.to_string(),
        })?;
        if E::schema_version_of(event_type) == Some(schema_version)
            || !self
                .by_type_version
                .contains_key(&(event_type.to_owned(), schema_version))
        {
            // The fast path: no upcasting, straight from the bytes.
            check_version::<E>(event_type, schema_version)?;
            return E::decode(event_type, data, codec);
        }
        let mut raw = RawEvent {
            event_type: event_type.to_owned(),
            schema_version,
            data: codec.decode(event_type, data)?,
        };
        for _ in 0..UPCAST_CHAIN_MAX {
            let key = (raw.event_type.clone(), raw.schema_version);
            let Some(f) = self.by_type_version.get(&key) else {
                break;
            };
            if E::schema_version_of(&raw.event_type) == Some(raw.schema_version) {
                break;
            }
            let from = raw.schema_version;
            let (t, v) = key;
            raw = f(raw).map_err(|reason| CodecError::Upcast {
                event_type: t.clone(),
                from: v,
                reason,
            })?;
            if raw.event_type == t && raw.schema_version <= from {
                return Err(CodecError::Upcast {
                    event_type: t,
                    from,
                    reason: format!(
                        "the upcaster returned version {}, which is not above {from}",
                        raw.schema_version
                    ),
                });
            }
        }
        check_version::<E>(&raw.event_type, raw.schema_version)?;
        let bytes = serde_json::to_vec(&raw.data).expect("a serde_json::Value always serializes");
        E::decode(&raw.event_type, &bytes, Codec::Json)
    }
}

fn check_version<E: DomainEvent>(event_type: &str, found: u32) -> Result<(), CodecError> {
    match E::schema_version_of(event_type) {
        None => Err(CodecError::UnknownType {
            event_type: event_type.to_owned(),
            rust_type: std::any::type_name::<E>(),
        }),
        Some(expected) if found < expected => Err(CodecError::NoUpcaster {
            event_type: event_type.to_owned(),
            found,
            expected,
        }),
        Some(expected) if found > expected => Err(CodecError::NewerVersion {
            event_type: event_type.to_owned(),
            found,
            expected,
        }),
        Some(_) => Ok(()),
    }
}
