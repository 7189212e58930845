//! The command machine: the command algorithm once, as an explicit state machine.
//!
//! `CommandRun` (what `eventcore._pipeline.run_command` returns) is driven like a
//! generator: `send(result)` resumes the machine with the result of the effect it asked
//! for last and returns the next effect as a tuple (`("fold", ...)`, `("append", ...)`,
//! ...; see `_pipeline.py`), `throw(exc)` ends it with `exc`. Store errors the machine
//! decides about (conflicts, unavailability, duplicate ids) come back as values. Errors
//! are raised from `send`, and `send` after the end raises `StopIteration`.
//!
//! `drive(core_store, result)` runs the reads, appends and lookups on the Rust in-memory
//! store inside the call (see `pipeline_drive.rs`) and returns only the effects Python
//! must do (sleep, snapshot load/save, done).
//!
//! Python is called for the user's code (`streams`, `initial_state`, `apply`, `handle`,
//! `discover`), the codec, the retry policy on a retry, the cache key when one is needed,
//! the idempotency key's ids, error messages and the result objects.

use std::collections::HashSet;

use smallvec::SmallVec;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use pyo3::exceptions::{PyAttributeError, PyException, PyStopIteration, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use crate::cache_core::{CacheKey, Held, StateCacheCore};
use crate::pipeline_entry::{entry_object, CacheEntry};
use crate::pipeline_logic as logic;
use crate::pipeline_result::{ExecutionResult, NewEvents, Outcome, Versions};
use crate::uuid7;

#[path = "pipeline_query.rs"]
pub(crate) mod query;

#[path = "pipeline_fold.rs"]
mod folds;

pub(crate) type PyObj = Py<PyAny>;

/// Event ids looked up per LOOKUP effect (a command writing more asks again).
const LOOKUP_CHUNK: usize = 16;

/// Python objects the machine uses, imported once per interpreter.
pub(crate) struct Refs {
    pub append_result: PyObj,
    pub recorded_events: PyObj,
    pub cache_entry: PyObj,
    pub state_cache_mismatch: PyObj,
    pub keyers: Py<PyDict>,
    pub streams_only: PyObj,
    pub observe: PyObj,
    /// `eventcore.observe`'s namespace: its `_hooks` read as one dict lookup.
    pub observe_vars: Py<PyDict>,
    pub hit: PyObj,
    pub miss: PyObj,
    pub command_cls: PyObj,
    pub command_discover: PyObj,
    pub stream_id: PyObj,
    pub keyed: PyObj,
    pub cache_key: PyObj,
    pub stream_hint: PyObj,
    pub handle_result_error: PyObj,
    pub append_result_of: PyObj,
    pub not_a_result: PyObj,
    pub compares_by_value: PyObj,
    pub metadata_bytes: PyObj,
    pub conflict: PyObj,
    pub unavailable: PyObj,
    pub outcome_unknown: PyObj,
    pub duplicate: PyObj,
    pub condition_failed: PyObj,
    pub command_error: PyObj,
    pub undeclared: PyObj,
    pub perf_counter_ns: PyObj,
    pub event_registry: PyObj,
    /// Per command class (once it is planned): its [`ClassFacts`].
    pub facts: Py<PyDict>,
    /// `Command.streams`: a class that keeps it has its stream fields read by the machine.
    pub command_streams: PyObj,
}

static REFS: PyOnceLock<Refs> = PyOnceLock::new();

pub(crate) fn refs(py: Python<'_>) -> PyResult<&Refs> {
    REFS.get_or_try_init(py, || {
        let pipeline = py.import("eventcore._pipeline")?;
        let recorded = py.import("eventcore.recorded")?;
        let cache = py.import("eventcore.state_cache")?;
        let errors = py.import("eventcore.errors")?;
        let command = py.import("eventcore.command")?;
        let memory = py.import("eventcore.memory")?;
        let get = |m: &Bound<'_, PyModule>, name: &str| -> PyResult<PyObj> {
            Ok(m.getattr(name)?.unbind())
        };
        let command_cls = command.getattr("Command")?;
        Ok::<_, PyErr>(Refs {
            append_result: get(&recorded, "AppendResult")?,
            recorded_events: get(&recorded, "recorded_events")?,
            cache_entry: get(&cache, "CacheEntry")?,
            state_cache_mismatch: get(&cache, "StateCacheMismatch")?,
            keyers: cache.getattr("_keyers")?.cast_into::<PyDict>()?.unbind(),
            streams_only: get(&cache, "STREAMS_ONLY")?,
            observe: py.import("eventcore.observe")?.into_any().unbind(),
            observe_vars: py.import("eventcore.observe")?.dict().unbind(),
            hit: get(&cache, "HIT")?,
            miss: get(&cache, "MISS")?,
            command_discover: command_cls.getattr("discover")?.unbind(),
            command_cls: command_cls.clone().unbind(),
            stream_id: py.import("eventcore.stream")?.getattr("StreamId")?.unbind(),
            keyed: get(&pipeline, "_Keyed")?,
            cache_key: get(&pipeline, "_cache_key")?,
            stream_hint: get(&pipeline, "_stream_hint")?,
            handle_result_error: get(&pipeline, "_handle_result_error")?,
            append_result_of: get(&pipeline, "_append_result")?,
            not_a_result: get(&pipeline, "_not_a_result")?,
            compares_by_value: get(&pipeline, "_compares_by_value")?,
            metadata_bytes: get(&memory, "_metadata_bytes")?,
            conflict: get(&errors, "ConcurrencyConflict")?,
            unavailable: get(&errors, "StoreUnavailable")?,
            outcome_unknown: get(&errors, "OutcomeUnknown")?,
            duplicate: get(&errors, "DuplicateEventId")?,
            condition_failed: get(&errors, "ConditionFailed")?,
            command_error: get(&errors, "CommandError")?,
            undeclared: get(&errors, "UndeclaredStream")?,
            perf_counter_ns: py.import("time")?.getattr("perf_counter_ns")?.unbind(),
            event_registry: py
                .import("eventcore.registry")?
                .getattr("EventRegistry")?
                .unbind(),
            facts: PyDict::new(py).unbind(),
            command_streams: command_cls.getattr("streams")?.unbind(),
        })
    })
}

/// A folded state with the streams and per-stream versions it represents.
pub(crate) struct Folded {
    pub state: PyObj,
    pub versions: FoldVersions,
    pub streams: FoldStreams,
    /// Where the last discovery round starts in `streams` (0 without discovery).
    pub fold_from: usize,
    pub rounds: i64,
}

/// A folded state's per-stream versions and stream objects: inline for the common one or
/// two streams, so a cache entry and its copies take no heap blocks of their own.
pub(crate) type FoldVersions = SmallVec<[i64; 2]>;
/// See [`FoldVersions`].
pub(crate) type FoldStreams = SmallVec<[Py<PyString>; 2]>;

/// A cache entry: a folded state and the events folded since its last snapshot.
pub(crate) struct Entry {
    pub f: Folded,
    pub since: i64,
}

/// The cache key of a run: not built yet, none (not cached), or a value.
enum Key {
    Unset,
    None,
    Val(PyObj),
}

/// Why a LOOKUP of the idempotency key's ids runs.
#[derive(Clone, Copy)]
enum Why {
    /// At the start of an attempt.
    Attempt,
    /// After `handle` raised (a same-key caller may have written meanwhile).
    HandleFailed,
    /// After conflicts used up the policy.
    Exhausted,
}

/// Where a discovery round's fold returns to.
#[derive(Clone, Copy)]
enum Ctx {
    Cold,
    Warm,
    Verify,
}

/// What the machine waits for: the effect it returned last.
enum Wait {
    Start,
    Lookup,
    Load,
    Tail,
    ColdFold,
    DiscoverFold,
    VerifyFold,
    Append,
    UnknownLookup,
    Save,
    SleepThenAttempt,
    SleepThenAppend,
    QueryRead,
    QueryStreams,
    Done,
    Finished,
}

/// An effect, as the machine produces it (turned into a tuple by `send`, run natively by
/// `drive`).
pub(crate) enum Eff {
    /// Read `streams` and fold them into `state`.
    Fold {
        streams: Vec<Py<PyString>>,
        list: Option<PyObj>,
        state: PyObj,
    },
    /// Fold the tail of the entry in `Machine::tailing` (hint: the conflict before).
    Tail {
        hint: PyObj,
    },
    /// Append `Machine::events` with the decided state's streams and versions
    /// (`Machine::cur`) as expected versions.
    Append,
    Lookup(PyObj),
    /// Read the query's events after the state's position (a query command's).
    Query,
    /// Read the declared streams of a query command.
    Streams,
    Load(PyObj),
    Save(PyObj, PyObj),
    Sleep(f64),
    Done(PyObj),
}

