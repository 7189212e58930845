//! `eventcore._core`: the Rust core of eventcore.
//!
//! Stream-id and event-type validation, size caps, UUIDv7 generation, batch folding, the in-memory event store
//! and the command machine (`pipeline*.rs`).
//! Plain Python types in, plain Python types out; errors are the classes of
//! `eventcore.errors`.

pub mod cache_core;
pub mod codec;
pub mod command_init;
pub mod errors;
pub mod event_type;
pub mod fold;
pub mod limits;
pub mod pipeline;
pub mod pipeline_drive;
pub mod pipeline_entry;
pub mod pipeline_logic;
pub mod pipeline_result;
pub mod py_call;
pub mod py_columns;
pub mod py_store;
pub mod py_text;
pub mod store;
pub mod stream_id;
pub mod uuid7;

use pyo3::prelude::*;

/// The Rust core of eventcore.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stream_id::validate_stream_id, m)?)?;
    m.add_function(wrap_pyfunction!(stream_id::stream_id, m)?)?;
    m.add_function(wrap_pyfunction!(event_type::validate_event_type, m)?)?;
    m.add("MAX_PAYLOAD_BYTES", limits::MAX_PAYLOAD_BYTES)?;
    m.add("MAX_APPEND_BYTES", limits::MAX_APPEND_BYTES)?;
    m.add("MAX_APPEND_EVENTS", limits::MAX_APPEND_EVENTS)?;
    m.add_function(wrap_pyfunction!(uuid7::uuid7, m)?)?;
    m.add_function(wrap_pyfunction!(uuid7::uuid7_ints, m)?)?;
    m.add_function(wrap_pyfunction!(uuid7::reseed_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(fold::fold, m)?)?;
    m.add("enc_hook", codec::enc_hook_function(m)?)?;
    m.add_function(wrap_pyfunction!(codec::dec_hook, m)?)?;
    m.add("ANY", store::ANY)?;
    m.add("STREAM_EXISTS", store::STREAM_EXISTS)?;
    m.add("NO_STREAM", store::NO_STREAM)?;
    m.add_class::<py_store::MemoryStore>()?;
    m.add_class::<command_init::CommandInit>()?;
    m.add_class::<command_init::BoundInit>()?;
    m.add_class::<pipeline::CommandRun>()?;
    m.add_class::<pipeline_result::ExecutionResult>()?;
    m.add_class::<pipeline_entry::CacheEntry>()?;
    m.add_class::<cache_core::StateCacheCore>()?;
    Ok(())
}
