//! `MemoryStore`: the Python class around the pure-Rust [`Store`].
//!
//! One `parking_lot::RwLock` guards the store: an append checks every stream and writes under
//! one write lock. Arguments are parsed (borrowing str/bytes data from the caller's tuples)
//! before the lock is taken; rows are copied out under the lock and turned into Python
//! objects after it is released, so Python code never runs while the lock is held. Small
//! operations try the lock with the GIL held (no GIL round trip); contended or large ones
//! release the GIL (`py.detach`) while they wait and work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex, RwLock};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use crate::errors::CoreResult;
use crate::fold::Folder;
use crate::py_text::{py_text, Text};
use crate::store::dcb::QueryItem;
use crate::store::{NewEvent, Rows, Store};
use crate::stream_id;
use crate::uuid7;

/// Work above this many events releases the GIL instead of trying the lock with it held.
const SMALL: usize = 256;

/// An in-memory, thread-safe event store.
#[pyclass(frozen, module = "eventcore._core")]
pub struct MemoryStore {
    inner: RwLock<Store>,
    head: AtomicU64,
    waiters: Mutex<()>,
    appended: Condvar,
    /// The Python str of each event type the command machine has folded, made once (its
    /// hash cached), so a fold does not build one per type per read.
    type_names: Mutex<HashMap<Arc<str>, Py<PyString>>>,
}

/// One event to append: its parts as given (checked by the append), its id as given (an
/// int, a UUID or None for a fresh one) or already an int in Rust (the command machine's).
pub(crate) struct EventArg<'py> {
    pub stream: Bound<'py, PyAny>,
    pub event_type: Bound<'py, PyAny>,
    pub payload: Bound<'py, PyAny>,
    pub id: EventIdArg<'py>,
}

/// An [`EventArg`]'s id.
pub(crate) enum EventIdArg<'py> {
    Given(Bound<'py, PyAny>),
    Native(u128),
}

/// What an append returns to Rust callers: the first position, `(stream, version after)`
/// per stream (see [`versions_list`] for the Python list) and the generated ids (`None`
/// when every event came with one).
pub(crate) type Appended<'py> = (
    u64,
    SmallVec<[(Bound<'py, PyAny>, u64); 4]>,
    Bound<'py, PyAny>,
);

/// An append's versions as the store protocol returns them: `[(stream, version)]`.
pub(crate) fn versions_list<'py>(
    py: Python<'py>,
    versions: &[(Bound<'py, PyAny>, u64)],
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(
        py,
        versions
            .iter()
            .map(|(s, v)| (s, *v).into_pyobject(py))
            .collect::<PyResult<SmallVec<[_; 4]>>>()?,
    )
}

/// The items of one tuple (or other sequence) of a [`tuples`] argument.
type Items<'py> = SmallVec<[Bound<'py, PyAny>; 4]>;

/// Items of a sequence as the items of its tuples (other sequences are iterated); a str is
/// refused (its letters are not `what`). Owned items, as the stable ABI (abi3) has no
/// borrowed view of a tuple's slots.
fn tuples<'py>(seq: &Bound<'py, PyAny>, what: &str) -> PyResult<SmallVec<[Items<'py>; 4]>> {
    let as_tuple = |item: &Bound<'py, PyAny>| -> PyResult<Items<'py>> {
        match item.cast::<PyTuple>() {
            Ok(t) => Ok(t.iter().collect()),
            Err(_) => item.try_iter()?.collect(),
        }
    };
    if let Ok(list) = seq.cast::<PyList>() {
        let mut out = SmallVec::with_capacity(list.len());
        for item in list.iter() {
            out.push(as_tuple(&item)?);
        }
        Ok(out)
    } else if let Ok(tuple) = seq.cast::<PyTuple>() {
        tuple.iter().map(|item| as_tuple(&item)).collect()
    } else if seq.is_instance_of::<PyString>() {
        Err(PyTypeError::new_err(format!(
            "{what} must be a sequence, not a str"
        )))
    } else {
        seq.try_iter()?.map(|item| as_tuple(&item?)).collect()
    }
}

/// Items of a sequence of str (a str itself is rejected).
fn strings<'py>(seq: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyString>>> {
    if seq.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a sequence of str, not a str"
        )));
    }
    let one = |item: Bound<'py, PyAny>| -> PyResult<Bound<'py, PyString>> {
        item.cast_into::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{what} must contain only str")))
    };
    if let Ok(list) = seq.cast::<PyList>() {
        list.iter().map(one).collect()
    } else {
        seq.try_iter()?.map(|item| one(item?)).collect()
    }
}

/// The `(types, tags)` items of a query argument, as Python strings.
type QueryArgs<'py> = Vec<(Vec<Bound<'py, PyString>>, Vec<Bound<'py, PyString>>)>;

fn query_args<'py>(items: &Bound<'py, PyAny>) -> PyResult<QueryArgs<'py>> {
    let mut out = Vec::new();
    for item in tuples(items, "query")? {
        let [types, tags] = item.as_slice() else {
            return Err(PyTypeError::new_err(
                "a query must contain (event_types, tags) pairs",
            ));
        };
        out.push((strings(types, "event_types")?, strings(tags, "tags")?));
    }
    Ok(out)
}