/// What an effect came back with.
pub(crate) enum Input<'py> {
    /// A Python value (what `send` was given).
    Value(Bound<'py, PyAny>),
    /// A native fold or tail: the state and the versions now.
    Folded(Bound<'py, PyAny>, Vec<i64>),
    /// A native tail with nothing to fold: the tailed entry's state and versions stand.
    Unchanged,
    /// A native append: its first position and `(stream, version)` after it.
    Appended(u64, Versions),
    /// A native query read and fold: the state, the declared streams' versions and the
    /// position the read is consistent with.
    Queried(Bound<'py, PyAny>, Vec<i64>, i64),
}

/// A fold's `(state, versions)`, or what it came back with instead.
type FoldOutcome<'py> = Result<(Bound<'py, PyAny>, Vec<i64>), Bound<'py, PyAny>>;

/// One trace record (see `CommandRun.trace`).
enum TraceItem {
    Phase(&'static str, i64, i64, i64),
    Retry(i64, &'static str, f64),
}

/// The run's trace on the `time.perf_counter_ns()` clock.
struct Trace {
    items: Vec<TraceItem>,
    base_ns: i64,
    base: Instant,
    /// 1 + the retries so far (what a hook calls the attempt).
    attempt: i64,
    /// Why the last effect failed (`conflict` / `unavailable`).
    failure: &'static str,
    /// When the pending effect was handed out.
    effect_start: i64,
    /// When the last read came back (a FOLD or TAIL just before this step).
    read_end: Option<i64>,
}

impl Trace {
    fn now(&self) -> i64 {
        self.base_ns + self.base.elapsed().as_nanos() as i64
    }
}

/// The kind of effect pending, for the trace.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Read,
    Write,
    Other,
}

pub(crate) struct Machine {
    // The run's inputs.
    command: PyObj,
    registry: PyObj,
    policy: PyObj,
    metadata: PyObj,
    key_text: Option<PyObj>,
    cache: Option<Py<StateCacheCore>>,
    snapshot_every: i64,
    warm_append_first: bool,
    /// Keep the state with the command's own events folded in (as `warm_append_first`
    /// does), while the next command still reads its tail: a state whose versions equal
    /// the stream's then costs a version check, not a row read and a fold.
    keep_own: bool,
    // Worked out when the run starts.
    cls: Option<PyObj>,
    name: Option<PyObj>,
    discovers: bool,
    /// `command.apply` once looked up (see `apply_obj`).
    apply: std::sync::OnceLock<PyObj>,
    pub decoders: Option<PyObj>,
    encode: Option<PyObj>,
    /// For an `EventRegistry` (exactly): its class-to-name map and its codec's `encode`,
    /// called directly (what `registry.encode` does, without its Python frame).
    names: Option<Py<PyDict>>,
    codec_encode: Option<PyObj>,
    max_attempts: i64,
    keyed: Option<PyObj>,
    declared: Option<PyObj>,
    declared_v: Vec<Py<PyString>>,
    // Across attempts.
    key: Key,
    /// The run's key in the state cache, once looked for (see `cache_key`).
    ckey: Option<CacheKey>,
    /// Whether the run's class is keyed by its streams alone (see `by_streams`).
    by_streams: Option<bool>,
    held: Option<Entry>,
    /// The cache entry object found in the cache, its contents moved out because nothing
    /// else referred to it (filled again and put back when that still holds, instead of
    /// a new one).
    taken: Option<Py<CacheEntry>>,
    /// The cache slot found, marked in use until this run puts its state back (dropped
    /// with the slot if it does not).
    in_use: Option<Held>,
    hint: Option<PyObj>,
    recheck: bool,
    attempt: i64,
    failures: i64,
    unknown: bool,
    // This attempt.
    unverified: bool,
    warm: bool,
    since: i64,
    cur: Option<Folded>,
    pub tailing: Option<Entry>,
    /// The state a pending FOLD folds into (a store returns rows; see `pipeline_fold.rs`).
    fold_base: Option<PyObj>,
    /// The tail a snapshot load read with its snapshot: the next TAIL effect's hint.
    snap_tail: Option<PyObj>,
    disc: Option<Folded>,
    disc_extra: Vec<Py<PyString>>,
    disc_ctx: Ctx,
    pub events: Option<NewEvents>,
    found: Vec<PyObj>,
    why: Why,
    pending_error: Option<PyErr>,
    pending_conflict: Option<PyObj>,
    pending_result: Option<Outcome>,
    pending_kept: Option<PyObj>,
    pub metadata_bytes: Option<Option<PyObj>>,
    wait: Wait,
    kind: Kind,
    trace: Option<Trace>,
    /// A query command's run (see `pipeline_query.rs`).
    q: Option<Box<query::QState>>,
}

fn cl<T>(py: Python<'_>, o: &Py<T>) -> Py<T> {
    o.clone_ref(py)
}

pub(crate) fn cl_all<T, C: FromIterator<Py<T>>>(py: Python<'_>, v: &[Py<T>]) -> C {
    v.iter().map(|o| o.clone_ref(py)).collect()
}

fn streams_list<'py>(py: Python<'py>, v: &[Py<PyString>]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.iter().map(|s| s.bind(py)))
}

/// `streams` as a list of str objects (a str itself is refused, like the stores do).
pub(crate) fn stream_objs(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyString>>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "streams must be a sequence of str, not a str",
        ));
    }
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        out.push(
            item?
                .cast_into::<PyString>()
                .map_err(|_| PyTypeError::new_err("streams must contain only str"))?
                .unbind(),
        );
    }
    Ok(out)
}

fn err_from(obj: &Bound<'_, PyAny>) -> PyErr {
    PyErr::from_value(obj.clone())
}

/// `cls(*args)` as an error, with `cause` as its `__cause__`.
fn error_with_cause<'py>(
    cls: &Bound<'py, PyAny>,
    args: impl pyo3::call::PyCallArgs<'py>,
    cause: Option<&Bound<'py, PyAny>>,
) -> PyErr {
    let py = cls.py();
    match cls.call1(args) {
        Ok(exc) => {
            let err = PyErr::from_value(exc);
            if let Some(c) = cause {
                if c.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                    err.set_cause(py, Some(PyErr::from_value(c.clone())));
                }
            }
            err
        }
        Err(e) => e,
    }
}

/// A command class's stream fields when it keeps `Command.streams` (a tuple of names),
/// `None` (Python's) when it overrides that method; Rust's `None` when the class is not
/// planned yet (or not a command class): then nothing is kept, and it is asked again.
fn stream_fields<'py>(
    py: Python<'py>,
    r: &Refs,
    cls: &Bound<'py, PyType>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Ok(plan) = cls.getattr(intern!(py, "_plan")) else {
        return Ok(None);
    };
    if plan.is_none() {
        return Ok(None); // not planned yet: ask again next time
    }
    let keeps = cls
        .getattr(intern!(py, "streams"))
        .is_ok_and(|m| m.is(r.command_streams.bind(py)));
    Ok(Some(if keeps {
        plan.getattr(intern!(py, "stream_fields"))?
    } else {
        py.None().into_bound(py)
    }))
}

