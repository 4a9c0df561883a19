//! AMQP-style event-type patterns for filters (`order.*`, `order.#`, `#.failed`).

use std::fmt;
use std::sync::Arc;

use crate::error::ValidationError;
use crate::names::{EventType, NAME_BYTES_MAX};

/// One word of a [`TypePattern`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PatternWord {
    /// This word exactly.
    Literal(Box<str>),
    /// `*`: exactly one word (any text without `.`, possibly empty).
    One,
    /// `#`: zero or more words.
    Many,
}

/// An event-type pattern, parsed once: words separated by `.`, where `*` matches exactly one
/// word and `#` matches zero or more words, as in an AMQP topic exchange. `order.*` matches
/// `order.placed` but not `order.item.added`; `order.#` matches `order`, `order.placed` and
/// `order.item.added`; `#.failed` matches `failed` and `payment.failed`.
///
/// The words of an event type are its `.`-separated parts (`a..b` has an empty middle word,
/// which `*` matches). A pattern's own words must not be empty, and `*` and `#` stand alone:
/// `order.*x` is an error, not a literal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TypePattern {
    source: Arc<str>,
    words: Box<[PatternWord]>,
}

impl TypePattern {
    /// Parses `pattern`; the error names the pattern and the offending word.
    pub fn new(pattern: impl AsRef<str>) -> Result<Self, ValidationError> {
        let s = pattern.as_ref();
        // The length and character rules of an event type: a pattern is written where types are.
        EventType::new(s).map_err(|e| ValidationError::new("event type pattern", s, e.reason))?;
        debug_assert!(s.len() <= NAME_BYTES_MAX);
        let mut words = Vec::new();
        for (i, w) in s.split('.').enumerate() {
            let word = match w {
                "" => {
                    return Err(ValidationError::new(
                        "event type pattern",
                        s,
                        format!(
                            "word {} is empty; separate words with exactly one `.` and do not start or end with `.`",
                            i + 1
                        ),
                    ));
                }
                "*" => PatternWord::One,
                "#" => PatternWord::Many,
                w if w.contains(['*', '#']) => {
                    return Err(ValidationError::new(
                        "event type pattern",
                        s,
                        format!(
                            "word `{w}` mixes `*` or `#` with other text; `*` (one word) and `#` (zero or more words) must be whole words, as in `order.*`"
                        ),
                    ));
                }
                w => PatternWord::Literal(w.into()),
            };
            // `#.#` matches what `#` does: collapse to keep matching linear.
            if word == PatternWord::Many && words.last() == Some(&PatternWord::Many) {
                continue;
            }
            words.push(word);
        }
        Ok(TypePattern {
            source: Arc::from(s),
            words: words.into(),
        })
    }

    /// Whether a filter entry is written as a pattern: one of its words is `*` or `#`, or a word
    /// contains one of them (then [`TypePattern::new`] rejects it). Anything else is an exact type.
    pub fn looks_like_pattern(entry: &str) -> bool {
        entry.contains(['*', '#'])
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed words (consecutive `#` collapsed into one).
    pub fn words(&self) -> &[PatternWord] {
        &self.words
    }

    /// Whether `event_type` matches. Linear in words × pattern words (no backtracking blow-up).
    pub fn matches(&self, event_type: &str) -> bool {
        PatternWord::match_all(&self.words, event_type)
    }
}

impl PatternWord {
    /// Whether the `.`-separated words of `text` match `pattern`, in time linear in words ×
    /// pattern words. The one matcher of AMQP-style patterns: type filters and the framework
    /// bus's topics use it.
    pub fn match_all(pattern: &[PatternWord], text: &str) -> bool {
        let p = pattern;
        // reach[j]: the pattern's first j words can match the words consumed so far.
        let mut reach = vec![false; p.len() + 1];
        reach[0] = true;
        close_many(p, &mut reach);
        for w in text.split('.') {
            let mut next = vec![false; p.len() + 1];
            for j in 0..p.len() {
                if !reach[j] {
                    continue;
                }
                match &p[j] {
                    PatternWord::Literal(l) => {
                        if &**l == w {
                            next[j + 1] = true;
                        }
                    }
                    PatternWord::One => next[j + 1] = true,
                    // `#` consumes this word and may consume more.
                    PatternWord::Many => {
                        next[j] = true;
                        next[j + 1] = true;
                    }
                }
            }
            close_many(p, &mut next);
            if !next.iter().any(|&r| r) {
                return false;
            }
            reach = next;
        }
        reach[p.len()]
    }
}

/// A `#` may match zero words: wherever the pattern can stand before a `#`, it can stand after it.
fn close_many(p: &[PatternWord], reach: &mut [bool]) {
    for j in 0..p.len() {
        if reach[j] && p[j] == PatternWord::Many {
            reach[j + 1] = true;
        }
    }
}

/// One written entry of a type filter, parsed: an exact type, or with `*` or `#` a pattern.
/// So an exact type containing `*` or `#` cannot be selected by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeSelector {
    /// Exactly this type.
    Exact(EventType),
    /// Types matching this pattern.
    Pattern(TypePattern),
}

