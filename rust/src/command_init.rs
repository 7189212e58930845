//! A command class's generated `__init__`, native: binds the keyword arguments, turns a
//! str stream field into a `StreamId` (one call), coerces value-typed fields, stores every
//! field and calls the class's own `__post_init__`, without a Python frame of its own.
//! `eventcore.command` builds one per command class from its dataclass fields.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyString, PyTuple};

/// What a field's value goes through before it is stored.
enum Check {
    Plain,
    Stream,
    Coerce(Option<Bounds>, Py<PyAny>),
    Convert(Py<PyAny>),
}

/// A value type whose only checks are order bounds (`Value._bounds`): its exact input
/// is built with its builtin's constructor and compared here, without `Value.__new__`'s
/// frame. Any other input, or one out of bounds, takes the type's own constructor (which
/// raises the error it names).
struct Bounds {
    exact: Py<pyo3::types::PyType>,
    make: Py<PyAny>,
    /// The builtin's own constructor slot when `make` is that builtin's `__new__` (as for
    /// `int`): called directly, as `int.__new__(kind, value)` calls it, without the
    /// wrapper's argument tuples.
    new: Option<pyo3::ffi::newfunc>,
    checks: Vec<(CompareOp, Py<PyAny>)>,
}

impl Bounds {
    fn of(kind: &Bound<'_, PyAny>) -> PyResult<Option<Self>> {
        let py = kind.py();
        let Ok(bounds) = kind.getattr(pyo3::intern!(py, "_bounds")) else {
            return Ok(None);
        };
        if bounds.is_none() {
            return Ok(None);
        }
        let exact = kind.getattr(pyo3::intern!(py, "_exact"))?;
        let Ok(exact) = exact.cast_into::<pyo3::types::PyType>() else {
            return Ok(None);
        };
        let mut checks = Vec::new();
        for pair in bounds.try_iter()? {
            let (op, bound): (String, Bound<'_, PyAny>) = pair?.extract()?;
            let op = match op.as_str() {
                "gt" => CompareOp::Gt,
                "ge" => CompareOp::Ge,
                "lt" => CompareOp::Lt,
                "le" => CompareOp::Le,
                _ => return Ok(None),
            };
            checks.push((op, bound.unbind()));
        }
        let make = kind.getattr(pyo3::intern!(py, "_make"))?;
        // The slot is called directly only where `exact.__new__(kind, value)` would call it:
        // `make` is that `__new__`, and `exact` is the builtin `kind`'s instances are laid
        // out by (its first base that is not a class defined in Python).
        let heap = |t: &Bound<'_, pyo3::types::PyType>| {
            // SAFETY: `t` is a valid type object.
            unsafe {
                pyo3::ffi::PyType_GetFlags(t.as_type_ptr()) & pyo3::ffi::Py_TPFLAGS_HEAPTYPE != 0
            }
        };
        let solid = || -> Option<Bound<'_, pyo3::types::PyType>> {
            let mut base = kind.cast::<pyo3::types::PyType>().ok()?.clone();
            while heap(&base) {
                base = base
                    .getattr(pyo3::intern!(py, "__base__"))
                    .ok()?
                    .cast_into()
                    .ok()?;
            }
            Some(base)
        };
        let direct = solid().is_some_and(|b| b.is(&exact))
            && make.is(exact.getattr(pyo3::intern!(py, "__new__"))?);
        // SAFETY: `exact` is a valid type object; `PyType_GetSlot` reads a static type's
        // slot since Python 3.10 (NULL when it has none).
        let new = unsafe {
            let slot = pyo3::ffi::PyType_GetSlot(exact.as_type_ptr(), pyo3::ffi::Py_tp_new);
            (direct && !slot.is_null())
                .then(|| std::mem::transmute::<*mut std::ffi::c_void, pyo3::ffi::newfunc>(slot))
        };
        Ok(Some(Bounds {
            exact: exact.unbind(),
            make: make.unbind(),
            new,
            checks,
        }))
    }

    /// `kind(value)` when it is within bounds, else `None` (the caller asks `kind`).
    fn build<'py>(
        &self,
        kind: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = kind.py();
        let made = match (self.new, kind.cast::<pyo3::types::PyType>()) {
            (Some(new), Ok(kind)) => {
                let args = PyTuple::new(py, [value])?;
                // SAFETY: `new` is the builtin `exact`'s constructor slot and `kind` a
                // subclass of it (a value type of that builtin), as `exact.__new__(kind,
                // value)` checks before calling the same slot; the result is a new
                // reference or NULL with an exception set.
                unsafe {
                    Bound::from_owned_ptr_or_err(
                        py,
                        new(kind.as_type_ptr(), args.as_ptr(), std::ptr::null_mut()),
                    )
                }
            }
            _ => self.make.bind(py).call1((kind, value)),
        };
        let Ok(made) = made else {
            return Ok(None);
        };
        for (op, bound) in &self.checks {
            if !made.rich_compare(bound.bind(py), *op)?.is_truthy()? {
                return Ok(None);
            }
        }
        Ok(Some(made))
    }
}

