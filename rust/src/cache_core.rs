//! `StateCacheCore`: the hot fields of `eventcore.state_cache.StateCache` (its entry map,
//! counters and bounds), kept in Rust so that the command machine finds an entry, counts
//! the hit or miss and puts the entry back without a Python call.
//! `StateCache` subclasses it and keeps the rest (eviction, hooks, `take`/`put`).
//!
//! The map is a hash table over slots linked in their order of last use. A keyer's key
//! `(cls, streams[, values])` is held as its parts (see [`KeyParts`]): a cached command
//! finds its entry with its stream ids' cached hashes, the class by identity and the
//! streams by text, with no key tuple built, hashed and compared twice per command. The
//! map's lock is held only while no Python runs: a key part only Python's `==` compares
//! (field values, another kind of key) is compared after the lock, and slots taken out
//! are dropped after it.
//!
//! The command machine does not take its entry out and put it back: it marks the entry's
//! slot in use ([`StateCacheCore::find`]), and after its append settles it in place as the
//! most recently used ([`InUse::put_back`]), or drops it when the command fails. A slot in
//! use is not there for anyone else: another command on its key misses (and its put
//! replaces the slot), and the length, `in`, the entries listed and eviction skip it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use hashbrown::HashTable;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use smallvec::SmallVec;

use crate::pipeline::PyObj;

/// The entry map, counters and bounds of a state cache (base of `StateCache`).
///
/// Counters are atomic, so they are exact under threads too. An entry a command is using
/// is not in the map for anyone else until it is put back.
#[pyclass(module = "eventcore._core", name = "StateCacheCore", subclass, frozen)]
pub struct StateCacheCore {
    map: Mutex<Map>,
    pub(crate) hits: AtomicI64,
    pub(crate) misses: AtomicI64,
    evictions: AtomicI64,
    pub(crate) max_entries: AtomicI64,
    pub(crate) min_events: AtomicI64,
    pub(crate) verify: AtomicBool,
}

