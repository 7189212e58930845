//! RFC 9562 UUIDv7 generation: 48-bit unix milliseconds, version 7, variant `0b10`, and a
//! 74-bit counter in the random bits ("monotonic random", RFC 9562 §6.2 method 2).
//!
//! One process-wide generator state sits behind a mutex, so values are strictly increasing
//! across threads, even within one millisecond: a new millisecond starts the counter at a
//! random value (top bit clear, leaving headroom), the same millisecond (or a clock that
//! went backwards) adds a small random step, and a counter overflow advances the timestamp
//! by one millisecond. The RNG is a wyrand seeded from the OS (`getrandom`), reseeded in a
//! forked child by `reseed_after_fork`.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyType};

/// Number of counter bits (12 in `rand_a`, 62 in `rand_b`).
const COUNTER_BITS: u32 = 74;
const COUNTER_LIMIT: u128 = 1 << COUNTER_BITS;
/// Largest random increment within one millisecond (2^32).
const STEP_MASK: u64 = 0xFFFF_FFFF;

/// wyrand: a tiny, fast, statistically good 64-bit generator (not cryptographic).
#[derive(Debug, Clone)]
pub struct WyRand(u64);

impl WyRand {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        WyRand(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }
}

/// The generator state: last timestamp, counter, RNG.
#[derive(Debug, Clone)]
pub struct Generator {
    last_ms: u64,
    counter: u128,
    rng: WyRand,
    seeded: bool,
}

impl Generator {
    /// An unseeded generator (seeds itself from the OS on first use).
    pub const fn new() -> Self {
        Generator {
            last_ms: 0,
            counter: 0,
            rng: WyRand::new(0),
            seeded: false,
        }
    }

    /// A generator with a fixed seed (tests).
    pub fn with_seed(seed: u64) -> Self {
        Generator {
            last_ms: 0,
            counter: 0,
            rng: WyRand::new(seed),
            seeded: true,
        }
    }

    /// Reseed the RNG from the OS.
    pub fn reseed(&mut self) {
        let seed = getrandom::u64().unwrap_or_else(|_| fallback_seed());
        self.rng = WyRand::new(seed);
        self.seeded = true;
    }

    #[inline]
    fn fresh_counter(&mut self) -> u128 {
        // 73 random bits: the top counter bit stays clear, leaving room to count up.
        let hi = u128::from(self.rng.next_u64() & ((1 << 9) - 1));
        let lo = u128::from(self.rng.next_u64());
        (hi << 64) | lo
    }

    /// The next UUIDv7 as a 128-bit integer, given the current unix time in ms.
    #[inline]
    pub fn next_at(&mut self, now_ms: u64) -> u128 {
        if !self.seeded {
            self.reseed();
        }
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = self.fresh_counter();
        } else {
            let step = u128::from((self.rng.next_u64() & STEP_MASK) + 1);
            self.counter += step;
            if self.counter >= COUNTER_LIMIT {
                self.last_ms += 1;
                self.counter = self.fresh_counter();
            }
        }
        encode(self.last_ms, self.counter)
    }

    /// Force the state (tests: counter overflow).
    #[cfg(test)]
    pub fn set_state(&mut self, last_ms: u64, counter: u128) {
        self.last_ms = last_ms;
        self.counter = counter;
    }
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

