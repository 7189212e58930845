//! The in-memory event store: pure Rust, no Python types.
//!
//! Layout (memory per event matters):
//! - events live in fixed-capacity chunks (`Vec<Vec<StoredEvent>>`, [`CHUNK`] events each,
//!   so growth never doubles); the event at global position `p` is at index `p - 1`;
//! - stream ids and event types are interned once (`Arc<str>` tables); an event refers to
//!   them by `u32` index;
//! - each stream keeps the `u32` event indexes of its events (version `v` is entry `v - 1`);
//! - the event-id index is a `HashTable<(u32, u32)>` of event index and 32-bit id hash
//!   (~9 bytes per bucket instead of a `(u128, u64)` map entry's 33); the id itself is
//!   compared in the stored event;
//! - a `BTreeMap` of stream ids gives sorted, prefix- and cursor-based stream listing.
//!
//! All operations are all-or-nothing: `append` checks everything before writing anything.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::BuildHasher;
use std::ops::Bound as RangeBound;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::errors::{Conflict, CoreError, CoreResult};
use crate::{event_type, limits, stream_id};

#[path = "columns.rs"]
pub mod columns;
#[path = "dcb.rs"]
pub mod dcb;

/// Expected version: no check.
pub const ANY: i64 = -1;
/// Expected version: the stream must have at least one event.
pub const STREAM_EXISTS: i64 = -2;
/// Expected version: the stream must not exist (same as exact 0).
pub const NO_STREAM: i64 = 0;

const CHUNK_SHIFT: u32 = 12;
/// Events per chunk.
pub const CHUNK: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u32 = (1 << CHUNK_SHIFT) - 1;
/// The store holds at most this many events (positions are `u32`).
pub const MAX_EVENTS: usize = u32::MAX as usize - 1;

/// One stored event (72 bytes; position = index + 1).
#[derive(Debug)]
pub struct StoredEvent {
    id_hi: u64,
    id_lo: u64,
    /// Microseconds since the unix epoch (UTC).
    recorded_at: i64,
    payload: Box<[u8]>,
    /// Shared by every event of one append batch.
    metadata: Option<Arc<[u8]>>,
    stream: u32,
    event_type: u32,
    version: u32,
}

impl StoredEvent {
    /// The event id.
    #[inline]
    pub fn id(&self) -> u128 {
        (u128::from(self.id_hi) << 64) | u128::from(self.id_lo)
    }
}

#[derive(Debug)]
struct Stream {
    name: Arc<str>,
    /// Event indexes (position - 1) of this stream's events, in version order.
    events: Vec<u32>,
    /// The stream's version: its number of events, plus one for every truncation or
    /// deletion that hid something (each takes a version no event has).
    version: u32,
    /// Versions `1..=hidden` are hidden from stream reads and folds (truncated or deleted).
    hidden: u32,
    /// The version the last truncation took (0: never): a state folded at an earlier
    /// version may hold hidden events, so a fold tail cannot extend it.
    truncated_at: u32,
    /// Versions `1..=purged` are erased (hard-deleted); `purged <= hidden`.
    purged: u32,
}

impl Stream {
    /// How many of its events have a version `<= v` (their indexes in `events`).
    #[inline]
    fn count_upto(&self, chunks: &[Vec<StoredEvent>], v: u64) -> usize {
        if self.version as usize == self.events.len() {
            // no version was taken by a truncation: version n is entry n - 1
            return usize::try_from(v)
                .unwrap_or(usize::MAX)
                .min(self.events.len());
        }
        self.events
            .partition_point(|&i| u64::from(event_at(chunks, i).version) <= v)
    }
}

/// What [`Store::purge`] erased from one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Number of events erased (0: nothing was hidden and not yet erased).
    pub events: u64,
    /// The first and last version erased.
    pub from_version: u64,
    /// See `from_version`.
    pub to_version: u64,
    /// The first and last global position erased: the hole readers of the log skip.
    pub first_position: u64,
    /// See `first_position`.
    pub last_position: u64,
}

/// The event type index of an erased event (its payload and id are gone).
pub(crate) const ERASED: u32 = u32::MAX;

/// One event to append (borrowed from the caller).
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Stream id (validated and trimmed by the store).
    pub stream: &'a str,
    /// Event type name.
    pub event_type: &'a str,
    /// Opaque payload.
    pub payload: &'a [u8],
    /// Event id (a UUID as an int).
    pub id: u128,
}

/// The result of an append (or of an idempotent replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Position of the first event of the batch (`head + 1` when nothing was written).
    pub first_position: u64,
    /// `(source, version)` for every stream of the batch: streams of `expected` first, then
    /// further streams of `events` in first-appearance order. `source < expected.len()` is
    /// an index into `expected`, else `source - expected.len()` is an index into `events`.
    pub versions: SmallVec<[(usize, u64); 4]>,
    /// Whether the outcome is a replay of an earlier append (nothing written).
    pub replayed: bool,
}

/// One row copied out of the store.
#[derive(Debug, Clone)]
pub struct Row {
    /// Event id.
    pub id: u128,
    /// Global position.
    pub position: u64,
    /// Microseconds since the unix epoch (UTC).
    pub recorded_at: i64,
    /// End of the payload in [`Rows::payloads`] (it starts where the previous row's ends).
    pub payload_end: usize,
    /// Batch metadata.
    pub metadata: Option<Arc<[u8]>>,
    /// Stream: an index into [`Rows::streams`], or for reads of given streams, the index of
    /// the stream in the caller's list.
    pub stream: u32,
    /// Index into [`Rows::types`].
    pub event_type: u32,
    /// Version of the event in its stream.
    pub version: u32,
}

/// Rows copied out of the store, with their payload bytes in one buffer.
#[derive(Debug, Default)]
pub struct Rows {
    /// The rows, in the order of the read.
    pub rows: Vec<Row>,
    /// All payloads back to back.
    pub payloads: Vec<u8>,
    /// Stream names used by the rows (empty for reads of given streams).
    pub streams: Vec<Arc<str>>,
    /// Event type names used by the rows.
    pub types: Vec<Arc<str>>,
}

impl Rows {
    /// The payload of row `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.rows[i - 1].payload_end
        };
        &self.payloads[start..self.rows[i].payload_end]
    }
}

/// Maps store indexes to the local indexes of a [`Rows`] (small cache in front of a map).
#[derive(Default)]
struct LocalIndex {
    map: HashMap<u32, u32>,
    last: Option<(u32, u32)>,
}

impl LocalIndex {
    #[inline]
    fn get(&mut self, global: u32, names: &mut Vec<Arc<str>>, name: impl Fn() -> Arc<str>) -> u32 {
        if let Some((g, l)) = self.last {
            if g == global {
                return l;
            }
        }
        let l = *self.map.entry(global).or_insert_with(|| {
            names.push(name());
            (names.len() - 1) as u32
        });
        self.last = Some((global, l));
        l
    }
}

/// The sorted view of stream ids behind [`Store::list_streams`].
#[derive(Default)]
struct SortedStreams {
    map: BTreeMap<Arc<str>, u32>,
    synced: usize,
}

/// The in-memory event store.
#[derive(Default)]
pub struct Store {
    chunks: Vec<Vec<StoredEvent>>,
    len: usize,
    streams: Vec<Stream>,
    stream_index: HashTable<u32>,
    /// Stream ids in order, for listing. Filled lazily (streams `0..synced` are in it),
    /// so creating a stream never pays for a tree insert; listing catches up first.
    sorted_streams: Mutex<SortedStreams>,
    types: Vec<Arc<str>>,
    type_index: HashTable<u32>,
    /// `(event index, 32-bit id hash)` of the events whose id was not greater than every
    /// id stored before it: rehashing never touches the events.
    ids: HashTable<(u32, u32)>,
    /// The indexes of the other events (an id greater than every one before it, as the
    /// UUIDv7s of one generator are), in append order and so sorted by id: found by a
    /// binary search, and added with a write at the end of a list instead of one in a
    /// random place of a table as large as the store.
    ordered: Vec<u32>,
    /// The greatest id stored (0 when none): a greater one is not stored.
    max_id: u128,
    hasher: DefaultHashBuilder,
    payload_heap: usize,
    metadata_heap: usize,
    /// Events erased by [`Store::purge`] (their positions stay, empty).
    erased: usize,
    names_heap: usize,
    stream_events_cap: usize,
    /// Event tags and their postings (`dcb.rs`).
    tags: dcb::TagIndex,
}

/// An approximation of what the allocator really holds for a request of `n` bytes
/// (glibc: 8 bytes of header, 16-byte granularity, 32-byte minimum chunk).
#[inline]
fn heap_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}

