//! [`Condition`]: Python's `multiprocessing.Condition`, over a [`Lock`] or an
//! [`RLock`] that lives in the same segment.
//!
//! ```text
//! payload offset  what
//!              0  the lock's state (256 bytes)
//!            256  next ticket, number of waiting slots (one line)
//!            384  CAPACITY slots of 32 bytes, one per waiting thread
//! ```
//!
//! A waiter (holding the lock) claims a free slot by a CAS of its `claim` word from 0
//! to its process's owner word, takes a ticket, marks the slot WAITING, releases the
//! lock and sleeps on the slot's own eventcount until the slot reads NOTIFIED.
//! `notify(n)` (holding the lock) moves the n WAITING slots with the smallest tickets
//! to NOTIFIED — oldest waiters first, like Python — and wakes each. A waiter whose
//! timeout passes moves its slot from WAITING to IDLE by CAS; if that fails, a notify
//! won the race and the wait counts as notified. So `notify(n)` wakes exactly
//! `min(n, waiting)` waiters, each of which returns `true`, and no wait returns
//! `true` spuriously.
//!
//! A waiter that dies leaves its slot claimed: `notify(n)` with fewer than all
//! waiters skips (and frees) slots of dead processes, and a waiter that finds every
//! slot taken reclaims those of dead processes.

use super::lock::{self as lock_mod, Lock, LockGuard, Taken};
use super::rlock::{self as rlock_mod, RLock, RLockGuard};
use super::{AcquireError, LOCK_STATE_SIZE};
use crate::layout::header::{ElemType, ObjectKind, ObjectLayout, TypeName};
use crate::layout::padded::CachePadded;
use crate::object::{self, Mismatch, Object, Shared, SharedState, owner};
use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::shim::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{EventCount, TimedOut};
use std::fmt;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// How many threads (of all processes together) can wait on one condition at once.
pub const MAX_WAITERS: usize = 64;

/// How long after its deadline a timed [`Condition`] wait may still spend taking its
/// lock back (for a notifier that is still finishing its critical section) before it
/// gives up with [`WaitError::NotReacquired`].
pub const RELOCK_GRACE: Duration = Duration::from_secs(1);

/// The condition's own counters, on one line after the lock.
#[repr(C)]
struct CondHeader {
    /// The next ticket to hand out; tickets order waiters for `notify(n)`.
    next_ticket: AtomicU64,
    /// Slots in state WAITING: a hint that lets a notify with nobody waiting skip the
    /// scan. Kept by whoever moves a slot into or out of WAITING.
    waiting: AtomicU64,
}

/// One waiting thread's slot. Every field is an atomic, so references to it are
/// fine; any bit pattern is valid.
#[repr(C)]
struct Slot {
    /// 0 if free, else the owner word of the process that claimed it.
    claim: AtomicU64,
    /// The claimant's ticket.
    ticket: AtomicU64,
    /// IDLE, WAITING or NOTIFIED; only meaningful while claimed.
    state: AtomicU32,
    /// Zero; reserved.
    reserved: AtomicU32,
    /// The claimant sleeps here until notified.
    wake: EventCount,
}

/// The condition's own state after the lock's: its counters, then the slots.
#[repr(C)]
struct CondState {
    header: CachePadded<CondHeader>,
    slots: [Slot; MAX_WAITERS],
}

// SAFETY: repr(C), atomics (and eventcounts, atomics) only: any bytes are a valid
// state (a scribbled slot is a spurious or missed notification of that slot, bounded
// by the waiter's deadline), zero is a condition nobody waits on, no pointers,
// alignment 128.
unsafe impl SharedState for CondState {}

const IDLE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

