//! Stream-id rules, shared by `validate_stream_id` and every store operation.
//!
//! A stream id is trimmed of leading and trailing whitespace with Python's `str.strip()`
//! semantics; the rest must be non-empty, at most [`MAX_LEN`] code points long and free of
//! control characters (Unicode general category `Cc`).

use crate::errors::CoreError;

/// The longest stream id allowed, in Unicode code points.
pub const MAX_LEN: usize = 255;

/// Whether `c` is whitespace for Python's `str.strip()` / `str.isspace()`.
///
/// That is Unicode `White_Space` plus the four information separators U+001C..U+001F,
/// which Python counts as whitespace (bidirectional class B/S) and Rust does not.
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Why `value` is not a valid stream id, or `None` when it is valid after trimming.
///
/// Returns the trimmed slice on success.
#[inline]
pub fn check(value: &str) -> Result<&str, String> {
    let trimmed = trim(value);
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let bytes = trimmed.as_bytes();
    if bytes.is_ascii() {
        // Fast path: one byte per code point, controls are < 0x20 or 0x7f.
        if let Some(i) = bytes.iter().position(|&b| b < 0x20 || b == 0x7f) {
            return Err(control_reason(bytes[i] as char, i));
        }
        if bytes.len() > MAX_LEN {
            return Err(too_long_reason(bytes.len()));
        }
        return Ok(trimmed);
    }
    let mut count = 0usize;
    for (i, c) in trimmed.chars().enumerate() {
        if c.is_control() {
            return Err(control_reason(c, i));
        }
        count = i + 1;
    }
    if count > MAX_LEN {
        return Err(too_long_reason(count));
    }
    Ok(trimmed)
}

/// Validate `value` and return the trimmed stream id, or [`CoreError::InvalidStreamId`].
#[inline]
pub fn validate(value: &str) -> Result<&str, CoreError> {
    check(value).map_err(|reason| CoreError::InvalidStreamId {
        value: value.to_owned(),
        reason,
    })
}

/// `value` without leading and trailing Python whitespace (a sub-slice, no copy).
#[inline]
pub fn trim(value: &str) -> &str {
    let b = value.as_bytes();
    // Fast path: nothing to trim when both ends are printable ASCII.
    if let (Some(&f), Some(&l)) = (b.first(), b.last()) {
        if f > b' ' && f < 0x7f && l > b' ' && l < 0x7f {
            return value;
        }
    }
    value.trim_matches(is_py_space)
}

pub(crate) fn control_reason(c: char, index: usize) -> String {
    format!(
        "must not contain control characters (U+{:04X} at index {index})",
        c as u32
    )
}

