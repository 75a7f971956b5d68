//! [`RLock`]: Python's `multiprocessing.RLock`, a recursive lock owned by one thread
//! of one process, in shared memory.
//!
//! The owner word is the [`Lock`](super::Lock) word with a *thread* identity (tid and
//! the thread's start time) instead of a process one, so a thread that exits holding
//! it (or whose process dies) is detected like a dead process. Next to it sits the
//! recursion count, written only by the owning thread:
//!
//! | word              | count | meaning                                           |
//! |-------------------|-------|---------------------------------------------------|
//! | `0`/`INCONSISTENT`| 0     | unlocked (flag: a holder died unrepaired)         |
//! | `T`               | n ≥ 1 | held n times by thread `T`                        |
//! | `T\|INCONSISTENT` | n ≥ 1 | held by `T`, which took it over from a dead holder|
//!
//! A third word, the *hold number*, names the owner's current hold: a number the
//! owner draws when it takes the lock (from a process-wide counter, never repeated),
//! and which every guard of that hold carries. A condition wait gives the hold up
//! and, taking the lock back, restores its number, so the thread's outer guards stay
//! valid; a wait that could not take it back leaves the number retired, so every
//! guard of the lost hold knows it holds nothing — even once the thread takes the
//! lock anew.

use super::lock::Taken;
use super::{AcquireError, ReleaseError};
use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::owner::{self, INCONSISTENT};
use crate::object::{self, Mismatch, Object, Shared, SharedState};
use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::shim::{AtomicU64, Ordering};
use crate::wait::{EventCount, Spin, TimedOut};
use std::fmt;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// The owner word and recursion count, on one line: only the owner writes the count.
#[repr(C)]
struct RLockOwner {
    /// The owner word (table in the module docs).
    word: AtomicU64,
    /// How many times the owner holds it; 0 when unlocked. Any value is safe: a
    /// scribbled count only makes the owner release too early or too late.
    count: AtomicU64,
    /// The owner's hold number (see the module docs); written only by the owner.
    /// Any value is safe: a scribbled one makes the owner's guards release nothing
    /// (the lock then stays held until the owner exits, as with a scribbled word).
    hold: AtomicU64,
}

/// The hold numbers drawn so far in this process (0 is never drawn).
static HOLDS: AtomicU64 = AtomicU64::new(0);

/// A hold number no earlier hold of this process had.
#[inline]
fn new_hold() -> u64 {
    HOLDS.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// The shared state of an `RLock`. All-zero bytes are an unlocked lock.
#[repr(C)]
pub(crate) struct RLockState {
    owner: CachePadded<RLockOwner>,
    /// Waiters sleep here; notified by every final release.
    wake: CachePadded<EventCount>,
}

// SAFETY: repr(C), the owner words (atomics) and an eventcount (atomics) on padded lines: any bytes are a valid state, zero is unlocked, no pointers, alignment 128.
unsafe impl SharedState for RLockState {}

/// Bytes of an [`RLockState`].
pub(crate) const STATE_SIZE: usize = size_of::<RLockState>();
const WORD_OFFSET: usize = offset_of!(RLockState, owner) + offset_of!(RLockOwner, word);
const COUNT_OFFSET: usize = offset_of!(RLockState, owner) + offset_of!(RLockOwner, count);
const HOLD_OFFSET: usize = offset_of!(RLockState, owner) + offset_of!(RLockOwner, hold);
const WAKE_OFFSET: usize = offset_of!(RLockState, wake);
const _: () = {
    assert!(WORD_OFFSET == 0);
    assert!(COUNT_OFFSET == 8);
    assert!(HOLD_OFFSET == 16);
    assert!(WAKE_OFFSET == 128);
    assert!(STATE_SIZE == 256);
};

const LAYOUT: ObjectLayout = ObjectLayout {
    kind: ObjectKind::RLock,
    elem: ElemType::NONE,
    slot_size: 0,
    capacity: 0,
    payload_size: STATE_SIZE as u64,
};

/// A recursive lock in shared memory, like Python's `multiprocessing.RLock`: owned by
/// one thread of one process, which may acquire it again and must release it as
/// many times; only the owner may release it.
///
/// A thread (or process) that dies holding it is detected like a dead [`Lock`](super::Lock)
/// holder: the next acquirer gets [`AcquireError::OwnerDied`] with the guard and must
/// repair the protected state, then call [`RLockGuard::mark_consistent`] (see
/// [`Lock`](super::Lock#a-holder-that-dies)).
///
/// # Examples
///
/// ```
/// use shmproc::sync::RLock;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lock = RLock::new()?;
/// let outer = lock.acquire().map_err(|e| e.without_guard())?;
/// let inner = lock.acquire().map_err(|e| e.without_guard())?; // same thread: fine
/// assert_eq!(lock.count(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.locked());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RLock {
    /// The owner word, the count and the waiters' eventcount, in a mapping the
    /// handle keeps.
    state: Shared<RLockState>,
}

