//! [`Barrier`]: Python's `multiprocessing.Barrier`, in shared memory.
//!
//! The whole state is one `AtomicU64`, so every transition is a single CAS and a
//! process dying between two steps can leave nothing half-done:
//!
//! ```text
//! bits  0..24  pass number (wrapping)
//! bits 24..40  parties arrived in this pass; == parties while the last one runs the
//!              action; more than parties only if a peer scribbled (reads as broken)
//! bit     40   broken (abort, a timeout, or a failed action)
//! bits 41..64  history: bit 41+i is 1 if pass (pass number - 1 - i) was ended by
//!              reset rather than completed
//! ```
//!
//! A waiter remembers its pass number and waits for it to change (or for `broken`).
//! When it changes, the history says how that pass ended — so a waiter that sleeps
//! through later passes still learns whether its own completed or was reset. A waiter
//! that slept through more than 23 later passes can no longer tell and reports
//! [`BrokenBarrier`].
//!
//! The parties count lives in the checksummed header, where a peer cannot change it.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::{self, Mismatch, Object, Shared, SharedState};
use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::shim::{AtomicU64, Ordering};
use crate::wait::{EventCount, TimedOut};
use std::fmt;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// The shared state of a barrier. All-zero bytes are a fresh barrier.
#[repr(C)]
struct BarrierState {
    /// The state word (bit table in the module docs).
    word: CachePadded<AtomicU64>,
    /// Waiters sleep here; notified by every pass, abort and reset.
    wake: CachePadded<EventCount>,
}

// SAFETY: repr(C), an atomic state word and an eventcount (atomics) on padded lines:
// any bytes are a valid state (a scribbled word reads as broken or a wrong count), zero
// is a fresh barrier, no pointers, alignment 128.
unsafe impl SharedState for BarrierState {}

const STATE_SIZE: usize = size_of::<BarrierState>();
const WORD_OFFSET: usize = offset_of!(BarrierState, word);
const WAKE_OFFSET: usize = offset_of!(BarrierState, wake);
const _: () = {
    assert!(WORD_OFFSET == 0);
    assert!(WAKE_OFFSET == 128);
    assert!(STATE_SIZE == 256);
};

const PASS_BITS: u32 = 24;
const PASS_MASK: u64 = (1 << PASS_BITS) - 1;
const COUNT_SHIFT: u32 = 24;
const COUNT_MASK: u64 = 0xffff;
const ONE_ARRIVAL: u64 = 1 << COUNT_SHIFT;
const BROKEN: u64 = 1 << 40;
const HISTORY_SHIFT: u32 = 41;
const HISTORY_BITS: u32 = 23;
const HISTORY_MASK: u64 = (1 << HISTORY_BITS) - 1;
const _: () = assert!(HISTORY_SHIFT + HISTORY_BITS == 64);

/// The largest number of parties a barrier can have.
pub const MAX_PARTIES: usize = COUNT_MASK as usize;

fn pass_of(w: u64) -> u64 {
    w & PASS_MASK
}
fn count_of(w: u64) -> u64 {
    (w >> COUNT_SHIFT) & COUNT_MASK
}
fn history_of(w: u64) -> u64 {
    (w >> HISTORY_SHIFT) & HISTORY_MASK
}

/// The word that starts the next pass after `w`'s: count 0, not broken, and the
/// history extended with how `w`'s pass ended.
fn next_pass(w: u64, ended_by_reset: bool) -> u64 {
    let history = ((history_of(w) << 1) | u64::from(ended_by_reset)) & HISTORY_MASK;
    ((pass_of(w) + 1) & PASS_MASK) | (history << HISTORY_SHIFT)
}

fn layout(parties: usize) -> ObjectLayout {
    ObjectLayout {
        kind: ObjectKind::Barrier,
        elem: ElemType::NONE,
        slot_size: 0,
        capacity: parties as u64,
        payload_size: STATE_SIZE as u64,
    }
}

/// The barrier was broken — by [`abort`](Barrier::abort), [`reset`](Barrier::reset),
/// a party whose wait timed out, or an action that panicked — before or while this
/// party waited (Python's `BrokenBarrierError`). It stays broken until
/// [`reset`](Barrier::reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenBarrier;

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken (aborted, reset, or a party timed out)")
    }
}

impl std::error::Error for BrokenBarrier {}