const HEADER_OFFSET: usize = LOCK_STATE_SIZE;
const SLOTS_OFFSET: usize = HEADER_OFFSET + size_of::<CachePadded<CondHeader>>();
const SLOT_SIZE: usize = size_of::<Slot>();
const PAYLOAD_SIZE: usize = SLOTS_OFFSET + MAX_WAITERS * SLOT_SIZE;
const _: () = {
    assert!(LOCK_STATE_SIZE == lock_mod::STATE_SIZE);
    assert!(LOCK_STATE_SIZE == rlock_mod::STATE_SIZE);
    assert!(offset_of!(CondHeader, next_ticket) == 0);
    assert!(offset_of!(CondHeader, waiting) == 8);
    assert!(HEADER_OFFSET == 256);
    assert!(SLOTS_OFFSET == 384);
    assert!(offset_of!(Slot, claim) == 0);
    assert!(offset_of!(Slot, ticket) == 8);
    assert!(offset_of!(Slot, state) == 16);
    assert!(offset_of!(Slot, wake) == 24);
    assert!(SLOT_SIZE == 32);
    assert!(PAYLOAD_SIZE == 384 + 64 * 32);
    assert!(offset_of!(CondState, slots) == SLOTS_OFFSET - HEADER_OFFSET);
    assert!(HEADER_OFFSET + size_of::<CondState>() == PAYLOAD_SIZE);
};

mod private {
    /// Only this crate's locks can carry a condition.
    pub trait Sealed {}
    impl Sealed for super::Lock {}
    impl Sealed for super::RLock {}
}

/// A lock a [`Condition`] can be built over: [`Lock`] or [`RLock`] (sealed).
pub trait ConditionLock: Clone + Send + Sync + Sized + private::Sealed {
    /// The guard `acquire` returns: [`LockGuard`] or [`RLockGuard`].
    type Guard<'a>
    where
        Self: 'a;

    /// The lock's name in the segment header.
    #[doc(hidden)]
    const NAME: &'static str;

    /// A handle to the lock state at `offset` of `segment`'s payload.
    ///
    /// # Errors
    ///
    /// [`Mismatch`] if the payload cannot hold the lock's state there.
    #[doc(hidden)]
    fn from_condition_state(segment: Arc<Segment>, offset: usize) -> Result<Self, Mismatch>;