/// What `Command.streams` returns for `command`, read from its stream `fields` here (see
/// [`stream_fields`]) when every field holds one `StreamId` (the common case); `None` when
/// `streams()` must be called (overridden, a field holding a list, or not a command class).
fn native_streams(
    py: Python<'_>,
    r: &Refs,
    command: &Bound<'_, PyAny>,
    fields: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Vec<Py<PyString>>>> {
    let Some(fields) = fields else {
        return Ok(None);
    };
    let Ok(fields) = fields.cast_exact::<PyTuple>() else {
        return Ok(None);
    };
    let sid = r.stream_id.bind(py);
    let mut out: Vec<Py<PyString>> = Vec::with_capacity(fields.len());
    for name in fields.iter() {
        let value = command.getattr(name.cast::<PyString>()?)?;
        if !value.get_type().is(sid) {
            return Ok(None);
        }
        let value = value.cast_into::<PyString>()?;
        let text = value.to_str()?;
        let mut seen = false;
        for o in &out {
            if o.bind(py).to_str()? == text {
                seen = true;
                break;
            }
        }
        if !seen {
            out.push(value.unbind());
        }
    }
    Ok(Some(out))
}

static RETRY_POLICY: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The last `RetryPolicy` whose `max_attempts` was read, and that value.
static LAST_POLICY: parking_lot::Mutex<Option<(PyObj, i64)>> = parking_lot::const_mutex(None);

/// `policy.max_attempts`. A `RetryPolicy` (exactly that class: frozen, with slots) cannot
/// change, so the last one's value is kept and read again only for another policy object.
fn max_attempts(py: Python<'_>, policy: &Bound<'_, PyAny>) -> PyResult<i64> {
    let exact = policy
        .get_type()
        .is(RETRY_POLICY.import(py, "eventcore.retry", "RetryPolicy")?);
    if exact {
        if let Some((last, n)) = &*LAST_POLICY.lock() {
            if last.is(policy) {
                return Ok(*n);
            }
        }
    }
    let n: i64 = policy.getattr(intern!(py, "max_attempts"))?.extract()?;
    if exact {
        // The one it replaces is dropped after the lock is released.
        let _old = LAST_POLICY.lock().replace((policy.clone().unbind(), n));
    }
    Ok(n)
}

/// What the machine reads of a command class once, on its first command (kept per class
/// in `Refs::facts` once the class is planned).
#[pyclass(frozen, module = "eventcore._core")]
pub(crate) struct ClassFacts {
    /// Whether the class overrides `Command.discover`.
    discovers: bool,
    /// Its `__name__`.
    name: PyObj,
    /// Whether it is a query-boundary command (`_query_boundary`).
    query: bool,
    /// Its stream fields when it keeps `Command.streams`, else `None` (see
    /// [`stream_fields`]).
    stream_fields: PyObj,
}

impl Machine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        command: PyObj,
        registry: PyObj,
        policy: PyObj,
        metadata: PyObj,
        key_text: Option<PyObj>,
        cache: Option<Py<StateCacheCore>>,
        snapshot_every: i64,
        warm_append_first: bool,
        keep_own: bool,
        trace: Option<(i64, Instant)>,
    ) -> Self {
        let keyed = cache.is_some() || snapshot_every != 0;
        Machine {
            command,
            registry,
            policy,
            metadata,
            key_text,
            cache,
            snapshot_every,
            warm_append_first,
            keep_own,
            cls: None,
            name: None,
            discovers: false,
            apply: std::sync::OnceLock::new(),
            decoders: None,
            encode: None,
            names: None,
            codec_encode: None,
            max_attempts: 0,
            keyed: None,
            declared: None,
            declared_v: Vec::new(),
            key: if keyed { Key::Unset } else { Key::None },
            ckey: None,
            by_streams: None,
            held: None,
            taken: None,
            in_use: None,
            hint: None,
            recheck: false,
            attempt: 0,
            failures: 0,
            unknown: false,
            unverified: false,
            warm: false,
            since: 0,
            cur: None,
            tailing: None,
            fold_base: None,
            snap_tail: None,
            disc: None,
            disc_extra: Vec::new(),
            disc_ctx: Ctx::Cold,
            events: None,
            found: Vec::new(),
            why: Why::Attempt,
            pending_error: None,
            pending_conflict: None,
            pending_result: None,
            pending_kept: None,
            metadata_bytes: None,
            wait: Wait::Start,
            kind: Kind::Other,
            trace: trace.map(|(base_ns, base)| Trace {
                items: Vec::new(),
                base_ns,
                base,
                attempt: 1,
                failure: "unavailable",
                effect_start: 0,
                read_end: None,
            }),
            q: None,
        }
    }

    /// `command.apply`, looked up on its first use: a cold command on new streams has
    /// nothing to fold and never needs it.
    pub(crate) fn apply_obj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(apply) = self.apply.get() {
            return Ok(apply.bind(py).clone());
        }
        let apply = self.command.bind(py).getattr(intern!(py, "apply"))?;
        let _ = self.apply.set(apply.clone().unbind());
        Ok(apply)
    }

    pub(crate) fn decoders_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.decoders.as_ref().expect("started").bind(py).clone()
    }

    pub(crate) fn registry_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.registry.bind(py).clone()
    }

    pub(crate) fn metadata_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.metadata.bind(py).clone()
    }

    /// Whether an error a store raised is one the machine decides about (a value).
    pub(crate) fn is_retried(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
        let r = refs(py)?;
        let v = err.value(py);
        Ok(v.is_instance(r.conflict.bind(py))?
            || v.is_instance(r.unavailable.bind(py))?
            || v.is_instance(r.duplicate.bind(py))?
            || v.is_instance(r.condition_failed.bind(py))?)
    }

    /// Mark the run over (an error ended it).
    pub(crate) fn end(&mut self) {
        self.wait = Wait::Finished;
    }

    /// Resume with `input` (the result of the effect asked for last); the next effect.
    pub(crate) fn resume(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let out = self.resume_inner(py, input);
        match &out {
            Err(_) => {
                self.wait = Wait::Finished;
                self.in_use = None; // a slot found and not put back: dropped
            }
            Ok(eff) => {
                if let Some(t) = self.trace.as_mut() {
                    let now = t.now();
                    match eff {
                        Eff::Append => {
                            if let Some(start) = t.read_end {
                                t.items.push(TraceItem::Phase(
                                    "handle_command",
                                    t.attempt,
                                    start,
                                    now,
                                ));
                            }
                        }
                        Eff::Sleep(d) => {
                            t.items.push(TraceItem::Retry(t.attempt, t.failure, *d));
                            t.attempt += 1;
                        }
                        _ => {}
                    }
                    t.read_end = None;
                    t.effect_start = now;
                }
                self.kind = match eff {
                    Eff::Fold { .. } | Eff::Tail { .. } | Eff::Query | Eff::Streams => Kind::Read,
                    Eff::Append => Kind::Write,
                    _ => Kind::Other,
                };
            }
        }
        out
    }

    fn resume_inner(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        if let Some(t) = self.trace.as_mut() {
            let now = t.now();
            match self.kind {
                Kind::Read => {
                    t.items.push(TraceItem::Phase(
                        "read_streams",
                        t.attempt,
                        t.effect_start,
                        now,
                    ));
                    t.read_end = Some(now);
                }
                Kind::Write => {
                    t.items.push(TraceItem::Phase(
                        "write_events",
                        t.attempt,
                        t.effect_start,
                        now,
                    ));
                }
                Kind::Other => {}
            }
            if let Input::Value(v) = &input {
                if v.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                    let r = refs(py)?;
                    t.failure = if v.is_instance(r.conflict.bind(py))?
                        || v.is_instance(r.condition_failed.bind(py))?
                    {
                        "conflict"
                    } else {
                        "unavailable"
                    };
                }
            }
        }
        self.kind = Kind::Other;
        match std::mem::replace(&mut self.wait, Wait::Finished) {
            Wait::Start => {
                self.setup(py)?;
                self.begin_attempt(py)
            }
            Wait::Lookup => self.on_lookup(py, input),
            Wait::Load => self.on_load(py, input),
            Wait::Tail => self.on_tail(py, input),
            Wait::ColdFold => self.on_cold_fold(py, input),
            Wait::DiscoverFold => self.on_discover_fold(py, input),
            Wait::VerifyFold => self.on_verify_fold(py, input),
            Wait::Append => self.on_append(py, input),
            Wait::UnknownLookup => self.on_unknown_lookup(py, input),
            Wait::Save => self.on_save(py),
            Wait::SleepThenAttempt => self.begin_attempt(py),
            Wait::QueryRead => self.on_query_read(py, input),
            Wait::QueryStreams => self.on_query_streams(py, input),
            Wait::SleepThenAppend => {
                self.attempt += 1;
                self.append()
            }
            Wait::Done | Wait::Finished => Err(PyStopIteration::new_err(())),
        }
    }

    /// The per-run facts: declared streams, the class's facts, the idempotency key.
    fn setup(&mut self, py: Python<'_>) -> PyResult<()> {
        let r = refs(py)?;
        let command = self.command.bind(py).clone();
        let cls = command.get_type();
        let known = r.facts.bind(py).get_item(&cls)?;
        let known = known.and_then(|f| f.cast_into_exact::<ClassFacts>().ok());
        let fields = match &known {
            Some(f) => Some(f.get().stream_fields.bind(py).clone()),
            None => stream_fields(py, r, &cls)?,
        };
        if let Some(streams) = native_streams(py, r, &command, fields.as_ref())? {
            self.declared_v = streams;
        } else {
            let declared = self.call_streams(py, r, &command)?;
            self.declared_v = stream_objs(&declared)?;
            self.declared = Some(declared.unbind());
        }
        if let Some(key) = &self.key_text {
            let keyed = r
                .keyed
                .bind(py)
                .call1((key.bind(py), &command, self.metadata.bind(py)))?;
            self.metadata = keyed.getattr(intern!(py, "metadata"))?.unbind();
            self.keyed = Some(keyed.unbind());
        }
        let facts = match known {
            Some(f) => f,
            None => {
                let discovers = !cls
                    .getattr(intern!(py, "discover"))?
                    .is(r.command_discover.bind(py));
                let query = match cls.getattr(intern!(py, "_query_boundary")) {
                    Ok(v) => v.is_truthy()?,
                    Err(_) => false,
                };
                let planned = fields.is_some();
                let f = Bound::new(
                    py,
                    ClassFacts {
                        discovers,
                        name: cls.getattr(intern!(py, "__name__"))?.unbind(),
                        query,
                        stream_fields: fields.map_or_else(|| py.None(), Bound::unbind),
                    },
                )?;
                if planned {
                    // Kept once the class is planned (its stream fields known).
                    r.facts.bind(py).set_item(&cls, &f)?;
                }
                f
            }
        };
        let facts = facts.get();
        let (discovers, name, query) = (facts.discovers, facts.name.clone_ref(py), facts.query);
        if query {
            // Its own cache entries (see `pipeline_query.rs`); no discovery, no snapshots.
            self.q = Some(Box::default());
            self.key = Key::None;
            self.snapshot_every = 0;
        }
        self.discovers = discovers && !query;
        self.name = Some(name);
        let registry = self.registry.bind(py);
        // An `EventRegistry` (exactly) keeps these in its instance dict (its class has no
        // descriptor of these names): three dict reads instead of four attribute lookups.
        // Not when `encode` was replaced on the instance: then that is what runs.
        if registry.get_type().is(r.event_registry.bind(py)) {
            // SAFETY: `registry` is a valid object (an `EventRegistry`, whose instances have
            // a `__dict__`); the result is a new reference, or NULL with an exception set.
            let attrs = unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    pyo3::ffi::PyObject_GenericGetDict(registry.as_ptr(), std::ptr::null_mut()),
                )?
            };
            if let Ok(attrs) = attrs.cast_exact::<PyDict>() {
                if !attrs.contains(intern!(py, "encode"))? {
                    let names = attrs.get_item(intern!(py, "_names"))?;
                    let codec = attrs.get_item(intern!(py, "codec"))?;
                    if let (Some(names), Some(codec)) = (names, codec) {
                        if let Ok(names) = names.cast_into_exact::<PyDict>() {
                            self.codec_encode =
                                Some(codec.getattr(intern!(py, "encode"))?.unbind());
                            self.names = Some(names.unbind());
                        }
                    }
                }
                self.decoders = attrs.get_item(intern!(py, "decoders"))?.map(Bound::unbind);
            }
        }
        if self.decoders.is_none() {
            self.decoders = Some(registry.getattr(intern!(py, "decoders"))?.unbind());
        }
        // With the fast path `registry.encode` is only looked up for an event it does not
        // take (then it raises the right error).
        if self.names.is_none() {
            self.encode = Some(registry.getattr(intern!(py, "encode"))?.unbind());
        }
        self.max_attempts = max_attempts(py, self.policy.bind(py))?;
        self.cls = Some(cls.into_any().unbind());
        Ok(())
    }

    /// `command.streams()`, or the error saying `command` is not a command.
    fn call_streams<'py>(
        &self,
        py: Python<'py>,
        r: &Refs,
        command: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match command.call_method0(intern!(py, "streams")) {
            Ok(d) => Ok(d),
            Err(e) if e.is_instance_of::<PyAttributeError>(py) => {
                if command.is_instance(r.command_cls.bind(py))? {
                    return Err(e);
                }
                let msg = format!("{} is not an eventcore Command", command.repr()?);
                Err(PyErr::from_value(r.command_error.bind(py).call1((msg,))?))
            }
            Err(e) => Err(e),
        }
    }

    /// The declared streams as a list (what `command.streams()` returned, or a new list
    /// when the machine read the stream fields itself).
    fn declared_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.declared {
            Some(d) => Ok(d.bind(py).clone()),
            None => Ok(streams_list(py, &self.declared_v)?.into_any()),
        }
    }

    fn begin_attempt(&mut self, py: Python<'_>) -> PyResult<Eff> {
        self.attempt += 1;
        if self.keyed.is_some() {
            return self.lookup_start(py, Why::Attempt);
        }
        self.attempt_body(py)
    }

    fn keyed<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.keyed.as_ref().expect("keyed").bind(py).clone()
    }

    fn lookup_start(&mut self, py: Python<'_>, why: Why) -> PyResult<Eff> {
        self.found.clear();
        self.why = why;
        self.lookup_next(py)
    }

    fn lookup_next(&mut self, py: Python<'_>) -> PyResult<Eff> {
        let start = self.found.len();
        let ids = self
            .keyed(py)
            .call_method1(intern!(py, "ids"), (start + LOOKUP_CHUNK,))?;
        let ids = ids.get_item(pyo3::types::PySlice::new(py, start as isize, isize::MAX, 1))?;
        self.wait = Wait::Lookup;
        Ok(Eff::Lookup(ids.unbind()))
    }

    fn on_lookup(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let r = refs(py)?;
        let value = match input {
            Input::Value(v) => v,
            _ => return Err(PyTypeError::new_err("unexpected result for a lookup")),
        };
        // Found: Ok(Some(result)); nothing written under the key: Ok(None); Err: a failure.
        let outcome: Result<Option<Bound<'_, PyAny>>, Bound<'_, PyAny>> =
            if let Ok(list) = value.cast_exact::<PyList>() {
                let n = list.len();
                for item in list.iter() {
                    self.found.push(item.unbind());
                }
                if n >= LOOKUP_CHUNK {
                    return self.lookup_next(py);
                }
                if self.found.is_empty() {
                    Ok(None)
                } else {
                    self.keyed(py)
                        .call_method1(intern!(py, "check"), (self.found[0].bind(py),))?;
                    let found = PyList::new(py, self.found.iter().map(|o| o.bind(py)))?;
                    let append = r.append_result_of.bind(py).call1((found,))?;
                    Ok(Some(
                        result(py, Outcome::Built(append.unbind()), 0)?.into_bound(py),
                    ))
                }
            } else {
                Err(value)
            };
        match self.why {
            Why::Attempt => match outcome {
                Ok(Some(result)) => self.done(result.unbind()),
                Err(failure) => self.failure(py, &failure),
                Ok(None) => {
                    let dup = self.keyed(py).getattr(intern!(py, "duplicate"))?;
                    if !dup.is_none() {
                        return Err(err_from(&dup));
                    }
                    self.attempt_body(py)
                }
            },
            Why::HandleFailed => match outcome {
                Ok(Some(result)) => self.done(result.unbind()),
                _ => Err(self
                    .pending_error
                    .take()
                    .unwrap_or_else(|| PyValueError::new_err("no error"))),
            },
            Why::Exhausted => match outcome {
                Ok(Some(result)) => self.done(result.unbind()),
                _ => {
                    let conflict = self.pending_conflict.take().expect("conflict");
                    Err(self.exhausted(py, conflict.bind(py))?)
                }
            },
        }
    }

    /// `ConcurrencyConflict(conflict.conflicts, attempts=attempt)`.
    fn exhausted(&self, py: Python<'_>, conflict: &Bound<'_, PyAny>) -> PyResult<PyErr> {
        let r = refs(py)?;
        if conflict.is_instance(r.condition_failed.bind(py))? {
            return self.condition_exhausted(py, conflict);
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "attempts"), self.attempt)?;
        let conflicts = conflict.getattr(intern!(py, "conflicts"))?;
        Ok(PyErr::from_value(
            r.conflict.bind(py).call((conflicts,), Some(&kwargs))?,
        ))
    }

    fn done(&mut self, result: PyObj) -> PyResult<Eff> {
        self.wait = Wait::Done;
        self.in_use = None; // a slot found and not put back: dropped
        Ok(Eff::Done(result))
    }

    fn key_val<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        match &self.key {
            Key::Val(k) => Some(k.bind(py).clone()),
            _ => None,
        }
    }

    /// Build the cache key (`_cache_key`, keyed per class) if not built yet.
    fn build_key(&mut self, py: Python<'_>) -> PyResult<()> {
        if !matches!(self.key, Key::Unset) {
            return Ok(());
        }
        let r = refs(py)?;
        let cls = self.cls.as_ref().expect("started").bind(py);
        let keyer = r.keyers.bind(py).get_item(cls)?;
        let key = if keyer.is_some_and(|k| k.is(r.streams_only.bind(py))) {
            let streams = PyTuple::new(py, self.declared_v.iter().map(|s| s.bind(py)))?;
            PyTuple::new(py, [cls.clone(), streams.into_any()])?.into_any()
        } else {
            let declared = self.declared_list(py)?;
            r.cache_key
                .bind(py)
                .call1((self.command.bind(py), cls, &declared))?
        };
        self.key = if key.is_none() {
            Key::None
        } else {
            Key::Val(key.unbind())
        };
        Ok(())
    }

    /// Whether the run's class is keyed by its streams alone (`STREAMS_ONLY`), found once.
    fn by_streams(&mut self, py: Python<'_>) -> PyResult<bool> {
        if let Some(yes) = self.by_streams {
            return Ok(yes);
        }
        let r = refs(py)?;
        let cls = self.cls.as_ref().expect("started").bind(py);
        let keyer = r.keyers.bind(py).get_item(cls)?;
        let yes = keyer.is_some_and(|k| k.is(r.streams_only.bind(py)));
        self.by_streams = Some(yes);
        Ok(yes)
    }

    /// Whether the run is cached (it has a key), without building the key of a class
    /// keyed by its streams alone (the cache finds its entry from the declared streams).
    fn cached(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.ckey.is_none() && matches!(self.key, Key::Unset) && self.by_streams(py)? {
            return Ok(true);
        }
        self.cache_key(py)
    }

    /// The run's key in the state cache, taken (built if not yet).
    fn take_ckey(&mut self, py: Python<'_>) -> PyResult<CacheKey> {
        self.cache_key(py)?;
        Ok(self.ckey.take().expect("key"))
    }

    /// Find the run's key in the state cache (`false`: not cached), once: a class keyed
    /// by its streams alone gets it from the declared streams, with no Python call; any
    /// other from its keyer's key object.
    fn cache_key(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.ckey.is_some() {
            return Ok(true);
        }
        if matches!(self.key, Key::Unset) && self.by_streams(py)? {
            let cls = self.cls.as_ref().expect("started").bind(py);
            self.ckey = Some(CacheKey::of_streams(py, cls, &self.declared_v)?);
            return Ok(true);
        }
        self.build_key(py)?;
        let Some(k) = self.key_val(py) else {
            return Ok(false);
        };
        self.ckey = Some(CacheKey::of_object(&k)?);
        Ok(true)
    }

    fn entry_of(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Entry> {
        let _ = self;
        if let Ok(entry) = obj.cast::<CacheEntry>() {
            return Ok(entry.borrow().entry(py));
        }
        Ok(Entry {
            f: Folded {
                state: obj.getattr(intern!(py, "state"))?.unbind(),
                versions: obj
                    .getattr(intern!(py, "versions"))?
                    .extract::<Vec<i64>>()?
                    .into(),
                streams: stream_objs(&obj.getattr(intern!(py, "streams"))?)?.into(),
                fold_from: obj.getattr(intern!(py, "fold_from"))?.extract()?,
                rounds: obj.getattr(intern!(py, "rounds"))?.extract()?,
            },
            since: obj.getattr(intern!(py, "since"))?.extract()?,
        })
    }

    fn attempt_body(&mut self, py: Python<'_>) -> PyResult<Eff> {
        self.unverified = false;
        if self.is_query() {
            return self.query_attempt(py);
        }
        let mut entry = self.held.take();
        if entry.is_none() && !matches!(self.key, Key::None) {
            if let Some(cache) = self.cache.as_ref().map(|c| c.clone_ref(py)) {
                let cache = cache.get();
                let found = if cache.is_empty() || !self.cached(py)? {
                    None
                } else if let Some(key) = self.ckey.as_ref() {
                    cache.find(py, key)?
                } else {
                    let cls = self.cls.as_ref().expect("started").bind(py);
                    cache.find_streams(py, cls, &self.declared_v)?
                };
                if let Some((at, found)) = found {
                    let held = Held::new(self.cache.as_ref().expect("cache").clone_ref(py), at);
                    self.in_use = Some(held);
                    self.taken = None;
                    match found.into_bound(py).cast_into::<CacheEntry>() {
                        Ok(obj) => {
                            // SAFETY: reads the reference count of an object this
                            // run holds. 2: its slot (in use) and this run, nobody else.
                            let alone = unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) } == 2;
                            entry = Some(if alone {
                                let e = obj.borrow_mut().take_entry(py);
                                self.taken = Some(obj.unbind());
                                e
                            } else {
                                obj.borrow().entry(py)
                            });
                        }
                        Err(other) => entry = Some(self.entry_of(py, &other.into_inner())?),
                    }
                }
                if !matches!(self.key, Key::None) {
                    let counter = if entry.is_none() {
                        &cache.misses
                    } else {
                        &cache.hits
                    };
                    counter.fetch_add(1, Relaxed);
                    let r = refs(py)?;
                    let observe = r.observe.bind(py);
                    let hooks = r.observe_vars.bind(py).get_item(intern!(py, "_hooks"))?;
                    if hooks.map_or(Ok(false), |h| h.is_truthy())? {
                        let what = if entry.is_none() { &r.miss } else { &r.hit };
                        observe.call_method1(
                            intern!(py, "report_state_cache"),
                            (what.bind(py), self.name.as_ref().expect("started").bind(py)),
                        )?;
                    }
                }
            }
            if entry.is_none() && self.snapshot_every != 0 {
                self.build_key(py)?;
                if let Some(k) = self.key_val(py) {
                    self.wait = Wait::Load;
                    return Ok(Eff::Load(k.unbind()));
                }
            }
        }
        self.with_entry(py, entry)
    }

    fn on_load(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let entry = self.loaded(py, input)?;
        self.with_entry(py, entry)
    }

    fn with_entry(&mut self, py: Python<'_>, entry: Option<Entry>) -> PyResult<Eff> {
        let Some(e) = entry else {
            return self.cold_fold(py);
        };
        if self.warm_append_first && self.hint.is_none() && !self.recheck {
            self.unverified = true;
            self.recheck = false;
            if let Some(tail) = self.snap_tail.take() {
                // The rows read with the snapshot: folded before deciding (no read).
                self.tailing = Some(e);
                self.wait = Wait::Tail;
                return Ok(Eff::Tail { hint: tail });
            }
            let state = e.f.state.clone_ref(py);
            let versions = e.f.versions.clone();
            return self.warm_result(py, e, state, versions);
        }
        let hint = self
            .hint
            .take()
            .or_else(|| self.snap_tail.take())
            .unwrap_or_else(|| py.None());
        self.recheck = false;
        self.tailing = Some(e);
        self.wait = Wait::Tail;
        Ok(Eff::Tail { hint })
    }

    fn cold_fold(&mut self, py: Python<'_>) -> PyResult<Eff> {
        self.fold_declared(py, Wait::ColdFold)
    }

    /// A fold of every declared stream from `initial_state()`, resumed in `wait` (the
    /// cold fold, and verify mode's full fold).
    fn fold_declared(&mut self, py: Python<'_>, wait: Wait) -> PyResult<Eff> {
        let state = self
            .command
            .bind(py)
            .call_method0(intern!(py, "initial_state"))?;
        self.wait = wait;
        self.fold_base = Some(state.clone().unbind());
        Ok(Eff::Fold {
            streams: cl_all(py, &self.declared_v),
            list: self.declared.as_ref().map(|d| cl(py, d)),
            state: state.unbind(),
        })
    }

    /// What a fold of every declared stream gives, before any discovery round.
    fn declared_folded(
        &self,
        py: Python<'_>,
        state: Bound<'_, PyAny>,
        versions: Vec<i64>,
    ) -> Folded {
        Folded {
            state: state.unbind(),
            versions: versions.into(),
            streams: cl_all(py, &self.declared_v),
            fold_from: 0,
            rounds: 0,
        }
    }

    fn on_tail(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let e = self.tailing.take().expect("tailing");
        if let Input::Unchanged = input {
            // Nothing to fold: the entry's state and versions as they are (no copies).
            let since = e.since;
            return self.warm_folded(py, e.f, since);
        }
        if let Input::Value(v) = &input {
            if v.is_none() {
                if self.unverified {
                    // A snapshot's tail that cannot extend it: decide on the snapshot as
                    // loaded (the append's expected versions catch what it misses).
                    let state = e.f.state.clone_ref(py);
                    let versions = e.f.versions.clone();
                    return self.warm_result(py, e, state, versions);
                }
                return self.cold_fold(py);
            }
        }
        let base = e.f.state.clone_ref(py);
        match self.fold_result(py, input, Some(base))? {
            Ok((state, versions)) => self.warm_result(py, e, state.unbind(), versions.into()),
            Err(other) => self.failure(py, &other),
        }
    }

    fn warm_result(
        &mut self,
        py: Python<'_>,
        e: Entry,
        state: PyObj,
        versions: FoldVersions,
    ) -> PyResult<Eff> {
        let since = logic::since_after_tail(e.since, &e.f.versions, &versions);
        let f = Folded {
            state,
            versions,
            streams: e.f.streams,
            fold_from: e.f.fold_from,
            rounds: e.f.rounds,
        };
        self.warm_folded(py, f, since)
    }

    /// Decide on a cached state caught up with its streams (`since`: the events folded
    /// into it since its last snapshot).
    fn warm_folded(&mut self, py: Python<'_>, f: Folded, since: i64) -> PyResult<Eff> {
        self.since = if self.snapshot_every != 0 { since } else { 0 };
        self.warm = true;
        if self.discovers {
            return self.discover(py, f, Ctx::Warm);
        }
        self.after_warm(py, f)
    }

    fn after_warm(&mut self, py: Python<'_>, f: Folded) -> PyResult<Eff> {
        let verify = match &self.cache {
            Some(c) if !self.unverified => c.get().verify.load(Relaxed),
            _ => false,
        };
        if verify {
            self.cur = Some(f);
            return self.fold_declared(py, Wait::VerifyFold);
        }
        self.decide(py, f)
    }

    fn on_verify_fold(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let base = self.fold_base.take();
        match self.fold_result(py, input, base)? {
            Ok((state, versions)) => {
                let full = self.declared_folded(py, state, versions);
                if self.discovers {
                    return self.discover(py, full, Ctx::Verify);
                }
                self.verify_compare(py, full)
            }
            Err(_) => {
                let cur = self.cur.take().expect("cur");
                self.decide(py, cur)
            }
        }
    }

    fn verify_compare(&mut self, py: Python<'_>, full: Folded) -> PyResult<Eff> {
        let r = refs(py)?;
        let cur = self.cur.take().expect("cur");
        let same_streams = full.streams.len() == cur.streams.len()
            && full
                .streams
                .iter()
                .zip(&cur.streams)
                .map(|(a, b)| a.bind(py).as_any().eq(b.bind(py)))
                .collect::<PyResult<Vec<bool>>>()?
                .into_iter()
                .all(|x| x);
        if full.versions == cur.versions
            && same_streams
            && r.compares_by_value
                .bind(py)
                .call1((cur.state.bind(py),))?
                .is_truthy()?
            && full.state.bind(py).ne(cur.state.bind(py))?
        {
            return Err(PyErr::from_value(r.state_cache_mismatch.bind(py).call1(
                (
                    self.name.as_ref().expect("started").bind(py),
                    cur.state.bind(py),
                    full.state.bind(py),
                ),
            )?));
        }
        self.decide(py, cur)
    }

    fn on_cold_fold(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let base = self.fold_base.take();
        match self.fold_result(py, input, base)? {
            Ok((state, versions)) => {
                self.warm = false;
                let f = self.declared_folded(py, state, versions);
                if self.discovers {
                    return self.discover(py, f, Ctx::Cold);
                }
                self.decide(py, f)
            }
            Err(other) => self.failure(py, &other),
        }
    }

    /// One discovery round: ask for more streams; fold the new ones, or finish.
    fn discover(&mut self, py: Python<'_>, mut f: Folded, ctx: Ctx) -> PyResult<Eff> {
        let r = refs(py)?;
        let command = self.command.bind(py);
        let mut seen: HashSet<String> = HashSet::with_capacity(f.streams.len() + 4);
        for s in &f.streams {
            seen.insert(s.bind(py).to_str()?.to_owned());
        }
        let named = command.call_method1(intern!(py, "discover"), (f.state.bind(py),))?;
        let stream_id = r.stream_id.bind(py);
        let mut extra: Vec<Py<PyString>> = Vec::new();
        for item in named.try_iter()? {
            let sid = stream_id.call1((item?,))?;
            let sid = sid
                .cast_into::<PyString>()
                .map_err(|_| PyTypeError::new_err("StreamId must be a str"))?;
            let text = sid.to_str()?.to_owned();
            if seen.insert(text) {
                extra.push(sid.unbind());
            }
        }
        if extra.is_empty() {
            return match ctx {
                Ctx::Warm => self.after_warm(py, f),
                Ctx::Cold => self.decide(py, f),
                Ctx::Verify => self.verify_compare(py, f),
            };
        }
        let max_rounds: i64 = command
            .getattr(intern!(py, "max_discovery_rounds"))?
            .extract()?;
        if f.rounds == max_rounds {
            let msg = format!(
                "{} kept discovering streams after {} rounds (last: {})",
                self.name.as_ref().expect("started").bind(py).str()?,
                f.rounds,
                streams_list(py, &extra)?.repr()?
            );
            return Err(PyErr::from_value(r.command_error.bind(py).call1((msg,))?));
        }
        f.rounds += 1;
        let state = f.state.clone_ref(py);
        let streams = cl_all(py, &extra);
        self.disc = Some(f);
        self.disc_extra = extra;
        self.disc_ctx = ctx;
        self.wait = Wait::DiscoverFold;
        self.fold_base = Some(state.clone_ref(py));
        Ok(Eff::Fold {
            streams,
            list: None,
            state,
        })
    }

    fn on_discover_fold(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let mut f = self.disc.take().expect("discovering");
        let extra = std::mem::take(&mut self.disc_extra);
        let ctx = self.disc_ctx;
        let base = self.fold_base.take();
        match self.fold_result(py, input, base)? {
            Ok((state, more)) => {
                f.state = state.unbind();
                f.fold_from = f.streams.len();
                f.streams.extend(extra);
                f.versions.extend(more);
                self.discover(py, f, ctx)
            }
            Err(other) => match ctx {
                Ctx::Verify => {
                    let cur = self.cur.take().expect("cur");
                    self.decide(py, cur)
                }
                _ => self.failure(py, &other),
            },
        }
    }

    /// A store failure (or what a read came back with instead of its data): wait and try
    /// again, or raise it when the policy is used up.
    fn failure(&mut self, py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<Eff> {
        self.failures += 1;
        let delay = self.unavailable(py, result)?;
        let delay = self.jittered(py, delay)?;
        self.wait = Wait::SleepThenAttempt;
        Ok(Eff::Sleep(delay))
    }

    fn jittered(&self, py: Python<'_>, delay: f64) -> PyResult<f64> {
        self.policy
            .bind(py)
            .call_method1(intern!(py, "jittered"), (delay,))?
            .extract()
    }

    /// The un-jittered wait after store failure number `failures`; raises the failure
    /// when the policy is used up (or a non-failure value with a clear error).
    fn unavailable(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<f64> {
        let r = refs(py)?;
        if !result.is_instance(r.unavailable.bind(py))? {
            r.not_a_result.bind(py).call1((result,))?;
            return Err(PyTypeError::new_err(format!(
                "unexpected result for FOLD or LOOKUP: {}",
                result.repr()?
            )));
        }
        let policy = self.policy.bind(py);
        if !policy
            .getattr(intern!(py, "retry_unavailable"))?
            .is_truthy()?
        {
            return Err(err_from(result));
        }
        let timeout: f64 = policy
            .getattr(intern!(py, "unavailable_timeout"))?
            .extract()?;
        let wait = logic::unavailable_wait(self.failures, timeout, |n| {
            policy
                .call_method1(intern!(py, "unavailable_delay"), (n,))?
                .extract::<f64>()
        })?;
        wait.ok_or_else(|| err_from(result))
    }

    /// Run `handle` on `f`'s state and encode its events; then the append.
    fn decide(&mut self, py: Python<'_>, f: Folded) -> PyResult<Eff> {
        let command = self.command.bind(py).clone();
        let handle = intern!(py, "handle");
        let emitted = match crate::py_call::call_method_1(&command, handle, f.state.bind(py)) {
            Ok(e) => e,
            Err(err) => return self.handle_failed(py, f, err),
        };
        match self.encode_events(py, &f, &emitted) {
            Ok(events) if self.is_query() => {
                if let Err(err) = self.query_tags(py, &emitted) {
                    return self.handle_failed(py, f, err);
                }
                if events.is_empty() {
                    if self.unverified {
                        // Nothing to append: no condition would check the state. Read.
                        return self.query_recheck(py, f);
                    }
                    return self.query_nothing(py, f);
                }
                self.events = Some(events);
                self.cur = Some(f);
                self.append()
            }
            Ok(events) => {
                self.events = Some(events);
                self.cur = Some(f);
                self.append()
            }
            Err(err) => {
                let r = refs(py)?;
                let err = PyErr::from_value(r.handle_result_error.bind(py).call1((
                    &command,
                    &emitted,
                    err.value(py),
                ))?);
                self.handle_failed(py, f, err)
            }
        }
    }

    fn encode_events<'py>(
        &self,
        py: Python<'py>,
        f: &Folded,
        emitted: &Bound<'py, PyAny>,
    ) -> PyResult<NewEvents> {
        if !emitted.is_truthy()? {
            return Ok(NewEvents(Vec::new()));
        }
        let n = emitted.len()?;
        let ids: uuid7::Ids = match &self.keyed {
            None => uuid7::next_n(n),
            Some(k) => k
                .bind(py)
                .call_method1(intern!(py, "ids"), (n,))?
                .extract::<Vec<u128>>()?
                .into(),
        };
        let known: SmallVec<[&str; 4]> = f
            .streams
            .iter()
            .map(|s| s.bind(py).to_str())
            .collect::<PyResult<_>>()?;
        let encode = self.encode.as_ref().map(|e| e.bind(py));
        let mut events = Vec::with_capacity(n);
        let mut ids = ids.into_iter();
        // A list (what `handle` returns as a rule) is read by index, as its iterator would
        // (the length checked at each step), without making the iterator.
        let list = emitted.cast_exact::<PyList>().ok();
        let mut iter = match list {
            Some(_) => None,
            None => Some(emitted.try_iter()?),
        };
        let mut index = 0usize;
        let items = std::iter::from_fn(|| match list {
            Some(l) if index < l.len() => {
                index += 1;
                Some(l.get_item(index - 1))
            }
            Some(_) => None,
            None => iter.as_mut().and_then(Iterator::next),
        });
        for item in items {
            let item = item?;
            let (stream_id, event) = pair(&item)?;
            let Some(id) = ids.next() else { break };
            let declared = match stream_id.cast::<PyString>() {
                // A query command may write any stream: its query keeps it consistent.
                Ok(_) if self.q.is_some() => true,
                Ok(s) => logic::is_declared(&known, s.to_str()?),
                Err(_) => streams_list(py, &f.streams)?.contains(&stream_id)?,
            };
            if !declared {
                let r = refs(py)?;
                let hint = r
                    .stream_hint
                    .bind(py)
                    .call1((self.command.bind(py), &stream_id))?;
                return Err(PyErr::from_value(r.undeclared.bind(py).call1((
                    &stream_id,
                    self.name.as_ref().expect("started").bind(py),
                    hint,
                ))?));
            }
            let (name, payload) = self.encode_one(py, encode, &event)?;
            events.push((stream_id.unbind(), name.unbind(), payload.unbind(), id));
        }
        Ok(NewEvents(events))
    }

    /// `registry.encode(event)`: `(type name, payload)`. For an `EventRegistry` the name
    /// map and the codec are used directly; anything unusual (an unregistered class, a
    /// codec error) goes through `registry.encode`, which raises the right error.
    fn encode_one<'py>(
        &self,
        py: Python<'py>,
        encode: Option<&Bound<'py, PyAny>>,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        if let (Some(names), Some(codec_encode)) = (&self.names, &self.codec_encode) {
            if let Some(name) = names.bind(py).get_item(event.get_type())? {
                if let Ok(payload) = crate::py_call::call_1(codec_encode.bind(py), event) {
                    return Ok((name, payload));
                }
            }
        }
        match encode {
            Some(encode) => pair(&encode.call1((event,))?),
            None => pair(
                &self
                    .registry
                    .bind(py)
                    .call_method1(intern!(py, "encode"), (event,))?,
            ),
        }
    }

    fn handle_failed(&mut self, py: Python<'_>, f: Folded, err: PyErr) -> PyResult<Eff> {
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        if self.unverified && self.is_query() {
            return self.query_recheck(py, f);
        }
        if self.unverified {
            // Decided on a cached state without reading its tail: read it, decide again.
            self.held = Some(Entry {
                f,
                since: self.since.max(0),
            });
            self.recheck = true;
            self.attempt -= 1;
            return self.begin_attempt(py);
        }
        if self.keyed.is_some() {
            self.pending_error = Some(err);
            return self.lookup_start(py, Why::HandleFailed);
        }
        Err(err)
    }

    /// The decided state's `(stream, version)` pairs: the append's expected versions (a
    /// list for a Python store; `drive` hands them to the Rust store without one).
    pub(crate) fn expected_pairs(&self) -> (&[Py<PyString>], &[i64]) {
        let cur = self.cur.as_ref().expect("decided");
        (&cur.streams, &cur.versions)
    }

    /// The expected versions as (stream, version) pairs for the native store's appends.
    pub(crate) fn expected_args<'py>(
        &self,
        py: Python<'py>,
    ) -> SmallVec<[(Bound<'py, PyAny>, i64); 4]> {
        let (streams, versions) = self.expected_pairs();
        streams
            .iter()
            .zip(versions)
            .map(|(s, v)| (s.bind(py).clone().into_any(), *v))
            .collect()
    }

    fn expected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (streams, versions) = self.expected_pairs();
        PyList::new(
            py,
            streams
                .iter()
                .zip(versions)
                .map(|(s, v)| (s.bind(py), *v).into_pyobject(py))
                .collect::<PyResult<Vec<_>>>()?,
        )
    }

    fn append(&mut self) -> PyResult<Eff> {
        self.wait = Wait::Append;
        Ok(Eff::Append)
    }

    fn event_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.events.as_ref().expect("events").ids(py)
    }

    fn on_append(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let r = refs(py)?;
        let result = match input {
            Input::Appended(first, versions) => {
                let events = self.events.as_ref().expect("events").clone_ref(py);
                return self.appended(py, Outcome::Raw(first, versions, events));
            }
            Input::Value(v) => v,
            Input::Folded(..) | Input::Queried(..) | Input::Unchanged => {
                return Err(PyTypeError::new_err("unexpected fold result for Append"))
            }
        };
        if result.get_type().is(r.append_result.bind(py)) {
            return self.appended(py, Outcome::Built(result.unbind()));
        }
        if result.is_instance(r.conflict.bind(py))?
            || result.is_instance(r.condition_failed.bind(py))?
        {
            if self.unknown {
                // A send whose reply was lost may still have committed, making this resend
                // conflict: if its events are stored, that write is this command's outcome.
                self.pending_conflict = Some(result.unbind());
                self.wait = Wait::UnknownLookup;
                return Ok(Eff::Lookup(self.event_ids(py)?.into_any().unbind()));
            }
            return self.conflict(py, &result);
        }
        if result.is_instance(r.unavailable.bind(py))? {
            self.unknown = self.unknown || result.is_instance(r.outcome_unknown.bind(py))?;
            self.failures += 1;
            let delay = match self.unavailable(py, &result) {
                Ok(d) => d,
                Err(last) => {
                    let lastv = last.value(py);
                    if self.unknown && !lastv.is_instance(r.outcome_unknown.bind(py))? {
                        let msg = format!(
                            "the outcome of an append is unknown (a reply was lost), and then: {}",
                            lastv.str()?
                        );
                        return Err(error_with_cause(
                            r.outcome_unknown.bind(py),
                            (msg, self.event_ids(py)?),
                            Some(lastv.as_any()),
                        ));
                    }
                    return Err(last);
                }
            };
            let delay = self.jittered(py, delay)?;
            self.wait = Wait::SleepThenAppend;
            return Ok(Eff::Sleep(delay));
        }
        if self.keyed.is_some() && result.is_instance(r.duplicate.bind(py))? {
            let keyed = self.keyed(py);
            if !keyed.getattr(intern!(py, "duplicate"))?.is_truthy()? {
                // Another caller with the same key wrote first: the next attempt's lookup
                // finds its outcome, which is the one to return.
                keyed.setattr(intern!(py, "duplicate"), &result)?;
                return self.begin_attempt(py);
            }
        }
        if result.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Err(err_from(&result));
        }
        Err(PyTypeError::new_err(format!(
            "unexpected result for Append: {}",
            result.repr()?
        )))
    }

    /// The append succeeded: keep the state if worth it, then the result.
    fn appended(&mut self, py: Python<'_>, outcome: Outcome) -> PyResult<Eff> {
        if self.is_query() {
            return self.query_appended(py, outcome);
        }
        if !matches!(self.key, Key::None) {
            let cur = self.cur.as_ref().expect("decided");
            if !self.warm {
                self.since = cur.versions.iter().sum();
            }
            let n_events = self.events.as_ref().expect("events").len() as i64;
            let min_events = self
                .cache
                .as_ref()
                .map(|c| c.get().min_events.load(Relaxed));
            if self.warm
                || min_events.is_some_and(|m| self.since >= m)
                || (self.snapshot_every != 0 && self.since + n_events >= self.snapshot_every)
            {
                let cached = self.cache.is_none() || self.cached(py)?;
                if self.snapshot_every != 0 {
                    self.build_key(py)?;
                }
                if cached && !matches!(self.key, Key::None) {
                    return self.keep(py, outcome);
                }
            }
        }
        let res = result(py, outcome, self.attempt)?;
        self.done(res)
    }

    fn on_unknown_lookup(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Eff> {
        let r = refs(py)?;
        let Input::Value(found) = input else {
            return Err(PyTypeError::new_err("unexpected result for a lookup"));
        };
        let Ok(list) = found.cast_exact::<PyList>() else {
            let msg = format!(
                "an append's reply was lost and checking for it failed: {}",
                found.str()?
            );
            return Err(error_with_cause(
                r.outcome_unknown.bind(py),
                (msg, self.event_ids(py)?),
                Some(&found),
            ));
        };
        if !list.is_empty() {
            let append = r.append_result_of.bind(py).call1((list,))?;
            let res = result(py, Outcome::Built(append.unbind()), self.attempt)?;
            return self.done(res);
        }
        self.unknown = false; // not written: the next run's events are new
        let conflict = self.pending_conflict.take().expect("conflict");
        self.conflict(py, conflict.bind(py))
    }

    fn conflict(&mut self, py: Python<'_>, conflict: &Bound<'_, PyAny>) -> PyResult<Eff> {
        if self.unverified {
            // Decided on a cached state nobody read: this conflict told what the read
            // would have, so it costs no attempt (the next one folds what it says).
            self.attempt -= 1;
        }
        let runs = logic::runs(self.attempt, self.failures);
        if runs >= self.max_attempts {
            if self.keyed.is_some() {
                self.pending_conflict = Some(conflict.clone().unbind());
                return self.lookup_start(py, Why::Exhausted);
            }
            return Err(self.exhausted(py, conflict)?);
        }
        if self.is_query() {
            self.query_retry(py, conflict)?;
        }
        if !matches!(self.key, Key::None) {
            // The retry folds only what the conflict says is new.
            let f = self.cur.take().expect("decided");
            self.held = Some(Entry {
                f,
                since: if self.warm { self.since } else { 0 },
            });
            self.hint = Some(conflict.clone().unbind());
        }
        let delay: f64 = self
            .policy
            .bind(py)
            .call_method1(intern!(py, "delay"), (runs,))?
            .extract()?;
        self.wait = Wait::SleepThenAttempt;
        Ok(Eff::Sleep(delay))
    }

    /// Keep the state decided on after its append: a snapshot if due, then the cache.
    fn keep(&mut self, py: Python<'_>, result: Outcome) -> PyResult<Eff> {
        let mut cur = self.cur.take().expect("decided");
        if self.warm && self.in_use.is_none() {
            // (A slot in use keeps its key: the entry's streams are already its objects.)
            self.share_declared(py, &mut cur.streams)?;
        }
        let decided = Entry {
            f: cur,
            since: self.since,
        };
        // Put back as decided on: the next command's TAIL folds this one's own events.
        // Unless the next one appends on these versions without reading
        // (`warm_append_first`): then they must include them; or `keep_own` folds them now
        // (the in-memory store, where the fold costs the same now and a later read of
        // nothing new costs less).
        let kept = if self.warm_append_first || self.keep_own {
            self.with_own_events(py, decided)?
        } else {
            Some(decided)
        };
        self.pending_result = Some(result);
        let Some(kept) = kept else {
            return self.finish_keep(py, None);
        };
        let since = kept.since;
        let kept = match self.taken.take() {
            // Found with nobody else referring to it, and still so: only this run and its
            // slot refer to it (not a snapshot store, not a caller's copy).
            // SAFETY: reads the reference count of an object this run holds.
            Some(obj) if unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) } <= 2 => {
                obj.borrow_mut(py).e = kept;
                obj.into_bound(py).into_any()
            }
            _ => entry_object(py, kept)?,
        };
        if self.snapshot_every != 0 && since >= self.snapshot_every {
            let key = self.key_val(py).expect("key");
            self.pending_kept = Some(kept.clone().unbind());
            self.wait = Wait::Save;
            return Ok(Eff::Save(key.unbind(), kept.unbind()));
        }
        self.finish_keep(py, Some(&kept))
    }

    /// A state found in the cache holds the stream objects of the command that kept it,
    /// while its new key holds this run's (equal text): the declared streams' objects are
    /// replaced by this run's, so a kept entry and its key share one object per stream
    /// (else every hit leaves one more object alive per entry).
    fn share_declared(&self, py: Python<'_>, streams: &mut [Py<PyString>]) -> PyResult<()> {
        for (slot, mine) in streams.iter_mut().zip(&self.declared_v) {
            if !slot.is(mine) && slot.bind(py).to_str()? == mine.bind(py).to_str()? {
                *slot = mine.clone_ref(py);
            }
        }
        Ok(())
    }

    /// The entry a full fold after the append would give: `entry`'s state with the
    /// command's own events folded (decoded from their payloads, in append order), the
    /// versions moved past them; `None` when that is not certain (an own event in a stream
    /// of an earlier discovery round, or `apply` failing on it).
    fn with_own_events(&self, py: Python<'_>, mut entry: Entry) -> PyResult<Option<Entry>> {
        let events = self.events.as_ref().expect("events");
        if events.is_empty() {
            return Ok(Some(entry));
        }
        // Each event's stream among the entry's: the same object (the command's own stream
        // field, which the entry shares after `share_declared`), else equal text.
        let mut found: SmallVec<[Option<usize>; 4]> = SmallVec::with_capacity(events.len());
        for (stream, ..) in &events.0 {
            let streams = &entry.f.streams;
            let at = match streams.iter().position(|s| s.as_ptr() == stream.as_ptr()) {
                Some(i) => Some(i),
                None => {
                    let Ok(text) = stream.bind(py).cast::<PyString>() else {
                        return Ok(None);
                    };
                    let text = text.to_str()?;
                    let mut at = None;
                    for (i, s) in streams.iter().enumerate() {
                        if s.bind(py).to_str()? == text {
                            at = Some(i);
                            break;
                        }
                    }
                    at
                }
            };
            found.push(at);
        }
        let Some(slots) = logic::own_event_slots(entry.f.streams.len(), entry.f.fold_from, found)
        else {
            return Ok(None);
        };
        logic::advance_versions(&mut entry.f.versions, &slots);
        // What a fold step does (`fold::Folder`), without its error mapping (any error
        // only means the state is not kept) and with `apply` called as a method, not
        // looked up and bound for one call (unless a fold of this run already did).
        let command = self.command.bind(py);
        let apply = self.apply.get().map(|a| a.bind(py));
        let decoders = self.decoders_obj(py);
        let mut last: Option<(&PyObj, Bound<'_, PyAny>)> = None;
        let mut state = entry.f.state.bind(py).clone();
        for ((_, name, payload, _), slot) in events.0.iter().zip(&slots) {
            let step = (|| {
                let decoder = match &last {
                    Some((n, d)) if n.is(name) => d.clone(),
                    _ => {
                        let d = match decoders.cast::<PyDict>() {
                            Ok(dict) => dict.get_item(name)?,
                            Err(_) => Some(decoders.get_item(name)?),
                        };
                        let Some(d) = d.filter(|d| !d.is_none()) else {
                            return Ok(None); // no decoder: the full fold raises it
                        };
                        last = Some((name, d.clone()));
                        d
                    }
                };
                let event = crate::py_call::call_1(&decoder, payload.bind(py))?;
                let stream = entry.f.streams[*slot].bind(py).as_any();
                match apply {
                    Some(apply) => crate::py_call::call_3(apply, &state, &event, stream),
                    None => crate::py_call::call_method_3(
                        command,
                        intern!(py, "apply"),
                        &state,
                        &event,
                        stream,
                    ),
                }
                .map(Some)
            })();
            match step {
                Ok(Some(next)) => state = next,
                Ok(None) => return Ok(None),
                // The next command folds in full, and meets the same error there.
                Err(err) if err.is_instance_of::<PyException>(py) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
        entry.f.state = state.unbind();
        entry.since += events.len() as i64;
        Ok(Some(entry))
    }

    fn on_save(&mut self, py: Python<'_>) -> PyResult<Eff> {
        let kept = self.pending_kept.take().expect("kept");
        let kept = kept.bind(py);
        kept.setattr(intern!(py, "since"), 0)?;
        self.finish_keep(py, Some(kept))
    }

    fn finish_keep(&mut self, py: Python<'_>, kept: Option<&Bound<'_, PyAny>>) -> PyResult<Eff> {
        if let (Some(cache), Some(kept)) = (self.cache.as_ref().map(|c| c.clone_ref(py)), kept) {
            // StateCache.put, inlined: the newest entry last; evict past the bound. A slot
            // found in use gets its entry back in place.
            let len = match self.in_use.take() {
                Some(held) => held.put_back(py, || self.take_ckey(py), kept.clone().unbind())?,
                None => cache
                    .get()
                    .put(py, self.take_ckey(py)?, kept.clone().unbind())?,
            };
            let max = cache.get().max_entries.load(Relaxed);
            if len as i64 > max {
                cache.bind(py).call_method1(
                    intern!(py, "_evict"),
                    (self.name.as_ref().expect("started").bind(py),),
                )?;
            }
        }
        let outcome = self.pending_result.take().expect("result");
        let res = result(py, outcome, self.attempt)?;
        self.done(res)
    }

    /// The effect as the tuple `send` returns.
    pub(crate) fn effect_tuple<'py>(
        &self,
        py: Python<'py>,
        eff: Eff,
    ) -> PyResult<Bound<'py, PyTuple>> {
        match eff {
            eff @ (Eff::Fold { .. } | Eff::Tail { .. }) => self.fold_tuple(py, eff),
            Eff::Append if self.q.is_some() => self.query_append_tuple(py),
            Eff::Append => (
                intern!(py, "append"),
                self.events.as_ref().expect("events").list(py)?,
                self.expected(py)?,
                self.metadata.bind(py),
            )
                .into_pyobject(py),
            Eff::Lookup(ids) => (intern!(py, "lookup"), ids).into_pyobject(py),
            Eff::Query => {
                let q = self.q.as_ref().expect("query run");
                (intern!(py, "query"), q.query_obj(py), q.after_pos()).into_pyobject(py)
            }
            Eff::Streams => (intern!(py, "streams"), self.declared_list(py)?).into_pyobject(py),
            Eff::Load(key) => (intern!(py, "load"), self.command.bind(py), key).into_pyobject(py),
            Eff::Save(key, entry) => {
                (intern!(py, "save"), self.command.bind(py), key, entry).into_pyobject(py)
            }
            Eff::Sleep(d) => (intern!(py, "sleep"), d).into_pyobject(py),
            Eff::Done(result) => (intern!(py, "done"), result).into_pyobject(py),
        }
    }

    /// The trace as a list of tuples (see `CommandRun.trace`), or `None` without tracing.
    fn trace_list<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(t) = &self.trace else {
            return Ok(None);
        };
        let list = PyList::empty(py);
        for item in &t.items {
            match item {
                TraceItem::Phase(name, attempt, start, end) => {
                    list.append((*name, *attempt, *start, *end))?
                }
                TraceItem::Retry(attempt, reason, delay) => {
                    list.append(("retry", *attempt, *reason, *delay))?
                }
            }
        }
        Ok(Some(list))
    }
}

