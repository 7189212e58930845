//! Query boundaries in the command machine (`eventcore.boundary.QueryCommand`).
//!
//! A query command declares its consistency boundary as a query of event types and tags
//! (and may declare streams beside it). Each attempt reads the query's events (and the
//! declared streams') after the position its state is consistent with, folds them in
//! global order, runs `handle`, tags the new events (`tags_of`) and appends them under
//! `AppendCondition(query, position read)` with the streams' versions as expected
//! versions. A failed condition (`ConditionFailed`) is retried like a version conflict:
//! the same policy, the same idempotency keys, trace and typed errors as any command.
//!
//! The state cache: a command with no declared stream keeps its state with the position
//! it is consistent with (`CacheEntry(state, [], [position])`, keyed by
//! `boundary._cache_key`); the next run reads only what matches after that position. A
//! retry after a failed condition folds only what came after the position it read; when
//! the failure carries that read (`ConditionFailed.read`: PostgreSQL's one-stream append
//! returns it), the retry folds it and reads nothing. On a store that appends warm states
//! first (`warm_append_first`: PostgreSQL) a cached state is decided on without a read at
//! all: the condition after its position checks it, a failure costs no attempt (it tells
//! what the read would have), and a `handle` that fails or decides nothing on it reads
//! first and decides again, as a cached stream command does.
//! In verify mode (`StateCache(verify=True)`) such a state is checked: a second read folds
//! the query's events from the start up to the same position, and a state that differs
//! raises `StateCacheMismatch`; the command then decides on the cached state.
//!
//! This is a child module of `pipeline` (it sees the machine's fields); `pipeline.rs` only
//! calls in at a few hooks, and `pipeline_drive.rs` runs the two effects natively on the
//! in-memory store (`native_read`, `native_append`).

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::sync::atomic::Ordering::Relaxed;

use super::{refs, Eff, Folded, Input, Machine, PyObj, Wait};
use crate::pipeline_result::{Outcome, Versions};
use crate::py_store::MemoryStore;
use crate::store::Rows;

/// Python objects only query commands use (imported on the first one).
struct QRefs {
    query_cls: PyObj,
    query_arg: PyObj,
    check_tags: PyObj,
    append_condition: PyObj,
    new_event: PyObj,
    cache_key: PyObj,
}

static QREFS: PyOnceLock<QRefs> = PyOnceLock::new();

fn qrefs(py: Python<'_>) -> PyResult<&QRefs> {
    QREFS.get_or_try_init(py, || {
        let query = py.import("eventcore.query")?;
        let boundary = py.import("eventcore.boundary")?;
        let recorded = py.import("eventcore.recorded")?;
        Ok::<_, PyErr>(QRefs {
            query_cls: query.getattr("Query")?.unbind(),
            query_arg: query.getattr("query_arg")?.unbind(),
            check_tags: query.getattr("check_tags")?.unbind(),
            append_condition: query.getattr("AppendCondition")?.unbind(),
            new_event: recorded.getattr("NewEvent")?.unbind(),
            cache_key: boundary.getattr("_cache_key")?.unbind(),
        })
    })
}

/// A query read's events (a list of RecordedEvent) and the position it is consistent with.
type Read = (PyObj, i64);

/// A query run's state across the effects of an attempt (and a retry's starting point).
#[derive(Default)]
pub(super) struct QState {
    /// This attempt's query.
    query: Option<PyObj>,
    /// Its cache key (`None`: not cached).
    key: Option<PyObj>,
    /// The state the read folds into, and the position it is consistent with.
    state: Option<PyObj>,
    after: i64,
    /// The position the read is consistent with (the append condition's `after`).
    pub position: i64,
    /// The query read's events while the streams are read (the effect-by-effect shell).
    events: Option<PyObj>,
    /// Per new event: its tags (a tuple of str) and the event object.
    pub tags: Vec<PyObj>,
    objects: Vec<PyObj>,
    /// After a failed condition: the state decided on and its position (with a cache key),
    /// and the read after that position the failure carried (its events and position).
    held: Option<(PyObj, i64, Option<Read>)>,
    /// This attempt's `query_arg(query)` once made (the native read and append share it).
    items: Option<PyObj>,
    /// The state came from the cache (or a retry's held state) and verify mode is on:
    /// check it against a full fold before deciding.
    check: bool,
    /// While the check's full read runs: the cached state plus its tail, and the position
    /// it is consistent with (the full fold stops there).
    checking: Option<(PyObj, i64)>,
}