impl Object for RLock {
    const KIND: ObjectKind = ObjectKind::RLock;
    type Args<'a> = ();

    fn layout(_: &()) -> Result<ObjectLayout, CreateError> {
        Ok(LAYOUT)
    }

    fn attach(segment: Arc<Segment>) -> Result<RLock, Mismatch> {
        object::check_layout(&segment.info().layout, Some(LAYOUT))?;
        Ok(RLock {
            state: Shared::at(segment, 0)?,
        })
    }

    fn segment(&self) -> &Segment {
        self.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("name", &self.name())
            .field("owner_tid", &self.owner())
            .field("count", &self.count())
            .finish()
    }
}

impl RLock {
    /// Creates an unlocked recursive lock in an anonymous segment, shared with
    /// children started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new() -> Result<RLock, CreateError> {
        RLock::create_anonymous(())
    }

    /// Creates an unlocked recursive lock named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str) -> Result<RLock, CreateError> {
        RLock::create_with(name, (), CreateOptions::new())
    }

    /// Opens the recursive lock named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not an `RLock`, an incompatible layout, a corrupt
    /// header.
    pub fn open(name: &str) -> Result<RLock, OpenError> {
        RLock::open_with(name, OpenOptions::new())
    }

    /// A handle to the `RLockState` at byte `offset` of `segment`'s payload (a
    /// `Condition` over an `RLock` embeds one).
    ///
    /// # Errors
    ///
    /// [`Mismatch`] if the payload cannot hold an `RLockState` there.
    pub(crate) fn from_state(segment: Arc<Segment>, offset: usize) -> Result<RLock, Mismatch> {
        Ok(RLock {
            state: Shared::at(segment, offset)?,
        })
    }

    #[inline]
    fn word(&self) -> &AtomicU64 {
        &self.state.state().owner.word
    }

    #[inline]
    fn count_word(&self) -> &AtomicU64 {
        &self.state.state().owner.count
    }

    #[inline]
    fn hold_word(&self) -> &AtomicU64 {
        &self.state.state().owner.hold
    }

    /// Starts a hold of `me`, which has just taken the lock: count 1, a new number.
    #[inline]
    fn begin_hold(&self) {
        // Only the owner writes these; the next owner's Acquire CAS on the word sees
        // them through our Release CAS at the final release.
        self.count_word().store(1, Ordering::Relaxed);
        self.hold_word().store(new_hold(), Ordering::Relaxed);
    }

    #[inline]
    fn wake(&self) -> &EventCount {
        &self.state.state().wake
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.state.name()
    }

    /// Acquires the lock, waiting as long as it takes; at once if this thread holds
    /// it already (the recursion count goes up).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] with the guard if the previous owner died holding
    /// it.
    #[inline]
    pub fn acquire(&self) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_within(None, true)
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] once `timeout` has passed (never earlier);
    /// [`AcquireError::OwnerDied`] as for [`acquire`](RLock::acquire).
    #[inline]
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_within(Some(timeout), true)
    }

    /// Acquires the lock if it is free or already this thread's, without waiting.
    ///
    /// # Errors
    ///
    /// [`AcquireError::WouldBlock`] if another thread holds it;
    /// [`AcquireError::OwnerDied`] if it is free but still marked inconsistent.
    #[inline]
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_within(None, false)
    }

    #[inline]
    fn acquire_within(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        let me = owner::thread_word();
        let word = self.word();
        // Acquire: pairs with the Release CAS of the final release before.
        match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                self.begin_hold();
                return Ok(self.guard(me));
            }
            Err(cur) if cur & !INCONSISTENT == me => {
                // Ours already: only this thread writes the count while it owns it.
                let n = self.count_word().load(Ordering::Relaxed);
                self.count_word()
                    .store(n.saturating_add(1), Ordering::Relaxed);
                return Ok(self.guard(me));
            }
            Err(_) => {}
        }
        let taken = if block {
            self.wait_for_lock(me, timeout.map(Deadline::after))
                .map_err(|TimedOut| AcquireError::Timeout)?
        } else {
            self.attempt(me).ok_or(AcquireError::WouldBlock)?
        };
        match taken {
            Taken::Clean => Ok(self.guard(me)),
            Taken::Recovered => Err(AcquireError::OwnerDied(self.guard(me))),
        }
    }

    /// A guard of `me`'s current hold (`me` owns the lock).
    fn guard(&self, me: u64) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            me,
            hold: self.hold_word().load(Ordering::Relaxed),
            held: true,
            _not_send: PhantomData,
        }
    }

    #[cold]
    fn wait_for_lock(&self, me: u64, deadline: Option<Deadline>) -> Result<Taken, TimedOut> {
        self.wake().wait_until_checked(
            Spin::DEFAULT,
            deadline,
            || self.attempt(me),
            || self.take_over(me),
        )
    }

    /// Takes a free lock for `me` with count 1 (load first: see `Lock::attempt`).
    fn attempt(&self, me: u64) -> Option<Taken> {
        let word = self.word();
        let cur = word.load(Ordering::Relaxed);
        if owner::id_of(cur) != 0 {
            return None;
        }
        let (new, taken) = if cur == 0 {
            (me, Taken::Clean)
        } else {
            (me | INCONSISTENT, Taken::Recovered)
        };
        // Acquire: pairs with the Release CAS of the final release before.
        word.compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        self.begin_hold();
        Some(taken)
    }

    /// The stall check: takes the lock over from an owner thread that has exited.
    fn take_over(&self, me: u64) -> Option<Taken> {
        let word = self.word();
        let cur = word.load(Ordering::Acquire);
        if owner::id_of(cur) == 0 {
            return self.attempt(me);
        }
        if owner::holder_alive(cur) {
            return None;
        }
        // From the exact dead word: one of several racing waiters wins.
        word.compare_exchange(cur, me | INCONSISTENT, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.begin_hold();
        Some(Taken::Recovered)
    }

    /// Releases one level for `me`; for a guard, only of hold number `hold`.
    fn release_as(&self, me: u64, hold: Option<u64>) -> Result<(), ReleaseError> {
        let word = self.word();
        let cur = word.load(Ordering::Relaxed);
        if owner::id_of(cur) == 0 {
            return Err(ReleaseError::NotLocked);
        }
        if cur & !INCONSISTENT != me {
            return Err(ReleaseError::NotOwner);
        }
        if hold.is_some_and(|h| h != self.hold_word().load(Ordering::Relaxed)) {
            // A guard of a hold a condition wait lost: it holds nothing.
            return Err(ReleaseError::NotOwner);
        }
        let n = self.count_word().load(Ordering::Relaxed);
        if n > 1 {
            self.count_word().store(n - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.unlock_fully(me);
        Ok(())
    }

    /// Gives the lock up entirely (count to 0); `me` must own it.
    fn unlock_fully(&self, me: u64) {
        self.count_word().store(0, Ordering::Relaxed);
        let word = self.word();
        let mut cur = me;
        loop {
            // Release: publishes the owner's writes; pairs with the next acquirer's
            // Acquire CAS. The inconsistent flag stays until somebody marks.
            match word.compare_exchange(
                cur,
                cur & INCONSISTENT,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) if actual & !INCONSISTENT == me && actual != cur => cur = actual,
                Err(_) => return,
            }
        }
        self.wake().notify_one();
    }

    /// Releases one level of the calling thread's hold (Python's `release()`), for a
    /// guard given up with [`std::mem::forget`]; with a guard, drop it instead.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotLocked`] if nobody holds it, [`ReleaseError::NotOwner`] if
    /// another thread (of this or another process) does.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.release_as(owner::thread_word(), None)
    }

    /// Whether any thread of any process holds the lock. A snapshot.
    pub fn locked(&self) -> bool {
        owner::id_of(self.word().load(Ordering::Relaxed)) != 0
    }

    /// The tid of the owning thread (the pid, for a process's main thread), `None` if
    /// unlocked. A snapshot.
    pub fn owner(&self) -> Option<u32> {
        match owner::id_of(self.word().load(Ordering::Relaxed)) {
            0 => None,
            tid => Some(tid),
        }
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned(&self) -> bool {
        self.word().load(Ordering::Relaxed) & !INCONSISTENT == owner::thread_word()
    }

    /// The owner's recursion count, 0 if unlocked. A snapshot.
    pub fn count(&self) -> u64 {
        if self.locked() {
            self.count_word().load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether the lock is free of the inconsistent mark a dying holder leaves.
    pub fn is_consistent(&self) -> bool {
        self.word().load(Ordering::Relaxed) & INCONSISTENT == 0
    }

    /// Processes asleep waiting for the lock. A snapshot.
    pub fn waiters(&self) -> u32 {
        self.wake().waiters()
    }

    /// Whether `other` is a handle to this very lock state (in the same mapping).
    pub(crate) fn same_state(&self, other: &RLock) -> bool {
        self.state.same(&other.state)
    }
}

/// Proof that the calling thread holds an [`RLock`] (one level of it); releases that
/// level when dropped. Not `Send`: the owning thread must release it.
///
/// A timed [`Condition`](super::Condition) wait that could not take the lock back by
/// its deadline (plus [`RELOCK_GRACE`](super::RELOCK_GRACE)) returns
/// [`WaitError::NotReacquired`](super::WaitError::NotReacquired) and leaves the guard
/// it was given *released*: [`is_held`](RLockGuard::is_held) is `false`, dropping it
/// does nothing, and a wait with it is
/// [`WaitError::NotOwner`](super::WaitError::NotOwner). The wait had given up every
/// level of the thread's hold, so the thread's other guards of that hold (outer
/// levels) hold nothing either: their `is_held` is `false` too, and their drops
/// release nothing — also after the thread has taken the lock anew (each guard
/// carries the number of its hold, and a new hold gets a new number).
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    me: u64,
    /// The number of the hold this guard is a level of.
    hold: u64,
    /// `false` once a condition wait with this guard failed to take the lock back
    /// (see the type docs): the guard holds nothing and must not release.
    held: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &'a RLock {
        self.lock
    }

    /// Whether this guard still stands for a level of the thread's hold: `false`
    /// after a [`Condition`](super::Condition) wait with it, or with another guard
    /// of the same hold, returned
    /// [`WaitError::NotReacquired`](super::WaitError::NotReacquired) (or after
    /// [`RLock::release`] gave the hold up behind the guard's back).
    pub fn is_held(&self) -> bool {
        self.held
            && self.lock.word().load(Ordering::Relaxed) & !INCONSISTENT == self.me
            && self.lock.hold_word().load(Ordering::Relaxed) == self.hold
    }

    /// Whether the protected state is known to be consistent: `false` after
    /// [`AcquireError::OwnerDied`] until [`mark_consistent`](RLockGuard::mark_consistent).
    pub fn is_consistent(&self) -> bool {
        self.lock.is_consistent()
    }

    /// Declares the protected state repaired after [`AcquireError::OwnerDied`]. Does
    /// nothing if the guard no longer holds the lock ([`is_held`](RLockGuard::is_held)).
    pub fn mark_consistent(&mut self) {
        if !self.is_held() {
            return;
        }
        let _ = self.lock.word().compare_exchange(
            self.me | INCONSISTENT,
            self.me,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Gives the lock up entirely for a condition wait and returns the recursion
    /// count to restore; `None` if this guard or thread does not hold it.
    pub(crate) fn unlock_for_wait(&mut self) -> Option<u64> {
        if !self.is_held() {
            return None;
        }
        let count = self.lock.count_word().load(Ordering::Relaxed).max(1);
        self.lock.unlock_fully(self.me);
        Some(count)
    }

    /// Takes the lock back with recursion count `count` after a condition wait,
    /// waiting until `deadline` (`None`: as long as it takes). On a timeout the
    /// guard is left released ([`is_held`](RLockGuard::is_held) is `false`).
    pub(crate) fn relock_after_wait(
        &mut self,
        count: u64,
        deadline: Option<Deadline>,
    ) -> Result<Taken, TimedOut> {
        let taken = match self.lock.attempt(self.me) {
            Some(t) => Ok(t),
            None => self.lock.wait_for_lock(self.me, deadline),
        };
        if taken.is_ok() {
            // Only the owner writes these, and we own it again: the same hold as
            // before the wait, so its outer guards are valid again.
            self.lock.count_word().store(count, Ordering::Relaxed);
            self.lock.hold_word().store(self.hold, Ordering::Relaxed);
        }
        self.held = taken.is_ok();
        taken
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.lock.release_as(self.me, Some(self.hold));
        }
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("lock", self.lock)
            .field("held", &self.held)
            .field("consistent", &self.is_consistent())
            .finish()
    }
}

/// `shmproc inspect` rows for an `RLock` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let (Some(word), Some(count), Some(waiters)) = (
        object::peek::<u64>(segment, WORD_OFFSET),
        object::peek::<u64>(segment, COUNT_OFFSET),
        object::peek::<u32>(segment, WAKE_OFFSET + 4),
    ) else {
        return object::unreadable(segment);
    };
    let locked = owner::id_of(word) != 0;
    vec![
        ("locked", if locked { "yes" } else { "no" }.to_string()),
        ("owner thread", object::show_owner(word)),
        ("count", if locked { count } else { 0 }.to_string()),
        (
            "consistent",
            if word & INCONSISTENT == 0 {
                "yes".to_string()
            } else {
                "no (a holder died; the next one must repair)".to_string()
            },
        ),
        ("waiters", waiters.to_string()),
    ]
}
