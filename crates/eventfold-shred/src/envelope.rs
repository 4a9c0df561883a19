//! The sealed form of an event's data (format in `FORMAT.md`, "Sealed data"): a small
//! versioned envelope around XChaCha20-Poly1305's output, bound to the event it belongs to.

use chacha20poly1305::aead::{Aead as _, AeadCore as _, KeyInit as _, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use eventfold_core::{CONTENT_TYPE_BYTES_MAX, EventId, StreamName};

use crate::keys::SubjectKey;
use crate::subject::Subject;

/// The content type a sealed event is stored with; its own content type is in the envelope.
/// Reserved: an append that names it is refused.
pub const SEALED_CONTENT_TYPE: &str = "application/vnd.eventfold.sealed";
/// The envelope's format version (its first byte).
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of an XChaCha20 nonce.
const NONCE_BYTES: usize = 24;
/// Bytes of a Poly1305 tag.
const TAG_BYTES: usize = 16;
/// Bytes before the content type: version, generation, content type length.
const FIXED_BYTES: usize = 1 + 4 + 2;
/// Most bytes sealing adds to an event's data: the envelope's fields around the ciphertext
/// (which is as long as the data) and the tag. The store under a [`crate::Shredding`] takes
/// limits widened by this much per event ([`crate::sealed_limits`]), so the limits a client
/// meets are those of its plaintext.
pub const SEAL_OVERHEAD_BYTES_MAX: usize =
    FIXED_BYTES + CONTENT_TYPE_BYTES_MAX + NONCE_BYTES + TAG_BYTES;
/// The domain of the associated data: a ciphertext of another use of a key never opens here.
const AAD_DOMAIN: &[u8] = b"eventfold-shred/1\0";

/// What a ciphertext is bound to (its associated data): the event, its subject, the key's
/// generation and the content type. Moving sealed bytes to another event, subject or
/// generation makes them fail to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The event's stream.
    pub stream: &'a StreamName,
    /// The event's id.
    pub id: EventId,
    /// The subject whose key seals it.
    pub subject: &'a Subject,
}

/// A parsed envelope (not opened yet).
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The generation of the subject's key that sealed it.
    pub generation: u32,
    /// The data's own content type (not secret: in the clear, authenticated).
    pub content_type: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

fn aad(b: &Binding<'_>, generation: u32, content_type: &str) -> Vec<u8> {
    let (stream, subject) = (b.stream.as_str().as_bytes(), b.subject.as_str().as_bytes());
    let mut out = Vec::with_capacity(
        AAD_DOMAIN.len() + 2 + stream.len() + 16 + 2 + subject.len() + 4 + 2 + content_type.len(),
    );
    out.extend_from_slice(AAD_DOMAIN);
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream);
    out.extend_from_slice(b.id.as_bytes());
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(subject);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(content_type.len() as u16).to_le_bytes());
    out.extend_from_slice(content_type.as_bytes());
    out
}

/// Seals `plaintext` with `key` (generation `generation`) and a fresh random nonce from the
/// operating system. `Err` only when the cipher refuses (data beyond its 256 GiB bound).
pub fn seal(
    key: &SubjectKey,
    generation: u32,
    binding: &Binding<'_>,
    content_type: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    if content_type.len() > CONTENT_TYPE_BYTES_MAX {
        return Err(format!("a content type of {} bytes", content_type.len()));
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.bytes()));
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = aad(binding, generation, content_type);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| "the cipher refused the data".to_string())?;
    let mut out = Vec::with_capacity(FIXED_BYTES + content_type.len() + NONCE_BYTES + sealed.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(content_type.len() as u16).to_le_bytes());
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Parses sealed bytes; `Err` says what is wrong with them.
pub fn parse(data: &[u8]) -> Result<Envelope<'_>, String> {
    let Some((&version, rest)) = data.split_first() else {
        return Err("the sealed data is empty".into());
    };
    if version != ENVELOPE_VERSION {
        return Err(format!(
            "the sealed data has envelope version {version}; this build reads version {ENVELOPE_VERSION}"
        ));
    }
    if rest.len() < 4 + 2 {
        return Err(format!("the sealed data ends after {} bytes", data.len()));
    }
    let generation = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let ct_len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
    let rest = &rest[6..];
    if ct_len > CONTENT_TYPE_BYTES_MAX || rest.len() < ct_len + NONCE_BYTES + TAG_BYTES {
        return Err(format!(
            "the sealed data is cut short or its content type length ({ct_len}) is wrong"
        ));
    }
    let content_type = std::str::from_utf8(&rest[..ct_len])
        .map_err(|_| "the sealed data's content type is not UTF-8".to_string())?;
    let (nonce, ciphertext) = rest[ct_len..].split_at(NONCE_BYTES);
    Ok(Envelope {
        generation,
        content_type,
        nonce,
        ciphertext,
    })
}

