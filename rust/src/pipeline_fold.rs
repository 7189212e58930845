//! The FOLD and TAIL effects' boundary: stores return rows, the machine folds them.
//!
//! A store serves `("fold", streams)` with `(rows, versions)`, and `("tail", streams,
//! versions, fold_from, hint)` with `(rows, versions)` or `None` (the tail cannot extend
//! the state). Rows are `(stream_id, event_type, payload[, version, position])`, what
//! `_core.fold` takes; the machine folds them into the state it holds with the Rust fold
//! loop (`crate::fold`), so no store calls user code. The in-memory store's native path
//! (`pipeline_drive.rs`) reads and folds in one call and resumes with `Input::Folded`.
//!
//! A snapshot load may come back as `(entry, tail)`: `tail` is what its store read with
//! the snapshot. The machine hands it to the TAIL effect that follows as its `hint`; the
//! store checks it is the tail of exactly the loaded versions and returns its rows
//! instead of reading (a store keeps nothing between the two effects).
//!
//! This is a child module of `pipeline` (it sees the machine's fields).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::{refs, streams_list, Eff, Entry, FoldOutcome, Input, Machine, PyObj};

impl Machine {
    /// What a FOLD or TAIL effect came back with, folded into `base` (the state the
    /// effect was asked for with): `Ok((state, versions))`, or `Err(value)` for anything
    /// but rows (a store error; `None` from a tail that cannot extend the state).
    pub(super) fn fold_result<'py>(
        &self,
        py: Python<'py>,
        input: Input<'py>,
        base: Option<PyObj>,
    ) -> PyResult<FoldOutcome<'py>> {
        match input {
            Input::Folded(state, versions) => Ok(Ok((state, versions))),
            Input::Value(v) => match v.cast_exact::<PyTuple>() {
                Ok(t) => {
                    if t.len() != 2 {
                        return Err(PyValueError::new_err(format!(
                            "a store's fold read must return (rows, versions), not a tuple \
                             of {} items",
                            t.len()
                        )));
                    }
                    let versions: Vec<i64> = t.get_item(1)?.extract()?;
                    let base = base.expect("a fold pending").into_bound(py);
                    let state = crate::fold::fold(
                        base,
                        self.apply_obj(py)?,
                        self.decoders_obj(py),
                        t.get_item(0)?,
                    )?;
                    Ok(Ok((state, versions)))
                }
                Err(_) => Ok(Err(v)),
            },
            Input::Appended(..) | Input::Queried(..) | Input::Unchanged => {
                Err(PyTypeError::new_err("unexpected result for a fold"))
            }
        }
    }

    /// A LOAD effect's result: the entry it found (or `None`), keeping the tail read
    /// with it (`(entry, tail)`) for the TAIL effect that follows.
    pub(super) fn loaded(&mut self, py: Python<'_>, input: Input<'_>) -> PyResult<Option<Entry>> {
        self.snap_tail = None;
        let Input::Value(v) = input else {
            return Ok(None);
        };
        let entry_type = refs(py)?.cache_entry.bind(py);
        if v.get_type().is(entry_type) {
            return Ok(Some(self.entry_of(py, &v)?));
        }
        if let Ok(t) = v.cast_exact::<PyTuple>() {
            if t.len() == 2 {
                let entry = t.get_item(0)?;
                if entry.get_type().is(entry_type) {
                    let tail = t.get_item(1)?;
                    if !tail.is_none() {
                        self.snap_tail = Some(tail.unbind());
                    }
                    return Ok(Some(self.entry_of(py, &entry)?));
                }
            }
        }
        Ok(None)
    }

    /// The effect tuples of FOLD and TAIL (the others are built in `effect_tuple`).
    pub(super) fn fold_tuple<'py>(
        &self,
        py: Python<'py>,
        eff: Eff,
    ) -> PyResult<Bound<'py, PyTuple>> {
        match eff {
            Eff::Fold { streams, list, .. } => {
                let streams = match list {
                    Some(l) => l.into_bound(py),
                    None => streams_list(py, &streams)?.into_any(),
                };
                (intern!(py, "fold"), streams).into_pyobject(py)
            }
            Eff::Tail { hint } => {
                let e = self.tailing.as_ref().expect("tailing");
                (
                    intern!(py, "tail"),
                    streams_list(py, &e.f.streams)?,
                    PyList::new(py, &e.f.versions)?,
                    e.f.fold_from,
                    hint,
                )
                    .into_pyobject(py)
            }
            _ => unreachable!("only FOLD and TAIL"),
        }
    }
}