    /// Acquires: blocking (with an optional timeout) or not.
    #[doc(hidden)]
    fn acquire_for_condition(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<Self::Guard<'_>, AcquireError<Self::Guard<'_>>>;

    /// Whether `guard` holds this lock's state.
    #[doc(hidden)]
    fn guard_is_of(&self, guard: &Self::Guard<'_>) -> bool;

    /// Releases the lock entirely for a wait; the value to restore, `None` if not
    /// held.
    #[doc(hidden)]
    fn unlock_for_wait(guard: &mut Self::Guard<'_>) -> Option<u64>;

    /// Re-acquires after a wait, until `deadline` (`None`: as long as it takes);
    /// `Ok(true)` if taken over from a dead holder. On `Err` the guard is left
    /// released.
    #[doc(hidden)]
    fn relock_after_wait(
        guard: &mut Self::Guard<'_>,
        saved: u64,
        deadline: Option<Deadline>,
    ) -> Result<bool, TimedOut>;
}

impl ConditionLock for Lock {
    type Guard<'a> = LockGuard<'a>;
    const NAME: &'static str = "Lock";

    fn from_condition_state(segment: Arc<Segment>, offset: usize) -> Result<Lock, Mismatch> {
        Lock::from_state(segment, offset)
    }

    fn acquire_for_condition(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        match (block, timeout) {
            (false, _) => self.try_acquire(),
            (true, None) => self.acquire(),
            (true, Some(t)) => self.acquire_timeout(t),
        }
    }

    fn guard_is_of(&self, guard: &LockGuard<'_>) -> bool {
        guard.lock().same_lock(self)
    }

    fn unlock_for_wait(guard: &mut LockGuard<'_>) -> Option<u64> {
        guard.unlock_for_wait().then_some(1)
    }

    fn relock_after_wait(
        guard: &mut LockGuard<'_>,
        _saved: u64,
        deadline: Option<Deadline>,
    ) -> Result<bool, TimedOut> {
        guard
            .relock_after_wait(deadline)
            .map(|taken| taken == Taken::Recovered)
    }
}

impl ConditionLock for RLock {
    type Guard<'a> = RLockGuard<'a>;
    const NAME: &'static str = "RLock";

    fn from_condition_state(segment: Arc<Segment>, offset: usize) -> Result<RLock, Mismatch> {
        RLock::from_state(segment, offset)
    }

    fn acquire_for_condition(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        match (block, timeout) {
            (false, _) => self.try_acquire(),
            (true, None) => self.acquire(),
            (true, Some(t)) => self.acquire_timeout(t),
        }
    }

    fn guard_is_of(&self, guard: &RLockGuard<'_>) -> bool {
        guard.lock().same_state(self)
    }

    fn unlock_for_wait(guard: &mut RLockGuard<'_>) -> Option<u64> {
        guard.unlock_for_wait()
    }

    fn relock_after_wait(
        guard: &mut RLockGuard<'_>,
        saved: u64,
        deadline: Option<Deadline>,
    ) -> Result<bool, TimedOut> {
        guard
            .relock_after_wait(saved, deadline)
            .map(|taken| taken == Taken::Recovered)
    }
}

fn layout<L: ConditionLock>() -> ObjectLayout {
    ObjectLayout {
        kind: ObjectKind::Condition,
        elem: ElemType {
            name: TypeName::new(L::NAME),
            size: LOCK_STATE_SIZE as u32,
            align: 128,
        },
        slot_size: SLOT_SIZE as u32,
        capacity: MAX_WAITERS as u64,
        payload_size: PAYLOAD_SIZE as u64,
    }
}

/// Why a [`Condition`] wait failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The guard is not a guard of this condition's lock, or the lock was released
    /// behind the guard's back (Python: "cannot wait on un-acquired lock"). Nothing
    /// was waited for.
    NotOwner,
    /// [`MAX_WAITERS`] threads are waiting already. Nothing was waited for.
    TooManyWaiters,
    /// The wait ended (`notified` says how), and the lock was re-acquired — but from
    /// a holder that died holding it: the guard now holds an inconsistent lock.
    /// Repair the protected state and call `mark_consistent` on the guard, as after
    /// [`AcquireError::OwnerDied`].
    OwnerDied {
        /// Whether the wait was ended by a notify (else by its timeout).
        notified: bool,
    },
    /// The wait ended (`notified` says how), but the lock could not be taken back
    /// by the wait's deadline plus [`RELOCK_GRACE`]: another live process (or a
    /// word scribbled to name one) kept holding it. Timed waits only. **The guard no
    /// longer holds the lock**: its `is_held()` is `false`, dropping it releases
    /// nothing, and waiting with it again is [`NotOwner`](WaitError::NotOwner) —
    /// drop it and acquire the lock anew.
    NotReacquired {
        /// Whether the wait was ended by a notify (else by its timeout).
        notified: bool,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::NotOwner => f.write_str("wait on a condition whose lock is not held"),
            WaitError::TooManyWaiters => write!(
                f,
                "too many waiters: a condition holds at most {MAX_WAITERS}"
            ),
            WaitError::OwnerDied { .. } => f.write_str(
                "the condition's lock was re-acquired after its holder died: \
                 the protected state may be inconsistent",
            ),
            WaitError::NotReacquired { notified } => write!(
                f,
                "the condition wait ended ({}) but its lock could not be taken back \
                 within {} ms after the deadline: another process holds it; \
                 the guard no longer holds the lock",
                if *notified { "notified" } else { "timed out" },
                RELOCK_GRACE.as_millis()
            ),
        }
    }
}

impl std::error::Error for WaitError {}

/// A condition variable in shared memory, like Python's
/// `multiprocessing.Condition`: processes holding its lock [`wait`](Condition::wait)
/// until another one [`notify`](Condition::notify)s them.
///
/// The lock is part of the condition (in the same segment): an [`RLock`] by default,
/// as in Python ([`Condition::new`]), or a [`Lock`] with
/// `Condition::<Lock>::anonymous()` (`create` and `open` take the lock type the same
/// way: `Condition::<Lock>::create(name)`). Acquire it with
/// [`acquire`](Condition::acquire) and pass the guard to `wait`, which releases the
/// lock while waiting and takes it back before returning.
///
/// `notify(n)` wakes exactly `min(n, waiting)` waiters, oldest first; a woken waiter's
/// wait returns `true`, and a wait never returns `true` without a notify. Call
/// `notify` holding the lock, as Python requires: then the waiters it counts are
/// exactly those that started waiting before it. (Called without the lock it is still
/// safe, but a waiter that is just starting may miss it.)
///
/// At most [`MAX_WAITERS`] threads can wait at once.
///
/// # Examples
///
/// ```
/// use shmproc::sync::{Condition, Lock};
/// use shmproc::Process;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cond = Condition::<Lock>::anonymous()?;
/// let mut guard = cond.acquire().map_err(|e| e.without_guard())?;
/// let mut child = Process::spawn_returning(|| -> i32 {
///     let Ok(_guard) = cond.acquire() else { return 1 };
///     // Holding the lock: the parent is waiting now.
///     if cond.notify(1) == 1 { 0 } else { 2 }
/// })?;
/// // Releases the lock while waiting, so the child can take it.
/// assert!(cond.wait_timeout(&mut guard, Duration::from_secs(10))?);
/// drop(guard);
/// assert_eq!(child.join()?.code(), 0);
/// # Ok(()) }
/// ```
pub struct Condition<L: ConditionLock = RLock> {
    lock: L,
    /// The counters and slots after the lock's state.
    state: Shared<CondState>,
}

impl<L: ConditionLock> Clone for Condition<L> {
    fn clone(&self) -> Condition<L> {
        Condition {
            lock: self.lock.clone(),
            state: self.state.clone(),
        }
    }
}

impl<L: ConditionLock> Object for Condition<L> {
    const KIND: ObjectKind = ObjectKind::Condition;
    type Args<'a> = ();