/// Opens a parsed envelope with `key`: the plaintext, or `None` when it does not authenticate
/// (another key, another event, or damaged bytes).
pub fn open(key: &SubjectKey, envelope: &Envelope<'_>, binding: &Binding<'_>) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.bytes()));
    let aad = aad(binding, envelope.generation, envelope.content_type);
    cipher
        .decrypt(
            XNonce::from_slice(envelope.nonce),
            Payload {
                msg: envelope.ciphertext,
                aad: &aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream() -> StreamName {
        StreamName::new("user-1").expect("valid")
    }

    proptest! {
        /// Whatever the data and content type, sealing then opening gives the data back, the
        /// plaintext never appears in the sealed bytes (for data of 16 bytes or more), and
        /// the overhead stays within its one bound.
        #[test]
        fn sealed_data_opens_to_itself(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                        ct in "[a-z]{1,40}/[a-z+.-]{1,200}",
                                        generation in 1u32..) {
            let key = SubjectKey::random();
            let subject = Subject::new("user-1").expect("valid");
            let s = stream();
            let b = Binding { stream: &s, id: EventId::new_v7(), subject: &subject };
            let sealed = seal(&key, generation, &b, &ct, &data).expect("seal");
            prop_assert!(sealed.len() <= data.len() + SEAL_OVERHEAD_BYTES_MAX);
            if data.len() >= 16 {
                prop_assert!(!sealed.windows(data.len()).any(|w| w == data.as_slice()));
            }
            let env = parse(&sealed).expect("parse");
            prop_assert_eq!(env.generation, generation);
            prop_assert_eq!(env.content_type, ct.as_str());
            prop_assert_eq!(open(&key, &env, &b), Some(data));
        }

        /// Any flipped byte, or any cut, makes it fail to open or to parse: never wrong data.
        #[test]
        fn damaged_envelopes_never_open(data in proptest::collection::vec(any::<u8>(), 1..256),
                                        flip in any::<prop::sample::Index>(),
                                        bit in 0u8..8,
                                        cut in any::<prop::sample::Index>()) {
            let key = SubjectKey::random();
            let subject = Subject::new("user-1").expect("valid");
            let s = stream();
            let b = Binding { stream: &s, id: EventId::new_v7(), subject: &subject };
            let sealed = seal(&key, 1, &b, "application/json", &data).expect("seal");
            let mut bad = sealed.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(env) = parse(&bad) {
                prop_assert_eq!(open(&key, &env, &b), None);
            }
            let short = &sealed[..cut.index(sealed.len())];
            if let Ok(env) = parse(short) {
                prop_assert_eq!(open(&key, &env, &b), None);
            }
        }
    }

    /// The ciphertext is bound to its event, subject and key: moved anywhere else it does not
    /// open.
    #[test]
    fn a_ciphertext_opens_only_for_its_own_event_subject_and_key() {
        let key = SubjectKey::random();
        let (s1, s2) = (
            Subject::new("a").expect("valid"),
            Subject::new("b").expect("valid"),
        );
        let (st1, st2) = (stream(), StreamName::new("user-2").expect("valid"));
        let id = EventId::new_v7();
        let b = Binding {
            stream: &st1,
            id,
            subject: &s1,
        };
        let sealed = seal(&key, 3, &b, "application/json", b"{\"name\":\"Ada\"}").expect("seal");
        let env = parse(&sealed).expect("parse");
        assert!(open(&key, &env, &b).is_some());
        for other in [
            Binding {
                stream: &st2,
                id,
                subject: &s1,
            },
            Binding {
                stream: &st1,
                id: EventId::new_v7(),
                subject: &s1,
            },
            Binding {
                stream: &st1,
                id,
                subject: &s2,
            },
        ] {
            assert!(open(&key, &env, &other).is_none(), "{other:?}");
        }
        assert!(open(&SubjectKey::random(), &env, &b).is_none());
        let mut other_gen = sealed.clone();
        other_gen[1] = 4;
        assert!(open(&key, &parse(&other_gen).expect("parse"), &b).is_none());
        let mut v2 = sealed;
        v2[0] = 2;
        assert!(parse(&v2).expect_err("newer").contains("version 2"));
    }
}
