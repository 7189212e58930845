//! The Python face of the columnar log read: [`Columns`] as `bytes` buffers and name lists.
//!
//! Kept apart from `columns.rs`, which is part of the pure-Rust store (no Python types);
//! `py_store.rs` calls this after the store's lock is released.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::store::columns::Columns;

/// `(positions, type_codes, stream_codes, recorded_at, type_names, stream_names)`.
pub fn columns_to_py(py: Python<'_>, cols: Columns) -> PyResult<Bound<'_, PyTuple>> {
    let types = PyList::new(py, cols.type_names.iter().map(|s| &**s))?;
    let streams = PyList::new(py, cols.stream_names.iter().map(|s| &**s))?;
    (
        PyBytes::new(py, &cols.positions),
        PyBytes::new(py, &cols.type_codes),
        PyBytes::new(py, &cols.stream_codes),
        PyBytes::new(py, &cols.recorded_at),
        types,
        streams,
    )
        .into_pyobject(py)
}