    fn layout(_: &()) -> Result<ObjectLayout, CreateError> {
        Ok(layout::<L>())
    }

    fn attach(segment: Arc<Segment>) -> Result<Condition<L>, Mismatch> {
        let found = segment.info().layout;
        if found.elem.name != TypeName::new(L::NAME) {
            return Err(Mismatch::new(
                "lock type",
                format!("a Condition over {}", L::NAME),
                format!("a Condition over {}", found.elem.name),
            ));
        }
        object::check_layout(&found, Some(layout::<L>()))?;
        Ok(Condition {
            lock: L::from_condition_state(Arc::clone(&segment), 0)?,
            state: Shared::at(segment, HEADER_OFFSET)?,
        })
    }

    fn segment(&self) -> &Segment {
        self.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl<L: ConditionLock> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.name())
            .field("lock", &L::NAME)
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}

impl Condition<RLock> {
    /// Creates a condition over an [`RLock`] (Python's default) and the unlocked
    /// lock, in an anonymous segment shared with children started with
    /// [`Process`](crate::Process) afterwards. Needs no type annotation; for a
    /// condition over a [`Lock`], use `Condition::<Lock>::anonymous()`.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::sync::Condition;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cond = Condition::new()?;
    /// let guard = cond.acquire().map_err(|e| e.without_guard())?;
    /// assert_eq!(cond.get_lock().count(), 1);
    /// drop(guard);
    /// # Ok(()) }
    /// ```
    pub fn new() -> Result<Condition<RLock>, CreateError> {
        Condition::anonymous()
    }
}

impl<L: ConditionLock> Condition<L> {
    /// Creates a condition over a lock of type `L` ([`Lock`] or [`RLock`]) and the
    /// unlocked lock, in an anonymous segment shared with children started with
    /// [`Process`](crate::Process) afterwards: `Condition::<Lock>::anonymous()`.
    /// ([`Condition::new`] is the same over an `RLock`.)
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn anonymous() -> Result<Condition<L>, CreateError> {
        Condition::create_anonymous(())
    }