impl QState {
    /// This attempt's query (for the QUERY effect's tuple).
    pub(super) fn query_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.query.as_ref().expect("query read").bind(py).clone()
    }

    /// The position the read starts after.
    pub(super) fn after_pos(&self) -> i64 {
        self.after
    }

    /// Whether an event at `position` is folded (a check's full fold stops at the
    /// position the cached state is consistent with).
    fn folds(&self, position: i64) -> bool {
        self.checking
            .as_ref()
            .is_none_or(|(_, bound)| position <= *bound)
    }

    /// The query's `(types, tags)` items as the in-memory store takes them.
    pub(super) fn items<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(items) = &self.items {
            return Ok(items.bind(py).clone());
        }
        let query = self.query.as_ref().expect("query read");
        let items = qrefs(py)?.query_arg.bind(py).call1((query.bind(py),))?;
        self.items = Some(items.clone().unbind());
        Ok(items)
    }
}

impl Machine {
    /// Whether this run is a query command's.
    pub(crate) fn is_query(&self) -> bool {
        self.q.is_some()
    }

    /// An attempt of a query command: its query, its state (cached or initial), the read.
    pub(super) fn query_attempt(&mut self, py: Python<'_>) -> PyResult<Eff> {
        let qr = qrefs(py)?;
        let command = self.command.bind(py).clone();
        let name = self.name.as_ref().expect("started").bind(py).clone();
        let query = command.call_method0(intern!(py, "query"))?;
        if !query.is_instance(qr.query_cls.bind(py))? {
            let msg = format!(
                "{}.query() must return an eventcore.query.Query",
                name.str()?
            );
            let r = refs(py)?;
            return Err(PyErr::from_value(r.command_error.bind(py).call1((msg,))?));
        }
        let q = self.q.as_mut().expect("query run");
        q.state = None;
        q.after = 0;
        q.check = false;
        q.checking = None;
        let mut key = None;
        let mut carried = None;
        let mut from_cache = false;
        if let Some(cache) = &self.cache {
            if self.declared_v.is_empty()
                && command.getattr(intern!(py, "state_cache"))?.is_truthy()?
            {
                let k = qr.cache_key.bind(py).call1((&command, &query))?;
                if !k.is_none() {
                    key = Some(k.unbind());
                }
            }
            // A retry folds on from the state it decided on (the key is unchanged if the
            // command's fields are).
            let held = q.held.take();
            if let (Some(k), None) = (&key, &held) {
                let entry = cache
                    .bind(py)
                    .call_method1(intern!(py, "take"), (k.bind(py), &name))?;
                if !entry.is_none() {
                    let versions = entry.getattr(intern!(py, "versions"))?;
                    q.after = versions.get_item(0)?.extract()?;
                    q.state = Some(entry.getattr(intern!(py, "state"))?.unbind());
                    from_cache = true;
                }
            } else if let (Some(_), Some((state, after, read))) = (&key, held) {
                q.state = Some(state);
                q.after = after;
                carried = read;
            }
        }
        if q.state.is_none() {
            q.state = Some(command.call_method0(intern!(py, "initial_state"))?.unbind());
            q.after = 0;
        } else {
            q.check = self
                .cache
                .as_ref()
                .is_some_and(|c| c.get().verify.load(Relaxed));
        }
        q.key = key;
        q.query = Some(query.unbind());
        q.items = None;
        q.events = None;
        if let Some((events, position)) = carried {
            // The failed condition's read after the held state's position: fold it.
            q.position = position;
            return self.query_fold(py, events.bind(py), None);
        }
        if from_cache && self.warm_append_first && !q.check {
            // Decide on the cached state without reading (one round trip): the append's
            // condition (nothing matching after its position) checks it, and a failure
            // carries what it missed or makes the retry read it (`query_retry`).
            q.position = q.after;
            self.unverified = true;
            let state = q.state.take().expect("cached state");
            return self.query_decide(py, state, Vec::new());
        }
        self.wait = Wait::QueryRead;
        Ok(Eff::Query)
    }