/// Where a parameter's value comes from when the caller does not pass it.
enum Default {
    Required,
    Value(Py<PyAny>),
    Factory(Py<PyAny>),
}

struct Param {
    name: Py<PyString>,
    text: String,
    check: Check,
    default: Default,
}

/// The `__init__` of one command class (a descriptor: `instance.__init__` binds it).
#[pyclass(frozen, module = "eventcore._core")]
pub struct CommandInit {
    qualname: String,
    fields: Vec<Param>,
    initvars: Vec<Param>,
    post_init: bool,
    stream_value: Py<PyAny>,
    signature: Py<PyAny>,
}

fn param(item: &Bound<'_, PyAny>) -> PyResult<Param> {
    let (name, check, arg, default, value): (
        Bound<'_, PyString>,
        u8,
        Bound<'_, PyAny>,
        u8,
        Bound<'_, PyAny>,
    ) = item.extract()?;
    let check = match check {
        0 => Check::Plain,
        1 => Check::Stream,
        2 => Check::Coerce(Bounds::of(&arg)?, arg.unbind()),
        3 => Check::Convert(arg.unbind()),
        _ => return Err(PyValueError::new_err("unknown field check")),
    };
    let default = match default {
        0 => Default::Required,
        1 => Default::Value(value.unbind()),
        2 => Default::Factory(value.unbind()),
        _ => return Err(PyValueError::new_err("unknown field default")),
    };
    Ok(Param {
        text: name.to_str()?.to_owned(),
        name: name.unbind(),
        check,
        default,
    })
}