    /// Creates a condition named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str) -> Result<Condition<L>, CreateError> {
        Condition::create_with(name, (), CreateOptions::new())
    }

    /// Opens the condition named `name`, which must be over the same kind of lock.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Condition`, over another kind of lock
    /// (`IncompatibleLayout`), a corrupt header.
    pub fn open(name: &str) -> Result<Condition<L>, OpenError> {
        Condition::open_with(name, OpenOptions::new())
    }

    fn header(&self) -> &CondHeader {
        &self.state.state().header
    }

    /// Slot `i`, `i < MAX_WAITERS`.
    fn slot(&self, i: usize) -> &Slot {
        &self.state.state().slots[i]
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.state.name()
    }

    /// The condition's lock.
    pub fn get_lock(&self) -> &L {
        &self.lock
    }

    /// Acquires the condition's lock (Python's `acquire()`, or `with cond:`).
    ///
    /// # Errors
    ///
    /// As for [`Lock::acquire`] / [`RLock::acquire`].
    pub fn acquire(&self) -> Result<L::Guard<'_>, AcquireError<L::Guard<'_>>> {
        self.lock.acquire_for_condition(None, true)
    }

    /// Acquires the condition's lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`Lock::acquire_timeout`] / [`RLock::acquire_timeout`].
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<L::Guard<'_>, AcquireError<L::Guard<'_>>> {
        self.lock.acquire_for_condition(Some(timeout), true)
    }

    /// Acquires the condition's lock if it is free, without waiting.
    ///
    /// # Errors
    ///
    /// As for [`Lock::try_acquire`] / [`RLock::try_acquire`].
    pub fn try_acquire(&self) -> Result<L::Guard<'_>, AcquireError<L::Guard<'_>>> {
        self.lock.acquire_for_condition(None, false)
    }

    /// Releases the lock, waits until notified, and re-acquires the lock (Python's
    /// `wait()`). An `RLock` held several times is released entirely and re-acquired
    /// as many times.
    ///
    /// Taking the lock back has no deadline (as in Python): it waits while the
    /// lock word names a live process; use [`wait_timeout`](Condition::wait_timeout)
    /// for a bounded wait.
    ///
    /// # Errors
    ///
    /// [`WaitError`]: `guard` is not of this condition's lock (or no longer holds
    /// it), too many waiters, or the lock was re-acquired from a holder that died.
    pub fn wait(&self, guard: &mut L::Guard<'_>) -> Result<(), WaitError> {
        self.wait_within(guard, None).map(|_| ())
    }

    /// As [`wait`](Condition::wait), for at most `timeout` (Python's
    /// `wait(timeout)`): `true` if notified, `false` if the timeout passed first
    /// (never before it has). Taking the lock back afterwards may take until the
    /// deadline plus [`RELOCK_GRACE`] (Python's is unbounded; here a timed call
    /// always returns): a notifier usually still holds the lock for a moment. A zero
    /// timeout releases and re-acquires the lock and returns `false` unless notified
    /// meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`wait`](Condition::wait), and [`WaitError::NotReacquired`] if the lock
    /// could not be taken back by the deadline plus [`RELOCK_GRACE`] — then `guard`
    /// no longer holds the lock (see the variant).
    pub fn wait_timeout(
        &self,
        guard: &mut L::Guard<'_>,
        timeout: Duration,
    ) -> Result<bool, WaitError> {
        self.wait_within(guard, Some(Deadline::after(timeout)))
    }

