//! Size caps of one append, the same on every store (PostgreSQL checks them in Python with
//! these very numbers, exported by `_core`, and again inside its SQL append function).

use crate::errors::CoreError;

/// The largest payload of one event, in bytes (16 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// The most bytes one append may carry: payloads plus the encoded metadata once (64 MiB).
pub const MAX_APPEND_BYTES: usize = 64 * 1024 * 1024;
/// The most events one append may write.
pub const MAX_APPEND_EVENTS: usize = 1 << 20;

/// `LimitExceeded` unless `payload_len` fits [`MAX_PAYLOAD_BYTES`]; `index` and
/// `event_type` name the event.
#[inline]
pub fn check_payload(index: usize, event_type: &str, payload_len: usize) -> Result<(), CoreError> {
    if payload_len <= MAX_PAYLOAD_BYTES {
        return Ok(());
    }
    Err(CoreError::LimitExceeded {
        field: "payload",
        reason: format!(
            "event {index} ({event_type}) has a payload of {payload_len} bytes, over the \
             limit of {MAX_PAYLOAD_BYTES} bytes (16 MiB)"
        ),
        value: payload_len as u64,
    })
}

/// `LimitExceeded` unless `events` events of `bytes` bytes in total fit one append.
#[inline]
pub fn check_append(events: usize, bytes: usize) -> Result<(), CoreError> {
    if events > MAX_APPEND_EVENTS {
        return Err(CoreError::LimitExceeded {
            field: "events",
            reason: format!("{events} events in one append, over the limit of {MAX_APPEND_EVENTS}"),
            value: events as u64,
        });
    }
    if bytes > MAX_APPEND_BYTES {
        return Err(CoreError::LimitExceeded {
            field: "append",
            reason: format!(
                "{bytes} bytes of payloads and metadata in one append, over the limit of \
                 {MAX_APPEND_BYTES} bytes (64 MiB)"
            ),
            value: bytes as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_inclusive() {
        assert!(check_payload(0, "T", MAX_PAYLOAD_BYTES).is_ok());
        assert!(matches!(
            check_payload(3, "T", MAX_PAYLOAD_BYTES + 1),
            Err(CoreError::LimitExceeded { field: "payload", reason, .. }) if reason.contains("event 3")
        ));
        assert!(check_append(MAX_APPEND_EVENTS, MAX_APPEND_BYTES).is_ok());
        assert!(matches!(
            check_append(MAX_APPEND_EVENTS + 1, 0),
            Err(CoreError::LimitExceeded {
                field: "events",
                ..
            })
        ));
        assert!(matches!(
            check_append(1, MAX_APPEND_BYTES + 1),
            Err(CoreError::LimitExceeded {
                field: "append",
                ..
            })
        ));
    }
}
