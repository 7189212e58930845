//! Columnar reads of the global log: the envelope columns of many events as flat buffers.
//!
//! A child module of [`crate::store`] (declared there with `#[path]`) so it reads the
//! store's chunks directly, without copying payloads or building rows. Codes are the
//! store's own interning indexes, so they are stable for the store's lifetime: a caller
//! keeps the names it already knows and asks only for the new ones (`known_types`,
//! `known_streams`). Buffers are little-endian `int64` (positions, timestamps) and
//! `int32` (codes), ready for `numpy.frombuffer`. Pure Rust like the store; their Python
//! face is `crate::py_columns`.

use std::sync::Arc;

use super::{check_limit, check_non_negative, Store, CHUNK_MASK, CHUNK_SHIFT, ERASED};
use crate::errors::CoreResult;

/// The columns of a run of consecutive events.
#[derive(Debug, Default)]
pub struct Columns {
    /// Global positions, `int64` little-endian.
    pub positions: Vec<u8>,
    /// Event-type codes, `int32` little-endian.
    pub type_codes: Vec<u8>,
    /// Stream codes, `int32` little-endian.
    pub stream_codes: Vec<u8>,
    /// Microseconds since the unix epoch (UTC), `int64` little-endian.
    pub recorded_at: Vec<u8>,
    /// Names of the type codes from `known_types` on.
    pub type_names: Vec<Arc<str>>,
    /// Names of the stream codes from `known_streams` up to the largest code returned.
    pub stream_names: Vec<Arc<str>>,
}

impl Store {
    /// Columns of the events after `after_position` (at most `limit`), in position order.
    pub fn read_columns(
        &self,
        after_position: i64,
        limit: Option<i64>,
        known_types: usize,
        known_streams: usize,
    ) -> CoreResult<Columns> {
        let after = check_non_negative("after_position", after_position)?;
        let limit = check_limit(limit)?;
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(self.len);
        let n = (self.len - start).min(limit);
        let mut cols = Columns {
            positions: Vec::with_capacity(n * 8),
            type_codes: Vec::with_capacity(n * 4),
            stream_codes: Vec::with_capacity(n * 4),
            recorded_at: Vec::with_capacity(n * 8),
            ..Columns::default()
        };
        let mut streams_seen = 0u32;
        if self.erased > 0 {
            // Erased events leave holes: walk on past them until the page is full.
            let mut taken = 0;
            for index in start..self.len {
                if taken == limit {
                    break;
                }
                let ev = self.event(index as u32);
                if ev.event_type == ERASED {
                    continue;
                }
                taken += 1;
                cols.positions
                    .extend_from_slice(&(index as i64 + 1).to_le_bytes());
                cols.type_codes
                    .extend_from_slice(&(ev.event_type as i32).to_le_bytes());
                cols.stream_codes
                    .extend_from_slice(&(ev.stream as i32).to_le_bytes());
                cols.recorded_at
                    .extend_from_slice(&ev.recorded_at.to_le_bytes());
                streams_seen = streams_seen.max(ev.stream + 1);
            }
        }
        let mut index = start;
        let end = if self.erased > 0 { start } else { start + n };
        while index < end {
            let chunk = &self.chunks[index >> CHUNK_SHIFT];
            let from = index & CHUNK_MASK as usize;
            let to = (from + (end - index)).min(chunk.len());
            for (offset, ev) in chunk[from..to].iter().enumerate() {
                let position = (index + offset + 1) as i64;
                cols.positions.extend_from_slice(&position.to_le_bytes());
                cols.type_codes
                    .extend_from_slice(&(ev.event_type as i32).to_le_bytes());
                cols.stream_codes
                    .extend_from_slice(&(ev.stream as i32).to_le_bytes());
                cols.recorded_at
                    .extend_from_slice(&ev.recorded_at.to_le_bytes());
                streams_seen = streams_seen.max(ev.stream + 1);
            }
            index += to - from;
        }
        cols.type_names = self.types[known_types.min(self.types.len())..].to_vec();
        let seen = streams_seen as usize;
        cols.stream_names = self.streams[known_streams.min(seen)..seen]
            .iter()
            .map(|s| s.name.clone())
            .collect();
        Ok(cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;

    fn ev<'a>(stream: &'a str, event_type: &'a str, id: u128) -> NewEvent<'a> {
        NewEvent {
            stream,
            event_type,
            payload: b"x",
            id,
        }
    }

    fn i32s(buf: &[u8]) -> Vec<i32> {
        buf.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn i64s(buf: &[u8]) -> Vec<i64> {
        buf.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn columns_page_and_give_only_new_names() {
        let mut store = Store::new();
        let events = [
            ev("a", "T1", 1),
            ev("b", "T2", 2),
            ev("a", "T2", 3),
            ev("c", "T1", 4),
        ];
        for e in &events {
            store.append(&[], std::slice::from_ref(e), None).unwrap();
        }
        let all = store.read_columns(0, None, 0, 0).unwrap();
        assert_eq!(i64s(&all.positions), vec![1, 2, 3, 4]);
        assert_eq!(i32s(&all.type_codes), vec![0, 1, 1, 0]);
        assert_eq!(i32s(&all.stream_codes), vec![0, 1, 0, 2]);
        assert_eq!(all.stream_names.len(), 3);
        let page = store.read_columns(1, Some(2), 2, 2).unwrap();
        assert_eq!(i64s(&page.positions), vec![2, 3]);
        assert!(page.type_names.is_empty());
        assert!(page.stream_names.is_empty());
        let tail = store.read_columns(3, None, 1, 2).unwrap();
        assert_eq!(&*tail.stream_names[0], "c");
        assert_eq!(&*tail.type_names[0], "T2");
        assert!(store
            .read_columns(9, None, 0, 0)
            .unwrap()
            .positions
            .is_empty());
        assert!(store.read_columns(-1, None, 0, 0).is_err());
    }
}