    /// Waits until `predicate()` is true (Python's `wait_for(predicate)`): checks it
    /// first, then after each wake-up, always holding the lock.
    ///
    /// # Errors
    ///
    /// As for [`wait`](Condition::wait).
    pub fn wait_for(
        &self,
        guard: &mut L::Guard<'_>,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<(), WaitError> {
        while !predicate() {
            self.wait_within(guard, None)?;
        }
        Ok(())
    }

    /// As [`wait_for`](Condition::wait_for), for at most `timeout` overall (Python's
    /// `wait_for(predicate, timeout)`): returns the predicate's last value.
    ///
    /// # Errors
    ///
    /// As for [`wait_timeout`](Condition::wait_timeout).
    pub fn wait_for_timeout(
        &self,
        guard: &mut L::Guard<'_>,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool, WaitError> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            self.wait_within(guard, Some(deadline))?;
        }
    }

    fn wait_within(
        &self,
        guard: &mut L::Guard<'_>,
        deadline: Option<Deadline>,
    ) -> Result<bool, WaitError> {
        if !self.lock.guard_is_of(guard) {
            return Err(WaitError::NotOwner);
        }
        let me = owner::process_word();
        let slot = self.claim_slot(me).ok_or(WaitError::TooManyWaiters)?;
        let header = self.header();
        slot.ticket.store(
            header.next_ticket.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        header.waiting.fetch_add(1, Ordering::Relaxed);
        // Release: the ticket is visible to a notifier that sees WAITING. Notifiers
        // hold the lock, so they see it anyway once we release the lock below.
        slot.state.store(WAITING, Ordering::Release);
        let Some(saved) = L::unlock_for_wait(guard) else {
            if slot
                .state
                .compare_exchange(WAITING, IDLE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                header.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            self.free_slot(slot);
            return Err(WaitError::NotOwner);
        };
        // Acquire: pairs with the notifier's AcqRel CAS to NOTIFIED.
        let ended = slot.wake.wait_until(deadline, || {
            (slot.state.load(Ordering::Acquire) == NOTIFIED).then_some(())
        });
        let notified = match ended {
            Ok(()) => true,
            Err(TimedOut) => {
                match slot.state.compare_exchange(
                    WAITING,
                    IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        header.waiting.fetch_sub(1, Ordering::Relaxed);
                        false
                    }
                    // A notify got there first: it counted us, so we were notified.
                    Err(actual) => actual == NOTIFIED,
                }
            }
        };
        self.free_slot(slot);
        // A timed wait returns by its deadline plus a bounded grace, re-take
        // included: a holder that stays alive (or a scribbled word naming a live
        // process) must not turn it into a wait without end.
        let relock_deadline =
            deadline.map(|d| Deadline::after(d.remaining().saturating_add(RELOCK_GRACE)));
        match L::relock_after_wait(guard, saved, relock_deadline) {
            Ok(false) => Ok(notified),
            Ok(true) => Err(WaitError::OwnerDied { notified }),
            Err(TimedOut) => Err(WaitError::NotReacquired { notified }),
        }
    }

    /// Claims a free slot for process `me`, reclaiming slots of dead processes if all
    /// are taken.
    fn claim_slot(&self, me: u64) -> Option<&Slot> {
        for i in 0..MAX_WAITERS {
            let slot = self.slot(i);
            // Acquire: pairs with the Release store of 0 in `free_slot`, so the last
            // claimant's uses of the slot happen before ours.
            if slot.claim.load(Ordering::Relaxed) == 0
                && slot
                    .claim
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                slot.state.store(IDLE, Ordering::Relaxed);
                return Some(slot);
            }
        }
        // All taken: reclaim one whose claimant died (costs /proc reads; only here).
        for i in 0..MAX_WAITERS {
            let slot = self.slot(i);
            // Acquire (load and CAS): pairs with the dead claimant's Release store of
            // WAITING, so its ticket and state are seen before the slot is reset.
            let claim = slot.claim.load(Ordering::Acquire);
            if claim != 0
                && !owner::holder_alive(claim)
                && slot
                    .claim
                    .compare_exchange(claim, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                if slot.state.swap(IDLE, Ordering::AcqRel) == WAITING {
                    self.header().waiting.fetch_sub(1, Ordering::Relaxed);
                }
                return Some(slot);
            }
        }
        None
    }

    fn free_slot(&self, slot: &Slot) {
        slot.state.store(IDLE, Ordering::Relaxed);
        // Release: our uses of the slot happen before the next claimant's.
        slot.claim.store(0, Ordering::Release);
    }

    /// Wakes up to `n` waiters, oldest first (Python's `notify(n)`), and returns how
    /// many it woke: exactly `min(n, waiting)` when called holding the lock. Waiters
    /// of processes that died are skipped (and their slots freed) when `n` is less
    /// than the number waiting.
    pub fn notify(&self, n: usize) -> usize {
        // Acquire: a hint only (the notifier holds the lock, whose acquire already
        // ordered every waiter's registration before us: a waiter registers holding
        // the lock and releases it after its Release store of WAITING).
        if n == 0 || self.header().waiting.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut waiting = [(0u64, 0usize); MAX_WAITERS];
        let mut len = 0;
        for i in 0..MAX_WAITERS {
            let slot = self.slot(i);
            // Acquire: pairs with the waiter's Release store of WAITING, so its
            // ticket (stored before) is read whole.
            if slot.state.load(Ordering::Acquire) == WAITING {
                waiting[len] = (slot.ticket.load(Ordering::Relaxed), i);
                len += 1;
            }
        }
        let waiting = &mut waiting[..len];
        waiting.sort_unstable();
        // Picking some of the waiters: make sure they are alive to be woken.
        let check_alive = n < waiting.len();
        let mut woken = 0;
        for &(_, i) in waiting.iter() {
            if woken == n {
                break;
            }
            let slot = self.slot(i);
            if check_alive && !owner::holder_alive(slot.claim.load(Ordering::Acquire)) {
                if slot
                    .state
                    .compare_exchange(WAITING, IDLE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.header().waiting.fetch_sub(1, Ordering::Relaxed);
                    self.free_slot(slot);
                }
                continue;
            }
            // AcqRel: Release publishes what the notifier did before notifying to the
            // waiter's Acquire load of NOTIFIED.
            if slot
                .state
                .compare_exchange(WAITING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.header().waiting.fetch_sub(1, Ordering::Relaxed);
                slot.wake.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Wakes every waiter (Python's `notify_all()`); returns how many.
    pub fn notify_all(&self) -> usize {
        self.notify(usize::MAX)
    }

    /// Threads waiting now (not yet notified). A snapshot.
    pub fn n_waiting(&self) -> usize {
        (0..MAX_WAITERS)
            .filter(|&i| self.slot(i).state.load(Ordering::Relaxed) == WAITING)
            .count()
    }
}

/// `shmproc inspect` rows for a `Condition` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    if segment.payload_len() < PAYLOAD_SIZE {
        return object::unreadable(segment);
    }
    let mut rows = if segment.info().layout.elem.name == TypeName::new(RLock::NAME) {
        rlock_mod::inspect(segment)
    } else {
        lock_mod::inspect_at(segment, 0)
    };
    let waiting = (0..MAX_WAITERS)
        .filter(|i| {
            object::peek::<u32>(
                segment,
                SLOTS_OFFSET + i * SLOT_SIZE + offset_of!(Slot, state),
            ) == Some(WAITING)
        })
        .count();
    rows.push(("lock type", segment.info().layout.elem.name.to_string()));
    rows.push(("cond waiting", waiting.to_string()));
    rows
}