/// A barrier in shared memory for a fixed number of parties, like Python's
/// `multiprocessing.Barrier`: each party calls [`wait`](Barrier::wait), and all of
/// them return once the last one arrives. Then the barrier is ready for the next
/// pass.
///
/// `wait` returns the party's arrival index, `0..parties`, different for each party
/// of a pass (the first to arrive gets 0). An optional [action](Barrier::with_action)
/// runs exactly once per pass, in the last party to arrive, before any party is
/// released.
///
/// A party whose timed wait expires breaks the barrier, like [`abort`](Barrier::abort):
/// every waiter, and every later caller until [`reset`](Barrier::reset), gets
/// [`BrokenBarrier`]. A party that dies is indistinguishable from a slow one: the
/// others wait until their timeouts.
///
/// # Examples
///
/// ```
/// use shmproc::sync::Barrier;
/// use shmproc::Process;
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let barrier = Barrier::new(3)?;
/// let mut kids = Vec::new();
/// for _ in 0..2 {
///     kids.push(Process::spawn_returning(|| -> i32 {
///         match barrier.wait_timeout(Duration::from_secs(10)) {
///             Ok(_index) => 0,
///             Err(_) => 1,
///         }
///     })?);
/// }
/// let index = barrier.wait_timeout(Duration::from_secs(10))?;
/// assert!(index < 3);
/// for kid in &mut kids {
///     assert!(kid.join()?.success());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Barrier {
    /// The state word and the waiters' eventcount, in a mapping the handle keeps.
    state: Shared<BarrierState>,
    /// From the validated header, 1..=MAX_PARTIES.
    parties: u64,
    /// Run by this handle's process when it is the last to arrive.
    action: Option<Arc<dyn Fn() + Send + Sync>>,
    /// What [`wait`](Barrier::wait) waits at most; `None`: as long as it takes.
    timeout: Option<Duration>,
}

impl Object for Barrier {
    const KIND: ObjectKind = ObjectKind::Barrier;
    /// The number of parties, 1 to [`MAX_PARTIES`].
    type Args<'a> = usize;

    fn layout(parties: &usize) -> Result<ObjectLayout, CreateError> {
        if !(1..=MAX_PARTIES).contains(parties) {
            return Err(CreateError::InvalidArgument(format!(
                "a Barrier needs 1 to {MAX_PARTIES} parties, not {parties}"
            )));
        }
        Ok(layout(*parties))
    }

    fn attach(segment: Arc<Segment>) -> Result<Barrier, Mismatch> {
        let found = segment.info().layout;
        let parties = usize::try_from(found.capacity)
            .ok()
            .filter(|p| (1..=MAX_PARTIES).contains(p));
        object::check_layout(&found, parties.map(layout))?;
        Ok(Barrier {
            state: Shared::at(segment, 0)?,
            parties: found.capacity,
            action: None,
            timeout: None,
        })
    }

    fn segment(&self) -> &Segment {
        self.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.name())
            .field("parties", &self.parties)
            .field("timeout", &self.timeout)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

/// Breaks the barrier if the action panics (Python: an exception in the action
/// breaks the barrier).
struct BreakOnUnwind<'a>(&'a Barrier);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Barrier {
    /// Creates a barrier for `parties` parties in an anonymous segment, shared with
    /// children started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] if `parties` is 0 or more than
    /// [`MAX_PARTIES`] (Python raises `ValueError`); another [`CreateError`] if the
    /// segment cannot be created.
    pub fn new(parties: usize) -> Result<Barrier, CreateError> {
        Barrier::create_anonymous(parties)
    }