/// Lay out `ms` and the 74-bit `counter` as a UUIDv7.
#[inline]
pub fn encode(ms: u64, counter: u128) -> u128 {
    let ms = u128::from(ms & 0xFFFF_FFFF_FFFF);
    let rand_a = (counter >> 62) & 0xFFF;
    let rand_b = counter & ((1 << 62) - 1);
    (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
}

fn fallback_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Current unix time in milliseconds.
#[inline]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

/// One UUIDv7 from the process-wide generator.
pub fn next() -> u128 {
    let now = now_ms();
    GENERATOR.lock().next_at(now)
}

/// `n` strictly increasing UUIDv7 values, taking the lock once.
pub fn next_n(n: usize) -> Ids {
    let now = now_ms();
    let mut out = Ids::with_capacity(n);
    let mut g = GENERATOR.lock();
    for _ in 0..n {
        out.push(g.next_at(now));
    }
    out
}

/// Ids made by [`next_n`]: a command's few without a heap allocation.
pub type Ids = smallvec::SmallVec<[u128; 4]>;

/// Reseed the process-wide generator (after `fork`).
pub fn reseed() {
    GENERATOR.lock().reseed();
}

static UUID_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static OBJECT_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SAFE_UNKNOWN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `uuid.UUID(int=value)` (classes cached).
///
/// Builds the instance like `UUID.__init__` does — `object.__new__(UUID)`, then the `int`
/// and `is_safe` slots set with `object.__setattr__` semantics — without running the
/// Python-level `__init__`, whose parsing and range checks it does not need (`value` is
/// always in range).
pub fn make_uuid(py: Python<'_>, value: u128) -> PyResult<Bound<'_, PyAny>> {
    let cls = UUID_CLASS.import(py, "uuid", "UUID")?;
    let object_new = OBJECT_NEW.get_or_try_init(py, || {
        py.import("builtins")?
            .getattr("object")?
            .getattr("__new__")
            .map(Bound::unbind)
    })?;
    let unknown = SAFE_UNKNOWN.get_or_try_init(py, || {
        py.import("uuid")?
            .getattr("SafeUUID")?
            .getattr("unknown")
            .map(Bound::unbind)
    })?;
    let obj = object_new.bind(py).call1((cls,))?;
    let int = value.into_pyobject(py)?;
    for (name, v) in [
        (pyo3::intern!(py, "int"), int.as_any()),
        (pyo3::intern!(py, "is_safe"), unknown.bind(py)),
    ] {
        // SAFETY: all three pointers are valid, live objects; GIL held.
        let rc =
            unsafe { pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), v.as_ptr()) };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(obj)
}

/// Generate a UUIDv7 (RFC 9562) as a `uuid.UUID`; strictly increasing within the process.
#[pyfunction]
pub fn uuid7(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    make_uuid(py, next())
}

/// Generate `n` UUIDv7 values as 128-bit ints, strictly increasing.
#[pyfunction]
pub fn uuid7_ints(py: Python<'_>, n: i64) -> PyResult<Bound<'_, PyList>> {
    if n < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "n must not be negative",
        ));
    }
    let values = next_n(n as usize);
    PyList::new(py, values)
}

/// Reseed the UUIDv7 random generator (registered with `os.register_at_fork`).
#[pyfunction]
pub fn reseed_after_fork() {
    reseed();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: u128) -> u128 {
        (v >> 76) & 0xF
    }
    fn variant(v: u128) -> u128 {
        (v >> 62) & 0b11
    }

    #[test]
    fn layout() {
        let mut g = Generator::with_seed(1);
        let v = g.next_at(0x0123_4567_89AB);
        assert_eq!(version(v), 7);
        assert_eq!(variant(v), 0b10);
        assert_eq!(v >> 80, 0x0123_4567_89AB);
        assert_eq!(
            encode(0, COUNTER_LIMIT - 1) & !(0xF << 76) & !(0b11 << 62),
            {
                // all counter bits set
                (0xFFF << 64) | ((1 << 62) - 1)
            }
        );
    }

    #[test]
    fn monotonic_within_ms_and_backwards_clock() {
        let mut g = Generator::with_seed(7);
        let mut last = g.next_at(1000);
        for i in 0..10_000u64 {
            // same ms, then a clock that jumps backwards
            let now = if i % 3 == 0 { 999 } else { 1000 };
            let v = g.next_at(now);
            assert!(v > last);
            assert_eq!(version(v), 7);
            assert_eq!(variant(v), 0b10);
            last = v;
        }
        let v = g.next_at(1001);
        assert!(v > last);
    }

    #[test]
    fn counter_overflow_advances_timestamp() {
        let mut g = Generator::with_seed(3);
        g.set_state(5000, COUNTER_LIMIT - 1);
        let v = g.next_at(5000);
        assert_eq!(v >> 80, 5001);
        assert!(v > encode(5000, COUNTER_LIMIT - 1));
        let w = g.next_at(5000);
        assert!(w > v);
        assert_eq!(w >> 80, 5001);
    }

    #[test]
    fn batches_strictly_increase() {
        let vs = next_n(100_000);
        assert!(vs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn monotonic_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut got = Vec::with_capacity(20_000);
                    for _ in 0..20_000 {
                        // record (value, global order witness) by generating under the lock
                        got.push(next());
                    }
                    got
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let got = h.join().unwrap();
            assert!(got.windows(2).all(|w| w[0] < w[1]));
            all.extend(got);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no duplicates across threads");
    }

    #[test]
    fn reseed_changes_sequence() {
        let mut a = Generator::with_seed(1);
        let mut b = a.clone();
        b.reseed();
        a.next_at(10);
        b.next_at(10);
        assert_ne!(a.next_at(10), b.next_at(10));
    }
}