pub(crate) fn too_long_reason(count: usize) -> String {
    format!("must be at most {MAX_LEN} characters (got {count})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_trims() {
        assert_eq!(check("order-1"), Ok("order-1"));
        assert_eq!(check("  order-1\t\n"), Ok("order-1"));
        assert_eq!(check("\u{1c}a b\u{3000}"), Ok("a b"));
        assert_eq!(check("\u{a0}ü\u{85}"), Ok("ü"));
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(check(""), Err("must not be empty".to_owned()));
        assert_eq!(check(" \t\u{2003} "), Err("must not be empty".to_owned()));
    }

    #[test]
    fn length_is_in_code_points() {
        assert!(check(&"a".repeat(255)).is_ok());
        assert_eq!(
            check(&"a".repeat(300)),
            Err("must be at most 255 characters (got 300)".to_owned())
        );
        assert!(check(&"é".repeat(255)).is_ok());
        assert_eq!(
            check(&"é".repeat(256)),
            Err("must be at most 255 characters (got 256)".to_owned())
        );
    }

    #[test]
    fn rejects_controls() {
        assert_eq!(
            check("abc\ndef"),
            Err("must not contain control characters (U+000A at index 3)".to_owned())
        );
        assert_eq!(
            check("é\u{7f}"),
            Err("must not contain control characters (U+007F at index 1)".to_owned())
        );
        assert_eq!(
            check("ab\u{9f}"),
            Err("must not contain control characters (U+009F at index 2)".to_owned())
        );
        // U+00A0 is whitespace, not a control; inside it is allowed.
        assert!(check("a\u{a0}b").is_ok());
    }

    #[test]
    fn validate_keeps_original_value() {
        match validate(" \u{0}x") {
            Err(CoreError::InvalidStreamId { value, reason }) => {
                assert_eq!(value, " \u{0}x");
                assert!(reason.contains("U+0000 at index 0"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Validate a stream id and return it trimmed (the same object when nothing was trimmed).
#[pyo3::pyfunction]
pub fn validate_stream_id<'py>(
    value: &pyo3::Bound<'py, pyo3::PyAny>,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::types::PyString>> {
    use crate::py_text::{py_text, Text};
    use pyo3::types::PyString;
    let py = value.py();
    let (s, text) = py_text(value, Text::StreamId)?;
    match check(text) {
        Ok(t) if t.len() == text.len() => Ok(s.clone()),
        Ok(t) => Ok(PyString::new(py, t)),
        Err(reason) => Err(Text::StreamId
            .invalid(text.to_owned(), reason)
            .into_pyerr(py)),
    }
}

static STREAM_ID_CLASS: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::types::PyType>> =
    pyo3::sync::PyOnceLock::new();

/// The `eventcore.StreamId` class (imported once).
pub fn stream_id_class(
    py: pyo3::Python<'_>,
) -> pyo3::PyResult<&pyo3::Bound<'_, pyo3::types::PyType>> {
    STREAM_ID_CLASS.import(py, "eventcore.stream", "StreamId")
}

/// Validate a stream id and return it trimmed, as an `eventcore.StreamId`.
///
/// One call for what `StreamId(value)` does: a `StreamId` is returned as is, any other str
/// is validated and copied into a new `StreamId` (the `str` subclass instance is built
/// here, through `str`'s own constructor). `field` names the value in `InvalidStreamId`.
#[pyo3::pyfunction]
#[pyo3(signature = (value, field = None))]
pub fn stream_id<'py>(
    value: &pyo3::Bound<'py, pyo3::PyAny>,
    field: Option<&str>,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
    use crate::py_text::{py_text, Text};
    use pyo3::prelude::*;
    use pyo3::types::{PyString, PyTuple};
    let py = value.py();
    let kind = stream_id_class(py)?;
    if value.get_type().is(kind) {
        return Ok(value.clone());
    }
    let named = |err: PyErr| rename_field(py, err, field);
    let (s, text) = py_text(value, Text::StreamId).map_err(named)?;
    let trimmed = match check(text) {
        Ok(t) if t.len() == text.len() => s.clone(),
        Ok(t) => PyString::new(py, t),
        Err(reason) => {
            let err = Text::StreamId.invalid(text.to_owned(), reason);
            return Err(named(err.into_pyerr(py)));
        }
    };
    let args = PyTuple::new(py, [trimmed])?;
    // SAFETY: `kind` is the `StreamId` class, a subclass of `str`, so `str`'s `tp_new`
    // builds an instance of it (as `str.__new__(StreamId, trimmed)` does); the slot of a
    // static type may be read with `PyType_GetSlot` since Python 3.10.
    unsafe {
        let str_type = py.get_type::<PyString>();
        let slot = pyo3::ffi::PyType_GetSlot(str_type.as_type_ptr(), pyo3::ffi::Py_tp_new);
        if slot.is_null() {
            return Err(pyo3::exceptions::PySystemError::new_err(
                "str has no tp_new",
            ));
        }
        let new: pyo3::ffi::newfunc = std::mem::transmute(slot);
        let made = new(kind.as_type_ptr(), args.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, made)
    }
}

/// `err` with `field` as its field when it is an `InvalidStreamId` (the rare path).
fn rename_field(py: pyo3::Python<'_>, err: pyo3::PyErr, field: Option<&str>) -> pyo3::PyErr {
    use pyo3::prelude::*;
    let Some(field) = field else { return err };
    let value = err.value(py);
    let renamed = (|| -> PyResult<Bound<'_, PyAny>> {
        let class = py.import("eventcore.errors")?.getattr("InvalidStreamId")?;
        if !value.is_instance(&class)? {
            return Ok(value.clone().into_any());
        }
        class.call1((value.getattr("value")?, value.getattr("reason")?, field))
    })();
    match renamed {
        Ok(exc) => PyErr::from_value(exc),
        Err(other) => other,
    }
}