fn query_items<'a>(args: &'a QueryArgs<'_>) -> PyResult<Vec<QueryItem<'a>>> {
    let strs = |v: &'a [Bound<'_, PyString>]| -> PyResult<Vec<&'a str>> {
        v.iter().map(|s| s.to_str()).collect()
    };
    args.iter()
        .map(|(types, tags)| {
            Ok(QueryItem {
                types: strs(types)?,
                tags: strs(tags)?,
            })
        })
        .collect()
}

/// The text of a str argument (see [`py_text`]).
fn as_str<'a>(obj: &'a Bound<'_, PyAny>, what: Text) -> PyResult<&'a str> {
    py_text(obj, what).map(|(_, text)| text)
}

/// An event id: a Python int or an object with an `.int` attribute (`uuid.UUID`).
fn event_id(obj: &Bound<'_, PyAny>) -> PyResult<u128> {
    if obj.is_instance_of::<PyInt>() {
        obj.extract::<u128>()
    } else {
        obj.getattr(intern!(obj.py(), "int"))?.extract::<u128>()
    }
}

/// Whether every one of `items` is an `eventcore.StreamId` (exactly): validated and
/// trimmed when it was built, so the store does not check it again.
fn all_stream_ids<'a, 'py: 'a>(
    py: Python<'py>,
    items: impl IntoIterator<Item = &'a Bound<'py, PyAny>>,
) -> PyResult<bool> {
    let kind = stream_id::stream_id_class(py)?;
    Ok(items.into_iter().all(|s| s.get_type().is(kind)))
}

/// The Python str for a stream given by the caller: the same object unless it was trimmed.
fn caller_stream<'py>(s: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if s.get_type().is(stream_id::stream_id_class(s.py())?) {
        return Ok(s.clone()); // trimmed when it was built
    }
    let text = as_str(s, Text::StreamId)?;
    let trimmed = stream_id::trim(text);
    if trimmed.len() == text.len() {
        Ok(s.clone())
    } else {
        Ok(PyString::new(s.py(), trimmed).into_any())
    }
}

/// Build the Python rows; `slot_streams` supplies stream objects for reads of given streams.
fn rows_to_py<'py>(
    py: Python<'py>,
    rows: &Rows,
    slot_streams: Option<&[Bound<'py, PyAny>]>,
) -> PyResult<Bound<'py, PyList>> {
    let types: Vec<Bound<'py, PyString>> =
        rows.types.iter().map(|t| PyString::new(py, t)).collect();
    let names: Vec<Bound<'py, PyAny>>;
    let streams = match slot_streams {
        Some(s) => s,
        None => {
            names = rows
                .streams
                .iter()
                .map(|s| PyString::new(py, s).into_any())
                .collect();
            &names
        }
    };
    let none = py.None().into_bound(py);
    let mut meta: Option<(*const u8, Bound<'py, PyAny>)> = None;
    let mut out = Vec::with_capacity(rows.rows.len());
    for (i, row) in rows.rows.iter().enumerate() {
        let metadata = match &row.metadata {
            None => none.clone(),
            Some(m) => match &meta {
                Some((ptr, obj)) if std::ptr::eq(*ptr, m.as_ptr()) => obj.clone(),
                _ => {
                    let obj = PyBytes::new(py, m).into_any();
                    meta = Some((m.as_ptr(), obj.clone()));
                    obj
                }
            },
        };
        let tuple = (
            row.position,
            row.id,
            &streams[row.stream as usize],
            row.version,
            &types[row.event_type as usize],
            PyBytes::new(py, rows.payload(i)),
            row.recorded_at,
            metadata,
        )
            .into_pyobject(py)?;
        out.push(tuple);
    }
    PyList::new(py, out)
}

impl MemoryStore {
    /// Run `f` under the read lock: with the GIL held when the lock is free and `small`
    /// says the work is small, else with the GIL released.
    fn read<R: Send>(
        &self,
        py: Python<'_>,
        small: impl Fn(&Store) -> bool,
        f: impl Fn(&Store) -> R + Send + Sync,
    ) -> R {
        {
            if let Some(guard) = self.inner.try_read() {
                if small(&guard) {
                    return f(&guard);
                }
            }
        }
        py.detach(|| f(&self.inner.read()))
    }

    /// Publish `head` (read under the write lock, after the events were written) and wake
    /// the waiters. Writers publish after releasing the lock and may get here out of order,
    /// so the head only ever moves forward: a reader never sees it go back, and never sees
    /// a position whose events it cannot read yet.
    fn notify(&self, head: u64) {
        publish_head(&self.head, head);
        drop(self.waiters.lock());
        self.appended.notify_all();
    }
}