#[pymethods]
impl StateCacheCore {
    /// An empty cache with every bound 0; the subclass's `__init__` sets them.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        StateCacheCore {
            map: Mutex::new(Map::new()),
            hits: AtomicI64::new(0),
            misses: AtomicI64::new(0),
            evictions: AtomicI64::new(0),
            max_entries: AtomicI64::new(0),
            min_events: AtomicI64::new(0),
            verify: AtomicBool::new(false),
        }
    }

    /// The entries by key, least recently used first (a new dict).
    #[getter]
    fn _entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // The keys' objects are built after the lock: an allocation may run the GC.
        let pairs: Vec<(CacheKey, PyObj)> = {
            let map = self.map.lock();
            let mut out = Vec::with_capacity(map.len());
            let mut i = map.head;
            while i != NIL {
                let slot = map.slot(i);
                if slot.busy == 0 {
                    out.push((slot.key.clone_ref(py), slot.entry.clone_ref(py)));
                }
                i = map.links[i as usize].next;
            }
            out
        };
        let dict = PyDict::new(py);
        for (k, e) in pairs {
            dict.set_item(k.object(py)?, e)?;
        }
        Ok(dict)
    }

    /// Remove and return the entry of `key` (`None` when there is none).
    fn _pop(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<PyObj>> {
        self.pop(py, &CacheKey::of_object(key)?, false)
    }

    /// Store `entry` under `key` as the most recently used; the number of entries.
    fn _put(&self, py: Python<'_>, key: &Bound<'_, PyAny>, entry: PyObj) -> PyResult<usize> {
        self.put(py, CacheKey::of_object(key)?, entry)
    }

    /// Remove and return the least recently used `(key, entry)`, or `None`.
    fn _pop_oldest<'py>(&self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyAny>, PyObj)>> {
        let slot = {
            let mut map = self.map.lock();
            let mut i = map.head;
            while i != NIL && map.slot(i).busy != 0 {
                i = map.links[i as usize].next;
            }
            (i != NIL).then(|| map.remove(i))
        };
        slot.map(|s| Ok((s.key.object(py)?, s.entry))).transpose()
    }

    /// Drop every entry.
    fn _clear(&self) {
        let old = std::mem::replace(&mut *self.map.lock(), Map::new());
        drop(old);
    }

    fn __len__(&self) -> usize {
        self.map.lock().len()
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = CacheKey::of_object(key)?;
        let asks = {
            let map = self.map.lock();
            let mut asks: SmallVec<[PyObj; 1]> = SmallVec::new();
            for &i in map.table.iter_hash(key.hash) {
                let slot = map.slot(i);
                if slot.busy != 0 {
                    continue;
                }
                match key.same(py, &slot.key)? {
                    Same::Yes => return Ok(true),
                    Same::Ask => asks.push(slot.key.asked(py).expect("asked").unbind()),
                    Same::No => {}
                }
            }
            asks
        };
        if let Some(mine) = key.asked(py) {
            for theirs in asks {
                if mine.eq(theirs.bind(py))? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Commands that found their state here (counted when taken).
    #[getter]
    fn hits(&self) -> i64 {
        self.hits.load(Relaxed)
    }

    #[setter]
    fn set_hits(&self, n: i64) {
        self.hits.store(n, Relaxed);
    }

    /// Commands that looked for their state and folded in full.
    #[getter]
    fn misses(&self) -> i64 {
        self.misses.load(Relaxed)
    }

    #[setter]
    fn set_misses(&self, n: i64) {
        self.misses.store(n, Relaxed);
    }

    /// Entries dropped to keep the bound.
    #[getter]
    fn evictions(&self) -> i64 {
        self.evictions.load(Relaxed)
    }

    #[setter]
    fn set_evictions(&self, n: i64) {
        self.evictions.store(n, Relaxed);
    }

    /// The bound on entries (0: the cache is off).
    #[getter]
    fn max_entries(&self) -> i64 {
        self.max_entries.load(Relaxed)
    }

    #[setter]
    fn set_max_entries(&self, n: i64) {
        self.max_entries.store(n, Relaxed);
    }

    /// A state folded in full from fewer events than this is not kept.
    #[getter]
    fn min_events(&self) -> i64 {
        self.min_events.load(Relaxed)
    }

    #[setter]
    fn set_min_events(&self, n: i64) {
        self.min_events.store(n, Relaxed);
    }

    /// Whether every hit is checked against a full fold.
    #[getter]
    fn verify(&self) -> bool {
        self.verify.load(Relaxed)
    }

    #[setter]
    fn set_verify(&self, on: bool) {
        self.verify.store(on, Relaxed);
    }
}

impl StateCacheCore {
    /// Whether the map holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.lock().len() == 0
    }

    /// Remove and return the entry of `key`: one of two callers racing for it gets it. A
    /// slot in use is removed only when `busy_too` (a put replacing it), else not there.
    pub(crate) fn pop(
        &self,
        py: Python<'_>,
        key: &CacheKey,
        busy_too: bool,
    ) -> PyResult<Option<PyObj>> {
        // The slot leaves the map under its lock and is dropped after it.
        let slot = self.locate(py, key, busy_too, |map, i| Some(map.remove(i)))?;
        Ok(slot.map(|s| s.entry))
    }

    /// The slot of `key` (a slot in use counts only when `busy_too`), given to `act` under
    /// the map's lock; `act`'s answer, or `None` when no slot holds the key. A key part
    /// that Python compares is compared after the lock is released, and the slot is then
    /// checked again: Python may have changed the map meanwhile.
    fn locate<R>(
        &self,
        py: Python<'_>,
        key: &CacheKey,
        busy_too: bool,
        act: impl Fn(&mut Map, u32) -> Option<R>,
    ) -> PyResult<Option<R>> {
        // (slot, its entry, its key's part that Python compares)
        let mut asks: SmallVec<[(u32, PyObj, PyObj); 1]> = SmallVec::new();
        {
            let mut map = self.map.lock();
            let mut found = None;
            for &i in map.table.iter_hash(key.hash) {
                let slot = map.slot(i);
                if slot.busy != 0 && !busy_too {
                    continue;
                }
                match key.same(py, &slot.key)? {
                    Same::Yes => {
                        found = Some(i);
                        break;
                    }
                    Same::Ask => asks.push((
                        i,
                        slot.entry.clone_ref(py),
                        slot.key.asked(py).expect("asked").unbind(),
                    )),
                    Same::No => {}
                }
            }
            if let Some(i) = found {
                return Ok(act(&mut map, i));
            }
        }
        let Some(mine) = key.asked(py) else {
            return Ok(None);
        };
        for (i, entry, theirs) in asks {
            if !mine.eq(theirs.bind(py))? {
                continue;
            }
            let mut map = self.map.lock();
            let same = map
                .slots
                .get(i as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| {
                    (s.busy == 0 || busy_too)
                        && s.entry.is(&entry)
                        && s.key.asked(py).is_some_and(|a| a.is(theirs.bind(py)))
                });
            if same {
                return Ok(act(&mut map, i));
            }
        }
        Ok(None)
    }

    /// Store `entry` under `key` as the most recently used (replacing an entry of an equal
    /// key); the number of entries after.
    pub(crate) fn put(&self, py: Python<'_>, key: CacheKey, entry: PyObj) -> PyResult<usize> {
        let old = self.pop(py, &key, true)?;
        let len = {
            let mut map = self.map.lock();
            map.push(key, entry);
            map.len()
        };
        drop(old);
        Ok(len)
    }

    /// Find the entry of `key` and mark its slot in use (see the module's doc): the slot
    /// and a new reference to its entry, or `None` when there is none or it is in use.
    /// Of two callers racing for an entry, one gets it.
    pub(crate) fn find(&self, py: Python<'_>, key: &CacheKey) -> PyResult<Option<(InUse, PyObj)>> {
        self.locate(py, key, false, |map, i| map.mark(py, i))
    }

    /// [`StateCacheCore::find`] for the key `(cls, streams)`, without building it.
    pub(crate) fn find_streams(
        &self,
        py: Python<'_>,
        cls: &Bound<'_, PyAny>,
        streams: &[Py<PyString>],
    ) -> PyResult<Option<(InUse, PyObj)>> {
        let hash = streams_hash(py, cls, streams)?;
        let mut map = self.map.lock();
        for &i in map.table.iter_hash(hash) {
            let key = &map.slot(i).key;
            if key.hash != hash {
                continue;
            }
            if let KeyParts::Streams {
                cls: c,
                streams: s,
                values: None,
            } = &key.parts
            {
                if c.is(cls) && same_streams(py, s, streams)? {
                    return Ok(map.mark(py, i));
                }
            }
        }
        Ok(None)
    }

    /// The slot `at` is no longer in use: `entry` becomes its entry, the most recently
    /// used; the number of entries after and the entry it held (to drop after the lock).
    /// `Err(entry)` when the slot is no longer the one marked (a put replaced it).
    fn settle(&self, at: &InUse, entry: PyObj) -> Result<(usize, PyObj), PyObj> {
        let mut map = self.map.lock();
        if !map.owns(at) {
            return Err(entry);
        }
        let slot = map.slot_mut(at.slot);
        let old = std::mem::replace(&mut slot.entry, entry);
        slot.busy = 0;
        map.busy -= 1;
        map.unlink(at.slot);
        map.link_last(at.slot);
        Ok((map.len(), old))
    }

    /// Drop the slot `at` if it is still the one marked (the command that used it failed).
    fn release(&self, at: &InUse) {
        let slot = {
            let mut map = self.map.lock();
            map.owns(at).then(|| map.remove(at.slot))
        };
        drop(slot);
    }
}

/// A slot marked in use by [`StateCacheCore::find`] (`id` tells it from a later use of the
/// same slot).
pub(crate) struct InUse {
    slot: u32,
    id: u64,
}

/// A command machine's slot in use, with its cache: put back in place after a successful
/// append ([`Held::put_back`]); dropped otherwise, which drops the slot (a failure after a
/// hit leaves no entry).
pub(crate) struct Held {
    cache: Py<StateCacheCore>,
    at: Option<InUse>,
}

impl Held {
    pub(crate) fn new(cache: Py<StateCacheCore>, at: InUse) -> Held {
        Held {
            cache,
            at: Some(at),
        }
    }

    /// Settle `entry` in the slot as the most recently used or, when a put replaced the
    /// slot meanwhile, put it under `key` (as [`StateCacheCore::put`]); the number of
    /// entries after.
    pub(crate) fn put_back(
        mut self,
        py: Python<'_>,
        key: impl FnOnce() -> PyResult<CacheKey>,
        entry: PyObj,
    ) -> PyResult<usize> {
        let at = self.at.take().expect("in use");
        let cache = self.cache.get();
        match cache.settle(&at, entry) {
            Ok((len, old)) => {
                drop(old);
                Ok(len)
            }
            Err(entry) => cache.put(py, key()?, entry),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(at) = self.at.take() {
            self.cache.get().release(&at);
        }
    }
}

/// No slot (the end of the recency list).
const NIL: u32 = u32::MAX;

/// A cache key as the map holds it: the shape the keyers make, `(cls, streams)` or
/// `(cls, streams, values)`, is held as its parts, so the command machine looks an entry
/// up without building a tuple (the class compared by identity, the streams by their
/// text); any other key (a query command's) is held as the object.
pub(crate) enum KeyParts {
    Streams {
        cls: PyObj,
        streams: SmallVec<[Py<PyString>; 2]>,
        values: Option<PyObj>,
    },
    Other(PyObj),
}

/// A key with its hash (computed once, outside the map's lock).
pub(crate) struct CacheKey {
    parts: KeyParts,
    hash: u64,
}

/// What the map's lock can tell about two keys without running Python.
enum Same {
    Yes,
    No,
    /// Equal but for a part only Python's `==` can compare (after the lock).
    Ask,
}

fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// The hash of the key `(cls, streams)`.
fn streams_hash(py: Python<'_>, cls: &Bound<'_, PyAny>, streams: &[Py<PyString>]) -> PyResult<u64> {
    let mut hash = mix(0, cls.as_ptr() as u64);
    for s in streams {
        hash = mix(hash, s.bind(py).hash()? as u64);
    }
    Ok(hash)
}

/// Whether two keys' streams are the same texts, in order.
fn same_streams(py: Python<'_>, a: &[Py<PyString>], b: &[Py<PyString>]) -> PyResult<bool> {
    if a.len() != b.len() {
        return Ok(false);
    }
    for (a, b) in a.iter().zip(b) {
        if !a.is(b) && a.bind(py).to_str()? != b.bind(py).to_str()? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `s` compares by its text (a `str` or a `StreamId`, not another subclass).
fn plain_text(s: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(s.is_exact_instance_of::<PyString>()
        || s.get_type().is(crate::stream_id::stream_id_class(s.py())?))
}

impl CacheKey {
    /// The key `(cls, streams)` of a class whose state depends on its streams alone.
    pub(crate) fn of_streams(
        py: Python<'_>,
        cls: &Bound<'_, PyAny>,
        streams: &[Py<PyString>],
    ) -> PyResult<CacheKey> {
        let hash = streams_hash(py, cls, streams)?;
        Ok(CacheKey {
            parts: KeyParts::Streams {
                cls: cls.clone().unbind(),
                streams: streams.iter().map(|s| s.clone_ref(py)).collect(),
                values: None,
            },
            hash,
        })
    }

    /// The key of a Python key object (see [`KeyParts`]); its hash may run Python.
    pub(crate) fn of_object(key: &Bound<'_, PyAny>) -> PyResult<CacheKey> {
        let py = key.py();
        if let Ok(t) = key.cast::<PyTuple>() {
            if t.is_exact_instance_of::<PyTuple>() && (t.len() == 2 || t.len() == 3) {
                let cls = t.get_item(0)?;
                let streams = t.get_item(1)?;
                if let (true, Ok(st)) = (cls.is_instance_of::<PyType>(), streams.cast::<PyTuple>())
                {
                    let mut parts: SmallVec<[Py<PyString>; 2]> = SmallVec::new();
                    for s in st.iter() {
                        if !plain_text(&s)? {
                            parts.clear();
                            break;
                        }
                        parts.push(s.cast_into::<PyString>()?.unbind());
                    }
                    if parts.len() == st.len() && st.is_exact_instance_of::<PyTuple>() {
                        let mut k = CacheKey::of_streams(py, &cls, &parts)?;
                        if t.len() == 3 {
                            let values = t.get_item(2)?;
                            k.hash = mix(k.hash, values.hash()? as u64);
                            if let KeyParts::Streams { values: v, .. } = &mut k.parts {
                                *v = Some(values.unbind());
                            }
                        }
                        return Ok(k);
                    }
                }
            }
        }
        Ok(CacheKey {
            hash: key.hash()? as u64,
            parts: KeyParts::Other(key.clone().unbind()),
        })
    }

    /// The same key (its objects shared).
    fn clone_ref(&self, py: Python<'_>) -> CacheKey {
        let parts = match &self.parts {
            KeyParts::Other(k) => KeyParts::Other(k.clone_ref(py)),
            KeyParts::Streams {
                cls,
                streams,
                values,
            } => KeyParts::Streams {
                cls: cls.clone_ref(py),
                streams: streams.iter().map(|s| s.clone_ref(py)).collect(),
                values: values.as_ref().map(|v| v.clone_ref(py)),
            },
        };
        CacheKey {
            parts,
            hash: self.hash,
        }
    }

    /// The key as the Python object the keyers make.
    pub(crate) fn object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.parts {
            KeyParts::Other(k) => Ok(k.bind(py).clone()),
            KeyParts::Streams {
                cls,
                streams,
                values,
            } => {
                let st = PyTuple::new(py, streams.iter().map(|s| s.bind(py)))?.into_any();
                match values {
                    None => Ok(PyTuple::new(py, [cls.bind(py).clone(), st])?.into_any()),
                    Some(v) => Ok(PyTuple::new(
                        py,
                        [cls.bind(py).clone(), st, v.bind(py).clone()],
                    )?
                    .into_any()),
                }
            }
        }
    }

    /// The part only Python compares (values, or the whole key).
    fn asked<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        match &self.parts {
            KeyParts::Streams { values, .. } => values.as_ref().map(|v| v.bind(py).clone()),
            KeyParts::Other(k) => Some(k.bind(py).clone()),
        }
    }

    fn same(&self, py: Python<'_>, other: &CacheKey) -> PyResult<Same> {
        if self.hash != other.hash {
            return Ok(Same::No);
        }
        match (&self.parts, &other.parts) {
            (
                KeyParts::Streams {
                    cls: c1,
                    streams: s1,
                    values: v1,
                },
                KeyParts::Streams {
                    cls: c2,
                    streams: s2,
                    values: v2,
                },
            ) => {
                if !c1.is(c2) || !same_streams(py, s1, s2)? {
                    return Ok(Same::No);
                }
                Ok(match (v1, v2) {
                    (None, None) => Same::Yes,
                    (Some(a), Some(b)) if a.is(b) => Same::Yes,
                    (Some(_), Some(_)) => Same::Ask,
                    _ => Same::No,
                })
            }
            (KeyParts::Other(a), KeyParts::Other(b)) => {
                Ok(if a.is(b) { Same::Yes } else { Same::Ask })
            }
            _ => Ok(Same::No),
        }
    }
}

struct Slot {
    key: CacheKey,
    entry: PyObj,
    /// The id of its use (see [`InUse`]); 0: not in use.
    busy: u64,
}

/// A slot's neighbours in the order of last use.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

/// The entries by key, with their order of last use (a list through the slots).
///
/// The list's links are an array of their own beside the slots: moving an entry to the
/// end writes its neighbours' links, and in a compact array those stay in the CPU's
/// cache, where the neighbours' slots (not otherwise touched) would each be a miss.
#[derive(Default)]
struct Map {
    table: HashTable<u32>,
    slots: Vec<Option<Slot>>,
    /// `links[i]`: slot `i`'s neighbours (meaningless for a free slot).
    links: Vec<Link>,
    free: Vec<u32>,
    /// The least and the most recently used.
    head: u32,
    tail: u32,
    /// Slots in use (in the table, not counted as entries).
    busy: usize,
    /// The last id given to a use.
    last_use: u64,
}

impl Map {
    fn new() -> Self {
        Map {
            head: NIL,
            tail: NIL,
            ..Map::default()
        }
    }

    fn slot(&self, i: u32) -> &Slot {
        self.slots[i as usize].as_ref().expect("live slot")
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        self.slots[i as usize].as_mut().expect("live slot")
    }

    /// Take slot `i` out (the caller drops it after the lock).
    fn remove(&mut self, i: u32) -> Slot {
        self.unlink(i);
        let slot = self.slots[i as usize].take().expect("live slot");
        if let Ok(found) = self.table.find_entry(slot.key.hash, |&j| j == i) {
            found.remove();
        }
        if slot.busy != 0 {
            self.busy -= 1;
        }
        self.free.push(i);
        slot
    }

    /// Take slot `i` out of the order of use.
    fn unlink(&mut self, i: u32) {
        let Link { prev, next } = self.links[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n as usize].prev = prev,
        }
    }

    /// Put slot `i` last in the order of use (the most recently used).
    fn link_last(&mut self, i: u32) {
        let tail = self.tail;
        self.links[i as usize] = Link {
            prev: tail,
            next: NIL,
        };
        match tail {
            NIL => self.head = i,
            t => self.links[t as usize].next = i,
        }
        self.tail = i;
    }

    /// Whether slot `i` is the one `at` marked in use.
    fn owns(&self, at: &InUse) -> bool {
        self.slots
            .get(at.slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.busy == at.id)
    }

    /// Mark slot `i` in use, unless it is: the use and a new reference to its entry.
    fn mark(&mut self, py: Python<'_>, i: u32) -> Option<(InUse, PyObj)> {
        if self.slot(i).busy != 0 {
            return None;
        }
        self.last_use += 1;
        let id = self.last_use;
        self.busy += 1;
        let slot = self.slot_mut(i);
        slot.busy = id;
        Some((InUse { slot: i, id }, slot.entry.clone_ref(py)))
    }

    /// Add `key` as the most recently used.
    fn push(&mut self, key: CacheKey, entry: PyObj) {
        let hash = key.hash;
        let slot = Slot {
            key,
            entry,
            busy: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.links.push(Link {
                    prev: NIL,
                    next: NIL,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.link_last(i);
        let slots = &self.slots;
        self.table.insert_unique(hash, i, |&j| {
            slots[j as usize].as_ref().expect("live slot").key.hash
        });
    }

    /// The entries (slots in use are not counted).
    fn len(&self) -> usize {
        self.table.len() - self.busy
    }
}
