//! Calls into Python without an argument tuple.
//!
//! On the stable ABI before 3.12, pyo3's `call1` builds a tuple per call and
//! `call_method1` also binds the method first. The C API's `PyObject_CallFunctionObjArgs`
//! passes the arguments on the C stack (vectorcall), and `PyObject_CallMethodObjArgs`
//! finds a plain method without binding it (as the interpreter's own method calls do), so
//! the hot calls (`handle`, the codec, decoders, `apply`) make no tuple or bound method.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `f(a)`.
#[inline]
pub(crate) fn call_1<'py>(
    f: &Bound<'py, PyAny>,
    a: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: valid object pointers and the NULL that ends the arguments; the result is a
    // new reference, or NULL with an exception set.
    unsafe {
        let out = ffi::PyObject_CallFunctionObjArgs(
            f.as_ptr(),
            a.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(f.py(), out)
    }
}

/// `f(a, b, c)`.
#[inline]
pub(crate) fn call_3<'py>(
    f: &Bound<'py, PyAny>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    c: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: as in `call_1`.
    unsafe {
        let out = ffi::PyObject_CallFunctionObjArgs(
            f.as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            c.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(f.py(), out)
    }
}

/// `obj.name(a)`.
#[inline]
pub(crate) fn call_method_1<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    a: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: as in `call_1`.
    unsafe {
        let out = ffi::PyObject_CallMethodObjArgs(
            obj.as_ptr(),
            name.as_ptr(),
            a.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), out)
    }
}

/// `obj.name(a, b, c)`.
#[inline]
pub(crate) fn call_method_3<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    c: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: as in `call_1`.
    unsafe {
        let out = ffi::PyObject_CallMethodObjArgs(
            obj.as_ptr(),
            name.as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            c.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), out)
    }
}
