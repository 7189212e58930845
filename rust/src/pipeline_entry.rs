//! `CacheEntry`: a folded state with the streams and per-stream versions it represents
//! (`eventcore.state_cache.CacheEntry`), kept in Rust so the command machine takes one out
//! of the cache and puts one back without Python attribute calls.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::pipeline::{stream_objs, Entry, FoldStreams, FoldVersions, Folded, PyObj};

/// A folded state with the streams and per-stream versions it represents.
///
/// `fold_from` is the index in `streams` where the last discovery round starts (0 without
/// discovery): only those streams may have a tail folded onto the state. `since` counts
/// the events folded into it since it was last loaded from or saved as a durable
/// snapshot; `rounds` is how many discovery rounds added streams.
#[pyclass(module = "eventcore._core", name = "CacheEntry")]
pub struct CacheEntry {
    pub(crate) e: Entry,
}

impl CacheEntry {
    /// A copy of the entry for the machine (the state is shared, not copied).
    pub(crate) fn entry(&self, py: Python<'_>) -> Entry {
        Entry {
            f: Folded {
                state: self.e.f.state.clone_ref(py),
                versions: self.e.f.versions.clone(),
                streams: self.e.f.streams.iter().map(|s| s.clone_ref(py)).collect(),
                fold_from: self.e.f.fold_from,
                rounds: self.e.f.rounds,
            },
            since: self.e.since,
        }
    }

    /// The entry moved out for the machine, leaving an empty one: for an object only the
    /// machine and its slot in use refer to, where a copy would allocate and free its two
    /// lists for nothing. The machine fills it again before it is put back.
    pub(crate) fn take_entry(&mut self, py: Python<'_>) -> Entry {
        let empty = Entry {
            f: Folded {
                state: py.None(),
                versions: FoldVersions::new(),
                streams: FoldStreams::new(),
                fold_from: 0,
                rounds: 0,
            },
            since: 0,
        };
        std::mem::replace(&mut self.e, empty)
    }
}

#[pymethods]
impl CacheEntry {
    /// An entry: `state` folded from `streams` up to `versions` (one per stream).
    #[new]
    #[pyo3(signature = (state, streams, versions, fold_from = 0, since = 0, rounds = 0))]
    fn new(
        state: PyObj,
        streams: &Bound<'_, PyAny>,
        versions: Vec<i64>,
        fold_from: usize,
        since: i64,
        rounds: i64,
    ) -> PyResult<Self> {
        Ok(CacheEntry {
            e: Entry {
                f: Folded {
                    state,
                    versions: versions.into(),
                    streams: stream_objs(streams)?.into(),
                    fold_from,
                    rounds,
                },
                since,
            },
        })
    }

    /// The folded state.
    #[getter]
    fn state(&self, py: Python<'_>) -> PyObj {
        self.e.f.state.clone_ref(py)
    }

    #[setter]
    fn set_state(&mut self, state: PyObj) {
        self.e.f.state = state;
    }

    /// The streams folded, in order (a new list).
    #[getter]
    fn streams<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.e.f.streams.iter().map(|s| s.bind(py)))
    }

    /// Each stream's version the state folds up to (a new list).
    #[getter]
    fn versions(&self) -> Vec<i64> {
        self.e.f.versions.to_vec()
    }

    /// Where the last discovery round starts in `streams`.
    #[getter]
    fn fold_from(&self) -> usize {
        self.e.f.fold_from
    }

    /// Events folded since the last durable snapshot.
    #[getter]
    fn since(&self) -> i64 {
        self.e.since
    }

    #[setter]
    fn set_since(&mut self, since: i64) {
        self.e.since = since;
    }

    /// How many discovery rounds added streams.
    #[getter]
    fn rounds(&self) -> i64 {
        self.e.f.rounds
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let streams = PyList::new(py, self.e.f.streams.iter().map(|s| s.bind(py)))?;
        Ok(format!(
            "CacheEntry(streams={}, versions={:?}, fold_from={})",
            streams.repr()?,
            self.e.f.versions,
            self.e.f.fold_from
        ))
    }
}

/// A `CacheEntry` object from an entry the machine holds.
pub(crate) fn entry_object(py: Python<'_>, e: Entry) -> PyResult<Bound<'_, PyAny>> {
    Ok(Bound::new(py, CacheEntry { e })?.into_any())
}
