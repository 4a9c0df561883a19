//! Queries by event type and tags, and the condition of a conditional append: the Dynamic
//! Consistency Boundary (DCB) model, as the dcb.events specification states it.

use std::fmt;

use crate::error::ValidationError;
use crate::event::RecordedEvent;
use crate::ids::Position;
use crate::limits::{QUERY_ITEM_TYPES_MAX, QUERY_ITEMS_MAX, TAGS_PER_EVENT_MAX};
use crate::names::EventType;
use crate::tag::Tag;

/// One item of a [`Query`]: an event matches it when its type is one of `types` (empty: any
/// type) and it carries every tag of `tags` (empty: no tag needed). Both are sets: kept
/// sorted, each entry once.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct QueryItem {
    types: Vec<EventType>,
    tags: Vec<Tag>,
}

impl QueryItem {
    /// An item matching events of any of `types` (none: any type) that carry all of `tags`
    /// (none: any event). At most [`QUERY_ITEM_TYPES_MAX`] types and
    /// [`TAGS_PER_EVENT_MAX`] tags (an item needing more tags than an event may carry could
    /// never match); repeated entries count once.
    pub fn new(
        types: impl IntoIterator<Item = EventType>,
        tags: impl IntoIterator<Item = Tag>,
    ) -> Result<Self, ValidationError> {
        let mut types: Vec<EventType> = types.into_iter().collect();
        let mut tags: Vec<Tag> = tags.into_iter().collect();
        types.sort_unstable();
        types.dedup();
        tags.sort_unstable();
        tags.dedup();
        if types.len() > QUERY_ITEM_TYPES_MAX {
            return Err(ValidationError::new(
                "query",
                &join(&types),
                format!(
                    "has an item of {} event types; an item lists at most {QUERY_ITEM_TYPES_MAX} (split it into several items)",
                    types.len()
                ),
            ));
        }
        if tags.len() > TAGS_PER_EVENT_MAX {
            return Err(ValidationError::new(
                "query",
                &join(&tags),
                format!(
                    "has an item of {} tags, but an event carries at most {TAGS_PER_EVENT_MAX}: it could never match",
                    tags.len()
                ),
            ));
        }
        Ok(QueryItem { types, tags })
    }

    /// An item matching every event carrying all of `tags`, whatever its type.
    pub fn tagged(tags: impl IntoIterator<Item = Tag>) -> Result<Self, ValidationError> {
        QueryItem::new([], tags)
    }

    /// An item matching every event of any of `types`, whatever its tags.
    pub fn of_types(types: impl IntoIterator<Item = EventType>) -> Result<Self, ValidationError> {
        QueryItem::new(types, [])
    }

    /// The event types (sorted; empty: any type).
    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    /// The tags an event must all carry (sorted; empty: none needed).
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Whether an event of `event_type` whose tags `has_tag` answers for matches.
    pub fn matches(&self, event_type: &str, has_tag: impl Fn(&str) -> bool) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t.as_str() == event_type))
            && self.tags.iter().all(|t| has_tag(t.as_str()))
    }
}

fn join<T: AsRef<str>>(v: &[T]) -> String {
    v.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",")
}

impl fmt::Debug for QueryItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryItem")
            .field("types", &self.types)
            .field("tags", &self.tags)
            .finish()
    }
}

/// Which events a read by query returns, or which events make a conditional append fail: an
/// event matches when it matches **any** item (OR), an item when the event is of one of its
/// types **and** carries all of its tags. A query of no items matches every event (as does an
/// item with neither types nor tags). At most [`QUERY_ITEMS_MAX`] items.
///
/// Its JSON form (reads' `query` parameter, the `Append-Condition` header, the framework's
/// stored decisions) is `{"items": [{"types": ["CourseDefined"], "tags": ["course:c1"]}, ...]}`
/// with `types` and `tags` optional; unknown fields are refused.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Query {
    items: Vec<QueryItem>,
}

impl Query {
    /// The query that matches every event (no items).
    pub const fn all() -> Self {
        Query { items: Vec::new() }
    }