    /// Creates a barrier for `parties` parties named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] as for [`new`](Barrier::new); another
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str, parties: usize) -> Result<Barrier, CreateError> {
        Barrier::create_with(name, parties, CreateOptions::new())
    }

    /// Opens the barrier named `name`; its number of parties comes from the segment.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Barrier`, an incompatible layout (including a
    /// parties count outside `1..=MAX_PARTIES`), a corrupt header.
    pub fn open(name: &str) -> Result<Barrier, OpenError> {
        Barrier::open_with(name, OpenOptions::new())
    }

    /// This handle with `action`, run exactly once per pass by the last party to
    /// arrive, before the others are released (Python's `action`). Each process sets
    /// its own (a child started with [`Process`](crate::Process) inherits its
    /// parent's handle and action); whichever process arrives last runs its own. If
    /// the action panics, the barrier breaks and the panic continues.
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Barrier {
        self.action = Some(Arc::new(action));
        self
    }

    /// This handle with a default timeout for [`wait`](Barrier::wait) (Python's
    /// `Barrier(parties, action, timeout)`): a `wait` that has not passed within
    /// `timeout` breaks the barrier, as [`wait_timeout`](Barrier::wait_timeout)
    /// does. `wait_timeout` still uses its own timeout. Like the action, the default
    /// belongs to this handle (and the clones and children that inherit it), not to
    /// the shared barrier: a process that opens the barrier by name sets its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::sync::{Barrier, BrokenBarrier};
    /// use std::time::Duration;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let barrier = Barrier::new(2)?.with_timeout(Duration::from_millis(10));
    /// // Nobody else comes: the default timeout breaks the barrier.
    /// assert_eq!(barrier.wait(), Err(BrokenBarrier));
    /// assert!(barrier.broken());
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.timeout = Some(timeout);
        self
    }

    /// The default timeout of [`wait`](Barrier::wait), if one was set with
    /// [`with_timeout`](Barrier::with_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    #[inline]
    fn word(&self) -> &AtomicU64 {
        &self.state.state().word
    }

    #[inline]
    fn wake(&self) -> &EventCount {
        &self.state.state().wake
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.state.name()
    }

    /// The number of parties each pass needs (Python's `parties`).
    pub fn parties(&self) -> usize {
        self.parties as usize
    }

    /// Parties waiting in the current pass (Python's `n_waiting`). A snapshot.
    pub fn n_waiting(&self) -> usize {
        count_of(self.word().load(Ordering::Relaxed)).min(self.parties) as usize
    }

    /// Whether the barrier is broken (Python's `broken`).
    pub fn broken(&self) -> bool {
        self.is_broken(self.word().load(Ordering::Relaxed))
    }

    fn is_broken(&self, w: u64) -> bool {
        w & BROKEN != 0 || count_of(w) > self.parties
    }

    /// How pass `pass` ended, as seen in word `w`; `None` while it is open.
    fn outcome(&self, pass: u64, w: u64) -> Option<Result<(), BrokenBarrier>> {
        let passed = pass_of(w).wrapping_sub(pass) & PASS_MASK;
        if passed == 0 {
            return self.is_broken(w).then_some(Err(BrokenBarrier));
        }
        if passed > u64::from(HISTORY_BITS) {
            // Slept through too many passes to know how its own ended.
            return Some(Err(BrokenBarrier));
        }
        let reset = (history_of(w) >> (passed - 1)) & 1 != 0;
        Some(if reset { Err(BrokenBarrier) } else { Ok(()) })
    }

    /// Waits until all parties have called `wait` (Python's `wait()`), and returns
    /// this party's arrival index in `0..parties`. Waits at most the handle's
    /// default timeout ([`with_timeout`](Barrier::with_timeout)), if it has one, and
    /// then breaks the barrier; otherwise as long as it takes.
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`] if the barrier is or becomes broken, including by this
    /// party's own default timeout (never before it has passed).
    pub fn wait(&self) -> Result<usize, BrokenBarrier> {
        self.wait_within(self.timeout.map(Deadline::after))
    }

    /// As [`wait`](Barrier::wait), waiting at most `timeout` (Python's
    /// `wait(timeout)`) instead of the default; if it passes first, this party
    /// breaks the barrier.
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`] if the barrier is or becomes broken, including by this
    /// party's own timeout (never before `timeout` has passed).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BrokenBarrier> {
        self.wait_within(Some(Deadline::after(timeout)))
    }

    fn wait_within(&self, deadline: Option<Deadline>) -> Result<usize, BrokenBarrier> {
        let word = self.word();
        // Acquire: pairs with the AcqRel CAS that opened this pass.
        let mut w = word.load(Ordering::Acquire);
        let (pass, index) = loop {
            if self.is_broken(w) {
                return Err(BrokenBarrier);
            }
            let count = count_of(w);
            if count == self.parties {
                // The last party of this pass is running the action: wait for the
                // next pass to open (Python: arrivals wait while the barrier drains).
                let pass = pass_of(w);
                w = self.wait_for_word(deadline, pass, |w| pass_of(w) != pass)?;
                continue;
            }
            let arrived = w + ONE_ARRIVAL;
            let last = count + 1 == self.parties;
            let new = if last && self.action.is_none() {
                next_pass(w, false)
            } else {
                arrived
            };
            // AcqRel: Acquire sees what earlier parties did before arriving; Release
            // publishes what we did to the party that completes the pass.
            match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if last => return self.complete(arrived, count),
                Ok(_) => break (pass_of(w), count),
                Err(actual) => w = actual,
            }
        };
        let ended = self.wake().wait_until(deadline, || {
            self.outcome(pass, word.load(Ordering::Acquire))
        });
        match ended {
            Ok(outcome) => outcome.map(|()| index as usize),
            Err(TimedOut) => self.break_on_timeout(pass).map(|()| index as usize),
        }
    }

    /// The last party's part: run the action (if any) and open the next pass.
    /// `arrived` is the word after our arrival was counted (unless there was no action,
    /// in which case the pass is already complete).
    fn complete(&self, arrived: u64, index: u64) -> Result<usize, BrokenBarrier> {
        if let Some(action) = &self.action {
            let guard = BreakOnUnwind(self);
            action();
            std::mem::forget(guard);
            // The pass may have been broken or reset while the action ran.
            let word = self.word();
            if word
                .compare_exchange(
                    arrived,
                    next_pass(arrived, false),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                self.wake().notify_all();
                return Err(BrokenBarrier);
            }
        }
        self.wake().notify_all();
        Ok(index as usize)
    }

    /// Waits until `done(word)`, or until the barrier breaks; a timeout breaks it.
    fn wait_for_word(
        &self,
        deadline: Option<Deadline>,
        pass: u64,
        done: impl Fn(u64) -> bool,
    ) -> Result<u64, BrokenBarrier> {
        let word = self.word();
        let r = self.wake().wait_until(deadline, || {
            let w = word.load(Ordering::Acquire);
            (done(w) || self.is_broken(w)).then_some(w)
        });
        match r {
            Ok(w) => Ok(w),
            Err(TimedOut) => self
                .break_on_timeout(pass)
                .map(|()| word.load(Ordering::Acquire)),
        }
    }

    /// A timed-out party breaks its pass — unless it ended meanwhile, in which case
    /// its outcome stands.
    fn break_on_timeout(&self, pass: u64) -> Result<(), BrokenBarrier> {
        let word = self.word();
        let mut w = word.load(Ordering::Acquire);
        loop {
            if let Some(outcome) = self.outcome(pass, w) {
                return outcome;
            }
            match word.compare_exchange_weak(w, w | BROKEN, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.wake().notify_all();
                    return Err(BrokenBarrier);
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Breaks the barrier (Python's `abort()`): every party waiting now, and every
    /// later `wait` until [`reset`](Barrier::reset), gets [`BrokenBarrier`].
    pub fn abort(&self) {
        let _ = self
            .word()
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                (w & BROKEN == 0).then_some(w | BROKEN)
            });
        self.wake().notify_all();
    }

    /// Returns the barrier to its fresh state (Python's `reset()`): parties waiting
    /// now get [`BrokenBarrier`], and the next `wait` starts a new pass.
    pub fn reset(&self) {
        let _ = self
            .word()
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                // A fresh pass with nobody in it needs nothing.
                (count_of(w) != 0 || self.is_broken(w)).then(|| next_pass(w, true))
            });
        self.wake().notify_all();
    }
}