/// `'a'`, `'a' and 'b'`, `'a', 'b', and 'c'`: how Python lists missing arguments.
fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.len() {
        0 | 1 => quoted.concat(),
        2 => format!("{} and {}", quoted[0], quoted[1]),
        n => format!("{}, and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

impl CommandInit {
    /// Bind, validate and store the fields of `obj`, then run `__post_init__`.
    fn run(
        &self,
        obj: &Bound<'_, PyAny>,
        positional: usize,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let py = obj.py();
        if positional > 0 {
            return Err(PyTypeError::new_err(format!(
                "{}.__init__() takes 1 positional argument but {} were given",
                self.qualname,
                positional + 1
            )));
        }
        // Bind every parameter first: a missing or unexpected one fails before any check.
        let params = self.fields.iter().chain(self.initvars.iter());
        let mut given: smallvec::SmallVec<[Option<Bound<'_, PyAny>>; 8]> =
            smallvec::SmallVec::new();
        let mut found = 0usize;
        let mut missing: Vec<&str> = Vec::new();
        for p in params {
            let value = match kwargs {
                Some(k) => k.get_item(p.name.bind(py))?,
                None => None,
            };
            match (value, &p.default) {
                (Some(v), _) => {
                    found += 1;
                    given.push(Some(v));
                }
                (None, Default::Value(d)) => given.push(Some(d.bind(py).clone())),
                (None, Default::Factory(_)) => given.push(None),
                (None, Default::Required) => {
                    missing.push(&p.text);
                    given.push(None);
                }
            }
        }
        if !missing.is_empty() {
            return Err(PyTypeError::new_err(format!(
                "{}.__init__() missing {} required keyword-only argument{}: {}",
                self.qualname,
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                quoted_list(&missing)
            )));
        }
        if let Some(k) = kwargs {
            if k.len() > found {
                for key in k.keys() {
                    let known = self
                        .fields
                        .iter()
                        .chain(self.initvars.iter())
                        .any(|p| key.eq(p.name.bind(py)).unwrap_or(false));
                    if !known {
                        return Err(PyTypeError::new_err(format!(
                            "{}.__init__() got an unexpected keyword argument {}",
                            self.qualname,
                            key.repr()?
                        )));
                    }
                }
            }
        }
        let stream_id_class = crate::stream_id::stream_id_class(py)?;
        for (p, value) in self.fields.iter().zip(given.iter()) {
            let value = match (value, &p.default) {
                (Some(v), _) => v.clone(),
                (None, Default::Factory(f)) => f.bind(py).call0()?,
                (None, _) => unreachable!("bound above"),
            };
            let name = p.name.bind(py);
            let value = match &p.check {
                Check::Plain => value,
                Check::Stream if value.get_type().is(stream_id_class) => value,
                Check::Stream if value.is_instance_of::<PyString>() => {
                    crate::stream_id::stream_id(&value, Some(&p.text))?
                }
                Check::Stream => self.stream_value.bind(py).call1((value, name))?,
                Check::Coerce(_, kind) if value.get_type().is(kind.bind(py)) => value,
                Check::Coerce(bounds, kind) => {
                    let kind = kind.bind(py);
                    let fast = match bounds {
                        Some(b) if value.get_type().is(b.exact.bind(py)) => {
                            b.build(kind, &value)?
                        }
                        _ => None,
                    };
                    match fast {
                        Some(made) => made,
                        None => match kind.call1((&value,)) {
                            Ok(made) => made,
                            Err(err) => return Err(self.name_field(py, err, name, &value)),
                        },
                    }
                }
                Check::Convert(convert) => convert.bind(py).call1((value, name))?,
            };
            // SAFETY: all three are valid references; the generic setter stores the field
            // as object.__setattr__ would (the class's own __setattr__ refuses: frozen).
            let status = unsafe {
                pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr())
            };
            if status != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        if self.post_init {
            let initvars = given[self.fields.len()..]
                .iter()
                .map(|v| v.clone().expect("initvars have no factory"));
            let args = PyTuple::new(py, initvars)?;
            obj.call_method1(pyo3::intern!(py, "__post_init__"), args)?;
        }
        Ok(())
    }
}

impl CommandInit {
    /// A value type's `ValidationError` as the field's (`_coerce` names it the same way).
    fn name_field(
        &self,
        py: Python<'_>,
        err: PyErr,
        name: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> PyErr {
        let renamed = (|| -> PyResult<Option<Bound<'_, PyAny>>> {
            let class = VALIDATION_ERROR.import(py, "eventcore.errors", "ValidationError")?;
            let exc = err.value(py);
            if !exc.is_instance(class)? {
                return Ok(None);
            }
            Ok(Some(class.call1((name, exc.getattr("reason")?, value))?))
        })();
        match renamed {
            Ok(Some(exc)) => PyErr::from_value(exc),
            Ok(None) => err,
            Err(other) => other,
        }
    }
}

static VALIDATION_ERROR: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
    pyo3::sync::PyOnceLock::new();

#[pymethods]
impl CommandInit {
    /// Build the `__init__` of the class `qualname` from its parameters.
    ///
    /// `fields` and `initvars` are `(name, check, arg, default, value)` tuples: `check` 0
    /// plain, 1 stream, 2 coerce to the value type `arg`, 3 `arg(value, name)`; `default`
    /// 0 required, 1 `value`, 2 `value()` (a factory). `stream_value(value, name)` takes a
    /// stream field that is not a str.
    #[new]
    fn new(
        qualname: String,
        fields: Vec<Bound<'_, PyAny>>,
        initvars: Vec<Bound<'_, PyAny>>,
        post_init: bool,
        stream_value: Py<PyAny>,
        signature: Py<PyAny>,
    ) -> PyResult<Self> {
        let fields = fields.iter().map(param).collect::<PyResult<Vec<_>>>()?;
        let initvars = initvars.iter().map(param).collect::<PyResult<Vec<_>>>()?;
        if initvars
            .iter()
            .any(|p| matches!(p.default, Default::Factory(_)))
        {
            return Err(PyValueError::new_err(
                "an InitVar cannot have a default factory",
            ));
        }
        Ok(CommandInit {
            qualname,
            fields,
            initvars,
            post_init,
            stream_value,
            signature,
        })
    }

    /// The dataclass `__init__`'s signature (for `inspect.signature`).
    #[getter]
    fn __signature__(&self, py: Python<'_>) -> Py<PyAny> {
        self.signature.clone_ref(py)
    }

    /// Bind to an instance (`instance.__init__`); on the class, the unbound `__init__`.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = owner;
        match obj {
            Some(obj) if !obj.is_none() => Ok(Bound::new(
                slf.py(),
                BoundInit {
                    init: slf.clone().unbind(),
                    obj: obj.clone().unbind(),
                },
            )?
            .into_any()),
            _ => Ok(slf.clone().into_any()),
        }
    }

    /// `Class.__init__(instance, **fields)`.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let Ok(obj) = args.get_item(0) else {
            return Err(PyTypeError::new_err(format!(
                "{}.__init__() needs the instance to initialise",
                self.qualname
            )));
        };
        self.run(&obj, args.len() - 1, kwargs)
    }
}

/// A command's `__init__` bound to the instance being built.
#[pyclass(frozen, module = "eventcore._core")]
pub struct BoundInit {
    init: Py<CommandInit>,
    obj: Py<PyAny>,
}

#[pymethods]
impl BoundInit {
    /// Initialise the instance from keyword arguments.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let py = args.py();
        self.init.get().run(self.obj.bind(py), args.len(), kwargs)
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_list;

    #[test]
    fn lists_names_like_python() {
        assert_eq!(quoted_list(&["a"]), "'a'");
        assert_eq!(quoted_list(&["a", "b"]), "'a' and 'b'");
        assert_eq!(quoted_list(&["a", "b", "c"]), "'a', 'b', and 'c'");
    }
}
