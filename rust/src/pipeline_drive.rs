//! `CommandRun.drive`: the command machine run against the Rust in-memory store.
//!
//! Reads (fold, tail), appends and lookups run on the store inside the call, with no
//! effect tuples in between; only the effects Python must do come back (sleep, snapshot
//! load and save, done). The store's lock is only held inside its own methods, which copy
//! rows out before any Python runs (`apply`, decoders, result objects).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use smallvec::SmallVec;

use crate::pipeline::{refs, Eff, Input, Machine};
use crate::py_store::MemoryStore;

fn bound_streams<'py>(
    py: Python<'py>,
    streams: &[Py<PyString>],
) -> SmallVec<[Bound<'py, PyString>; 4]> {
    streams.iter().map(|s| s.bind(py).clone()).collect()
}

fn as_u64(versions: &[i64]) -> Vec<u64> {
    versions.iter().map(|&v| v.max(0) as u64).collect()
}

fn as_i64(versions: Vec<u64>) -> Vec<i64> {
    versions.into_iter().map(|v| v as i64).collect()
}

/// A store error as the machine's input when it decides about it (a conflict, an
/// unavailable store, a duplicate id); any other error ends the run.
fn store_error<'py>(py: Python<'py>, m: &mut Machine, err: PyErr) -> PyResult<Input<'py>> {
    if Machine::is_retried(py, &err)? {
        Ok(Input::Value(err.into_value(py).into_bound(py).into_any()))
    } else {
        m.end();
        Err(err)
    }
}

/// Run one effect on `store`: `Ok(Ok(input))` when it ran here, `Ok(Err(effect))` when
/// the shell must run it.
fn run_native<'py>(
    py: Python<'py>,
    m: &mut Machine,
    store: &MemoryStore,
    eff: Eff,
) -> PyResult<Result<Input<'py>, Eff>> {
    match eff {
        Eff::Fold { streams, state, .. } => {
            let items = bound_streams(py, &streams);
            let out = store.fold_items(
                py,
                &items,
                state.into_bound(py),
                || m.apply_obj(py),
                m.decoders_obj(py),
            );
            Ok(Ok(match out {
                Ok((state, versions)) => Input::Folded(state, as_i64(versions)),
                Err(err) => store_error(py, m, err)?,
            }))
        }
        Eff::Tail { .. } => {
            let e = m.tailing.as_ref().expect("tailing");
            if store.at_versions(py, &e.f.streams, &e.f.versions)? {
                return Ok(Ok(Input::Unchanged));
            }
            let items = bound_streams(py, &e.f.streams);
            let out = store.tail_items(
                py,
                &items,
                as_u64(&e.f.versions),
                e.f.fold_from,
                e.f.state.bind(py).clone(),
                m.apply_obj(py)?,
                m.decoders_obj(py),
            );
            Ok(Ok(match out {
                Ok(Some((state, versions))) => Input::Folded(state, as_i64(versions)),
                Ok(None) => Input::Value(py.None().into_bound(py)),
                Err(err) => store_error(py, m, err)?,
            }))
        }
        Eff::Query => Ok(Ok(
            match crate::pipeline::query::native_read(py, m, store) {
                Ok(input) => input,
                Err(err) => store_error(py, m, err)?,
            },
        )),
        Eff::Append => {
            let r = refs(py)?;
            if m.metadata_bytes.is_none() && m.metadata_obj(py).is_none() {
                m.metadata_bytes = Some(None);
            }
            if m.metadata_bytes.is_none() {
                let meta = r.metadata_bytes.bind(py).call1((m.metadata_obj(py),));
                let meta = match meta {
                    Ok(b) => b,
                    Err(err) => {
                        m.end();
                        return Err(err);
                    }
                };
                m.metadata_bytes = Some(if meta.is_none() {
                    None
                } else {
                    Some(meta.unbind())
                });
            }
            let events = m.events.as_ref().expect("events").args(py);
            let expected = m.expected_args(py);
            let meta = m
                .metadata_bytes
                .as_ref()
                .and_then(|b| b.as_ref())
                .map(|b| b.bind(py).cast::<PyBytes>().cloned())
                .transpose()?;
            let out = if m.is_query() {
                crate::pipeline::query::native_append(py, m, store, meta.as_ref())
            } else {
                store
                    .append_checked(py, &expected, &events, meta.as_ref())
                    .map(|(first, versions, _)| {
                        let versions = versions.into_iter().map(|(s, v)| (s.unbind(), v));
                        (first, versions.collect())
                    })
            };
            Ok(Ok(match out {
                Ok((first, versions)) => Input::Appended(first, versions),
                Err(err) => store_error(py, m, err)?,
            }))
        }
        Eff::Lookup(ids) => {
            let r = refs(py)?;
            let out = store
                .read_by_ids(py, ids.bind(py))
                .and_then(|rows| r.recorded_events.bind(py).call1((rows, m.registry_obj(py))));
            Ok(Ok(match out {
                Ok(found) => Input::Value(found),
                Err(err) => store_error(py, m, err)?,
            }))
        }
        other => Ok(Err(other)),
    }
}

/// `CommandRun.drive`: resume with `result` and run the machine against `store` until it
/// needs an effect Python must do (returned as its tuple).
pub(crate) fn drive<'py>(
    py: Python<'py>,
    m: &mut Machine,
    store: &Bound<'py, MemoryStore>,
    result: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let eff = drive_eff(py, m, store, result)?;
    m.effect_tuple(py, eff)
}

/// [`drive`], returning the effect itself (`CommandRun.execute` returns a `Done`'s
/// result without building its tuple).
pub(crate) fn drive_eff<'py>(
    py: Python<'py>,
    m: &mut Machine,
    store: &Bound<'py, MemoryStore>,
    result: Bound<'py, PyAny>,
) -> PyResult<Eff> {
    let store = store.get();
    let mut input = Input::Value(result);
    loop {
        let eff = m.resume(py, input)?;
        match run_native(py, m, store, eff)? {
            Ok(next) => input = next,
            Err(eff) => return Ok(eff),
        }
    }
}
