//! The command machine's arithmetic, free of Python: retry waits, version bookkeeping, the
//! undeclared-stream check and the versions a command's own events move.
//!
//! `pipeline.rs` calls these with values it read from Python objects; `cargo test` covers
//! them here.

use smallvec::SmallVec;

/// The wait before retrying after store failure number `failures` (1-based), given the
/// policy's un-jittered delay per failure: `None` when the failures so far waited longer
/// than `timeout` in total (the policy is used up and the failure is raised).
///
/// `delay(n)` is called for `n` in `1..=failures`, once each.
pub fn unavailable_wait<E>(
    failures: i64,
    timeout: f64,
    mut delay: impl FnMut(i64) -> Result<f64, E>,
) -> Result<Option<f64>, E> {
    let mut waited = 0.0;
    let mut last = 0.0;
    for n in 1..=failures {
        last = delay(n)?;
        waited += last;
    }
    if waited > timeout {
        return Ok(None);
    }
    Ok(Some(last))
}

/// The attempts that ran the command: every attempt minus the store failures.
pub fn runs(attempt: i64, failures: i64) -> i64 {
    attempt - failures
}

/// Events folded into a cached state since its last snapshot, after its tail moved its
/// versions from `before` to `now`.
pub fn since_after_tail(since: i64, before: &[i64], now: &[i64]) -> i64 {
    since + now.iter().sum::<i64>() - before.iter().sum::<i64>()
}

/// Where each of a command's own events lands among `n` streams (index per event), given
/// where each event's stream was found (`None`: not among them), or `None` when an event
/// is in a stream of an earlier discovery round (before `fold_from`) or was not read at
/// all: its state cannot then be extended with its own events for certain.
pub fn own_event_slots(
    n: usize,
    fold_from: usize,
    found: impl IntoIterator<Item = Option<usize>>,
) -> Option<SmallVec<[usize; 4]>> {
    let mut out = SmallVec::new();
    for at in found {
        let i = at?;
        if n > 1 && i < fold_from {
            return None;
        }
        out.push(i);
    }
    Some(out)
}

/// Move `versions` past events appended into the given stream slots (in place).
pub fn advance_versions(versions: &mut [i64], slots: &[usize]) {
    for &i in slots {
        versions[i] += 1;
    }
}

/// Whether `stream` is one of `known` (the streams a command read).
pub fn is_declared(known: &[&str], stream: &str) -> bool {
    known.contains(&stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(d: f64) -> impl FnMut(i64) -> Result<f64, ()> {
        move |_| Ok(d)
    }

    #[test]
    fn unavailable_waits_the_last_delay_until_the_timeout_is_passed() {
        assert_eq!(unavailable_wait(1, 1.0, fixed(0.25)), Ok(Some(0.25)));
        assert_eq!(unavailable_wait(4, 1.0, fixed(0.25)), Ok(Some(0.25)));
        assert_eq!(unavailable_wait(5, 1.0, fixed(0.25)), Ok(None));
    }

    #[test]
    fn unavailable_wait_follows_a_growing_schedule() {
        let exp = |n: i64| -> Result<f64, ()> { Ok(0.1 * 2f64.powi(n as i32 - 1)) };
        assert_eq!(unavailable_wait(3, 10.0, exp), Ok(Some(0.4)));
        // 0.1 + 0.2 + 0.4 + 0.8 = 1.5 > 1.0
        assert_eq!(unavailable_wait(4, 1.0, exp), Ok(None));
    }

    #[test]
    fn unavailable_wait_passes_the_policy_error_on() {
        let failing = |n: i64| if n == 2 { Err("boom") } else { Ok(0.1) };
        assert_eq!(unavailable_wait(3, 10.0, failing), Err("boom"));
    }

    #[test]
    fn runs_do_not_count_store_failures() {
        assert_eq!(runs(5, 2), 3);
        assert_eq!(runs(1, 0), 1);
    }

    #[test]
    fn since_counts_the_events_of_the_tail() {
        assert_eq!(since_after_tail(10, &[3, 4], &[5, 4]), 12);
        assert_eq!(since_after_tail(0, &[7], &[7]), 0);
    }

    /// `own_event_slots` with each event's stream found by name.
    fn slots(streams: &[&str], fold_from: usize, events: &[&str]) -> Option<Vec<usize>> {
        let found = events.iter().map(|e| streams.iter().position(|s| s == e));
        own_event_slots(streams.len(), fold_from, found).map(|s| s.to_vec())
    }

    #[test]
    fn own_events_land_in_their_streams() {
        let streams = ["a", "b"];
        let found = slots(&streams, 0, &["b", "a", "b"]).unwrap();
        assert_eq!(found, vec![1, 0, 1]);
        let mut versions = [4, 1];
        advance_versions(&mut versions, &found);
        assert_eq!(versions, [5, 3]);
    }

    #[test]
    fn own_events_before_the_last_discovery_round_are_not_certain() {
        assert_eq!(slots(&["order", "p-1"], 1, &["order"]), None);
        assert_eq!(slots(&["order", "p-1"], 1, &["p-1"]), Some(vec![1]));
        assert_eq!(slots(&["a"], 0, &["b"]), None);
        // one stream: its fold_from is always 0
        assert_eq!(slots(&["a"], 0, &["a", "a"]), Some(vec![0, 0]));
    }

    #[test]
    fn undeclared_streams_are_found() {
        assert!(is_declared(&["a", "b"], "b"));
        assert!(!is_declared(&["a", "b"], "c"));
        assert!(!is_declared(&[], "a"));
    }
}