    /// A query of `items` (OR-ed): at most [`QUERY_ITEMS_MAX`]. Equal items count once.
    pub fn new(items: impl IntoIterator<Item = QueryItem>) -> Result<Self, ValidationError> {
        let mut out: Vec<QueryItem> = Vec::new();
        for item in items {
            if !out.contains(&item) {
                out.push(item);
            }
        }
        if out.len() > QUERY_ITEMS_MAX {
            return Err(ValidationError::new(
                "query",
                "",
                format!(
                    "has {} items; a query has at most {QUERY_ITEMS_MAX}",
                    out.len()
                ),
            ));
        }
        Ok(Query { items: out })
    }

    /// The items, in the order given.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether the query matches every event (it has no items, or an item with neither types
    /// nor tags).
    pub fn matches_everything(&self) -> bool {
        self.items.is_empty()
            || self
                .items
                .iter()
                .any(|i| i.types.is_empty() && i.tags.is_empty())
    }

    /// Whether the query has no items (as a filter: no condition).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether an event of `event_type` whose tags `has_tag` answers for matches.
    pub fn matches(&self, event_type: &str, has_tag: impl Fn(&str) -> bool) -> bool {
        self.items.is_empty() || self.items.iter().any(|i| i.matches(event_type, &has_tag))
    }

    /// Whether `event` matches.
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(event.event_type.as_str(), |t| event.tags.contains(t))
    }

    /// The exact types an event must have to match, when every item names some: `None` when
    /// an item takes any type (then a store cannot narrow a scan by type).
    pub fn type_bound(&self) -> Option<Vec<&EventType>> {
        if self.items.is_empty() || self.items.iter().any(|i| i.types.is_empty()) {
            return None;
        }
        let mut types: Vec<&EventType> = self.items.iter().flat_map(|i| &i.types).collect();
        types.sort_unstable();
        types.dedup();
        Some(types)
    }
}

impl From<QueryItem> for Query {
    fn from(item: QueryItem) -> Self {
        Query { items: vec![item] }
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.items).finish()
    }
}

impl fmt::Display for Query {
    /// The JSON form (see [`Query`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemJson {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    types: Vec<EventType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<Tag>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryJson {
    items: Vec<ItemJson>,
}

impl serde::Serialize for Query {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QueryJson {
            items: self
                .items
                .iter()
                .map(|i| ItemJson {
                    types: i.types.clone(),
                    tags: i.tags.clone(),
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Query {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let q = QueryJson::deserialize(d)?;
        let items = q
            .items
            .into_iter()
            .map(|i| QueryItem::new(i.types, i.tags))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Query::new(items).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Query {
    type Err = ValidationError;
    /// Parses the JSON form (see [`Query`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s).map_err(|e| {
            ValidationError::new(
                "query",
                s,
                format!(
                    "is not a query ({e}); write {{\"items\": [{{\"types\": [...], \"tags\": [...]}}]}}"
                ),
            )
        })
    }
}

/// The condition of a conditional append ([`crate::EventStore::append_with_condition`]): the
/// append fails, writing nothing, when an event matching `fail_if_events_match` was appended
/// after position `after` (with no `after`: at all). The check is atomic with the write: no
/// event appended concurrently can slip between them.
///
/// Every event appended counts, whether or not a read can still return it (a delete or
/// retention rule since does not hide it from a condition). So a decision that read by a
/// query passes the position its read reached (the log's end when it read, or the last event
/// it saw), not the last event its query returned.
///
/// Its JSON form: `{"fail_if_events_match": <query>, "after": 41}` (`after` optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendCondition {
    /// The events that make the append fail.
    pub fail_if_events_match: Query,
    /// Only events after this position count; `None`: every event counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Position>,
}

impl AppendCondition {
    /// Fails when an event matching `query` was appended after `after` (`None`: at all).
    pub fn new(query: Query, after: Option<Position>) -> Self {
        AppendCondition {
            fail_if_events_match: query,
            after,
        }
    }

