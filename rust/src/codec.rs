//! The codecs' hooks for what msgspec does not handle itself: subclasses of the builtins
//! (value types, `StreamId`) encode as the builtin they subclass and are rebuilt (and so
//! validated) from it when decoded. Native, because msgspec calls them once per such
//! field of every event.

use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyString, PyType};

/// msgspec's `enc_hook`: `obj` as the builtin it subclasses (`int(obj)`, `str(obj)`,
/// `float(obj)` or `bytes(obj)`).
#[pyfunction]
pub fn enc_hook<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() {
        // SAFETY: `obj` is a valid reference; PyNumber_Long returns a new reference or NULL
        // with the error set.
        return unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyNumber_Long(obj.as_ptr())) };
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(obj.str()?.into_any());
    }
    if obj.is_instance_of::<PyFloat>() {
        // SAFETY: as above, for PyNumber_Float.
        return unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyNumber_Float(obj.as_ptr()))
        };
    }
    if obj.is_instance_of::<PyBytes>() {
        return py.get_type::<PyBytes>().call1((obj,));
    }
    Err(PyNotImplementedError::new_err(format!(
        "objects of type {} cannot be encoded",
        obj.get_type().name()?
    )))
}

/// msgspec's `dec_hook`: `typ(obj)` when `typ` subclasses `int`, `str`, `float` or `bytes`.
#[pyfunction]
pub fn dec_hook<'py>(
    typ: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = typ.py();
    if let Ok(kind) = typ.cast::<PyType>() {
        if kind.is_subclass(&py.get_type::<PyInt>())?
            || kind.is_subclass(&py.get_type::<PyString>())?
            || kind.is_subclass(&py.get_type::<PyFloat>())?
            || kind.is_subclass(&py.get_type::<PyBytes>())?
        {
            return kind.call1((obj,));
        }
    }
    Err(PyNotImplementedError::new_err(format!(
        "type {} is not supported",
        typ.repr()?
    )))
}