/// An `ExecutionResult` object.
fn result(py: Python<'_>, outcome: Outcome, attempts: i64) -> PyResult<PyObj> {
    Ok(Py::new(py, ExecutionResult::from_outcome(outcome, attempts))?.into_any())
}

/// The two items of a pair (a 2-tuple fast, any 2-item iterable like Python unpacking).
fn pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = item.cast_exact::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    }
    let iter = match item.try_iter() {
        Ok(i) => i,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "cannot unpack non-iterable {} object",
                item.get_type().name()?
            )))
        }
    };
    let mut got: Vec<Bound<'py, PyAny>> = Vec::with_capacity(2);
    for x in iter {
        got.push(x?);
        if got.len() > 2 {
            return Err(PyValueError::new_err(
                "too many values to unpack (expected 2)",
            ));
        }
    }
    if got.len() < 2 {
        return Err(PyValueError::new_err(format!(
            "not enough values to unpack (expected 2, got {})",
            got.len()
        )));
    }
    let second = got.pop().expect("two");
    let first = got.pop().expect("two");
    Ok((first, second))
}

/// One command run: the machine, driven by `send`/`throw` or by `drive` (see the module
/// docs).
#[pyclass(module = "eventcore._core")]
pub struct CommandRun {
    pub(crate) m: Machine,
}