impl MemoryStore {
    /// Fold every event of `items` (in global position order) into `state`; the state
    /// and each stream's version (`fold_streams`, and the command machine's native FOLD).
    pub(crate) fn fold_items<'py>(
        &self,
        py: Python<'py>,
        items: &[Bound<'py, PyString>],
        state: Bound<'py, PyAny>,
        apply: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
        decoders: Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Vec<u64>)> {
        let names: SmallVec<[&str; 4]> =
            items.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
        let valid = all_stream_ids(py, items.iter().map(|s| s.as_any()))?;
        let (rows, versions) = self.fold_read(py, &names, valid)?;
        if rows.rows.is_empty() {
            return Ok((state, versions)); // `apply` not even looked up
        }
        let types = self.type_objs(py, &rows.types);
        let state = fold_rows_into(items, &rows, &types, state, apply()?, decoders)?;
        Ok((state, versions))
    }

    /// `Store::fold_rows` of `names`: with the GIL held when the lock is free and the
    /// streams hold at most `SMALL` events, else with the GIL released (as `read` does,
    /// resolving each stream once for the check and the rows). `valid`: every name is an
    /// `eventcore.StreamId`'s (see `Store::fold_valid_upto`).
    fn fold_read(
        &self,
        py: Python<'_>,
        names: &[&str],
        valid: bool,
    ) -> CoreResult<(Rows, Vec<u64>)> {
        if let Some(guard) = self.inner.try_read() {
            if let Some(out) = guard.fold_valid_upto(names, valid, SMALL as u64)? {
                return Ok(out);
            }
        }
        py.detach(|| {
            let out = self.inner.read().fold_valid_upto(names, valid, u64::MAX)?;
            Ok(out.expect("no limit"))
        })
    }

