//! The codecs' hooks for what msgspec does not handle itself: subclasses of the builtins
//! (value types, `StreamId`) encode as the builtin they subclass and are rebuilt (and so
//! validated) from it when decoded. Native, because msgspec calls them once per such
//! field of every event.

use pyo3::exceptions::PyNotImplementedError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyString, PyType};

/// msgspec's `enc_hook`: `obj` as the builtin it subclasses (`int(obj)`, `str(obj)`,
/// `float(obj)` or `bytes(obj)`); `NotImplementedError` for anything else.
///
/// A plain C function of one argument (`METH_O`, see [`enc_hook_function`]): msgspec calls
/// it once per value-typed field of every event, and this convention parses no arguments.
///
/// # Safety
/// Called by Python with the GIL held and a valid `obj`.
unsafe extern "C" fn enc_hook(
    _module: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Each returns a new reference, or NULL with the error set; nothing here can panic.
    if ffi::PyLong_Check(obj) != 0 {
        return ffi::PyNumber_Long(obj);
    }
    if ffi::PyUnicode_Check(obj) != 0 {
        return ffi::PyObject_Str(obj);
    }
    if ffi::PyFloat_Check(obj) != 0 {
        return ffi::PyNumber_Float(obj);
    }
    if ffi::PyBytes_Check(obj) != 0 {
        let bytes = std::ptr::addr_of_mut!(ffi::PyBytes_Type).cast::<ffi::PyObject>();
        return ffi::PyObject_CallFunctionObjArgs(
            bytes,
            obj,
            std::ptr::null_mut::<ffi::PyObject>(),
        );
    }
    let name = ffi::PyType_GetName(ffi::Py_TYPE(obj));
    if !name.is_null() {
        ffi::PyErr_Format(
            ffi::PyExc_NotImplementedError,
            c"objects of type %U cannot be encoded".as_ptr(),
            name,
        );
        ffi::Py_DECREF(name);
    }
    std::ptr::null_mut()
}

/// The `enc_hook` function object of the module `m` (`eventcore._core.enc_hook`).
pub fn enc_hook_function<'py>(m: &Bound<'py, PyModule>) -> PyResult<Bound<'py, PyAny>> {
    // The definition must outlive the function object: one per module initialisation.
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"enc_hook".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: enc_hook },
        ml_flags: ffi::METH_O,
        ml_doc: c"enc_hook($module, obj, /)\n--\n\nmsgspec's ``enc_hook``: ``obj`` as the builtin it subclasses (``int(obj)``, ``str(obj)``, ``float(obj)`` or ``bytes(obj)``).".as_ptr(),
    }));
    let name = m.name()?;
    // SAFETY: `def` lives for the rest of the process, `m` and `name` are valid; the
    // result is a new reference or NULL with the error set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            m.py(),
            ffi::PyCFunction_NewEx(def, m.as_ptr(), name.as_ptr()),
        )
    }
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