#[pymethods]
impl CommandRun {
    /// A run of `command` (see `eventcore._pipeline.run_command`); nothing happens until
    /// the first `send(None)` (or `drive`).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (command, registry, policy, metadata, idempotency_key = None, cache = None, snapshot_every = 0, warm_append_first = false, trace = false, keep_own_events = false))]
    fn new(
        py: Python<'_>,
        command: PyObj,
        registry: PyObj,
        policy: PyObj,
        metadata: PyObj,
        idempotency_key: Option<PyObj>,
        cache: Option<PyObj>,
        snapshot_every: i64,
        warm_append_first: bool,
        trace: bool,
        keep_own_events: bool,
    ) -> PyResult<Self> {
        let clock = if trace {
            let r = refs(py)?;
            let ns: i64 = r.perf_counter_ns.bind(py).call0()?.extract()?;
            Some((ns, Instant::now()))
        } else {
            None
        };
        let idempotency_key = idempotency_key.filter(|k| !k.is_none(py));
        let cache = match cache.filter(|c| !c.is_none(py)) {
            Some(c) => Some(
                c.bind(py)
                    .cast::<StateCacheCore>()
                    .map_err(|_| PyTypeError::new_err("cache must be a StateCache"))?
                    .clone()
                    .unbind(),
            ),
            None => None,
        };
        Ok(CommandRun {
            m: Machine::new(
                command,
                registry,
                policy,
                metadata,
                idempotency_key,
                cache,
                snapshot_every,
                warm_append_first,
                keep_own_events,
                clock,
            ),
        })
    }