/// 32-bit hash of an event id: murmur3's `fmix64` over both halves (a strong mix, so
/// sequential or structured ids spread over the table).
#[inline]
fn hash_id(id: u128) -> u32 {
    #[inline]
    fn fmix64(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    fmix64((id as u64) ^ fmix64((id >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15)) as u32
}

/// The table hash of an id-index entry: the 32-bit hash in both halves, so the table finds
/// bucket bits (low) and tag bits (high) in it without touching the event.
#[inline]
fn id_table_hash(h: u32) -> u64 {
    u64::from(h) | (u64::from(h) << 32)
}

#[inline]
fn event_at(chunks: &[Vec<StoredEvent>], index: u32) -> &StoredEvent {
    &chunks[(index >> CHUNK_SHIFT) as usize][(index & CHUNK_MASK) as usize]
}

/// Current time in microseconds since the unix epoch (UTC).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One stream of an append batch.
struct Slot<'a> {
    name: &'a str,
    source: usize,
    expected: i64,
    stream: Option<u32>,
    /// Index (into `events`) of this stream's last event in the batch.
    last_event: Option<usize>,
}

/// Finds the slot of a stream name: linear for small batches, hashed beyond.
#[derive(Default)]
struct SlotFinder<'a> {
    map: Option<HashMap<&'a str, usize>>,
}

impl<'a> SlotFinder<'a> {
    const LINEAR: usize = 8;

    fn find(&mut self, slots: &[Slot<'a>], name: &str) -> Option<usize> {
        if let Some(map) = &self.map {
            return map.get(name).copied();
        }
        slots.iter().position(|s| s.name == name)
    }

    fn added(&mut self, slots: &[Slot<'a>]) {
        match &mut self.map {
            Some(map) => {
                let i = slots.len() - 1;
                map.insert(slots[i].name, i);
            }
            None if slots.len() > Self::LINEAR => {
                self.map = Some(slots.iter().enumerate().map(|(i, s)| (s.name, i)).collect());
            }
            None => {}
        }
    }
}

fn check_limit(limit: Option<i64>) -> CoreResult<usize> {
    match limit {
        None => Ok(usize::MAX),
        Some(l) if l < 0 => Err(CoreError::Value(format!(
            "limit must not be negative (got {l})"
        ))),
        Some(l) => Ok(usize::try_from(l).unwrap_or(usize::MAX)),
    }
}

fn check_non_negative(name: &str, value: i64) -> CoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| CoreError::Value(format!("{name} must not be negative (got {value})")))
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored events (= the last global position).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store holds no event.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last global position (0 when empty).
    #[inline]
    pub fn head(&self) -> u64 {
        self.len as u64
    }

    #[inline]
    fn event(&self, index: u32) -> &StoredEvent {
        event_at(&self.chunks, index)
    }

    #[inline]
    fn find_stream(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.stream_index
            .find(hash, |&i| &*self.streams[i as usize].name == name)
            .copied()
    }

    /// The index of the stored event with id `id` (an erased one's id is not stored).
    #[inline]
    fn find_id(&self, id: u128) -> Option<u32> {
        if id > self.max_id {
            return None;
        }
        let h = hash_id(id);
        let chunks = &self.chunks;
        if let Some(&(i, _)) = self.ids.find(id_table_hash(h), |&(i, eh)| {
            eh == h && event_at(chunks, i).id() == id
        }) {
            return Some(i);
        }
        let at = self
            .ordered
            .partition_point(|&i| event_at(chunks, i).id() < id);
        let &i = self.ordered.get(at)?;
        let ev = event_at(chunks, i);
        (ev.id() == id && ev.event_type != ERASED).then_some(i)
    }

    /// Add the stream `name`, which the caller found absent.
    fn add_stream(&mut self, name: &str) -> u32 {
        let index = self.streams.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names_heap += heap_size(16 + name.len());
        self.streams.push(Stream {
            name,
            events: Vec::new(),
            version: 0,
            hidden: 0,
            truncated_at: 0,
            purged: 0,
        });
        let hash = self.hasher.hash_one(&*self.streams[index as usize].name);
        let (streams, hasher) = (&self.streams, &self.hasher);
        self.stream_index.insert_unique(hash, index, |&i| {
            hasher.hash_one(&*streams[i as usize].name)
        });
        index
    }

    fn intern_type(&mut self, name: &str) -> u32 {
        let hash = self.hasher.hash_one(name);
        let types = &self.types;
        if let Some(&i) = self.type_index.find(hash, |&i| &*types[i as usize] == name) {
            return i;
        }
        let index = self.types.len() as u32;
        self.names_heap += heap_size(16 + name.len());
        self.types.push(Arc::from(name));
        let (types, hasher) = (&self.types, &self.hasher);
        self.type_index
            .insert_unique(hash, index, |&i| hasher.hash_one(&*types[i as usize]));
        index
    }

    fn find_type(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.type_index
            .find(hash, |&i| &*self.types[i as usize] == name)
            .copied()
    }

    /// Current version of a stream (0 = no stream). Validates the stream id.
    pub fn stream_version(&self, name: &str) -> CoreResult<u64> {
        let name = stream_id::validate(name)?;
        Ok(self.version_of(name))
    }

    #[inline]
    fn version_of(&self, name: &str) -> u64 {
        self.find_stream(name)
            .map_or(0, |i| u64::from(self.streams[i as usize].version))
    }

    /// Hide the events of stream `name` with a version below `before` from stream reads and
    /// folds (`None`: every event it has now, a soft delete), after checking `expected`
    /// (as for an append). A truncation that hides an event takes the next version (no
    /// event has it), so a state folded before it no longer matches the stream's version;
    /// an append continues after it. The hidden point only moves forward (an earlier
    /// `before` changes nothing). The global log still holds the events until
    /// [`Store::purge`] erases them. Returns the stream's version.
    pub fn truncate(&mut self, name: &str, before: Option<i64>, expected: i64) -> CoreResult<u64> {
        let name = stream_id::validate(name)?;
        if expected < STREAM_EXISTS {
            return Err(CoreError::Value(format!(
                "expected version of stream {name:?} must be >= -2 (got {expected})"
            )));
        }
        let stream = self.find_stream(name);
        let version = self.version_of(name);
        let ok = match expected {
            ANY => true,
            STREAM_EXISTS => version >= 1,
            exact => version == exact as u64,
        };
        if !ok {
            return Err(CoreError::Conflict(vec![Conflict {
                stream: name.to_owned(),
                expected,
                actual: version,
            }]));
        }
        let hide = match before {
            None => version,
            Some(b) if b >= 1 && (b as u64) <= version + 1 => b as u64 - 1,
            Some(b) => {
                return Err(CoreError::Value(format!(
                    "before_version of stream {name:?} must be between 1 and its version + 1 \
                     ({}), got {b}",
                    version + 1
                )))
            }
        };
        if let Some(i) = stream {
            // Only a truncation that hides an event takes a version (and moves the point).
            let st = &self.streams[i as usize];
            if st.count_upto(&self.chunks, hide) > st.count_upto(&self.chunks, u64::from(st.hidden))
            {
                let s = &mut self.streams[i as usize];
                s.hidden = hide as u32;
                s.version += 1;
                s.truncated_at = s.version;
                return Ok(u64::from(s.version));
            }
        }
        Ok(version)
    }

    /// Erase (hard-delete) the hidden events of stream `name` that are not erased yet:
    /// payload, metadata and id are dropped (the id may be used again) and the global log
    /// skips their positions from now on. What was erased (nothing when
    /// `Purged::events == 0`).
    pub fn purge(&mut self, name: &str) -> CoreResult<Purged> {
        let name = stream_id::validate(name)?;
        let Some(i) = self.find_stream(name) else {
            return Ok(Purged::default());
        };
        let indexes: Vec<u32> = {
            let s = &self.streams[i as usize];
            let from = s.count_upto(&self.chunks, u64::from(s.purged));
            let to = s.count_upto(&self.chunks, u64::from(s.hidden));
            s.events[from..to].to_vec()
        };
        let hidden = self.streams[i as usize].hidden;
        self.streams[i as usize].purged = hidden;
        let (Some(&first), Some(&last)) = (indexes.first(), indexes.last()) else {
            return Ok(Purged::default());
        };
        let versions = (self.event(first).version, self.event(last).version);
        for &index in &indexes {
            let ev =
                &mut self.chunks[(index >> CHUNK_SHIFT) as usize][(index & CHUNK_MASK) as usize];
            let id = ev.id();
            self.payload_heap -= heap_size(ev.payload.len());
            ev.payload = Box::default();
            ev.metadata = None;
            ev.event_type = ERASED;
            let h = hash_id(id);
            if let Ok(entry) = self
                .ids
                .find_entry(id_table_hash(h), |&(j, eh)| eh == h && j == index)
            {
                entry.remove();
            }
        }
        self.erased += indexes.len();
        self.tags.forget(&indexes);
        Ok(Purged {
            events: indexes.len() as u64,
            from_version: u64::from(versions.0),
            to_version: u64::from(versions.1),
            first_position: u64::from(first) + 1,
            last_position: u64::from(last) + 1,
        })
    }

