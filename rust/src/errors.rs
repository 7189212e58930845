//! The Rust error enum of the core, and its one conversion into the Python exceptions of
//! `eventcore.errors` (imported lazily, classes cached per interpreter).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyType};

/// One stream whose expected version did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The stream id (trimmed).
    pub stream: String,
    /// The expected version as given (`-1` any, `-2` stream exists, else exact).
    pub expected: i64,
    /// The stream's version when the append was tried.
    pub actual: u64,
}

/// Every failure the core reports; converted to a Python exception at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// `eventcore.errors.InvalidStreamId(value, reason)`.
    InvalidStreamId { value: String, reason: String },
    /// `eventcore.errors.InvalidEventType(value, reason)`.
    InvalidEventType { value: String, reason: String },
    /// `eventcore.errors.InvalidTag(value, reason)`.
    InvalidTag { value: String, reason: String },
    /// `eventcore.errors.ConditionFailed(after, position)`: an event at `position` (after
    /// `after`) matches an append's condition.
    ConditionFailed { after: u64, position: u64 },
    /// `eventcore.errors.LimitExceeded(field, reason, value)`.
    LimitExceeded {
        field: &'static str,
        reason: String,
        value: u64,
    },
    /// `eventcore.errors.ConcurrencyConflict(conflicts)`.
    Conflict(Vec<Conflict>),
    /// `eventcore.errors.DuplicateEventId(uuid.UUID(int=id), reason)`.
    DuplicateEventId { id: u128, reason: &'static str },
    /// `eventcore.errors.SerializationError(event_type, reason)`.
    Serialization { event_type: String, reason: String },
    /// `eventcore.errors.StoreError(message)`.
    Store(String),
    /// `ValueError(message)`.
    Value(String),
    /// `TypeError(message)`.
    Type(String),
}

/// Result alias of the core.
pub type CoreResult<T> = Result<T, CoreError>;

static INVALID_STREAM_ID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_EVENT_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static LIMIT_EXCEEDED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONCURRENCY_CONFLICT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DUPLICATE_EVENT_ID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SERIALIZATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static STORE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_TAG: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONDITION_FAILED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "eventcore.errors", name)
}

impl CoreError {
    /// Build the Python exception for this error.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let made: PyResult<Bound<'_, PyAny>> = match self {
            CoreError::Value(msg) => return PyValueError::new_err(msg),
            CoreError::Type(msg) => return PyTypeError::new_err(msg),
            CoreError::InvalidStreamId { value, reason } => {
                class(py, &INVALID_STREAM_ID, "InvalidStreamId")
                    .and_then(|c| c.call1((value, reason)))
            }
            CoreError::InvalidEventType { value, reason } => {
                class(py, &INVALID_EVENT_TYPE, "InvalidEventType")
                    .and_then(|c| c.call1((value, reason)))
            }
            CoreError::InvalidTag { value, reason } => {
                class(py, &INVALID_TAG, "InvalidTag").and_then(|c| c.call1((value, reason)))
            }
            CoreError::ConditionFailed { after, position } => {
                class(py, &CONDITION_FAILED, "ConditionFailed")
                    .and_then(|c| c.call1((after, position)))
            }
            CoreError::LimitExceeded {
                field,
                reason,
                value,
            } => class(py, &LIMIT_EXCEEDED, "LimitExceeded")
                .and_then(|c| c.call1((field, reason, value))),
            CoreError::Conflict(conflicts) => {
                class(py, &CONCURRENCY_CONFLICT, "ConcurrencyConflict").and_then(|c| {
                    let items = conflicts
                        .into_iter()
                        .map(|c| (c.stream, c.expected, c.actual));
                    let list = PyList::new(py, items)?;
                    c.call1((list,))
                })
            }
            CoreError::DuplicateEventId { id, reason } => {
                class(py, &DUPLICATE_EVENT_ID, "DuplicateEventId").and_then(|c| {
                    let uuid = crate::uuid7::make_uuid(py, id)?;
                    c.call1((uuid, reason))
                })
            }
            CoreError::Serialization { event_type, reason } => {
                class(py, &SERIALIZATION_ERROR, "SerializationError")
                    .and_then(|c| c.call1((event_type, reason)))
            }
            CoreError::Store(msg) => {
                class(py, &STORE_ERROR, "StoreError").and_then(|c| c.call1((msg,)))
            }
        };
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        }
    }
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        Python::attach(|py| err.into_pyerr(py))
    }
}