    /// Resume with the result of the last effect; the next effect (a tuple).
    fn send<'py>(
        &mut self,
        py: Python<'py>,
        value: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let eff = self.m.resume(py, Input::Value(value))?;
        self.m.effect_tuple(py, eff)
    }

    /// Resume with `result` (of the last effect this returned; `None` at the start) and
    /// run the machine against `store` (a `MemoryStore` core): reads, appends and lookups
    /// run inside this call; only `sleep`, `load`, `save` and `done` come back, as tuples.
    fn drive<'py>(
        &mut self,
        py: Python<'py>,
        store: &Bound<'py, crate::py_store::MemoryStore>,
        result: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        crate::pipeline_drive::drive(py, &mut self.m, store, result)
    }

    /// A run on the in-memory store `store` (a `MemoryStore` core), without tracing,
    /// keeping states with their own events (`keep_own_events`),
    /// driven at once (see `drive`): the `ExecutionResult` when it ran to the end, else
    /// `(run, effect)` for the shell to go on with (a sleep, a snapshot load or save).
    /// One call and no run object for a plain command. `state_cache` and `snapshots` are
    /// the store's attributes as they are: a cache whose `max_entries` is 0 is not used,
    /// and the snapshot interval is `snapshots.interval(type(command))` (0 without
    /// snapshots), worked out here rather than in the shell's frame.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (store, command, registry, policy, metadata, idempotency_key, state_cache, snapshots))]
    fn execute<'py>(
        py: Python<'py>,
        store: &Bound<'py, crate::py_store::MemoryStore>,
        command: PyObj,
        registry: PyObj,
        policy: PyObj,
        metadata: PyObj,
        idempotency_key: Option<PyObj>,
        state_cache: Option<Bound<'py, PyAny>>,
        snapshots: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = match state_cache.filter(|c| !c.is_none()) {
            Some(c) => match c.cast::<StateCacheCore>() {
                Ok(core) if core.get().max_entries.load(Relaxed) == 0 => None,
                _ => Some(c.unbind()),
            },
            None => None,
        };
        let snapshot_every: i64 = match snapshots.filter(|s| !s.is_none()) {
            Some(s) => s
                .call_method1(intern!(py, "interval"), (command.bind(py).get_type(),))?
                .extract()?,
            None => 0,
        };
        let mut run = Self::new(
            py,
            command,
            registry,
            policy,
            metadata,
            idempotency_key,
            cache,
            snapshot_every,
            false,
            false,
            true,
        )?;
        let none = py.None().into_bound(py);
        match crate::pipeline_drive::drive_eff(py, &mut run.m, store, none)? {
            Eff::Done(result) => Ok(result.into_bound(py)),
            eff => {
                let effect = run.m.effect_tuple(py, eff)?;
                Ok((Bound::new(py, run)?, effect).into_pyobject(py)?.into_any())
            }
        }
    }

    /// End the run with `exc` (the shell's effect raised it), which is raised again.
    fn throw(&mut self, exc: Bound<'_, PyAny>) -> PyResult<()> {
        self.m.end();
        if exc.is_instance_of::<PyType>() {
            return Err(PyErr::from_value(exc.call0()?));
        }
        Err(PyErr::from_value(exc))
    }

    /// The run's trace (`trace=True`), a list of `(phase, attempt, start_ns, end_ns)` and
    /// `("retry", attempt, reason, delay)` tuples; `None` without tracing.
    #[getter]
    fn trace<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.m.trace_list(py)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let none = py.None().into_bound(py);
        self.send(py, none)
    }
}