impl TypeSelector {
    /// Parses one entry (see [`TypePattern::looks_like_pattern`]).
    pub fn new(entry: impl AsRef<str>) -> Result<Self, ValidationError> {
        let entry = entry.as_ref();
        Ok(if TypePattern::looks_like_pattern(entry) {
            TypeSelector::Pattern(TypePattern::new(entry)?)
        } else {
            TypeSelector::Exact(EventType::new(entry)?)
        })
    }

    /// The entry as written.
    pub fn as_str(&self) -> &str {
        match self {
            TypeSelector::Exact(t) => t.as_str(),
            TypeSelector::Pattern(p) => p.as_str(),
        }
    }

    /// Whether `event_type` is selected.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            TypeSelector::Exact(t) => t.as_str() == event_type,
            TypeSelector::Pattern(p) => p.matches(event_type),
        }
    }
}

impl std::str::FromStr for TypeSelector {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypeSelector::new(s)
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

impl std::str::FromStr for TypePattern {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypePattern::new(s)
    }
}

impl serde::Serialize for TypePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for TypePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TypePattern::new(&*s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, t: &str) -> bool {
        TypePattern::new(p).unwrap().matches(t)
    }

    #[test]
    fn the_amqp_examples_hold() {
        assert!(m("order.*", "order.placed"));
        assert!(!m("order.*", "order.item.added"));
        assert!(!m("order.*", "order"));
        assert!(m("order.#", "order"));
        assert!(m("order.#", "order.placed"));
        assert!(m("order.#", "order.item.added"));
        assert!(!m("order.#", "orders.placed"));
        assert!(m("#.failed", "failed"));
        assert!(m("#.failed", "payment.failed"));
        assert!(m("#.failed", "a.b.failed"));
        assert!(!m("#.failed", "failed.not"));
        assert!(m("#", "anything.at.all"));
        assert!(m("*.*", "a.b"));
        assert!(!m("*.*", "a"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("*", "a..b"));
        assert!(m("a.*.b", "a..b"));
        // Regex characters are literal.
        assert!(m("a+.*", "a+.x"));
        assert!(!m("a+.*", "aa.x"));
    }

    #[test]
    fn malformed_patterns_are_named_errors() {
        for (p, says) in [
            ("order..*", "word 2 is empty"),
            (".#", "word 1 is empty"),
            ("order.*.", "word 3 is empty"),
            ("order.*x", "word `*x`"),
            ("ord#er.*", "word `ord#er`"),
            ("", "must not be empty"),
        ] {
            let e = TypePattern::new(p).unwrap_err();
            assert_eq!(e.what, "event type pattern");
            assert!(e.reason.contains(says), "{p}: {}", e.reason);
        }
        assert!(TypePattern::new("a".repeat(257)).is_err());
    }

    #[test]
    fn consecutive_hashes_collapse() {
        let p = TypePattern::new("#.#.a").unwrap();
        assert_eq!(p.words().len(), 2);
        assert_eq!(p.as_str(), "#.#.a");
        assert!(p.matches("a") && p.matches("x.y.a"));
    }

    /// The reference: plain recursion over words, straight from the definition.
    fn reference(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|k| reference(rest, &t[k..])),
            Some((&"*", rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((w, rest)) => t.first() == Some(w) && reference(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_reference(
            p in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..7),
            t in prop::collection::vec(prop::sample::select(vec!["a", "b", ""]), 1..8),
        ) {
            let ps = p.join(".");
            let ts = t.join(".");
            prop_assert_eq!(
                TypePattern::new(&ps).unwrap().matches(&ts),
                reference(&p, &t),
                "pattern {} type {}", ps, ts
            );
        }
    }
}