    /// The query read came back: fold it (or read the streams first).
    pub(super) fn on_query_read(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let value = match input {
            Input::Queried(state, versions, position) => {
                let q = self.q.as_mut().expect("query run");
                q.position = position;
                q.state = None;
                return self.query_decide(py, state.unbind(), versions);
            }
            Input::Value(v) => v,
            _ => return Err(PyTypeError::new_err("unexpected result for a query read")),
        };
        if !value.is_instance_of::<PyTuple>() {
            // A failure (or what a read must not return: `failure` says which).
            return self.failure(py, &value);
        }
        let (events, position): (Bound<'_, PyAny>, i64) = value.extract()?;
        let q = self.q.as_mut().expect("query run");
        q.position = position;
        if self.declared_v.is_empty() {
            return self.query_fold(py, &events, None);
        }
        q.events = Some(events.unbind());
        self.wait = Wait::QueryStreams;
        Ok(Eff::Streams)
    }

    /// The declared streams' events came back: fold them with the query's.
    pub(super) fn on_query_streams(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let Input::Value(value) = input else {
            return Err(PyTypeError::new_err("unexpected result for a streams read"));
        };
        if !value.is_instance_of::<PyList>() {
            return self.failure(py, &value);
        }
        let events = self.q.as_mut().expect("query run").events.take();
        let events = events.expect("query read").into_bound(py);
        self.query_fold(py, &events, Some(&value))
    }

    /// Fold RecordedEvents (the query's, and the streams' not among them) in global order.
    fn query_fold(
        &mut self,
        py: Python<'_>,
        events: &Bound<'_, PyAny>,
        stream_events: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Eff> {
        let mut all: Vec<(i64, Bound<'_, PyAny>)> = Vec::new();
        let q = self.q.as_ref().expect("query run");
        for e in events.try_iter()? {
            let e = e?;
            let position: i64 = e.getattr(intern!(py, "position"))?.extract()?;
            if q.folds(position) {
                all.push((position, e));
            }
        }
        let mut versions = vec![0i64; self.declared_v.len()];
        if let Some(stream_events) = stream_events {
            let seen: std::collections::HashSet<i64> = all.iter().map(|(p, _)| *p).collect();
            let declared: Vec<&str> = self
                .declared_v
                .iter()
                .map(|s| s.bind(py).to_str())
                .collect::<PyResult<_>>()?;
            for e in stream_events.try_iter()? {
                let e = e?;
                let stream = e.getattr(intern!(py, "stream_id"))?;
                let stream = stream.cast::<PyString>()?.to_str()?;
                let version: i64 = e.getattr(intern!(py, "version"))?.extract()?;
                if let Some(i) = declared.iter().position(|d| *d == stream) {
                    versions[i] = versions[i].max(version);
                }
                let position: i64 = e.getattr(intern!(py, "position"))?.extract()?;
                if !seen.contains(&position) {
                    all.push((position, e));
                }
            }
            all.sort_by_key(|(p, _)| *p);
        }
        let apply = self.apply_obj(py)?;
        let q = self.q.as_mut().expect("query run");
        let mut state = q.state.take().expect("state").into_bound(py);
        for (_, e) in &all {
            let data = e.getattr(intern!(py, "data"))?;
            let stream = e.getattr(intern!(py, "stream_id"))?;
            state = apply.call1((state, data, stream))?;
        }
        self.query_decide(py, state.unbind(), versions)
    }

    fn query_decide(
        &mut self,
        py: Python<'_>,
        mut state: PyObj,
        versions: Vec<i64>,
    ) -> PyResult<Eff> {
        let command = self.command.bind(py).clone();
        let q = self.q.as_mut().expect("query run");
        if q.check {
            // Verify mode: read the query again from the start, up to this position.
            q.check = false;
            q.checking = Some((state, q.position));
            q.state = Some(command.call_method0(intern!(py, "initial_state"))?.unbind());
            q.after = 0;
            q.events = None;
            self.wait = Wait::QueryRead;
            return Ok(Eff::Query);
        }
        if let Some((cached, position)) = q.checking.take() {
            let r = refs(py)?;
            let (cached_b, full) = (cached.bind(py), state.bind(py));
            if r.compares_by_value
                .bind(py)
                .call1((cached_b,))?
                .is_truthy()?
                && full.ne(cached_b)?
            {
                return Err(PyErr::from_value(r.state_cache_mismatch.bind(py).call1(
                    (
                        self.name.as_ref().expect("started").bind(py),
                        cached_b,
                        full,
                    ),
                )?));
            }
            q.position = position;
            state = cached;
        }
        let f = Folded {
            state,
            versions: versions.into(),
            streams: crate::pipeline::cl_all(py, &self.declared_v),
            fold_from: 0,
            rounds: 0,
        };
        self.decide(py, f)
    }

    /// The tags of what `handle` returned (`tags_of`, checked), kept with the objects.
    pub(super) fn query_tags(
        &mut self,
        py: Python<'_>,
        emitted: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let qr = qrefs(py)?;
        let command = self.command.bind(py);
        let mut tags = Vec::new();
        let mut objects = Vec::new();
        if emitted.is_truthy()? {
            for item in emitted.try_iter()? {
                let (_, event) = super::pair(&item?)?;
                let t = command.call_method1(intern!(py, "tags_of"), (&event,))?;
                tags.push(qr.check_tags.bind(py).call1((t,))?.unbind());
                objects.push(event.unbind());
            }
        }
        let q = self.q.as_mut().expect("query run");
        q.tags = tags;
        q.objects = objects;
        Ok(())
    }

    /// `handle` failed or decided nothing on a cached state nobody read: read what came
    /// after its position and decide again (no attempt spent), as for streams.
    pub(super) fn query_recheck(&mut self, py: Python<'_>, f: Folded) -> PyResult<Eff> {
        let q = self.q.as_mut().expect("query run");
        q.held = Some((f.state, q.position, None));
        self.attempt -= 1;
        self.begin_attempt(py)
    }

    /// `handle` decided nothing: no append (nothing to keep consistent); keep the state.
    pub(super) fn query_nothing(&mut self, py: Python<'_>, f: Folded) -> PyResult<Eff> {
        let r = refs(py)?;
        let position = self.q.as_ref().expect("query run").position;
        self.query_keep(py, f.state.bind(py).clone(), position, false)?;
        let versions = PyList::new(
            py,
            f.streams
                .iter()
                .zip(&f.versions)
                .map(|(s, v)| (s.bind(py), *v).into_pyobject(py))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let append =
            r.append_result
                .bind(py)
                .call1((PyList::empty(py), versions, PyList::empty(py)))?;
        let res = super::result(py, Outcome::Built(append.unbind()), self.attempt)?;
        self.done(res)
    }

    /// The conditional append effect, as the tuple a Python store's shell runs:
    /// `("append_if", [NewEvent], expected, metadata, AppendCondition)`.
    pub(super) fn query_append_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let qr = qrefs(py)?;
        let q = self.q.as_ref().expect("query run");
        let events = self.events.as_ref().expect("events");
        let new_event = qr.new_event.bind(py);
        let list = PyList::empty(py);
        for ((s, n, p, id), tags) in events.0.iter().zip(&q.tags) {
            list.append(new_event.call1((
                s.bind(py),
                n.bind(py),
                p.bind(py),
                *id,
                tags.bind(py),
            ))?)?;
        }
        let condition = qr
            .append_condition
            .bind(py)
            .call1((q.query.as_ref().expect("query read").bind(py), q.position))?;
        (
            intern!(py, "append_if"),
            list,
            self.expected(py)?,
            self.metadata.bind(py),
            condition,
        )
            .into_pyobject(py)
    }

    /// After a failed condition: fold on from the decided state next time (cached runs),
    /// with the read the failure carries if it does (`failure.read`).
    pub(super) fn query_retry(
        &mut self,
        py: Python<'_>,
        failure: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let cur = self.cur.take();
        let mut read = None;
        if failure.is_instance(refs(py)?.condition_failed.bind(py))? {
            let r = failure.getattr(intern!(py, "read"))?;
            if !r.is_none() {
                let (events, position): (Bound<'_, PyAny>, i64) = r.extract()?;
                read = Some((events.unbind(), position));
            }
        }
        let q = self.q.as_mut().expect("query run");
        if let (Some(_), Some(cur)) = (&q.key, cur) {
            q.held = Some((cur.state, q.position, read));
        }
        Ok(())
    }

    /// The append succeeded: keep the state (with the command's own events that match
    /// the query) in the cache; then the result.
    pub(super) fn query_appended(&mut self, py: Python<'_>, outcome: Outcome) -> PyResult<Eff> {
        let cur = self.cur.take().expect("decided");
        let n = self.events.as_ref().map_or(0, |e| e.len()) as i64;
        let last = match &outcome {
            Outcome::Raw(first, _, _) => *first as i64 + n - 1,
            Outcome::Built(append) => append
                .bind(py)
                .getattr(intern!(py, "last_position"))?
                .extract::<Option<i64>>()?
                .unwrap_or(0),
        };
        let position = self.q.as_ref().expect("query run").position.max(last);
        self.query_keep(py, cur.state.into_bound(py), position, true)?;
        let res = super::result(py, outcome, self.attempt)?;
        self.done(res)
    }

    /// Put `state` (consistent with `position`) back in the cache under the run's key;
    /// with `own`, first fold the new events that match the query. No matching event can
    /// lie below `position` unseen: the condition held under the store's locks.
    fn query_keep<'py>(
        &mut self,
        py: Python<'py>,
        mut state: Bound<'py, PyAny>,
        position: i64,
        own: bool,
    ) -> PyResult<()> {
        let q = self.q.as_ref().expect("query run");
        let (Some(cache), Some(key)) = (&self.cache, &q.key) else {
            return Ok(());
        };
        if own {
            let query = q.query.as_ref().expect("query read").bind(py);
            let events = self.events.as_ref().expect("events");
            let apply = self.apply_obj(py)?;
            for (((s, n, _, _), tags), obj) in events.0.iter().zip(&q.tags).zip(&q.objects) {
                let matches = query
                    .call_method1(intern!(py, "matches"), (n.bind(py), tags.bind(py)))?
                    .is_truthy()?;
                if matches {
                    match apply.call1((state.clone(), obj.bind(py), s.bind(py))) {
                        Ok(next) => state = next,
                        // The next command folds in full, and meets the same error there.
                        Err(err) if err.is_instance_of::<PyException>(py) => return Ok(()),
                        Err(err) => return Err(err),
                    }
                }
            }
        }
        let r = refs(py)?;
        let entry = r.cache_entry.bind(py).call1((
            state,
            PyList::empty(py),
            PyList::new(py, [position])?,
        ))?;
        cache.bind(py).call_method1(
            intern!(py, "put"),
            (
                key.bind(py),
                entry,
                self.name.as_ref().expect("started").bind(py),
            ),
        )?;
        Ok(())
    }

    /// `ConditionFailed(after, position, attempts)` once the policy is used up.
    pub(super) fn condition_exhausted(
        &self,
        py: Python<'_>,
        failed: &Bound<'_, PyAny>,
    ) -> PyResult<PyErr> {
        let r = refs(py)?;
        let after = failed.getattr(intern!(py, "after"))?;
        let position = failed.getattr(intern!(py, "position"))?;
        Ok(PyErr::from_value(r.condition_failed.bind(py).call1((
            after,
            position,
            self.attempt,
        ))?))
    }
}

/// The QUERY effect run on the in-memory store: read the query's rows (and the declared
/// streams'), under one read lock, and fold them in global order in one Rust loop.
pub(crate) fn native_read<'py>(
    py: Python<'py>,
    m: &mut Machine,
    store: &MemoryStore,
) -> PyResult<Input<'py>> {
    let q = m.q.as_mut().expect("query run");
    let items = q.items(py)?;
    let after = q.after;
    let state = q.state.take().expect("state").into_bound(py);
    let declared: Vec<&str> = m
        .declared_v
        .iter()
        .map(|s| s.bind(py).to_str())
        .collect::<PyResult<_>>()?;
    let (found, streams, position) = store.query_rows(py, &items, after, &declared)?;
    let mut versions = vec![0i64; declared.len()];
    for row in &streams.rows {
        let v = &mut versions[row.stream as usize];
        *v = (*v).max(i64::from(row.version));
    }
    let mut folder = crate::fold::Folder::new(m.apply_obj(py)?, m.decoders_obj(py));
    let types = |rows: &Rows| -> Vec<Bound<'py, PyAny>> {
        rows.types
            .iter()
            .map(|t| PyString::new(py, t).into_any())
            .collect()
    };
    let (qtypes, stypes) = (types(&found), types(&streams));
    let qstreams: Vec<Bound<'py, PyAny>> = found
        .streams
        .iter()
        .map(|s| PyString::new(py, s).into_any())
        .collect();
    let sstreams: Vec<Bound<'py, PyAny>> = m
        .declared_v
        .iter()
        .map(|s| s.bind(py).clone().into_any())
        .collect();
    let qpos: Vec<u64> = found.rows.iter().map(|r| r.position).collect();
    let spos: Vec<u64> = streams.rows.iter().map(|r| r.position).collect();
    let mut state = state;
    let q = m.q.as_ref().expect("query run");
    for (from_query, k) in merge_order(&qpos, &spos) {
        let (rows, types, names) = if from_query {
            (&found, &qtypes, &qstreams)
        } else {
            (&streams, &stypes, &sstreams)
        };
        let row = &rows.rows[k];
        if !q.folds(row.position as i64) {
            continue;
        }
        let name = &types[row.event_type as usize];
        let decoder = folder.decoder(name)?;
        let payload = PyBytes::new(py, rows.payload(k)).into_any();
        state = folder.step_at(
            state,
            &decoder,
            name,
            &names[row.stream as usize],
            &payload,
            Some((u64::from(row.version), row.position)),
        )?;
    }
    Ok(Input::Queried(state, versions, position as i64))
}

