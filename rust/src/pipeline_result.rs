//! `ExecutionResult`: what `execute` returns, built by the command machine.
//!
//! On the in-memory store the machine hands over the append's raw parts (first position,
//! stream versions, the events as given); the `AppendResult` is only built when someone
//! reads `append` (or what it derives: `events`, `stream_versions`, `positions`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::pipeline::{refs, PyObj};
use crate::py_store::{EventArg, EventIdArg};

/// The events a command decided on, encoded: `(stream, type name, payload, id)` each, kept
/// in Rust so the in-memory store takes them without a Python list (or int ids) to parse;
/// the list of tuples is only made for a Python store or a result that is read.
pub(crate) struct NewEvents(pub Vec<(PyObj, PyObj, PyObj, u128)>);

impl NewEvents {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        NewEvents(
            self.0
                .iter()
                .map(|(s, n, p, id)| (s.clone_ref(py), n.clone_ref(py), p.clone_ref(py), *id))
                .collect(),
        )
    }

    /// The events as `[(stream, type name, payload, id as int)]`.
    pub(crate) fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.0
                .iter()
                .map(|(s, n, p, id)| (s.bind(py), n.bind(py), p.bind(py), *id).into_pyobject(py))
                .collect::<PyResult<Vec<_>>>()?,
        )
    }

    /// The ids as ints.
    pub(crate) fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.0.iter().map(|e| e.3))
    }

    /// The events as the in-memory store's append takes them.
    pub(crate) fn args<'py>(&self, py: Python<'py>) -> smallvec::SmallVec<[EventArg<'py>; 4]> {
        self.0
            .iter()
            .map(|(s, n, p, id)| EventArg {
                stream: s.bind(py).clone(),
                event_type: n.bind(py).clone(),
                payload: p.bind(py).clone(),
                id: EventIdArg::Native(*id),
            })
            .collect()
    }
}

/// A native append's `(stream, version after)` per stream, as Rust values: the list of
/// tuples (and the position's int) are only made when the result is read.
pub(crate) type Versions = smallvec::SmallVec<[(PyObj, u64); 2]>;

/// An append's outcome: the store's `AppendResult`, or its parts not built into one yet.
pub(crate) enum Outcome {
    Built(PyObj),
    /// `(first position, (stream, version) per stream, events)`.
    Raw(u64, Versions, NewEvents),
}

/// What `execute` did: the events written and the attempts used.
#[pyclass(module = "eventcore._core", name = "ExecutionResult")]
pub struct ExecutionResult {
    outcome: Outcome,
    attempts: i64,
}

impl ExecutionResult {
    pub(crate) fn from_outcome(outcome: Outcome, attempts: i64) -> Self {
        ExecutionResult { outcome, attempts }
    }

    fn built<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Outcome::Raw(first, versions, events) = &self.outcome {
            let r = refs(py)?;
            let versions = PyList::new(
                py,
                versions
                    .iter()
                    .map(|(s, v)| (s.bind(py), *v).into_pyobject(py))
                    .collect::<PyResult<Vec<_>>>()?,
            )?;
            let made = r
                .append_result
                .bind(py)
                .call1((*first, versions, events.list(py)?))?;
            self.outcome = Outcome::Built(made.unbind());
        }
        match &self.outcome {
            Outcome::Built(obj) => Ok(obj.bind(py).clone()),
            Outcome::Raw(..) => unreachable!("built above"),
        }
    }
}

#[pymethods]
impl ExecutionResult {
    /// A result from the store's `AppendResult` and the attempts used.
    #[new]
    fn new(append: PyObj, attempts: i64) -> Self {
        ExecutionResult {
            outcome: Outcome::Built(append),
            attempts,
        }
    }

    /// How many tries it took (1 = no retry; 0 = found under its idempotency key).
    #[getter]
    fn attempts(&self) -> i64 {
        self.attempts
    }

    /// The store's `AppendResult` of the write.
    #[getter]
    fn append<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.built(py)
    }

    /// True when the events were written earlier under the same idempotency key.
    ///
    /// The command did not run again; this is the first outcome, as stored.
    #[getter]
    fn replayed(&self) -> bool {
        self.attempts == 0
    }

    /// The events written (`WrittenEvent`: id, stream, version, position).
    #[getter]
    fn events<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.built(py)?.getattr(intern!(py, "events"))
    }

    /// The version of every stream the command read, after the write.
    ///
    /// For a `replayed` result: the version each written stream had right after the
    /// first write (streams the command only read are not known then).
    #[getter]
    fn stream_versions<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.built(py)?.getattr(intern!(py, "stream_versions"))
    }

    /// The global positions of the events written, in order.
    #[getter]
    fn positions<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.built(py)?.getattr(intern!(py, "positions"))
    }

    /// What a replica read must see to show this write (`eventcore.recorded.WriteToken`:
    /// the last position written and the primary's timeline); `NO_WRITE` (position 0)
    /// when the command wrote nothing. Pass it as `after=` to a PostgreSQL read.
    #[getter]
    fn write_token<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.built(py)?.getattr(intern!(py, "write_token"))
    }

    fn __repr__(&mut self, py: Python<'_>) -> PyResult<String> {
        let n = match &self.outcome {
            Outcome::Raw(_, _, events) => events.len(),
            Outcome::Built(obj) => obj.bind(py).len()?,
        };
        Ok(format!(
            "ExecutionResult(events={n}, attempts={})",
            self.attempts
        ))
    }
}
