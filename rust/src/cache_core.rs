//! `StateCacheCore`: the hot fields of `eventcore.state_cache.StateCache` (its entry map,
//! counters and bounds), kept in Rust so that the command machine takes an entry, counts
//! the hit or miss and puts the entry back without a Python attribute call.
//! `StateCache` subclasses it and keeps the rest (eviction, hooks, `take`/`put`).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// The entry map, counters and bounds of a state cache (base of `StateCache`).
///
/// Counters are atomic, so they are exact under threads too.
#[pyclass(module = "eventcore._core", name = "StateCacheCore", subclass, frozen)]
pub struct StateCacheCore {
    pub(crate) entries: Py<PyDict>,
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
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        StateCacheCore {
            entries: PyDict::new(py).unbind(),
            hits: AtomicI64::new(0),
            misses: AtomicI64::new(0),
            evictions: AtomicI64::new(0),
            max_entries: AtomicI64::new(0),
            min_events: AtomicI64::new(0),
            verify: AtomicBool::new(false),
        }
    }

    /// The entries by key, least recently used first.
    #[getter]
    fn _entries(&self, py: Python<'_>) -> Py<PyDict> {
        self.entries.clone_ref(py)
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