    /// The Python str of each of `types` (see `type_names`); made outside the lock.
    fn type_objs<'py>(
        &self,
        py: Python<'py>,
        types: &[Arc<str>],
    ) -> SmallVec<[Bound<'py, PyAny>; 4]> {
        // A fold reads a few types: both lists stay on the stack.
        let known: SmallVec<[Option<Bound<'py, PyAny>>; 4]> = {
            let names = self.type_names.lock();
            types
                .iter()
                .map(|t| names.get(t).map(|s| s.bind(py).clone().into_any()))
                .collect()
        };
        known
            .into_iter()
            .zip(types)
            .map(|(found, t)| {
                found.unwrap_or_else(|| {
                    let s = PyString::intern(py, t);
                    self.type_names.lock().insert(t.clone(), s.clone().unbind());
                    s.into_any()
                })
            })
            .collect()
    }

    /// The rows of `items[fold_from..]` after `versions` and every stream's version now
    /// (see `Store::tail_rows`), read without releasing the GIL when the tail is small.
    fn tail_rows(
        &self,
        py: Python<'_>,
        items: &[Bound<'_, PyString>],
        versions: &[u64],
        fold_from: usize,
    ) -> PyResult<Option<(Rows, Vec<u64>)>> {
        let names: Vec<&str> = items.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
        let small = |s: &Store| {
            let mut total = 0u64;
            for (name, was) in names.iter().zip(versions) {
                total += s.stream_version(name).unwrap_or(0).saturating_sub(*was);
                if total > SMALL as u64 {
                    return false;
                }
            }
            true
        };
        Ok(self.read(py, small, |s| s.tail_rows(&names, versions, fold_from))?)
    }

    /// Whether a state folded from `streams` up to `versions` is at every stream's version
    /// now (the common case: kept with its own events), so its tail has nothing to fold:
    /// a version check under the lock, no rows. `false` when the lock is taken (then the
    /// tail read answers).
    pub(crate) fn at_versions(
        &self,
        py: Python<'_>,
        streams: &[Py<PyString>],
        versions: &[i64],
    ) -> PyResult<bool> {
        let names: SmallVec<[&str; 4]> = streams
            .iter()
            .map(|s| s.bind(py).to_str())
            .collect::<PyResult<_>>()?;
        let after: SmallVec<[u64; 4]> = versions.iter().map(|&v| v.max(0) as u64).collect();
        Ok(self
            .inner
            .try_read()
            .is_some_and(|store| store.at_versions(&names, &after)))
    }

    /// The tail of a state folded up to `versions`, folded into it (see `read_tail`), on
    /// stream objects: the command machine's native TAIL (`pipeline_drive.rs`) when
    /// [`MemoryStore::at_versions`] says there is one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tail_items<'py>(
        &self,
        py: Python<'py>,
        items: &[Bound<'py, PyString>],
        versions: Vec<u64>,
        fold_from: usize,
        state: Bound<'py, PyAny>,
        apply: Bound<'py, PyAny>,
        decoders: Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Vec<u64>)>> {
        let Some((rows, now)) = self.tail_rows(py, items, &versions, fold_from)? else {
            return Ok(None);
        };
        if rows.rows.is_empty() {
            return Ok(Some((state, now)));
        }
        let types = self.type_objs(py, &rows.types);
        let state = fold_rows_into(items, &rows, &types, state, apply, decoders)?;
        Ok(Some((state, now)))
    }

    /// `append` with the expected versions as `(stream, version)` pairs already taken
    /// apart (the command machine hands over its own, without a list to re-parse).
    /// Returns `(first_position, [(stream, version_after)], ids or None)` ([`Appended`]).
    pub(crate) fn append_checked<'py>(
        &self,
        py: Python<'py>,
        expected: &[(Bound<'py, PyAny>, i64)],
        event_items: &[EventArg<'py>],
        metadata: Option<&Bound<'py, PyBytes>>,
    ) -> PyResult<Appended<'py>> {
        self.append_with(py, expected, event_items, metadata, None)
    }

    /// For the command machine's query boundary (`pipeline_query.rs`): the rows after
    /// `after` matching the query `items` (`(types, tags)` pairs), the rows of `streams`,
    /// both read under one lock, and the position the query read is consistent with.
    pub(crate) fn query_rows(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        after: i64,
        streams: &[&str],
    ) -> PyResult<(Rows, Rows, u64)> {
        let args = query_args(items)?;
        let query = query_items(&args)?;
        let out = py.detach(|| -> CoreResult<(Rows, Rows, u64)> {
            let store = self.inner.read();
            let (found, position) = store.read_query(&query, after, None)?;
            let rows = if streams.is_empty() {
                Rows::default()
            } else {
                store.read_streams(streams, 0, None)?
            };
            Ok((found, rows, position))
        })?;
        Ok(out)
    }

    /// [`MemoryStore::append_checked`] with each event's tags (a sequence of str) and the
    /// condition that no event matching the query `items` lies after `after` (the command
    /// machine's conditional append, see `pipeline_query.rs`).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(crate) fn append_query<'py>(
        &self,
        py: Python<'py>,
        expected: &[(Bound<'py, PyAny>, i64)],
        event_items: &[EventArg<'py>],
        metadata: Option<&Bound<'py, PyBytes>>,
        tags: &[Bound<'py, PyAny>],
        items: &Bound<'py, PyAny>,
        after: i64,
    ) -> PyResult<Appended<'py>> {
        let tag_items: Vec<Vec<Bound<'py, PyString>>> = tags
            .iter()
            .map(|t| strings(t, "tags"))
            .collect::<PyResult<_>>()?;
        let tag_strs: Vec<Vec<&str>> = tag_items
            .iter()
            .map(|t| t.iter().map(|s| s.to_str()).collect::<PyResult<_>>())
            .collect::<PyResult<_>>()?;
        let tag_refs: Vec<&[&str]> = tag_strs.iter().map(Vec::as_slice).collect();
        let args = query_args(items)?;
        let query = query_items(&args)?;
        self.append_with(
            py,
            expected,
            event_items,
            metadata,
            Some((&tag_refs, Some((&query, after)))),
        )
    }

    /// [`MemoryStore::append_checked`], with tags per event and an append condition
    /// when `dcb` is given (see `dcb.rs`).
    #[allow(clippy::type_complexity)]
    fn append_with<'py>(
        &self,
        py: Python<'py>,
        expected: &[(Bound<'py, PyAny>, i64)],
        event_items: &[EventArg<'py>],
        metadata: Option<&Bound<'py, PyBytes>>,
        dcb: Option<(&[&[&str]], Option<(&[QueryItem<'_>], i64)>)>,
    ) -> PyResult<Appended<'py>> {
        let mut exp: SmallVec<[(&str, i64); 4]> = SmallVec::with_capacity(expected.len());
        for (stream, version) in expected {
            exp.push((as_str(stream, Text::StreamId)?, *version));
        }
        let mut evs: SmallVec<[NewEvent<'_>; 4]> = SmallVec::with_capacity(event_items.len());
        let mut missing_ids = 0usize;
        for t in event_items {
            evs.push(NewEvent {
                stream: as_str(&t.stream, Text::StreamId)?,
                event_type: as_str(&t.event_type, Text::EventType)?,
                payload: t
                    .payload
                    .cast::<PyBytes>()
                    .map_err(|_| PyTypeError::new_err("payload must be bytes"))?
                    .as_bytes(),
                id: match &t.id {
                    EventIdArg::Native(id) => *id,
                    EventIdArg::Given(id) if id.is_none() => {
                        missing_ids += 1;
                        0
                    }
                    EventIdArg::Given(id) => event_id(id)?,
                },
            });
        }
        // Events given without an id get a fresh UUIDv7 (one generator call for the batch).
        let generated = missing_ids > 0;
        if generated {
            let mut fresh = uuid7::next_n(missing_ids).into_iter();
            for (ev, t) in evs.iter_mut().zip(event_items) {
                if matches!(&t.id, EventIdArg::Given(id) if id.is_none()) {
                    ev.id = fresh.next().unwrap_or_default();
                }
            }
        }
        let meta = metadata.map(|m| m.as_bytes());
        let valid = all_stream_ids(py, expected.iter().map(|(s, _)| s))?;
        let run = |store: &mut Store| -> CoreResult<(crate::store::AppendOutcome, u64)> {
            let out = match dcb {
                None => store.append_valid(&exp, valid, &evs, meta)?,
                Some((tags, condition)) => {
                    store.append_tagged(&exp, &evs, meta, tags, condition)?
                }
            };
            Ok((out, store.head()))
        };
        let result = if evs.len() <= SMALL {
            match self.inner.try_write() {
                Some(mut guard) => run(&mut guard),
                None => py.detach(|| run(&mut self.inner.write())),
            }
        } else {
            py.detach(|| run(&mut self.inner.write()))
        };
        let (out, head) = result?;
        if !out.replayed && !evs.is_empty() {
            self.notify(head);
        }
        let mut versions: SmallVec<[(Bound<'py, PyAny>, u64); 4]> =
            SmallVec::with_capacity(out.versions.len());
        for &(source, version) in &out.versions {
            let stream = if source < expected.len() {
                &expected[source].0
            } else {
                &event_items[source - expected.len()].stream
            };
            versions.push((caller_stream(stream)?, version));
        }
        let ids = if generated {
            let ids: Vec<u128> = evs.iter().map(|e| e.id).collect();
            ids.into_pyobject(py)?.into_any()
        } else {
            py.None().into_bound(py)
        };
        Ok((out.first_position, versions, ids))
    }
}

#[pymethods]
impl MemoryStore {
    /// An empty store.
    #[new]
    fn new() -> Self {
        MemoryStore {
            inner: RwLock::new(Store::new()),
            head: AtomicU64::new(0),
            waiters: Mutex::new(()),
            appended: Condvar::new(),
            type_names: Mutex::new(HashMap::new()),
        }
    }

    /// Append events atomically after checking expected versions.
    /// Returns `(first_position, [(stream, version_after), ...], ids)`: `ids` lists every
    /// event id (as ints) when some were generated here for events given with `None`.
    /// Returns `(first_position, [(stream, version_after), ...])`.
    ///
    /// An event tuple may carry a fifth item, its tags (a sequence of str). `condition`,
    /// `(query items, after)` with items as `(types, tags)` pairs, fails the append with
    /// `ConditionFailed` when an event after position `after` matches the query.
    #[pyo3(signature = (expected, events, metadata, condition = None))]
    pub(crate) fn append<'py>(
        &self,
        py: Python<'py>,
        expected: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        metadata: Option<&Bound<'py, PyBytes>>,
        condition: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let expected_items = tuples(expected, "expected")?;
        let mut exp: SmallVec<[(Bound<'py, PyAny>, i64); 4]> =
            SmallVec::with_capacity(expected_items.len());
        for t in &expected_items {
            let [stream, version] = t.as_slice() else {
                return Err(PyTypeError::new_err(
                    "expected must contain (stream_id, expected_version) pairs",
                ));
            };
            exp.push((stream.clone(), version.extract::<i64>()?));
        }
        let mut evs: SmallVec<[EventArg<'py>; 4]> = SmallVec::new();
        let mut tag_items: Vec<Vec<Bound<'py, PyString>>> = Vec::new();
        for (i, t) in tuples(events, "events")?.into_iter().enumerate() {
            let mut t = t.into_vec();
            let tags = if t.len() == 5 { t.pop() } else { None };
            let Ok([stream, event_type, payload, id]) = <[_; 4]>::try_from(t) else {
                return Err(PyTypeError::new_err(
                    "events must contain (stream_id, event_type, payload, event_id[, tags]) tuples",
                ));
            };
            if let Some(tags) = tags {
                let tags = strings(&tags, "tags")?;
                if !tags.is_empty() {
                    tag_items.resize_with(i, Vec::new);
                    tag_items.push(tags);
                }
            }
            evs.push(EventArg {
                stream,
                event_type,
                payload,
                id: EventIdArg::Given(id),
            });
        }
        if tag_items.is_empty() && condition.is_none() {
            let (first, versions, ids) = self.append_checked(py, &exp, &evs, metadata)?;
            return (first, versions_list(py, &versions)?, ids).into_pyobject(py);
        }
        tag_items.resize_with(evs.len(), Vec::new);
        let tag_strs: Vec<Vec<&str>> = tag_items
            .iter()
            .map(|t| t.iter().map(|s| s.to_str()).collect::<PyResult<_>>())
            .collect::<PyResult<_>>()?;
        let tag_refs: Vec<&[&str]> = tag_strs.iter().map(Vec::as_slice).collect();
        let parsed = condition
            .map(|c| -> PyResult<_> {
                let (items, after): (Bound<'py, PyAny>, i64) = c.extract()?;
                Ok((query_args(&items)?, after))
            })
            .transpose()?;
        let query = parsed.as_ref().map(|(q, _)| query_items(q)).transpose()?;
        let cond = match (&query, &parsed) {
            (Some(q), Some((_, after))) => Some((q.as_slice(), *after)),
            _ => None,
        };
        let (first, versions, ids) =
            self.append_with(py, &exp, &evs, metadata, Some((&tag_refs, cond)))?;
        (first, versions_list(py, &versions)?, ids).into_pyobject(py)
    }

    /// The events after `after` matching the query `items` (`(types, tags)` pairs), in
    /// position order, at most `limit`; returns `(rows, position)`: the position the read
    /// is consistent with.
    #[pyo3(signature = (items, after = 0, limit = None))]
    fn read_query<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        after: i64,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let args = query_args(items)?;
        let query = query_items(&args)?;
        let (rows, position) = py.detach(|| self.inner.read().read_query(&query, after, limit))?;
        (rows_to_py(py, &rows, None)?, position).into_pyobject(py)
    }

    /// The tags of the events at `positions`, one tuple of str each (sorted).
    fn tags_at<'py>(&self, py: Python<'py>, positions: Vec<u64>) -> PyResult<Bound<'py, PyList>> {
        let tags = self.read(py, |_| positions.len() <= SMALL, |s| s.tags_at(&positions));
        let out: Vec<Bound<'py, PyTuple>> = tags
            .iter()
            .map(|t| PyTuple::new(py, t.iter().map(|s| PyString::new(py, s))))
            .collect::<PyResult<_>>()?;
        PyList::new(py, out)
    }

    /// Whether any stored event carries a tag.
    fn has_tags(&self, py: Python<'_>) -> bool {
        self.read(py, |_| true, Store::has_tags)
    }

    /// Fold every event of `streams` (in global position order) into `state`.
    ///
    /// Returns `(final_state, [version of each stream])`.
    fn fold_streams<'py>(
        &self,
        py: Python<'py>,
        streams: &Bound<'py, PyAny>,
        state: Bound<'py, PyAny>,
        apply: Bound<'py, PyAny>,
        decoders: Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Vec<u64>)> {
        let items = strings(streams, "streams")?;
        self.fold_items(py, &items, state, || Ok(apply), decoders)
    }

    /// Every event of `streams` (in global position order) as fold rows
    /// `(stream_id, event_type, payload, version, position)`, and each stream's version:
    /// what the store protocol's `read_fold` returns (the command machine folds them).
    fn read_fold<'py>(
        &self,
        py: Python<'py>,
        streams: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<u64>)> {
        let items = strings(streams, "streams")?;
        let names: Vec<&str> = items.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
        let valid = all_stream_ids(py, items.iter().map(|s| s.as_any()))?;
        let (rows, versions) = self.fold_read(py, &names, valid)?;
        let types = self.type_objs(py, &rows.types);
        Ok((fold_rows_to_py(py, &items, &rows, &types)?, versions))
    }

    /// The events of `streams[fold_from..]` after `versions` as fold rows (see
    /// `read_fold`) and every stream's version now, or `None` when that tail cannot extend
    /// a state folded up to `versions` (see `Store::tail_rows`). `hint` (a conflict of the
    /// attempt before) is accepted for the protocol and not needed here.
    #[pyo3(signature = (streams, versions, fold_from, hint = None))]
    fn read_tail<'py>(
        &self,
        py: Python<'py>,
        streams: &Bound<'py, PyAny>,
        versions: Vec<u64>,
        fold_from: usize,
        hint: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<(Bound<'py, PyList>, Vec<u64>)>> {
        drop(hint); // this store reads its tail under the lock anyway
        let items = strings(streams, "streams")?;
        let Some((rows, now)) = self.tail_rows(py, &items, &versions, fold_from)? else {
            return Ok(None);
        };
        let types = self.type_objs(py, &rows.types);
        Ok(Some((fold_rows_to_py(py, &items, &rows, &types)?, now)))
    }

    /// Events of `streams` with version > `after_version`, in global position order.
    #[pyo3(signature = (streams, after_version = 0, limit = None))]
    fn read_streams<'py>(
        &self,
        py: Python<'py>,
        streams: &Bound<'py, PyAny>,
        after_version: i64,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let items = strings(streams, "streams")?;
        let names: Vec<&str> = items.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
        let small_limit = limit.is_some_and(|l| (0..=SMALL as i64).contains(&l));
        let rows = self.read(
            py,
            |s| small_limit || small_streams(s, &names),
            |s| s.read_streams(&names, after_version, limit),
        )?;
        let stream_objs: Vec<Bound<'py, PyAny>> = items
            .iter()
            .map(|s| caller_stream(s.as_any()))
            .collect::<PyResult<_>>()?;
        rows_to_py(py, &rows, Some(&stream_objs))
    }

    /// One stream's events with version < `before_version` (all when None), newest first.
    #[pyo3(signature = (stream, before_version = None, limit = None))]
    fn read_stream_backwards<'py>(
        &self,
        py: Python<'py>,
        stream: &str,
        before_version: Option<i64>,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let small_limit = limit.is_some_and(|l| (0..=SMALL as i64).contains(&l));
        let rows = self.read(
            py,
            |s| small_limit || small_streams(s, &[stream]),
            |s| s.read_stream_backwards(stream, before_version, limit),
        )?;
        rows_to_py(py, &rows, None)
    }

    /// Events after `after_position` in position order, optionally filtered by event type
    /// and/or stream-id prefix (filters apply before the limit).
    #[pyo3(signature = (after_position = 0, limit = None, event_types = None, stream_prefix = None))]
    fn read_all<'py>(
        &self,
        py: Python<'py>,
        after_position: i64,
        limit: Option<i64>,
        event_types: Option<&Bound<'py, PyAny>>,
        stream_prefix: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        let type_items = event_types.map(|t| strings(t, "event_types")).transpose()?;
        let type_names: Option<Vec<&str>> = type_items
            .as_ref()
            .map(|items| items.iter().map(|s| s.to_str()).collect::<PyResult<_>>())
            .transpose()?;
        let filtered = type_names.is_some() || stream_prefix.is_some();
        let small_limit = !filtered && limit.is_some_and(|l| (0..=SMALL as i64).contains(&l));
        let rows = self.read(
            py,
            |s| {
                small_limit
                    || (s.len() as u64).saturating_sub(after_position.max(0) as u64) <= SMALL as u64
            },
            |s| s.read_all(after_position, limit, type_names.as_deref(), stream_prefix),
        )?;
        rows_to_py(py, &rows, None)
    }

    /// Envelope columns of the events after `after_position` (at most `limit`) as
    /// little-endian buffers, plus the type and stream names from the known counts on.
    #[pyo3(signature = (after_position = 0, limit = None, known_types = 0, known_streams = 0))]
    fn read_columns<'py>(
        &self,
        py: Python<'py>,
        after_position: i64,
        limit: Option<i64>,
        known_types: usize,
        known_streams: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let cols = py.detach(|| {
            self.inner
                .read()
                .read_columns(after_position, limit, known_types, known_streams)
        })?;
        crate::py_columns::columns_to_py(py, cols)
    }

    /// The stored events with the given ids (ints or UUIDs), in position order; ids not
    /// stored are left out.
    pub(crate) fn read_by_ids<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids: Vec<u128> = ids
            .try_iter()?
            .map(|i| event_id(&i?))
            .collect::<PyResult<_>>()?;
        let rows = self.read(py, |_| ids.len() <= SMALL, |s| s.read_by_ids(&ids));
        rows_to_py(py, &rows, None)
    }

    /// Current version of a stream (0 = no stream).
    fn stream_version(&self, py: Python<'_>, stream: &str) -> PyResult<u64> {
        Ok(self.read(py, |_| true, |s| s.stream_version(stream))?)
    }

    /// Hide the events of `stream` with a version below `before_version` (`None`: all it
    /// has now) from stream reads and folds, after checking `expected`; its version.
    #[pyo3(signature = (stream, before_version, expected))]
    fn truncate_stream(
        &self,
        py: Python<'_>,
        stream: &str,
        before_version: Option<i64>,
        expected: i64,
    ) -> PyResult<u64> {
        Ok(py.detach(|| {
            self.inner
                .write()
                .truncate(stream, before_version, expected)
        })?)
    }

    /// Erase the hidden events of `stream`: `(events, from_version, to_version,
    /// first_position, last_position)`, all 0 when nothing was erased.
    fn purge_stream(&self, py: Python<'_>, stream: &str) -> PyResult<(u64, u64, u64, u64, u64)> {
        let p = py.detach(|| self.inner.write().purge(stream))?;
        Ok((
            p.events,
            p.from_version,
            p.to_version,
            p.first_position,
            p.last_position,
        ))
    }

    /// `(first visible version, version, deleted)` of a stream (`(1, 0, False)`: none).
    fn stream_bounds(&self, py: Python<'_>, stream: &str) -> PyResult<(u64, u64, bool)> {
        Ok(self.read(py, |_| true, |s| s.stream_bounds(stream))?)
    }

    /// How many stored (not erased) events lie at positions in `(after, upto]`.
    fn count_events(&self, py: Python<'_>, after: u64, upto: u64) -> u64 {
        self.read(py, |s| !s.has_holes(), |s| s.count_events(after, upto))
    }

    /// Whether erased events left holes in the positions.
    fn has_holes(&self, py: Python<'_>) -> bool {
        self.read(py, |_| true, Store::has_holes)
    }

    /// Last global position (0 when empty).
    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// `(stream, version)` pairs sorted by stream id.
    #[pyo3(signature = (prefix = None, after = None, limit = None))]
    fn list_streams<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let small_limit = limit.is_some_and(|l| (0..=SMALL as i64).contains(&l));
        let streams: Vec<(Arc<str>, u64)> = self.read(
            py,
            |_| small_limit,
            |s| s.list_streams(prefix, after, limit),
        )?;
        PyList::new(py, streams.iter().map(|(name, v)| (&**name, *v)))
    }

    /// Number of stored events.
    fn __len__(&self) -> usize {
        self.head.load(Ordering::Acquire) as usize
    }

    /// Approximate bytes held by the store's data structures.
    fn memory_usage(&self, py: Python<'_>) -> usize {
        std::mem::size_of::<Self>() + self.read(py, |_| true, |s| s.memory_usage())
    }

    /// Block (GIL released) until head > `after_position` or `timeout` seconds pass;
    /// return the head.
    fn wait_for_append(&self, py: Python<'_>, after_position: i64, timeout: f64) -> PyResult<u64> {
        let after = u64::try_from(after_position).map_err(|_| {
            PyValueError::new_err(format!(
                "after_position must not be negative (got {after_position})"
            ))
        })?;
        if timeout.is_nan() {
            return Err(PyValueError::new_err("timeout must be a number"));
        }
        let start = Instant::now();
        let deadline = Duration::try_from_secs_f64(timeout.max(0.0))
            .ok()
            .and_then(|d| start.checked_add(d));
        // Wake up now and then to let Python handle signals (Ctrl-C).
        const SLICE: Duration = Duration::from_millis(50);
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head > after {
                return Ok(head);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(head);
            }
            let until = deadline.map_or(now + SLICE, |d| d.min(now + SLICE));
            py.detach(|| {
                let mut guard = self.waiters.lock();
                while self.head.load(Ordering::Acquire) <= after {
                    if self.appended.wait_until(&mut guard, until).timed_out() {
                        break;
                    }
                }
            });
            py.check_signals()?;
        }
    }
}

/// Raise `published` to `head` unless it is already further (never lowers it).
#[inline]
fn publish_head(published: &AtomicU64, head: u64) {
    published.fetch_max(head, Ordering::AcqRel);
}

/// Whether reading the given streams touches few events.
/// Fold `rows` (read for the streams `items`, in that order) into `state`.
fn fold_rows_into<'py>(
    items: &[Bound<'py, PyString>],
    rows: &Rows,
    type_objs: &[Bound<'py, PyAny>],
    state: Bound<'py, PyAny>,
    apply: Bound<'py, PyAny>,
    decoders: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = state.py();
    // A fold reads a few streams and types: both lists stay on the stack.
    let stream_objs: SmallVec<[Bound<'py, PyAny>; 4]> = items
        .iter()
        .map(|s| caller_stream(s.as_any()))
        .collect::<PyResult<_>>()?;
    // One decoder lookup per type of this read (the registry may have changed since the last).
    let mut decoders_cache: SmallVec<[Option<Bound<'py, PyAny>>; 4]> =
        smallvec::smallvec![None; type_objs.len()];
    let folder = Folder::new(apply, decoders);
    let mut state = state;
    for (i, row) in rows.rows.iter().enumerate() {
        let t = row.event_type as usize;
        let decoder = match &decoders_cache[t] {
            Some(d) => d.clone(),
            None => {
                let d = folder.lookup(&type_objs[t])?;
                decoders_cache[t] = Some(d.clone());
                d
            }
        };
        let payload = PyBytes::new(py, rows.payload(i));
        state = folder.step_at(
            state,
            &decoder,
            &type_objs[t],
            &stream_objs[row.stream as usize],
            payload.as_any(),
            Some((u64::from(row.version), row.position)),
        )?;
    }
    Ok(state)
}

/// `rows` (a read of the streams `items`) as fold rows
/// `(stream_id, event_type, payload, version, position)`; `types` holds the str of each of
/// `rows.types` (see `MemoryStore::type_objs`).
fn fold_rows_to_py<'py>(
    py: Python<'py>,
    items: &[Bound<'py, PyString>],
    rows: &Rows,
    types: &[Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyList>> {
    let stream_objs: Vec<Bound<'py, PyAny>> = items
        .iter()
        .map(|s| caller_stream(s.as_any()))
        .collect::<PyResult<_>>()?;
    let mut out = Vec::with_capacity(rows.rows.len());
    for (i, row) in rows.rows.iter().enumerate() {
        out.push(
            (
                &stream_objs[row.stream as usize],
                &types[row.event_type as usize],
                PyBytes::new(py, rows.payload(i)),
                row.version,
                row.position,
            )
                .into_pyobject(py)?,
        );
    }
    PyList::new(py, out)
}

fn small_streams(store: &Store, names: &[&str]) -> bool {
    let mut total = 0u64;
    for name in names {
        total += store.stream_version(name).unwrap_or(0);
        if total > SMALL as u64 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_publish_of_an_older_head_is_ignored() {
        let head = AtomicU64::new(0);
        publish_head(&head, 6);
        publish_head(&head, 5); // the writer of position 5 publishes last
        assert_eq!(head.load(Ordering::Acquire), 6);
    }

    #[test]
    fn concurrent_out_of_order_publishes_never_go_back() {
        let head = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let head = head.clone();
                std::thread::spawn(move || {
                    // Each writer publishes an increasing sequence interleaved with the others.
                    for i in 0..100_000u64 {
                        publish_head(&head, i * 3 + w);
                    }
                })
            })
            .collect();
        let mut last = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            let now = head.load(Ordering::Acquire);
            assert!(now >= last, "head went back from {last} to {now}");
            last = now;
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(head.load(Ordering::Acquire), 299_999);
    }
}
