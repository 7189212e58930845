//! Batch folding: decode each event's payload with the decoder registered for its type and
//! feed it to `apply(state, event, stream_id)`, in one Rust loop.
//!
//! Decoder lookups are cached per distinct event type within one call. A missing decoder or
//! a decoder that raises becomes `eventcore.errors.EventDecodeError` (a
//! `SerializationError`, with the decoder's exception as `__cause__`) naming the stream and,
//! where the caller knows them, the event's version and position; an exception from `apply`
//! propagates unchanged.

use hashbrown::HashMap;
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use smallvec::SmallVec;

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
            .map_err(|_| PyTypeError::new_err("event_type must be str"))?;
        if self.last.is_none() {
            // The first type: no map until a second one comes (many folds see one type).
            let dec = self.lookup(event_type)?;
            self.last = Some((event_type.clone(), dec.clone()));
            return Ok(dec);
        }
        let name = name.to_str()?;
        let dec = match self.cache.get(name) {
            Some(dec) => dec.clone(),
            None => {
                let dec = self.lookup(event_type)?;
                self.cache.insert(name.into(), dec.clone());
                dec
            }
        };
        self.last = Some((event_type.clone(), dec.clone()));
        Ok(dec)
    }

    /// The decoder of `key`, or `None` (Python's) when there is none: the step that meets
    /// it raises the decode error, which can then name the event.
    pub(crate) fn lookup(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
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
        Ok(found.unwrap_or_else(|| py.None().into_bound(py)))
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
        self.step_at(state, decoder, event_type, stream, payload, None)
    }

    /// [`Folder::step`] for an event whose `(version, position)` is known: a decode error
    /// names them.
    #[inline]
    pub fn step_at(
        &self,
        state: Bound<'py, PyAny>,
        decoder: &Bound<'py, PyAny>,
        event_type: &Bound<'py, PyAny>,
        stream: &Bound<'py, PyAny>,
        payload: &Bound<'py, PyAny>,
        at: Option<(u64, u64)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if decoder.is_none() {
            return Err(decode_error(event_type, stream, at, None));
        }
        let event = crate::py_call::call_1(decoder, payload)
            .map_err(|err| decode_error(event_type, stream, at, Some(err)))?;
        crate::py_call::call_3(&self.apply, &state, &event, stream)
    }
}

static EVENT_DECODE_ERROR: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
    pyo3::sync::PyOnceLock::new();

/// `EventDecodeError(event_type, f"cannot decode payload: {exc}", stream_id=..., ...)` from
/// `exc` (no `exc`: no decoder is registered); an `EventDecodeError` the decoder raised (an
/// upcast that failed) gets the place filled in instead (`exc.at(...)`).
fn decode_error(
    event_type: &Bound<'_, PyAny>,
    stream: &Bound<'_, PyAny>,
    at: Option<(u64, u64)>,
    err: Option<PyErr>,
) -> PyErr {
    let py = event_type.py();
    let made = (|| -> PyResult<PyErr> {
        let class = EVENT_DECODE_ERROR.import(py, "eventcore.errors", "EventDecodeError")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("stream_id", stream.str()?)?;
        kwargs.set_item("version", at.map(|a| a.0))?;
        kwargs.set_item("position", at.map(|a| a.1))?;
        let Some(err) = err else {
            let reason = "no event type registered under this name";
            return Ok(PyErr::from_value(
                class.call((event_type, reason), Some(&kwargs))?,
            ));
        };
        let value = err.value(py);
        if value.is_instance(class)? {
            let new = PyErr::from_value(value.call_method("at", (), Some(&kwargs))?);
            new.set_cause(py, err.cause(py));
            return Ok(new);
        }
        let detail = value.str()?.to_string();
        let new = PyErr::from_value(class.call(
            (event_type, format!("cannot decode payload: {detail}")),
            Some(&kwargs),
        )?);
        new.set_cause(py, Some(err.clone_ref(py)));
        Ok(new)
    })();
    made.unwrap_or_else(|failed| failed)
}

fn fold_item<'py>(
    folder: &mut Folder<'py>,
    state: Bound<'py, PyAny>,
    item: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // Owned items: the stable ABI (abi3) has no borrowed view of a tuple's slots.
    let items: SmallVec<[Bound<'py, PyAny>; 5]> = match item.cast::<PyTuple>() {
        Ok(t) => t.iter().collect(),
        Err(_) => item.try_iter()?.collect::<PyResult<_>>()?,
    };
    let (stream, event_type, payload, at) = match items.as_slice() {
        [s, t, p] => (s, t, p, None),
        [s, t, p, v, pos] => (s, t, p, Some((v.extract()?, pos.extract()?))),
        _ => {
            return Err(PyTypeError::new_err(
                "events must be (stream_id, event_type, payload[, version, position]) tuples",
            ))
        }
    };
    let decoder = folder.decoder(event_type)?;
    folder.step_at(state, &decoder, event_type, stream, payload, at)
}

/// Fold `events` — `(stream_id, event_type, payload)` tuples, or with `version, position`
/// after them (a decode error then names them) — into `state`:
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
