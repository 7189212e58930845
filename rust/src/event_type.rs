//! Event-type-name rules, shared by `validate_event_type`, the in-memory store's append and
//! (through Python) every other store.
//!
//! A type name is an identifier: non-empty, at most [`MAX_LEN`] code points, free of control
//! characters (Unicode general category `Cc`) and without leading or trailing whitespace
//! (Python's `str.isspace()`); such whitespace is refused, never trimmed.

use crate::errors::CoreError;
use crate::stream_id::{control_reason, is_py_space, too_long_reason};

/// The longest type name allowed, in Unicode code points (the same as a stream id).
pub const MAX_LEN: usize = crate::stream_id::MAX_LEN;

/// Why `value` is not a valid event type name, or `Ok(())`.
#[inline]
pub fn check(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err("must not be empty".to_owned());
    };
    if bytes.is_ascii() {
        // Fast path: one byte per code point, controls are < 0x20 or 0x7f.
        if let Some(i) = bytes.iter().position(|&b| b < 0x20 || b == 0x7f) {
            return Err(control_reason(bytes[i] as char, i));
        }
        if first == b' ' || last == b' ' {
            return Err(SPACE_REASON.to_owned());
        }
        if bytes.len() > MAX_LEN {
            return Err(too_long_reason(bytes.len()));
        }
        return Ok(());
    }
    let mut count = 0usize;
    for (i, c) in value.chars().enumerate() {
        if c.is_control() {
            return Err(control_reason(c, i));
        }
        count = i + 1;
    }
    let starts = value.chars().next().is_some_and(is_py_space);
    if starts || value.chars().next_back().is_some_and(is_py_space) {
        return Err(SPACE_REASON.to_owned());
    }
    if count > MAX_LEN {
        return Err(too_long_reason(count));
    }
    Ok(())
}

const SPACE_REASON: &str = "must not start or end with whitespace";

/// Validate `value`, or [`CoreError::InvalidEventType`].
#[inline]
pub fn validate(value: &str) -> Result<(), CoreError> {
    check(value).map_err(|reason| CoreError::InvalidEventType {
        value: value.to_owned(),
        reason,
    })
}

/// Validate an event type name and return it (the same object).
#[pyo3::pyfunction]
pub fn validate_event_type<'py>(
    value: &pyo3::Bound<'py, pyo3::PyAny>,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::types::PyString>> {
    use crate::py_text::{py_text, Text};
    let (s, text) = py_text(value, Text::EventType)?;
    validate(text).map_err(|err| err.into_pyerr(value.py()))?;
    Ok(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_identifiers() {
        assert_eq!(check("bank.Deposited"), Ok(()));
        assert_eq!(check("a b"), Ok(()));
        assert_eq!(check("Überweisung erfasst"), Ok(()));
        assert_eq!(check(&"é".repeat(255)), Ok(()));
        assert_eq!(check(&"a".repeat(255)), Ok(()));
    }

    #[test]
    fn refuses_empty_and_surrounding_whitespace() {
        assert_eq!(check(""), Err("must not be empty".to_owned()));
        for bad in [" a", "a ", "\u{3000}a", "a\u{a0}", "\u{2003}"] {
            assert_eq!(check(bad), Err(SPACE_REASON.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn refuses_controls_and_long_names() {
        assert_eq!(
            check("a\u{0}"),
            Err("must not contain control characters (U+0000 at index 1)".to_owned())
        );
        assert_eq!(
            check("\ta"),
            Err("must not contain control characters (U+0009 at index 0)".to_owned())
        );
        assert_eq!(
            check("é\u{85}x"),
            Err("must not contain control characters (U+0085 at index 1)".to_owned())
        );
        assert_eq!(
            check(&"a".repeat(256)),
            Err("must be at most 255 characters (got 256)".to_owned())
        );
        assert_eq!(
            check(&"é".repeat(300)),
            Err("must be at most 255 characters (got 300)".to_owned())
        );
    }
}