/// `shmproc inspect` rows for a `Barrier` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let (Some(w), Some(waiters)) = (
        object::peek::<u64>(segment, WORD_OFFSET),
        object::peek::<u32>(segment, WAKE_OFFSET + 4),
    ) else {
        return object::unreadable(segment);
    };
    let parties = segment.info().layout.capacity;
    let broken = w & BROKEN != 0 || count_of(w) > parties;
    vec![
        ("parties", parties.to_string()),
        ("n_waiting", count_of(w).min(parties).to_string()),
        ("broken", if broken { "yes" } else { "no" }.to_string()),
        ("pass", pass_of(w).to_string()),
        ("sleepers", waiters.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_tells_how_each_pass_ended() {
        let b = Barrier::new(2).unwrap();
        let w0 = 0;
        let w1 = next_pass(w0, false); // pass 0 completed
        let w2 = next_pass(w1, true); // pass 1 reset
        let w3 = next_pass(w2, false); // pass 2 completed
        assert_eq!(b.outcome(0, w3), Some(Ok(())));
        assert_eq!(b.outcome(1, w3), Some(Err(BrokenBarrier)));
        assert_eq!(b.outcome(2, w3), Some(Ok(())));
        assert_eq!(b.outcome(3, w3), None);
        assert_eq!(b.outcome(3, w3 | BROKEN), Some(Err(BrokenBarrier)));
        // A count above parties is a scribble: broken, never a hang.
        assert_eq!(
            b.outcome(3, w3 | (5 << COUNT_SHIFT)),
            Some(Err(BrokenBarrier))
        );
        let mut w = w3;
        for _ in 0..HISTORY_BITS + 1 {
            w = next_pass(w, false);
        }
        assert_eq!(b.outcome(0, w), Some(Err(BrokenBarrier)));
        // Pass numbers wrap.
        let top = PASS_MASK;
        assert_eq!(pass_of(next_pass(top, false)), 0);
        assert_eq!(b.outcome(top, next_pass(top, false)), Some(Ok(())));
    }
}