/// The conditional append run on the in-memory store.
pub(crate) fn native_append<'py>(
    py: Python<'py>,
    m: &mut Machine,
    store: &MemoryStore,
    metadata: Option<&Bound<'py, PyBytes>>,
) -> PyResult<(u64, Versions)> {
    let items = m.q.as_mut().expect("query run").items(py)?;
    let q = m.q.as_ref().expect("query run");
    let events = m.events.as_ref().expect("events").args(py);
    let expected = m.expected_args(py);
    let tags: Vec<Bound<'py, PyAny>> = q.tags.iter().map(|t| t.bind(py).clone()).collect();
    let (first, versions, _) =
        store.append_query(py, &expected, &events, metadata, &tags, &items, q.position)?;
    Ok((
        first,
        versions.into_iter().map(|(s, v)| (s.unbind(), v)).collect(),
    ))
}

/// The fold order of two reads, each in position order: `(from the first, index)` by
/// position, an event in both taken once (from the first).
fn merge_order(first: &[u64], second: &[u64]) -> Vec<(bool, usize)> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut i, mut j) = (0, 0);
    while i < first.len() || j < second.len() {
        match (first.get(i), second.get(j)) {
            (Some(a), Some(b)) if b < a => {
                out.push((false, j));
                j += 1;
            }
            (Some(a), b) => {
                if b == Some(a) {
                    j += 1;
                }
                out.push((true, i));
                i += 1;
            }
            (None, _) => {
                out.push((false, j));
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge_order;

    #[test]
    fn merges_by_position_taking_a_shared_event_once() {
        let order = merge_order(&[2, 5, 9], &[1, 5, 7, 10]);
        assert_eq!(
            order,
            vec![
                (false, 0),
                (true, 0),
                (true, 1),
                (false, 2),
                (true, 2),
                (false, 3)
            ]
        );
    }

    #[test]
    fn one_side_empty() {
        assert_eq!(merge_order(&[], &[3, 4]), vec![(false, 0), (false, 1)]);
        assert_eq!(merge_order(&[3], &[]), vec![(true, 0)]);
        assert!(merge_order(&[], &[]).is_empty());
    }
}
