//! Batch folding: decode each event's payload with the decoder registered for its type and
//! feed it to `apply(state, event, stream_id)`, in one Rust loop.
//!
//! Decoder lookups are cached per distinct event type within one call. A missing decoder or
//! a decoder that raises becomes `eventcore.errors.SerializationError` (with the decoder's
//! exception as `__cause__`); an exception from `apply` propagates unchanged.

use hashbrown::HashMap;
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use crate::errors::CoreError;

/// The folding loop's state: `apply`, the decoder mapping and the lookup cache.
pub struct Folder<'py> {
    apply: Bound<'py, PyAny>,
    decoders: Bound<'py, PyAny>,
    cache: HashMap<Box<str>, Bound<'py, PyAny>>,
    /// The last event-type object seen (identity) and its decoder.
    last: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
}

impl<'py> Folder<'py> {
    /// A folder over `apply` and `decoders` (a mapping of event type → decoder).
    pub fn new(apply: Bound<'py, PyAny>, decoders: Bound<'py, PyAny>) -> Self {
        Folder {
            apply,
            decoders,
            cache: HashMap::new(),
            last: None,
        }
    }

    /// The decoder registered for `event_type` (a Python str).
    pub fn decoder(&mut self, event_type: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Some((obj, dec)) = &self.last {
            if obj.is(event_type) {
                return Ok(dec.clone());
            }
        }
        let name = event_type
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("event_type must be str"))?
            .to_str()?;
        let dec = match self.cache.get(name) {
            Some(dec) => dec.clone(),
            None => {
                let dec = self.lookup(event_type, name)?;
                self.cache.insert(name.into(), dec.clone());
                dec
            }
        };
        self.last = Some((event_type.clone(), dec.clone()));
        Ok(dec)
    }

    fn lookup(&self, key: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let py = key.py();
        let found = if let Ok(dict) = self.decoders.cast::<PyDict>() {
            dict.get_item(key)?
        } else {
            match self.decoders.get_item(key) {
                Ok(dec) => Some(dec),
                Err(err) if err.is_instance_of::<PyKeyError>(py) => None,
                Err(err) => return Err(err),
            }
        };
        found.ok_or_else(|| {
            CoreError::Serialization {
                event_type: name.to_owned(),
                reason: "no event type registered under this name".to_owned(),
            }
            .into_pyerr(py)
        })
    }

    /// One fold step: `apply(state, decoder(payload), stream)`.
    #[inline]
    pub fn step(
        &self,
        state: Bound<'py, PyAny>,
        decoder: &Bound<'py, PyAny>,
        event_type: &Bound<'py, PyAny>,
        stream: &Bound<'py, PyAny>,
        payload: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event = decoder
            .call1((payload,))
            .map_err(|err| decode_error(event_type, err))?;
        self.apply.call1((state, event, stream))
    }
}

/// `SerializationError(event_type, f"cannot decode payload: {exc}")` from `exc`.
fn decode_error(event_type: &Bound<'_, PyAny>, err: PyErr) -> PyErr {
    let py = event_type.py();
    let name = event_type.str().map(|s| s.to_string()).unwrap_or_default();
    let detail = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let new = CoreError::Serialization {
        event_type: name,
        reason: format!("cannot decode payload: {detail}"),
    }
    .into_pyerr(py);
    new.set_cause(py, Some(err));
    new
}

fn fold_item<'py>(
    folder: &mut Folder<'py>,
    state: Bound<'py, PyAny>,
    item: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // Owned items: the stable ABI (abi3) has no borrowed view of a tuple's slots.
    let items: SmallVec<[Bound<'py, PyAny>; 3]> = match item.cast::<PyTuple>() {
        Ok(t) => t.iter().collect(),
        Err(_) => item.try_iter()?.collect::<PyResult<_>>()?,
    };
    let [stream, event_type, payload] = items.as_slice() else {
        return Err(PyTypeError::new_err(
            "events must be (stream_id, event_type, payload) tuples",
        ));
    };
    let decoder = folder.decoder(event_type)?;
    folder.step(state, &decoder, event_type, stream, payload)
}

/// Fold `events` — `(stream_id, event_type, payload)` tuples — into `state`:
/// `state = apply(state, decoders[event_type](payload), stream_id)` for each, in order.
#[pyfunction]
pub fn fold<'py>(
    state: Bound<'py, PyAny>,
    apply: Bound<'py, PyAny>,
    decoders: Bound<'py, PyAny>,
    events: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut folder = Folder::new(apply, decoders);
    let mut state = state;
    if let Ok(list) = events.cast::<PyList>() {
        let mut i = 0;
        // Index (not an iterator) so a list mutated by `apply` is read like Python would.
        while i < list.len() {
            let item = list.get_item(i)?;
            state = fold_item(&mut folder, state, &item)?;
            i += 1;
        }
    } else if let Ok(tuple) = events.cast::<PyTuple>() {
        for item in tuple.iter() {
            state = fold_item(&mut folder, state, &item)?;
        }
    } else {
        for item in events.try_iter()? {
            state = fold_item(&mut folder, state, &item?)?;
        }
    }
    Ok(state)
}
