//! Tags, query reads and conditional appends of the in-memory store (dynamic consistency
//! boundaries).
//!
//! A tag is a short string validated like a stream id. Tags are kept beside the events,
//! so an untagged event costs nothing: a posting list per tag (event indexes, ascending)
//! and a sparse map from a tagged event's index to its tag ids.
//!
//! A query is a list of items; an item matches an event that has one of its types (any
//! type when it lists none) and all of its tags. A query matches what any item matches;
//! a query without items matches nothing.
//!
//! An item with tags walks its rarest tag's postings; an item with types only walks a
//! posting list per type. Those are built lazily, by the first such query after an
//! append (under a mutex of their own, with no Python involved), so appends never pay
//! for them and a store nobody queries by type never holds them.

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use super::{check_limit, check_non_negative, AppendOutcome, NewEvent, Rows, Store, ERASED};
use crate::errors::{CoreError, CoreResult};
use crate::stream_id;

/// The most tags one event may carry.
pub const MAX_TAGS: usize = 64;

/// One item of a query (borrowed from the caller).
#[derive(Debug, Clone, Default)]
pub struct QueryItem<'a> {
    /// Event types: the event must have one of them (none listed: any type).
    pub types: Vec<&'a str>,
    /// Tags: the event must carry every one of them.
    pub tags: Vec<&'a str>,
}

/// The tags of a store's events.
#[derive(Default)]
pub struct TagIndex {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    /// Per tag id: the indexes of the events carrying it, ascending.
    postings: Vec<Vec<u32>>,
    /// Per tagged event index: its tag ids (sorted, unique).
    by_event: HashMap<u32, SmallVec<[u32; 2]>>,
    /// Per event type id: its events, for items with types only (built lazily).
    by_type: Mutex<TypePostings>,
}

/// The events of each type, ascending, for the events `0..synced`. Erased (purged)
/// events may stay listed: a match is always checked against the event itself.
#[derive(Default)]
struct TypePostings {
    synced: u32,
    lists: Vec<Vec<u32>>,
}

impl TypePostings {
    /// The events of type `t` from event index `start` on.
    fn after(&self, t: u32, start: u32) -> &[u32] {
        let list = self.lists.get(t as usize).map_or(&[][..], |l| l.as_slice());
        &list[list.partition_point(|&i| i < start)..]
    }
}

impl TagIndex {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, i);
        self.postings.push(Vec::new());
        i
    }

    fn of(&self, index: u32) -> &[u32] {
        self.by_event.get(&index).map_or(&[], |t| t.as_slice())
    }

    /// Drop the tags of erased (purged) events: tags may be personal data, and the query
    /// reads must not find what is gone.
    pub fn forget(&mut self, indexes: &[u32]) {
        for index in indexes {
            if let Some(tags) = self.by_event.remove(index) {
                for t in tags {
                    let list = &mut self.postings[t as usize];
                    if let Ok(at) = list.binary_search(index) {
                        list.remove(at);
                    }
                }
            }
        }
    }

    /// The tag names of an event, sorted.
    fn names_of(&self, index: u32) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .of(index)
            .iter()
            .map(|&t| self.names[t as usize].clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// Approximate heap bytes held.
    pub fn memory_usage(&self) -> usize {
        let names: usize = self.names.iter().map(|n| 32 + n.len()).sum();
        let postings: usize = self.postings.iter().map(|p| 24 + p.capacity() * 4).sum();
        let by_type: usize = self
            .by_type
            .lock()
            .lists
            .iter()
            .map(|p| 24 + p.capacity() * 4)
            .sum();
        names * 2 + postings + by_type + self.by_event.capacity() * 40
    }
}