    /// The first visible version of a stream (1 when nothing is hidden), its version,
    /// and whether it has events but none visible (deleted).
    pub fn stream_bounds(&self, name: &str) -> CoreResult<(u64, u64, bool)> {
        let name = stream_id::validate(name)?;
        Ok(self.find_stream(name).map_or((1, 0, false), |i| {
            let s = &self.streams[i as usize];
            let visible = s.events.len() - s.count_upto(&self.chunks, u64::from(s.hidden));
            (
                u64::from(s.hidden) + 1,
                u64::from(s.version),
                !s.events.is_empty() && visible == 0,
            )
        }))
    }

    /// How many stored (not erased) events lie at positions in `(after, upto]`.
    pub fn count_events(&self, after: u64, upto: u64) -> u64 {
        let upto = upto.min(self.len as u64);
        if after >= upto {
            return 0;
        }
        if self.erased == 0 {
            return upto - after;
        }
        (after as u32..upto as u32)
            .filter(|&i| self.event(i).event_type != ERASED)
            .count() as u64
    }

    /// Whether any event was erased (positions then have holes).
    pub fn has_holes(&self) -> bool {
        self.erased > 0
    }

    /// Append `events` atomically after checking `expected` versions (see the module docs of
    /// `py_store` for the exact semantics).
    pub fn append(
        &mut self,
        expected: &[(&str, i64)],
        events: &[NewEvent<'_>],
        metadata: Option<&[u8]>,
    ) -> CoreResult<AppendOutcome> {
        self.append_valid(expected, false, events, metadata)
    }

    /// [`Store::append`]; `valid` when the caller knows every expected stream's name to be
    /// a valid, trimmed stream id already (an `eventcore.StreamId` is validated when it is
    /// built), which is then not checked again. Events' streams are checked as ever.
    pub fn append_valid(
        &mut self,
        expected: &[(&str, i64)],
        valid: bool,
        events: &[NewEvent<'_>],
        metadata: Option<&[u8]>,
    ) -> CoreResult<AppendOutcome> {
        // 1. Validate and group streams into slots.
        let mut slots: SmallVec<[Slot<'_>; 4]> = SmallVec::with_capacity(expected.len() + 1);
        let mut finder = SlotFinder::default();
        for (i, &(raw, exp)) in expected.iter().enumerate() {
            let name = if valid {
                raw
            } else {
                stream_id::validate(raw)?
            };
            if exp < STREAM_EXISTS {
                return Err(CoreError::Value(format!(
                    "expected version of stream {name:?} must be >= -2 (got {exp})"
                )));
            }
            if finder.find(&slots, name).is_some() {
                return Err(CoreError::Value(format!(
                    "stream {name:?} is listed more than once in expected"
                )));
            }
            slots.push(Slot {
                name,
                source: i,
                expected: exp,
                stream: None,
                last_event: None,
            });
            finder.added(&slots);
        }
        let mut event_slot: SmallVec<[u32; 8]> = SmallVec::with_capacity(events.len());
        let mut prev_raw: Option<(&str, usize)> = None;
        // Type names and sizes are checked here, before anything is written; a run of
        // events of one type checks its name once.
        limits::check_append(events.len(), 0)?;
        let mut bytes = metadata.map_or(0, <[u8]>::len);
        let mut prev_type: Option<&str> = None;
        // A type this store already holds was checked when it was first written: it is
        // found (and its index kept for the write) instead of checked again.
        let mut known_type: Option<(&str, u32)> = None;
        for (i, ev) in events.iter().enumerate() {
            if !prev_type.is_some_and(|t| std::ptr::eq(t, ev.event_type) || t == ev.event_type) {
                match self.find_type(ev.event_type) {
                    Some(index) => known_type = Some((ev.event_type, index)),
                    None => event_type::validate(ev.event_type)?,
                }
                prev_type = Some(ev.event_type);
            }
            limits::check_payload(i, ev.event_type, ev.payload.len())?;
            bytes += ev.payload.len();
            let same = |raw: &str| std::ptr::eq(raw, ev.stream) || raw == ev.stream;
            let slot = match prev_raw {
                Some((raw, s)) if same(raw) => s,
                _ => {
                    // A stream given exactly as an expected one (the command machine's
                    // case) is that one's slot, its name checked above.
                    let given = if expected.len() <= SlotFinder::LINEAR {
                        expected.iter().position(|&(raw, _)| same(raw))
                    } else {
                        None
                    };
                    let s = match given {
                        Some(s) => s,
                        None => {
                            let name = stream_id::validate(ev.stream)?;
                            match finder.find(&slots, name) {
                                Some(s) => s,
                                None => {
                                    slots.push(Slot {
                                        name,
                                        source: expected.len() + i,
                                        expected: ANY,
                                        stream: None,
                                        last_event: None,
                                    });
                                    finder.added(&slots);
                                    slots.len() - 1
                                }
                            }
                        }
                    };
                    prev_raw = Some((ev.stream, s));
                    s
                }
            };
            slots[slot].last_event = Some(i);
            event_slot.push(slot as u32);
        }
        limits::check_append(events.len(), bytes)?;

        // 2. Event ids unique within the batch.
        if events.len() > 1 {
            if events.len() <= 16 {
                for (i, a) in events.iter().enumerate() {
                    if events[..i].iter().any(|b| b.id == a.id) {
                        return Err(dup_in_batch(a.id));
                    }
                }
            } else {
                let mut seen = HashSet::with_capacity(events.len());
                for ev in events {
                    if !seen.insert(ev.id) {
                        return Err(dup_in_batch(ev.id));
                    }
                }
            }
        }

        // 3. Idempotency: an already stored id means replay (or an error).
        for ev in events {
            if self.find_id(ev.id).is_some() {
                return self.replay(&slots, events, &event_slot, metadata);
            }
        }

        // 4. Expected versions, all streams before any write.
        let mut conflicts = Vec::new();
        for slot in slots.iter_mut() {
            slot.stream = self.find_stream(slot.name);
            let actual = slot
                .stream
                .map_or(0, |i| u64::from(self.streams[i as usize].version));
            let ok = match slot.expected {
                ANY => true,
                STREAM_EXISTS => actual >= 1,
                exact => actual == exact as u64,
            };
            if !ok {
                conflicts.push(Conflict {
                    stream: slot.name.to_owned(),
                    expected: slot.expected,
                    actual,
                });
            }
        }
        if !conflicts.is_empty() {
            return Err(CoreError::Conflict(conflicts));
        }
        let first_position = self.len as u64 + 1;
        if events.is_empty() {
            let versions = slots
                .iter()
                .map(|s| {
                    let v = s.stream.map_or(0, |i| self.streams[i as usize].version);
                    (s.source, u64::from(v))
                })
                .collect();
            return Ok(AppendOutcome {
                first_position,
                versions,
                replayed: false,
            });
        }
        if self.len + events.len() > MAX_EVENTS {
            return Err(CoreError::Store("the memory store is full".to_owned()));
        }

        // 5. Write.
        let recorded_at = now_micros();
        let metadata: Option<Arc<[u8]>> = metadata.map(|m| {
            self.metadata_heap += heap_size(16 + m.len());
            Arc::from(m)
        });
        let mut last_type = known_type;
        for (ev, &slot) in events.iter().zip(&event_slot) {
            let slot = &mut slots[slot as usize];
            let stream = match slot.stream {
                Some(s) => s,
                None => {
                    // Found absent above (each stream has one slot): added, not looked up.
                    let s = self.add_stream(slot.name);
                    slot.stream = Some(s);
                    s
                }
            };
            let event_type = match last_type {
                Some((t, i)) if t == ev.event_type => i,
                _ => {
                    let i = self.intern_type(ev.event_type);
                    last_type = Some((ev.event_type, i));
                    i
                }
            };
            self.push_event(ev, stream, event_type, recorded_at, metadata.clone());
        }
        let versions = slots
            .iter()
            .map(|s| {
                let v = s.stream.map_or(0, |i| self.streams[i as usize].version);
                (s.source, u64::from(v))
            })
            .collect();
        Ok(AppendOutcome {
            first_position,
            versions,
            replayed: false,
        })
    }

    fn push_event(
        &mut self,
        ev: &NewEvent<'_>,
        stream: u32,
        event_type: u32,
        recorded_at: i64,
        metadata: Option<Arc<[u8]>>,
    ) {
        let index = self.len as u32;
        let s = &mut self.streams[stream as usize];
        let cap_before = s.events.capacity();
        s.events.push(index);
        self.stream_events_cap += s.events.capacity() - cap_before;
        s.version += 1;
        let version = s.version;
        let payload: Box<[u8]> = Box::from(ev.payload);
        self.payload_heap += heap_size(payload.len());
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        chunk.push(StoredEvent {
            id_hi: (ev.id >> 64) as u64,
            id_lo: ev.id as u64,
            recorded_at,
            payload,
            metadata,
            stream,
            event_type,
            version,
        });
        self.len += 1;
        if ev.id > self.max_id {
            self.max_id = ev.id;
            self.ordered.push(index);
        } else {
            let h = hash_id(ev.id);
            self.ids
                .insert_unique(id_table_hash(h), (index, h), |&(_, h)| id_table_hash(h));
        }
    }

    /// The outcome of an append whose ids are (partly) stored already.
    fn replay(
        &self,
        slots: &[Slot<'_>],
        events: &[NewEvent<'_>],
        event_slot: &[u32],
        metadata: Option<&[u8]>,
    ) -> CoreResult<AppendOutcome> {
        let mut first: Option<u32> = None;
        for (i, ev) in events.iter().enumerate() {
            let Some(index) = self.find_id(ev.id) else {
                let stored = events
                    .iter()
                    .find(|e| self.find_id(e.id).is_some())
                    .map_or(ev.id, |e| e.id);
                return Err(CoreError::DuplicateEventId {
                    id: stored,
                    reason: "only part of this batch was stored before",
                });
            };
            let first = *first.get_or_insert(index);
            let stored = self.event(index);
            let same = u64::from(index) == u64::from(first) + i as u64
                && &*self.streams[stored.stream as usize].name
                    == slots[event_slot[i] as usize].name
                && &*self.types[stored.event_type as usize] == ev.event_type
                && &*stored.payload == ev.payload
                && stored.metadata.as_deref() == metadata;
            if !same {
                return Err(CoreError::DuplicateEventId {
                    id: ev.id,
                    reason: "already stored with different content",
                });
            }
        }
        let first = first.expect("replay of a non-empty batch");
        let versions = slots
            .iter()
            .map(|s| {
                let v = match s.last_event {
                    Some(e) => {
                        let index = first + e as u32;
                        u64::from(self.event(index).version)
                    }
                    None => self.version_of(s.name),
                };
                (s.source, v)
            })
            .collect();
        Ok(AppendOutcome {
            first_position: u64::from(first) + 1,
            versions,
            replayed: true,
        })
    }

    /// Resolve the given streams (validated, no duplicates) to store indexes. `valid`: the
    /// caller knows every name to be a valid, trimmed stream id already (see
    /// [`Store::fold_valid_upto`]), so it is not checked again.
    fn resolve_streams(
        &self,
        names: &[&str],
        valid: bool,
    ) -> CoreResult<SmallVec<[Option<u32>; 4]>> {
        let mut trimmed: SmallVec<[&str; 4]> = SmallVec::with_capacity(names.len());
        for raw in names {
            trimmed.push(if valid {
                raw
            } else {
                stream_id::validate(raw)?
            });
        }
        // The first name listed before: a few are compared pairwise (no set to build).
        let repeated = if trimmed.len() <= SlotFinder::LINEAR {
            (1..trimmed.len()).find(|&i| trimmed[..i].contains(&trimmed[i]))
        } else {
            let mut seen: HashSet<&str> = HashSet::with_capacity(trimmed.len());
            trimmed.iter().position(|name| !seen.insert(name))
        };
        if let Some(i) = repeated {
            return Err(CoreError::Value(format!(
                "stream {:?} is listed more than once",
                trimmed[i]
            )));
        }
        Ok(trimmed.iter().map(|n| self.find_stream(n)).collect())
    }

    /// Event indexes of the given streams' events with version > `after(slot)`, merged in
    /// position order, with the index of their stream in `streams`; at most `limit`.
    fn merged(
        &self,
        streams: &[Option<u32>],
        after: impl Fn(usize) -> u64,
        limit: usize,
    ) -> Vec<(u32, u32)> {
        let lists: SmallVec<[(u32, &[u32]); 4]> = streams
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let stream = &self.streams[(*s)? as usize];
                let events = &stream.events;
                let skip =
                    stream.count_upto(&self.chunks, after(slot).max(u64::from(stream.hidden)));
                let rest = &events[skip..];
                (!rest.is_empty()).then_some((slot as u32, rest))
            })
            .collect();
        let total: usize = lists.iter().map(|(_, l)| l.len()).sum();
        let mut out = Vec::with_capacity(total.min(limit));
        match lists.as_slice() {
            [] => {}
            [(slot, list)] => out.extend(list.iter().take(limit).map(|&i| (i, *slot))),
            few if few.len() <= 4 => {
                // A few lists: the lowest head found by a scan (no heap to build).
                let mut cursors: SmallVec<[usize; 4]> = smallvec::smallvec![0; few.len()];
                while out.len() < limit {
                    let mut best: Option<(u32, usize)> = None;
                    for (k, (_, list)) in few.iter().enumerate() {
                        if let Some(&index) = list.get(cursors[k]) {
                            if best.is_none_or(|(b, _)| index < b) {
                                best = Some((index, k));
                            }
                        }
                    }
                    let Some((index, k)) = best else { break };
                    out.push((index, few[k].0));
                    cursors[k] += 1;
                }
            }
            _ => {
                let mut heap: BinaryHeap<Reverse<(u32, u32, usize)>> = lists
                    .iter()
                    .enumerate()
                    .map(|(k, (_, l))| Reverse((l[0], k as u32, 0)))
                    .collect();
                while out.len() < limit {
                    let Some(Reverse((index, k, cursor))) = heap.pop() else {
                        break;
                    };
                    let (slot, list) = lists[k as usize];
                    out.push((index, slot));
                    if let Some(&next) = list.get(cursor + 1) {
                        heap.push(Reverse((next, k, cursor + 1)));
                    }
                }
            }
        }
        out
    }

    /// Copy out rows for `(event index, stream slot)` pairs; streams are caller slots.
    fn rows_for_slots(&self, picked: &[(u32, u32)]) -> Rows {
        let mut rows = Rows {
            rows: Vec::with_capacity(picked.len()),
            ..Rows::default()
        };
        let bytes: usize = picked
            .iter()
            .map(|&(i, _)| self.event(i).payload.len())
            .sum();
        rows.payloads.reserve_exact(bytes);
        let mut types = LocalIndex::default();
        for &(index, slot) in picked {
            let ev = self.event(index);
            let t = types.get(ev.event_type, &mut rows.types, || {
                self.types[ev.event_type as usize].clone()
            });
            self.push_row(&mut rows, index, ev, slot, t);
        }
        rows
    }

    /// Copy out rows for event indexes; stream names go to [`Rows::streams`].
    fn rows_for(&self, picked: impl Iterator<Item = u32>, size_hint: usize) -> Rows {
        let mut rows = Rows {
            rows: Vec::with_capacity(size_hint),
            ..Rows::default()
        };
        let mut types = LocalIndex::default();
        let mut streams = LocalIndex::default();
        for index in picked {
            let ev = self.event(index);
            let t = types.get(ev.event_type, &mut rows.types, || {
                self.types[ev.event_type as usize].clone()
            });
            let s = streams.get(ev.stream, &mut rows.streams, || {
                self.streams[ev.stream as usize].name.clone()
            });
            self.push_row(&mut rows, index, ev, s, t);
        }
        rows
    }

    #[inline]
    fn push_row(&self, rows: &mut Rows, index: u32, ev: &StoredEvent, stream: u32, t: u32) {
        rows.payloads.extend_from_slice(&ev.payload);
        rows.rows.push(Row {
            id: ev.id(),
            position: u64::from(index) + 1,
            recorded_at: ev.recorded_at,
            payload_end: rows.payloads.len(),
            metadata: ev.metadata.clone(),
            stream,
            event_type: t,
            version: ev.version,
        });
    }

    /// Events of the given streams with version > `after_version`, in position order;
    /// `Row::stream` is the index of the stream in `names`.
    pub fn read_streams(
        &self,
        names: &[&str],
        after_version: i64,
        limit: Option<i64>,
    ) -> CoreResult<Rows> {
        let after = check_non_negative("after_version", after_version)?;
        let limit = check_limit(limit)?;
        let streams = self.resolve_streams(names, false)?;
        let picked = self.merged(&streams, |_| after, limit);
        Ok(self.rows_for_slots(&picked))
    }

    /// Every event of the given streams in position order (for folding), and each stream's
    /// current version; `Row::stream` is the index of the stream in `names`.
    pub fn fold_rows(&self, names: &[&str]) -> CoreResult<(Rows, Vec<u64>)> {
        Ok(self.fold_rows_upto(names, u64::MAX)?.expect("no limit"))
    }

    /// [`Store::fold_rows`] when the streams' versions add up to at most `limit` (`None`
    /// otherwise, nothing copied): the in-memory store's check that a fold is small enough
    /// to run with the GIL held, resolving each stream once for both.
    pub fn fold_rows_upto(
        &self,
        names: &[&str],
        limit: u64,
    ) -> CoreResult<Option<(Rows, Vec<u64>)>> {
        self.fold_valid_upto(names, false, limit)
    }

    /// [`Store::fold_rows_upto`]; `valid` when the caller knows every name to be a valid,
    /// trimmed stream id already (an `eventcore.StreamId` is validated when it is built),
    /// which is then not checked again.
    pub fn fold_valid_upto(
        &self,
        names: &[&str],
        valid: bool,
        limit: u64,
    ) -> CoreResult<Option<(Rows, Vec<u64>)>> {
        let streams = self.resolve_streams(names, valid)?;
        let versions: Vec<u64> = streams
            .iter()
            .map(|s| s.map_or(0, |i| u64::from(self.streams[i as usize].version)))
            .collect();
        if versions.iter().sum::<u64>() > limit {
            return Ok(None);
        }
        if streams.iter().all(Option::is_none) {
            return Ok(Some((Rows::default(), versions))); // new streams: nothing to copy
        }
        let picked = self.merged(&streams, |_| 0, usize::MAX);
        Ok(Some((self.rows_for_slots(&picked), versions)))
    }

    /// The events of `names[fold_from..]` after the versions in `after` (one per name), in
    /// position order, and every stream's version now; `None` when that tail cannot extend
    /// a state folded up to `after`: a stream before `fold_from` changed, a stream has fewer
    /// events than `after` says, or a tail event lies before an already folded event of
    /// `names[fold_from..]` (never here, where positions follow commit order; checked so
    /// the contract is the one every store keeps).
    pub fn tail_rows(
        &self,
        names: &[&str],
        after: &[u64],
        fold_from: usize,
    ) -> CoreResult<Option<(Rows, Vec<u64>)>> {
        if after.len() != names.len() {
            return Err(CoreError::Value(
                "versions must have one entry per stream".to_owned(),
            ));
        }
        let streams = self.resolve_streams(names, false)?;
        let mut versions = Vec::with_capacity(streams.len());
        let mut folded_up_to = 0u32; // 1 + the highest index of a folded event
        let mut tail_from = u32::MAX; // the lowest index of a tail event
        for (slot, s) in streams.iter().enumerate() {
            let stream = s.map(|i| &self.streams[i as usize]);
            let events: &[u32] = stream.map_or(&[], |st| &st.events);
            let now = stream.map_or(0, |st| u64::from(st.version));
            let was = after[slot];
            if now < was || (slot < fold_from && now != was) {
                return Ok(None);
            }
            // Truncated or deleted after the folded version: the state may hold events
            // hidden now.
            if stream.is_some_and(|st| u64::from(st.truncated_at) > was) {
                return Ok(None);
            }
            if slot >= fold_from {
                let folded = stream.map_or(0, |st| st.count_upto(&self.chunks, was));
                if folded > 0 {
                    folded_up_to = folded_up_to.max(events[folded - 1] + 1);
                }
                if folded < events.len() {
                    tail_from = tail_from.min(events[folded]);
                }
            }
            versions.push(now);
        }
        if tail_from == u32::MAX {
            return Ok(Some((Rows::default(), versions)));
        }
        if tail_from < folded_up_to {
            return Ok(None);
        }
        let picked = self.merged(
            &streams,
            |slot| {
                if slot < fold_from {
                    u64::MAX
                } else {
                    after[slot]
                }
            },
            usize::MAX,
        );
        Ok(Some((self.rows_for_slots(&picked), versions)))
    }

    /// Whether every stream of `names` exists at exactly the version in `after` (one per
    /// name) and none was truncated past it: then [`Store::tail_rows`] has nothing to
    /// fold. A name not found (unknown, or not a valid id) answers `false`.
    pub fn at_versions(&self, names: &[&str], after: &[u64]) -> bool {
        names.len() == after.len()
            && names.iter().zip(after).all(|(name, &was)| {
                self.find_stream(name).is_some_and(|i| {
                    let st = &self.streams[i as usize];
                    u64::from(st.version) == was && u64::from(st.truncated_at) <= was
                })
            })
    }

    /// One stream's events with version < `before_version` (all when `None`), newest first.
    pub fn read_stream_backwards(
        &self,
        name: &str,
        before_version: Option<i64>,
        limit: Option<i64>,
    ) -> CoreResult<Rows> {
        let name = stream_id::validate(name)?;
        let before = before_version
            .map(|b| check_non_negative("before_version", b))
            .transpose()?;
        let limit = check_limit(limit)?;
        let Some(stream) = self.find_stream(name) else {
            return Ok(Rows::default());
        };
        let stream = &self.streams[stream as usize];
        let events = &stream.events;
        let end = match before {
            None => events.len(),
            Some(b) => stream.count_upto(&self.chunks, b.saturating_sub(1)),
        };
        let start = stream
            .count_upto(&self.chunks, u64::from(stream.hidden))
            .min(end);
        let n = (end - start).min(limit);
        Ok(self.rows_for(events[start..end].iter().rev().take(limit).copied(), n))
    }

    /// Events after `after_position` in position order, optionally only of the given event
    /// types and/or streams whose id starts with `stream_prefix`; at most `limit`.
    pub fn read_all(
        &self,
        after_position: i64,
        limit: Option<i64>,
        event_types: Option<&[&str]>,
        stream_prefix: Option<&str>,
    ) -> CoreResult<Rows> {
        let after = check_non_negative("after_position", after_position)?;
        let limit = check_limit(limit)?;
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(self.len);
        let type_filter: Option<Vec<bool>> = event_types.map(|names| {
            let mut wanted = vec![false; self.types.len()];
            for name in names {
                if let Some(t) = self.find_type(name) {
                    wanted[t as usize] = true;
                }
            }
            wanted
        });
        if type_filter.as_ref().is_some_and(|w| !w.contains(&true)) {
            return Ok(Rows::default());
        }
        let range = (start as u32)..(self.len as u32);
        if type_filter.is_none() && stream_prefix.is_none() && self.erased == 0 {
            let n = (self.len - start).min(limit);
            return Ok(self.rows_for(range.take(limit), n));
        }
        let picked = range.filter(|&i| {
            let ev = self.event(i);
            ev.event_type != ERASED
                && type_filter
                    .as_ref()
                    .is_none_or(|w| w[ev.event_type as usize])
                && stream_prefix
                    .is_none_or(|p| self.streams[ev.stream as usize].name.starts_with(p))
        });
        Ok(self.rows_for(picked.take(limit), 0))
    }

    /// The stored events with the given ids, in position order (each once; ids not stored
    /// are left out).
    pub fn read_by_ids(&self, ids: &[u128]) -> Rows {
        let mut picked: Vec<u32> = ids.iter().filter_map(|&id| self.find_id(id)).collect();
        picked.sort_unstable();
        picked.dedup();
        let n = picked.len();
        self.rows_for(picked.into_iter(), n)
    }

    /// `(stream, version)` sorted by stream id: ids starting with `prefix`, strictly after
    /// `after`, at most `limit`.
    pub fn list_streams(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> CoreResult<Vec<(Arc<str>, u64)>> {
        let limit = check_limit(limit)?;
        let prefix = prefix.unwrap_or("");
        let lower = match after {
            Some(a) if a >= prefix => RangeBound::Excluded(a),
            _ => RangeBound::Included(prefix),
        };
        let mut sorted = self.sorted_streams.lock();
        let synced = sorted.synced;
        for (i, stream) in self.streams.iter().enumerate().skip(synced) {
            sorted.map.insert(stream.name.clone(), i as u32);
        }
        sorted.synced = self.streams.len();
        Ok(sorted
            .map
            .range::<str, _>((lower, RangeBound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit)
            .map(|(name, &i)| (name.clone(), u64::from(self.streams[i as usize].version)))
            .collect())
    }

    /// Approximate heap bytes held by the store (allocator rounding included).
    pub fn memory_usage(&self) -> usize {
        use std::mem::size_of;
        let chunks = self.chunks.capacity() * size_of::<Vec<StoredEvent>>()
            + self
                .chunks
                .iter()
                .map(|c| heap_size(c.capacity() * size_of::<StoredEvent>()))
                .sum::<usize>();
        let streams = heap_size(self.streams.capacity() * size_of::<Stream>())
            + self.stream_events_cap * size_of::<u32>()
            + self.streams.len() * 16 // allocator overhead of the per-stream event lists
            + self.stream_index.allocation_size()
            // BTreeMap: ~(16 + 4) bytes per entry in nodes that are ~2/3 full, plus headers.
            + self.sorted_streams.lock().map.len() * 40;
        let types = heap_size(self.types.capacity() * size_of::<Arc<str>>())
            + self.type_index.allocation_size();
        size_of::<Self>()
            + chunks
            + streams
            + types
            + self.ids.allocation_size()
            + heap_size(self.ordered.capacity() * size_of::<u32>())
            + self.payload_heap
            + self.metadata_heap
            + self.names_heap
            + self.tags.memory_usage()
    }
}

fn dup_in_batch(id: u128) -> CoreError {
    CoreError::DuplicateEventId {
        id,
        reason: "appears more than once in this batch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(stream: &'a str, ty: &'a str, payload: &'a [u8], id: u128) -> NewEvent<'a> {
        NewEvent {
            stream,
            event_type: ty,
            payload,
            id,
        }
    }

    fn versions(o: &AppendOutcome) -> Vec<u64> {
        o.versions.iter().map(|v| v.1).collect()
    }

    #[test]
    fn layout_is_compact() {
        assert_eq!(std::mem::size_of::<StoredEvent>(), 72);
    }

    #[test]
    fn append_assigns_versions_and_positions() {
        let mut s = Store::new();
        let out = s
            .append(
                &[("a", NO_STREAM)],
                &[
                    ev("a", "T", b"1", 1),
                    ev("b", "U", b"2", 2),
                    ev("a", "T", b"3", 3),
                ],
                Some(b"meta"),
            )
            .unwrap();
        assert_eq!(out.first_position, 1);
        assert_eq!(out.versions[..], [(0, 2), (2, 1)]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.stream_version("a").unwrap(), 2);
        assert_eq!(s.stream_version(" b ").unwrap(), 1);
        assert_eq!(s.stream_version("zz").unwrap(), 0);
        let out = s.append(&[], &[ev("b", "U", b"4", 4)], None).unwrap();
        assert_eq!(out.first_position, 4);
        assert_eq!(out.versions[..], [(0, 2)]);
        let rows = s.read_all(0, None, None, None).unwrap();
        assert_eq!(rows.rows.len(), 4);
        assert_eq!(rows.payload(2), b"3");
        assert_eq!(rows.rows[2].version, 2);
        assert_eq!(rows.rows[0].metadata.as_deref(), Some(&b"meta"[..]));
        assert_eq!(rows.rows[3].metadata, None);
        assert!(Arc::ptr_eq(
            rows.rows[0].metadata.as_ref().unwrap(),
            rows.rows[1].metadata.as_ref().unwrap()
        ));
        assert_eq!(rows.rows[0].recorded_at, rows.rows[2].recorded_at);
    }

    #[test]
    fn events_on_expected_streams_and_known_types_take_their_slots() {
        let mut s = Store::new();
        // The events' streams given as the expected ones (also trimmed, and in another
        // order): each one slot, one version per stream.
        let out = s
            .append(
                &[("a", NO_STREAM), (" b ", NO_STREAM)],
                &[
                    ev("b", "T", b"1", 1),
                    ev("a", "T", b"2", 2),
                    ev(" b ", "U", b"3", 3),
                ],
                None,
            )
            .unwrap();
        assert_eq!(out.versions[..], [(0, 1), (1, 2)]);
        // A type already stored is written under its index; a new one is still checked
        // (nothing written when it breaks the rules), and then stored.
        let bad = s.append(
            &[("a", 1)],
            &[ev("a", "T", b"4", 4), ev("a", " V", b"5", 5)],
            None,
        );
        assert!(matches!(bad, Err(CoreError::InvalidEventType { .. })));
        assert_eq!(s.len(), 3);
        s.append(
            &[("a", 1)],
            &[ev("a", "U", b"4", 4), ev("a", "V", b"5", 5)],
            None,
        )
        .unwrap();
        let (rows, _) = s.fold_rows(&["a"]).unwrap();
        let types: Vec<&str> = rows
            .rows
            .iter()
            .map(|r| &*rows.types[r.event_type as usize])
            .collect();
        assert_eq!(types, ["T", "U", "V"]);
        assert_eq!(s.stream_version("b").unwrap(), 2);
    }

    #[test]
    fn conflicts_write_nothing_and_list_every_stream() {
        let mut s = Store::new();
        s.append(&[], &[ev("a", "T", b"", 1)], None).unwrap();
        let err = s
            .append(
                &[("a", 0), ("b", STREAM_EXISTS), ("c", ANY), ("d", 0)],
                &[ev("a", "T", b"", 2), ev("c", "T", b"", 3)],
                None,
            )
            .unwrap_err();
        assert_eq!(
            err,
            CoreError::Conflict(vec![
                Conflict {
                    stream: "a".into(),
                    expected: 0,
                    actual: 1
                },
                Conflict {
                    stream: "b".into(),
                    expected: -2,
                    actual: 0
                },
            ])
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.stream_version("c").unwrap(), 0);
        // expected-only streams are checked and reported, nothing written for them
        let out = s
            .append(&[("a", 1), ("x", 0)], &[ev("y", "T", b"", 4)], None)
            .unwrap();
        assert_eq!(out.versions[..], [(0, 1), (1, 0), (2, 1)]);
        assert_eq!(s.stream_version("x").unwrap(), 0);
    }

    #[test]
    fn empty_events_only_check() {
        let mut s = Store::new();
        s.append(&[], &[ev("a", "T", b"", 1)], None).unwrap();
        let out = s.append(&[("a", 1), ("b", 0)], &[], None).unwrap();
        assert_eq!(out.first_position, 2);
        assert_eq!(versions(&out), vec![1, 0]);
        assert!(matches!(
            s.append(&[("a", 0)], &[], None),
            Err(CoreError::Conflict(_))
        ));
    }

    #[test]
    fn bad_arguments() {
        let mut s = Store::new();
        assert!(matches!(
            s.append(&[("a", -3)], &[], None),
            Err(CoreError::Value(_))
        ));
        assert!(matches!(
            s.append(&[("a", 0), (" a", 1)], &[], None),
            Err(CoreError::Value(_))
        ));
        assert!(matches!(
            s.append(&[], &[ev("", "T", b"", 1)], None),
            Err(CoreError::InvalidStreamId { .. })
        ));
        assert!(matches!(
            s.append(&[], &[ev("a", "T", b"", 1), ev("b", "T", b"", 1)], None),
            Err(CoreError::DuplicateEventId { id: 1, .. })
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn bad_type_names_and_sizes_write_nothing() {
        let mut s = Store::new();
        for bad in ["", " T", "T\n", "T\u{0}"] {
            assert!(matches!(
                s.append(&[], &[ev("a", "T", b"", 1), ev("a", bad, b"", 2)], None),
                Err(CoreError::InvalidEventType { .. })
            ));
        }
        let big = vec![0u8; limits::MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            s.append(&[], &[ev("a", "T", b"", 1), ev("a", "T", &big, 2)], None),
            Err(CoreError::LimitExceeded {
                field: "payload",
                ..
            })
        ));
        let max = &big[1..];
        let five: Vec<NewEvent<'_>> = (0..5).map(|i| ev("a", "T", max, i + 1)).collect();
        assert!(matches!(
            s.append(&[], &five, None),
            Err(CoreError::LimitExceeded {
                field: "append",
                ..
            })
        ));
        let meta = vec![1u8; 1];
        assert!(matches!(
            s.append(&[], &five[..4], Some(&meta)),
            Err(CoreError::LimitExceeded {
                field: "append",
                ..
            })
        ));
        assert!(s.is_empty());
        assert_eq!(s.list_streams(None, None, None).unwrap(), vec![]);
        // Zero events with read checks only: checked, nothing written (no stream created).
        assert!(s.append(&[("a", 0), ("b", ANY)], &[], None).is_ok());
        assert_eq!(s.list_streams(None, None, None).unwrap(), vec![]);
        assert!(s.append(&[], &five[..4], None).is_ok());
    }

    #[test]
    fn idempotent_replay() {
        let mut s = Store::new();
        s.append(&[], &[ev("z", "T", b"0", 100)], None).unwrap();
        let batch = [
            ev("a", "T", b"1", 1),
            ev("b", "U", b"2", 2),
            ev("a", "T", b"3", 3),
        ];
        let first = s.append(&[("a", 0), ("r", 0)], &batch, Some(b"m")).unwrap();
        s.append(&[], &[ev("a", "T", b"4", 4)], None).unwrap();
        let again = s.append(&[("a", 0), ("r", 0)], &batch, Some(b"m")).unwrap();
        assert!(again.replayed);
        assert_eq!(again.first_position, first.first_position);
        assert_eq!(again.versions, first.versions);
        assert_eq!(s.len(), 5);
        // different content
        let changed = [
            ev("a", "T", b"1", 1),
            ev("b", "U", b"X", 2),
            ev("a", "T", b"3", 3),
        ];
        assert!(matches!(
            s.append(&[], &changed, Some(b"m")),
            Err(CoreError::DuplicateEventId { id: 2, reason }) if reason.contains("different")
        ));
        assert!(matches!(
            s.append(&[], &batch, None),
            Err(CoreError::DuplicateEventId { id: 1, .. })
        ));
        // partial
        let partial = [ev("a", "T", b"1", 1), ev("a", "T", b"9", 9)];
        assert!(matches!(
            s.append(&[], &partial, Some(b"m")),
            Err(CoreError::DuplicateEventId { id: 1, reason }) if reason.contains("part")
        ));
        // wrong order is not a replay
        let swapped = [ev("b", "U", b"2", 2), ev("a", "T", b"1", 1)];
        assert!(s.append(&[], &swapped, Some(b"m")).is_err());
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn ids_are_found_whatever_order_they_came_in() {
        // Ids greater than every earlier one go to the sorted list, the others to the
        // table: both must be found, refused again, and forgotten when purged.
        let mut s = Store::new();
        let order = [0u128, 50, 10, 60, 60 + (1 << 70), 30, 5, 1 << 100, 7];
        for (n, &id) in order.iter().enumerate() {
            let stream = if n % 2 == 0 { "a" } else { "b" };
            s.append(&[], &[ev(stream, "T", &[n as u8], id)], None)
                .unwrap();
        }
        for (n, &id) in order.iter().enumerate() {
            assert_eq!(s.find_id(id), Some(n as u32), "id {id}");
            assert!(matches!(
                s.append(&[], &[ev("c", "T", b"other", id)], None),
                Err(CoreError::DuplicateEventId { .. })
            ));
        }
        for absent in [1u128, 11, 55, 61, 1 << 101, u128::MAX] {
            assert_eq!(s.find_id(absent), None, "id {absent}");
        }
        // A pseudo-random walk against a set: found exactly when appended.
        let mut seen: HashSet<u128> = order.iter().copied().collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = u128::from(x % 5_000) << (x % 3 * 40);
            // (the same id with the same content again is a replay: nothing written)
            let written = s
                .append(&[], &[ev("r", "T", b"r", id)], None)
                .is_ok_and(|o| !o.replayed);
            assert_eq!(written, seen.insert(id), "id {id}");
            assert!(s.find_id(id).is_some());
        }
        // purging forgets both kinds: stream a holds ids 0, 10, 1 << 70 + 60, 5, 7
        s.truncate("a", None, ANY).unwrap();
        assert_eq!(s.purge("a").unwrap().events, 5);
        for id in [0u128, 10, 60 + (1 << 70), 5, 7] {
            assert_eq!(s.find_id(id), None, "id {id}");
        }
        assert_eq!(s.find_id(50), Some(1));
        s.append(&[], &[ev("a", "T", b"again", 10)], None).unwrap();
        assert_eq!(s.find_id(10), Some(s.len() as u32 - 1));
    }

    #[test]
    fn read_by_ids_in_position_order() {
        let mut s = Store::new();
        s.append(&[], &[ev("a", "T", b"1", 10), ev("b", "T", b"2", 11)], None)
            .unwrap();
        s.append(&[], &[ev("a", "U", b"3", 12)], None).unwrap();
        let rows = s.read_by_ids(&[12, 99, 10, 12]);
        let got: Vec<(u128, u64)> = rows.rows.iter().map(|r| (r.id, r.position)).collect();
        assert_eq!(got, vec![(10, 1), (12, 3)]);
        assert_eq!(rows.payload(1), b"3");
        assert!(s.read_by_ids(&[]).rows.is_empty());
    }

    #[test]
    fn at_versions_is_a_tail_with_nothing_to_fold() {
        let mut s = Store::new();
        let batch = [
            ev("a", "T", b"1", 1),
            ev("b", "T", b"2", 2),
            ev("a", "T", b"3", 3),
        ];
        s.append(&[], &batch, None).unwrap();
        assert!(s.at_versions(&["a", "b"], &[2, 1]));
        let (rows, now) = s.tail_rows(&["a", "b"], &[2, 1], 0).unwrap().unwrap();
        assert!(rows.rows.is_empty() && now == vec![2, 1]);
        assert!(!s.at_versions(&["a", "b"], &[1, 1])); // a tail to fold
        assert!(!s.at_versions(&["a"], &[2, 1])); // one version per name
        assert!(!s.at_versions(&["zz"], &[0])); // unknown: the full read answers
        assert_eq!(s.truncate("a", Some(2), 2).unwrap(), 3);
        assert!(s.tail_rows(&["a"], &[2], 0).unwrap().is_none());
        assert!(!s.at_versions(&["a"], &[2])); // truncated past the state
        assert!(s.at_versions(&["a"], &[3]));
    }

    #[test]
    fn truncate_hides_and_purge_erases() {
        let mut s = Store::new();
        for i in 0..6u128 {
            let stream = if i % 2 == 0 { "a" } else { "b" };
            s.append(&[], &[ev(stream, "T", &[i as u8], i + 1)], None)
                .unwrap();
        }
        // a: positions 1, 3, 5 (versions 1..3); hiding versions 1 and 2 takes version 4
        assert_eq!(s.truncate("a", Some(3), 3).unwrap(), 4);
        let (rows, versions) = s.fold_rows(&["a"]).unwrap();
        assert_eq!(versions, vec![4]);
        assert_eq!(
            rows.rows.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(s.stream_bounds("a").unwrap(), (3, 4, false));
        // a state folded before the truncation cannot be extended; one folded after can
        assert!(s.tail_rows(&["a"], &[3], 0).unwrap().is_none());
        assert!(s.tail_rows(&["a"], &[4], 0).unwrap().is_some());
        // an earlier truncation point changes nothing; bad ones are refused
        assert_eq!(s.truncate("a", Some(2), ANY).unwrap(), 4);
        assert_eq!(s.stream_bounds("a").unwrap(), (3, 4, false));
        assert!(matches!(
            s.truncate("a", Some(6), ANY),
            Err(CoreError::Value(_))
        ));
        assert!(matches!(
            s.truncate("a", None, 3),
            Err(CoreError::Conflict(_))
        ));
        // the global log still holds hidden events until they are purged
        assert_eq!(s.read_all(0, None, None, None).unwrap().rows.len(), 6);
        let p = s.purge("a").unwrap();
        assert_eq!((p.events, p.from_version, p.to_version), (2, 1, 2));
        assert_eq!((p.first_position, p.last_position), (1, 3));
        assert_eq!(s.purge("a").unwrap().events, 0);
        let all = s.read_all(0, None, None, None).unwrap();
        assert_eq!(
            all.rows.iter().map(|r| r.position).collect::<Vec<_>>(),
            vec![2, 4, 5, 6]
        );
        assert_eq!(
            s.read_all(0, Some(1), None, None).unwrap().rows[0].position,
            2
        );
        assert_eq!(s.count_events(0, 6), 4);
        assert!(s.read_by_ids(&[1, 3]).rows.is_empty());
        let cols = s.read_columns(0, Some(2), 0, 0).unwrap();
        assert_eq!(cols.positions.len(), 16);
        // an append continues after the truncation's version; a delete hides the rest
        s.append(&[("a", 4)], &[ev("a", "T", b"x", 99)], None)
            .unwrap();
        let back = s.read_stream_backwards("a", None, None).unwrap();
        assert_eq!(
            back.rows.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![5, 3]
        );
        assert_eq!(
            s.tail_rows(&["a"], &[4], 0).unwrap().unwrap().0.rows.len(),
            1
        );
        assert_eq!(s.truncate("a", None, 5).unwrap(), 6);
        assert!(s.fold_rows(&["a"]).unwrap().0.rows.is_empty());
        assert_eq!(s.stream_bounds("a").unwrap(), (6, 6, true));
        s.append(&[("a", 6)], &[ev("a", "T", b"y", 100)], None)
            .unwrap();
        let (rows, versions) = s.fold_rows(&["a"]).unwrap();
        assert_eq!((rows.rows.len(), versions), (1, vec![7]));
        let p = s.purge("a").unwrap();
        assert_eq!((p.events, p.from_version, p.to_version), (2, 3, 5));
    }

    #[test]
    fn reads() {
        let mut s = Store::new();
        for i in 0..10u128 {
            let stream = if i % 2 == 0 { "even-1" } else { "odd-1" };
            let ty = if i % 3 == 0 { "Three" } else { "Other" };
            s.append(&[], &[ev(stream, ty, &[i as u8], i + 1)], None)
                .unwrap();
        }
        let r = s.read_streams(&["odd-1", "even-1"], 0, None).unwrap();
        let pos: Vec<u64> = r.rows.iter().map(|r| r.position).collect();
        assert_eq!(pos, (1..=10).collect::<Vec<_>>());
        assert_eq!(r.rows[0].stream, 1);
        let r = s.read_streams(&["odd-1", "even-1"], 3, Some(3)).unwrap();
        let pos: Vec<u64> = r.rows.iter().map(|r| r.position).collect();
        assert_eq!(pos, vec![7, 8, 9]);
        assert!(matches!(
            s.read_streams(&["a", "a"], 0, None),
            Err(CoreError::Value(_))
        ));
        assert!(s.read_streams(&["a"], -1, None).is_err());
        assert!(s.read_streams(&["a"], 0, Some(-1)).is_err());

        let r = s.read_stream_backwards("even-1", None, Some(2)).unwrap();
        let v: Vec<u32> = r.rows.iter().map(|r| r.version).collect();
        assert_eq!(v, vec![5, 4]);
        let r = s.read_stream_backwards("even-1", Some(3), None).unwrap();
        let v: Vec<u32> = r.rows.iter().map(|r| r.version).collect();
        assert_eq!(v, vec![2, 1]);
        assert_eq!(&*r.streams[0], "even-1");
        assert!(s
            .read_stream_backwards("nope", None, None)
            .unwrap()
            .rows
            .is_empty());

        let r = s.read_all(4, Some(3), None, None).unwrap();
        let pos: Vec<u64> = r.rows.iter().map(|r| r.position).collect();
        assert_eq!(pos, vec![5, 6, 7]);
        let r = s.read_all(0, None, Some(&["Three"]), None).unwrap();
        let pos: Vec<u64> = r.rows.iter().map(|r| r.position).collect();
        assert_eq!(pos, vec![1, 4, 7, 10]);
        let r = s
            .read_all(0, Some(2), Some(&["Three"]), Some("even"))
            .unwrap();
        let pos: Vec<u64> = r.rows.iter().map(|r| r.position).collect();
        assert_eq!(pos, vec![1, 7]);
        assert!(s
            .read_all(0, None, Some(&["Nope"]), None)
            .unwrap()
            .rows
            .is_empty());

        let (rows, versions) = s.fold_rows(&["even-1", "new"]).unwrap();
        assert_eq!(rows.rows.len(), 5);
        assert_eq!(versions, vec![5, 0]);

        // Within the limit: the same rows and versions; above it: nothing.
        let (small, small_versions) = s.fold_rows_upto(&["even-1", "new"], 5).unwrap().unwrap();
        let positions = |r: &Rows| r.rows.iter().map(|r| r.position).collect::<Vec<_>>();
        assert_eq!(positions(&small), positions(&rows));
        assert_eq!(small_versions, versions);
        assert!(s.fold_rows_upto(&["even-1", "new"], 4).unwrap().is_none());
        // Only new streams: no rows, version 0 each; a bad or repeated id is still refused.
        let (none, zero) = s.fold_rows_upto(&["new", " other "], 0).unwrap().unwrap();
        assert!(none.rows.is_empty());
        assert_eq!(zero, vec![0, 0]);
        assert!(s.fold_rows_upto(&["new", "a\nb"], 0).is_err());
        assert!(s.fold_rows_upto(&["new", " new"], 0).is_err());
    }

    #[test]
    fn reads_of_several_streams_merge_in_position_order() {
        // Six streams written round-robin with uneven lengths; reads of 2..=6 of them
        // (a scan up to four lists, a heap beyond) give every event once, in position order.
        let mut s = Store::new();
        let names = ["s0", "s1", "s2", "s3", "s4", "s5"];
        let mut id = 0u128;
        for round in 0..5 {
            for (k, name) in names.iter().enumerate() {
                if (round + k) % 3 != 0 {
                    id += 1;
                    s.append(&[], &[ev(name, "T", b"x", id)], None).unwrap();
                }
            }
        }
        for n in 2..=names.len() {
            let picked = &names[..n];
            let (rows, _) = s.fold_rows(picked).unwrap();
            let got: Vec<u64> = rows.rows.iter().map(|r| r.position).collect();
            let mut want: Vec<u64> = s
                .read_all(0, None, None, None)
                .unwrap()
                .rows
                .iter()
                .filter(|r| picked.contains(&&*rows_stream(&s, r.position)))
                .map(|r| r.position)
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "{n} streams");
            for r in &rows.rows {
                assert_eq!(&*rows_stream(&s, r.position), picked[r.stream as usize]);
            }
            let limited = s.read_streams(picked, 0, Some(3)).unwrap();
            let first: Vec<u64> = limited.rows.iter().map(|r| r.position).collect();
            assert_eq!(first, want[..3], "{n} streams, limit 3");
        }
    }

    fn rows_stream(s: &Store, position: u64) -> Arc<str> {
        let r = s
            .read_all(position as i64 - 1, Some(1), None, None)
            .unwrap();
        r.streams[r.rows[0].stream as usize].clone()
    }

    #[test]
    fn new_streams_of_one_append_are_each_added_once() {
        let mut s = Store::new();
        let events = [
            ev("n1", "T", b"x", 1),
            ev(" n2 ", "T", b"x", 2),
            ev("n1", "T", b"x", 3),
            ev("n2", "T", b"x", 4),
            ev("n3", "T", b"x", 5),
        ];
        let out = s.append(&[("n1", 0), ("n2 ", 0)], &events, None).unwrap();
        assert_eq!(versions(&out), vec![2, 2, 1]);
        for (name, version) in [("n1", 2), ("n2", 2), ("n3", 1)] {
            assert_eq!(s.stream_version(name).unwrap(), version);
        }
        let again = s
            .append(&[("n3", 1)], &[ev("n3", "T", b"x", 6)], None)
            .unwrap();
        assert_eq!(versions(&again), vec![2]);
        let (rows, _) = s.fold_rows(&["n1", "n2", "n3"]).unwrap();
        assert_eq!(rows.rows.len(), 6);
    }

    #[test]
    fn repeated_streams_are_named_by_their_first_repeat() {
        let s = Store::new();
        let message = |names: &[&str], valid: bool| match s.fold_valid_upto(names, valid, 0) {
            Err(CoreError::Value(m)) => m,
            other => panic!("unexpected {other:?}"),
        };
        // Few names are compared pairwise, many go through a set: the same first repeat.
        let few = ["a", "b", " b", "a"];
        assert_eq!(
            message(&few, false),
            "stream \"b\" is listed more than once"
        );
        let many: Vec<String> = (0..20).map(|i| format!("s{}", i % 12)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            message(&many, false),
            "stream \"s0\" is listed more than once"
        );
        // Names known valid are not checked again, but repeats are still refused.
        assert_eq!(
            message(&["a", "b", "a"], true),
            "stream \"a\" is listed more than once"
        );
        assert!(s.fold_valid_upto(&["a", "b"], true, 0).unwrap().is_some());
    }

    #[test]
    fn expected_streams_known_valid_append_as_checked_ones() {
        let mut checked = Store::new();
        let mut known = Store::new();
        let events = [ev("acc-1", "Opened", b"x", 1)];
        let a = checked.append(&[("acc-1", 0)], &events, None).unwrap();
        let b = known
            .append_valid(&[("acc-1", 0)], true, &events, None)
            .unwrap();
        assert_eq!(
            (a.first_position, a.versions),
            (b.first_position, b.versions)
        );
        // Versions are still checked, and an event's own stream still validated.
        assert!(matches!(
            known.append_valid(
                &[("acc-1", 0)],
                true,
                &[ev("acc-1", "Opened", b"x", 2)],
                None
            ),
            Err(CoreError::Conflict(_))
        ));
        assert!(matches!(
            known.append_valid(
                &[("acc-1", 1)],
                true,
                &[ev("a\nb", "Opened", b"x", 3)],
                None
            ),
            Err(CoreError::InvalidStreamId { .. })
        ));
    }

    #[test]
    fn list_streams_sorted_with_prefix_and_cursor() {
        let mut s = Store::new();
        for (i, name) in ["b-2", "a-1", "b-1", "c-1", "b-3"].iter().enumerate() {
            s.append(&[], &[ev(name, "T", b"", i as u128 + 1)], None)
                .unwrap();
        }
        let names = |v: Vec<(Arc<str>, u64)>| v.iter().map(|x| x.0.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(s.list_streams(None, None, None).unwrap()),
            ["a-1", "b-1", "b-2", "b-3", "c-1"]
        );
        assert_eq!(
            names(s.list_streams(Some("b-"), None, Some(2)).unwrap()),
            ["b-1", "b-2"]
        );
        assert_eq!(
            names(s.list_streams(Some("b-"), Some("b-2"), None).unwrap()),
            ["b-3"]
        );
        assert_eq!(
            names(s.list_streams(Some("b-"), Some("a"), None).unwrap()),
            ["b-1", "b-2", "b-3"]
        );
    }

    #[test]
    fn memory_per_event_is_small() {
        let mut s = Store::new();
        let payload = [7u8; 100];
        for i in 0..20_000u128 {
            let name = format!("s-{}", i % 100);
            s.append(&[], &[ev(&name, "T", &payload, i + 1)], None)
                .unwrap();
        }
        let per_event = s.memory_usage() / s.len();
        assert!(per_event < 300, "{per_event} bytes per event");
    }

    #[test]
    fn many_streams_in_one_batch() {
        let mut s = Store::new();
        let names: Vec<String> = (0..50).map(|i| format!("s-{i}")).collect();
        let evs: Vec<NewEvent<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ev(n, "T", b"", i as u128 + 1))
            .collect();
        let exp: Vec<(&str, i64)> = names.iter().take(20).map(|n| (n.as_str(), 0)).collect();
        let out = s.append(&exp, &evs, None).unwrap();
        assert_eq!(out.versions.len(), 50);
        assert!(out.versions.iter().all(|v| v.1 == 1));
        assert_eq!(out.versions[20].0, 20 + 20);
        let again = s.append(&exp, &evs, None).unwrap();
        assert_eq!(
            again,
            AppendOutcome {
                replayed: true,
                ..out
            }
        );
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// `cargo test --release -- --ignored --nocapture bench_single_appends`
    #[test]
    #[ignore]
    fn bench_single_appends() {
        let names: Vec<String> = (0..1000).map(|i| format!("s-{i}")).collect();
        let payload = [7u8; 100];
        let mut s = Store::new();
        let n: u128 = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let t0 = std::time::Instant::now();
        for i in 0..n {
            let name = &names[(i % 1000) as usize];
            s.append(
                &[],
                &[NewEvent {
                    stream: name,
                    event_type: "Deposited",
                    payload: &payload,
                    id: crate::uuid7::encode(1, i * 7919),
                }],
                None,
            )
            .unwrap();
        }
        let dt = t0.elapsed();
        println!(
            "{:.0} ns per single-event append, {} bytes/event",
            dt.as_nanos() as f64 / n as f64,
            s.memory_usage() / s.len()
        );
    }
}
