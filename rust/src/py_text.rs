//! A str argument's text, for the validators and the in-memory store: one place that
//! turns "not a str" into `TypeError` and "not UTF-8" (lone surrogates) into the typed
//! invalid-value error of what the argument is.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::CoreError;

/// What a str argument is, for its errors.
#[derive(Clone, Copy)]
pub enum Text {
    StreamId,
    EventType,
}

impl Text {
    fn name(self) -> &'static str {
        match self {
            Text::StreamId => "stream id",
            Text::EventType => "event type",
        }
    }

    /// The typed error for a value of this kind that breaks a rule.
    pub fn invalid(self, value: String, reason: String) -> CoreError {
        match self {
            Text::StreamId => CoreError::InvalidStreamId { value, reason },
            Text::EventType => CoreError::InvalidEventType { value, reason },
        }
    }
}

/// The argument as a Python str and its UTF-8 text.
pub fn py_text<'a, 'py>(
    obj: &'a Bound<'py, PyAny>,
    what: Text,
) -> PyResult<(&'a Bound<'py, PyString>, &'a str)> {
    let Ok(s) = obj.cast::<PyString>() else {
        let ty = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{} must be str, not {ty}",
            what.name()
        )));
    };
    match s.to_str() {
        Ok(text) => Ok((s, text)),
        Err(_) => Err(what
            .invalid(
                s.to_string_lossy().into_owned(),
                "must not contain surrogate code points".to_owned(),
            )
            .into_pyerr(obj.py())),
    }
}