/// Validated, trimmed, sorted and deduplicated tags of one event.
pub fn check_tags<'a>(tags: &[&'a str]) -> CoreResult<SmallVec<[&'a str; 4]>> {
    if tags.len() > MAX_TAGS {
        return Err(CoreError::LimitExceeded {
            field: "tags",
            reason: format!("an event carries at most {MAX_TAGS} tags"),
            value: tags.len() as u64,
        });
    }
    let mut out: SmallVec<[&str; 4]> = SmallVec::with_capacity(tags.len());
    for raw in tags {
        let tag = stream_id::check(raw).map_err(|reason| CoreError::InvalidTag {
            value: (*raw).to_owned(),
            reason,
        })?;
        out.push(tag);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A query item resolved against the store: `None` when it can match nothing.
struct Resolved {
    /// Type ids wanted (`None`: any type).
    types: Option<SmallVec<[u32; 4]>>,
    /// Tag ids required, rarest first.
    tags: SmallVec<[u32; 4]>,
}

impl Store {
    /// Whether any stored event carries a tag.
    pub fn has_tags(&self) -> bool {
        !self.tags.by_event.is_empty()
    }

    /// The tags of the events at `positions` (sorted; empty for an unknown position).
    pub fn tags_at(&self, positions: &[u64]) -> Vec<Vec<Arc<str>>> {
        positions
            .iter()
            .map(|&p| {
                if p == 0 || p > self.len as u64 {
                    return Vec::new();
                }
                self.tags.names_of((p - 1) as u32)
            })
            .collect()
    }

    /// The per-type postings, caught up with every stored event first.
    fn type_postings(&self) -> MutexGuard<'_, TypePostings> {
        let mut index = self.tags.by_type.lock();
        let index_ref = &mut *index;
        while (index_ref.synced as usize) < self.len {
            let i = index_ref.synced;
            let t = self.event(i).event_type;
            if t != ERASED {
                let t = t as usize;
                if index_ref.lists.len() <= t {
                    index_ref.lists.resize_with(t + 1, Vec::new);
                }
                index_ref.lists[t].push(i);
            }
            index_ref.synced += 1;
        }
        index
    }

    fn resolve_item(&self, item: &QueryItem<'_>) -> CoreResult<Option<Resolved>> {
        let types = if item.types.is_empty() {
            None
        } else {
            let mut ids = SmallVec::new();
            for name in &item.types {
                crate::event_type::validate(name)?;
                if let Some(t) = self.find_type(name) {
                    ids.push(t);
                }
            }
            if ids.is_empty() {
                return Ok(None);
            }
            Some(ids)
        };
        let mut tags: SmallVec<[u32; 4]> = SmallVec::new();
        for tag in check_tags(&item.tags)? {
            match self.tags.ids.get(tag) {
                Some(&t) => tags.push(t),
                None => return Ok(None),
            }
        }
        tags.sort_by_key(|&t| self.tags.postings[t as usize].len());
        Ok(Some(Resolved { types, tags }))
    }

    fn item_matches(&self, item: &Resolved, index: u32) -> bool {
        let event_type = self.event(index).event_type;
        if event_type == ERASED {
            return false; // purged: its position stays, empty
        }
        if let Some(types) = &item.types {
            if !types.contains(&event_type) {
                return false;
            }
        }
        let have = self.tags.of(index);
        item.tags.iter().all(|t| have.binary_search(t).is_ok())
    }

    /// Indexes of the events after position `after` that match `items`, ascending, at most
    /// `limit`.
    fn query_indexes(
        &self,
        items: &[QueryItem<'_>],
        after: u64,
        limit: usize,
    ) -> CoreResult<Vec<u32>> {
        let mut resolved = Vec::with_capacity(items.len());
        for item in items {
            if let Some(r) = self.resolve_item(item)? {
                resolved.push(r);
            }
        }
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(self.len) as u32;
        if resolved.is_empty() || limit == 0 || start as usize == self.len {
            return Ok(Vec::new());
        }
        if resolved
            .iter()
            .any(|r| r.tags.is_empty() && r.types.is_none())
        {
            // An item that matches every event: the first events after `after`.
            return Ok((start..self.len as u32)
                .filter(|&i| self.event(i).event_type != ERASED)
                .take(limit)
                .collect());
        }
        // Each item walks one posting list per source (its rarest tag, else each of its
        // types), keeping at most `limit` matches of each; then they are merged.
        let mut out: Vec<u32> = Vec::new();
        let mut sources = 0usize;
        let mut by_type: Option<MutexGuard<'_, TypePostings>> = None;
        let mut walk = |list: &[u32], r: &Resolved, out: &mut Vec<u32>| {
            sources += 1;
            out.extend(
                list.iter()
                    .copied()
                    .filter(|&i| self.item_matches(r, i))
                    .take(limit),
            );
        };
        for r in &resolved {
            if let Some(&rarest) = r.tags.first() {
                let list = &self.tags.postings[rarest as usize];
                walk(&list[list.partition_point(|&i| i < start)..], r, &mut out);
            } else if let Some(types) = &r.types {
                let index = by_type.get_or_insert_with(|| self.type_postings());
                for &t in types {
                    walk(index.after(t, start), r, &mut out);
                }
            }
        }
        drop(by_type);
        if sources > 1 {
            out.sort_unstable();
            out.dedup();
            out.truncate(limit);
        }
        Ok(out)
    }

    /// The events after `after_position` that match `items`, in position order (at most
    /// `limit`), and the position the read is consistent with: the head, or the last
    /// event returned when the limit cut the read short.
    pub fn read_query(
        &self,
        items: &[QueryItem<'_>],
        after_position: i64,
        limit: Option<i64>,
    ) -> CoreResult<(Rows, u64)> {
        let after = check_non_negative("after", after_position)?;
        let limit = check_limit(limit)?;
        let picked = self.query_indexes(items, after, limit)?;
        let position = if picked.len() == limit && limit > 0 {
            u64::from(*picked.last().expect("limit > 0")) + 1
        } else {
            self.head()
        };
        let n = picked.len();
        Ok((self.rows_for(picked.into_iter(), n), position))
    }

    /// [`Store::append`] with tags per event (one list per event) and an optional
    /// condition: fail with [`CoreError::ConditionFailed`], writing nothing, when an event
    /// after position `after` matches the query. An append whose ids are stored already is
    /// a replay (its condition is not checked again); its tags must be the stored ones.
    pub fn append_tagged(
        &mut self,
        expected: &[(&str, i64)],
        events: &[NewEvent<'_>],
        metadata: Option<&[u8]>,
        tags: &[&[&str]],
        condition: Option<(&[QueryItem<'_>], i64)>,
    ) -> CoreResult<AppendOutcome> {
        if tags.len() != events.len() && !tags.is_empty() {
            return Err(CoreError::Value(
                "tags must have one entry per event".to_owned(),
            ));
        }
        let mut checked: Vec<SmallVec<[&str; 4]>> = Vec::with_capacity(tags.len());
        for t in tags {
            checked.push(check_tags(t)?);
        }
        let replay = events.iter().any(|e| self.find_id(e.id).is_some());
        if !replay {
            if let Some((items, after)) = condition {
                let after = check_non_negative("condition's after", after)?;
                if let Some(&i) = self.query_indexes(items, after, 1)?.first() {
                    return Err(CoreError::ConditionFailed {
                        after,
                        position: u64::from(i) + 1,
                    });
                }
            }
        }
        let out = self.append(expected, events, metadata)?;
        let first = (out.first_position - 1) as u32;
        if out.replayed {
            for (k, ev) in events.iter().enumerate() {
                let stored = self.tags.names_of(first + k as u32);
                let given: &[&str] = checked.get(k).map_or(&[], |t| t.as_slice());
                if !stored.iter().map(|t| &**t).eq(given.iter().copied()) {
                    return Err(CoreError::DuplicateEventId {
                        id: ev.id,
                        reason: "already stored with different tags",
                    });
                }
            }
            return Ok(out);
        }
        for (k, event_tags) in checked.iter().enumerate() {
            if event_tags.is_empty() {
                continue;
            }
            let index = first + k as u32;
            let mut ids: SmallVec<[u32; 2]> =
                event_tags.iter().map(|t| self.tags.intern(t)).collect();
            ids.sort_unstable();
            for &t in &ids {
                self.tags.postings[t as usize].push(index);
            }
            self.tags.by_event.insert(index, ids);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(stream: &'a str, event_type: &'a str, id: u128) -> NewEvent<'a> {
        NewEvent {
            stream,
            event_type,
            payload: b"{}",
            id,
        }
    }

    fn item<'a>(types: &[&'a str], tags: &[&'a str]) -> QueryItem<'a> {
        QueryItem {
            types: types.to_vec(),
            tags: tags.to_vec(),
        }
    }

    #[test]
    fn a_query_matches_types_and_all_tags_of_an_item() {
        let mut s = Store::new();
        let evs = [ev("a", "X", 1), ev("b", "Y", 2), ev("c", "X", 3)];
        let tags: [&[&str]; 3] = [&["t1", "t2"], &["t1"], &["t2"]];
        s.append_tagged(&[], &evs, None, &tags, None).unwrap();
        let t2: [&[&str]; 1] = [&["t2", "t0"]];
        s.append_tagged(&[], &[ev("d", "Z", 4)], None, &t2, None)
            .unwrap();
        let names: Vec<Vec<String>> = s
            .tags_at(&[1, 4])
            .iter()
            .map(|t| t.iter().map(|n| n.to_string()).collect())
            .collect();
        assert_eq!(names, [vec!["t1", "t2"], vec!["t0", "t2"]]);
        let ids = |items: &[QueryItem<'_>], after| {
            let (rows, pos) = s.read_query(items, after, None).unwrap();
            (
                rows.rows.iter().map(|r| r.position).collect::<Vec<_>>(),
                pos,
            )
        };
        assert_eq!(ids(&[item(&[], &["t1"])], 0), (vec![1, 2], 4));
        assert_eq!(ids(&[item(&["X"], &["t1"])], 0), (vec![1], 4));
        assert_eq!(ids(&[item(&[], &["t1", "t2"])], 0), (vec![1], 4));
        assert_eq!(ids(&[item(&["X"], &[])], 1), (vec![3], 4));
        assert_eq!(
            ids(&[item(&["Y"], &[]), item(&[], &["t2"])], 0),
            (vec![1, 2, 3, 4], 4)
        );
        assert_eq!(ids(&[item(&[], &["nope"])], 0), (vec![], 4));
        assert_eq!(ids(&[], 0), (vec![], 4));
    }

    #[test]
    fn a_types_only_item_walks_the_type_postings_caught_up_after_each_append() {
        let mut s = Store::new();
        let none: [&[&str]; 0] = [];
        s.append_tagged(&[], &[ev("a", "X", 1), ev("b", "Y", 2)], None, &none, None)
            .unwrap();
        let ids = |s: &Store, items: &[QueryItem<'_>], after, limit| {
            let (rows, pos) = s.read_query(items, after, limit).unwrap();
            let got: Vec<u64> = rows.rows.iter().map(|r| r.position).collect();
            (got, pos)
        };
        assert_eq!(ids(&s, &[item(&["X"], &[])], 0, None), (vec![1], 2));
        // Appended after the index was built: caught up by the next query.
        s.append_tagged(&[], &[ev("c", "X", 3), ev("d", "Z", 4)], None, &none, None)
            .unwrap();
        assert_eq!(ids(&s, &[item(&["X"], &[])], 0, None), (vec![1, 3], 4));
        assert_eq!(ids(&s, &[item(&["X", "Z"], &[])], 1, None), (vec![3, 4], 4));
        assert_eq!(
            ids(&s, &[item(&["X", "Z"], &[])], 0, Some(2)),
            (vec![1, 3], 3)
        );
        assert_eq!(
            ids(&s, &[item(&["Y"], &[]), item(&["Z"], &[])], 0, None),
            (vec![2, 4], 4)
        );
        assert_eq!(ids(&s, &[item(&["nope"], &[])], 0, None), (vec![], 4));
        // A condition on a type sees the newest event of it.
        let q = [item(&["Z"], &[])];
        assert!(s
            .append_tagged(&[], &[ev("e", "Z", 5)], None, &none, Some((&q, 3)))
            .is_err());
        s.append_tagged(&[], &[ev("e", "Z", 5)], None, &none, Some((&q, 4)))
            .unwrap();
        assert_eq!(ids(&s, &q, 4, None), (vec![5], 5));
    }

    #[test]
    fn a_purged_event_is_gone_from_query_reads_and_conditions() {
        let mut s = Store::new();
        let t: [&[&str]; 2] = [&["k"], &["k"]];
        s.append_tagged(&[], &[ev("a", "X", 1), ev("b", "X", 2)], None, &t, None)
            .unwrap();
        s.truncate("a", None, -1).unwrap(); // delete stream a (hides its event)
        s.purge("a").unwrap();
        for q in [[item(&[], &["k"])], [item(&["X"], &[])]] {
            let (rows, position) = s.read_query(&q, 0, None).unwrap();
            let positions: Vec<u64> = rows.rows.iter().map(|r| r.position).collect();
            assert_eq!((positions, position), (vec![2], 2));
        }
        assert!(s.tags.of(0).is_empty());
        // The purged event no longer fails a condition after position 0... but b's does.
        let q = [item(&[], &["k"])];
        let one: [&[&str]; 1] = [&["k"]];
        assert!(s
            .append_tagged(&[], &[ev("c", "X", 3)], None, &one, Some((&q, 1)))
            .is_err());
        s.append_tagged(&[], &[ev("c", "X", 3)], None, &one, Some((&q, 2)))
            .unwrap();
    }

    #[test]
    fn a_condition_fails_on_a_match_after_its_position_and_writes_nothing() {
        let mut s = Store::new();
        let t: [&[&str]; 1] = [&["k"]];
        s.append_tagged(&[], &[ev("a", "X", 1)], None, &t, None)
            .unwrap();
        let q = [item(&[], &["k"])];
        let err = s
            .append_tagged(&[], &[ev("a", "X", 2)], None, &t, Some((&q, 0)))
            .unwrap_err();
        assert_eq!(
            err,
            CoreError::ConditionFailed {
                after: 0,
                position: 1
            }
        );
        assert_eq!(s.len(), 1);
        s.append_tagged(&[], &[ev("a", "X", 2)], None, &t, Some((&q, 1)))
            .unwrap();
        // A replay is not checked again, and must carry the same tags.
        let out = s
            .append_tagged(&[], &[ev("a", "X", 2)], None, &t, Some((&q, 0)))
            .unwrap();
        assert!(out.replayed);
        let other: [&[&str]; 1] = [&["j"]];
        assert!(s
            .append_tagged(&[], &[ev("a", "X", 2)], None, &other, None)
            .is_err());
    }
}