    /// The first position whose event counts.
    pub fn first_position(&self) -> u64 {
        self.after.map_or(0, |p| p.0.saturating_add(1))
    }

    /// Whether an event at `position` of `event_type` whose tags `has_tag` answers for
    /// makes the append fail.
    pub fn is_violated_by(
        &self,
        position: u64,
        event_type: &str,
        has_tag: impl Fn(&str) -> bool,
    ) -> bool {
        self.after.is_none_or(|a| position > a.0)
            && self.fail_if_events_match.matches(event_type, has_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(types: &[&str], tags: &[&str]) -> QueryItem {
        QueryItem::new(
            types.iter().map(|t| EventType::new(t).unwrap()),
            tags.iter().map(|t| Tag::new(t).unwrap()),
        )
        .unwrap()
    }

    fn matches(q: &Query, event_type: &str, tags: &[&str]) -> bool {
        q.matches(event_type, |t| tags.contains(&t))
    }

    #[test]
    fn items_are_or_ed_and_tags_and_ed() {
        let q = Query::new([
            item(&["CourseDefined", "CourseCapacityChanged"], &["course:c1"]),
            item(&[], &["student:s7", "term:t1"]),
        ])
        .unwrap();
        let cases: &[(&str, &[&str], bool)] = &[
            ("CourseDefined", &["course:c1"], true),
            ("CourseDefined", &["course:c1", "x"], true),
            ("CourseDefined", &["course:c2"], false),
            ("StudentSubscribed", &["course:c1"], false),
            ("StudentSubscribed", &["student:s7"], false),
            ("StudentSubscribed", &["term:t1", "student:s7"], true),
            ("Anything", &["term:t1", "student:s7", "course:c9"], true),
            ("CourseDefined", &[], false),
        ];
        for (t, tags, want) in cases {
            assert_eq!(matches(&q, t, tags), *want, "{t} {tags:?}");
        }
        assert!(matches(&Query::all(), "x", &[]));
        assert!(Query::all().matches_everything());
        assert!(Query::from(item(&[], &[])).matches_everything());
        assert!(!q.matches_everything());
        assert_eq!(q.type_bound(), None);
        let typed = Query::new([item(&["b", "a"], &["t"]), item(&["a"], &[])]).unwrap();
        let bound: Vec<&str> = typed
            .type_bound()
            .unwrap()
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(bound, ["a", "b"]);
    }

    #[test]
    fn the_json_form_round_trips_and_is_strict() {
        let q: Query = r#"{"items":[{"types":["b","a","a"],"tags":["course:c1"]},{"tags":["s"]}]}"#
            .parse()
            .unwrap();
        assert_eq!(
            q.to_string(),
            r#"{"items":[{"types":["a","b"],"tags":["course:c1"]},{"tags":["s"]}]}"#
        );
        assert_eq!(q.to_string().parse::<Query>().unwrap(), q);
        for bad in [
            "",
            "[]",
            r#"{"items":[{"type":["a"]}]}"#,
            r#"{"items":[{"tags":["a b"]}]}"#,
            r#"{"items":[{"types":[""]}]}"#,
            r#"{"items":[],"x":1}"#,
        ] {
            assert!(bad.parse::<Query>().is_err(), "{bad}");
        }
        let many = format!(
            r#"{{"items":[{}]}}"#,
            (0..=QUERY_ITEMS_MAX)
                .map(|i| format!(r#"{{"tags":["t{i}"]}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let err = many.parse::<Query>().unwrap_err().to_string();
        assert!(err.contains("at most 32"), "{err}");
        let c: AppendCondition =
            serde_json::from_str(r#"{"fail_if_events_match":{"items":[]},"after":41}"#).unwrap();
        assert_eq!(c.after, Some(Position(41)));
        assert_eq!(c.first_position(), 42);
        assert!(c.is_violated_by(42, "x", |_| false));
        assert!(!c.is_violated_by(41, "x", |_| false));
        let none = AppendCondition::new(Query::all(), None);
        assert_eq!(none.first_position(), 0);
        assert!(none.is_violated_by(0, "x", |_| false));
    }
}
