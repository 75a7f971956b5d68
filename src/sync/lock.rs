//! [`Lock`]: Python's `multiprocessing.Lock`, in shared memory, robust to a holder
//! killed while holding it.
//!
//! # The lock word
//!
//! One `AtomicU64` holds the owner (see `owner.rs` for the packing):
//!
//! | word                 | meaning                                                     |
//! |----------------------|-------------------------------------------------------------|
//! | `0`                  | unlocked                                                    |
//! | `INCONSISTENT`       | unlocked, but a holder died and nobody has repaired since  |
//! | `P`                  | locked by process `P` (pid + start time)                    |
//! | `P \| INCONSISTENT`  | locked by `P`, which took it over from a dead holder        |
//! | id bits 0, others set| scribbled by a peer: treated like `INCONSISTENT`            |
//!
//! Acquire is one CAS `0 -> P` (Acquire, paired with the Release CAS of the unlock
//! that made the word 0). A waiter sleeps on an [`EventCount`] on its own cache line;
//! unlock is a Release CAS `P -> 0` and a notify that makes a system call only if
//! somebody sleeps. While it waits, a waiter checks now and then whether the holder
//! is still running; if not, it takes the lock over with a CAS from the dead holder's
//! word to its own with `INCONSISTENT` set, and gets [`AcquireError::OwnerDied`].

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
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// The shared state of a lock: the owner word and the eventcount its waiters sleep
/// on, each on its own cache line. All-zero bytes are an unlocked lock.
#[repr(C)]
pub(crate) struct LockState {
    /// The owner word (table in the module docs).
    owner: CachePadded<AtomicU64>,
    /// Waiters for the lock sleep here; notified by every unlock.
    wake: CachePadded<EventCount>,
}

// SAFETY: repr(C), an atomic and an eventcount (atomics) on padded lines: any bytes
// are a valid state, zero is unlocked, no pointers, alignment 128.
unsafe impl SharedState for LockState {}

/// Bytes of a [`LockState`].
pub(crate) const STATE_SIZE: usize = size_of::<LockState>();
const OWNER_OFFSET: usize = offset_of!(LockState, owner);
const WAKE_OFFSET: usize = offset_of!(LockState, wake);
const _: () = {
    assert!(OWNER_OFFSET == 0);
    assert!(WAKE_OFFSET == 128);
    assert!(STATE_SIZE == 256);
    assert!(align_of::<LockState>() == 128);
};

/// The layout of a `Lock` segment.
const LAYOUT: ObjectLayout = ObjectLayout {
    kind: ObjectKind::Lock,
    elem: ElemType::NONE,
    slot_size: 0,
    capacity: 0,
    payload_size: STATE_SIZE as u64,
};

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// From an unlocked, consistent state.
    Clean,
    /// From a dead holder, or from an unlocked lock still marked inconsistent.
    Recovered,
}

/// A lock in shared memory, like Python's `multiprocessing.Lock`: one holder at a
/// time across every process that has it, whether they opened it by name or
/// inherited it from a parent through [`Process`](crate::Process).
///
/// [`acquire`](Lock::acquire) returns a [`LockGuard`] that releases the lock when
/// dropped. The lock is held by a *process*, not a thread (as in Python): any thread
/// of the holding process may drop the guard, and [`release`](Lock::release) lets any
/// process release it (Python's `multiprocessing.Lock` allows that too). Releasing a
/// lock that is not held is an error. The lock is not recursive: acquiring it again
/// from the process that holds it waits (until the timeout, if any) like any other
/// acquirer.
///
/// # A holder that dies
///
/// If the holding process dies (even by SIGKILL), the next acquirer does not wait
/// forever: a waiter checks whether the holder is still running when its wait stalls
/// (after its spin, then every 1, 2, 4 … up to 100 ms) and takes the lock over. It
/// gets `Err(`[`AcquireError::OwnerDied`]`(guard))`: it holds the lock, but the state
/// the lock protects may be half-updated. What the recovering acquirer must do:
///
/// 1. Treat the guard like any other: the lock is held until it is dropped.
/// 2. Check and repair the protected state (roll back or finish the dead holder's
///    update).
/// 3. Call [`LockGuard::mark_consistent`].
/// 4. Drop the guard.
///
/// A guard dropped without step 3 releases the lock but leaves it marked
/// inconsistent: the next acquirer gets `OwnerDied` again, so the duty to repair passes
/// on rather than being lost (unlike a POSIX robust mutex, the lock never becomes
/// unusable). [`try_acquire`](Lock::try_acquire) never checks liveness (it makes no
/// system call); `acquire_timeout(Duration::ZERO)` does.
///
/// # Examples
///
/// ```
/// use shmproc::sync::Lock;
/// use shmproc::Process;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lock = Lock::new()?;
/// let guard = lock.acquire().map_err(|e| e.without_guard())?;
/// let mut child = Process::spawn_returning(|| -> i32 {
///     // Held by the parent: a child sees it locked.
///     if lock.locked() { 0 } else { 1 }
/// })?;
/// assert_eq!(child.join()?.code(), 0);
/// drop(guard);
/// assert!(!lock.locked());
/// # Ok(()) }
/// ```
///
/// Recovering from a holder that died:
///
/// ```
/// use shmproc::sync::{AcquireError, Lock};
/// use shmproc::Process;
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lock = Lock::new()?;
/// let mut child = Process::spawn(|| {
///     let guard = lock.acquire();
///     std::mem::forget(guard); // dies holding the lock
/// })?;
/// child.join()?;
/// match lock.acquire_timeout(Duration::from_secs(10)) {
///     Err(AcquireError::OwnerDied(mut guard)) => {
///         // repair the protected state here, then:
///         guard.mark_consistent();
///     }
///     Ok(_) => unreachable!("the child died holding it"),
///     Err(e) => return Err(e.without_guard().into()),
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lock {
    /// The owner word and the waiters' eventcount, in a mapping the handle keeps.
    state: Shared<LockState>,
}

impl Object for Lock {
    const KIND: ObjectKind = ObjectKind::Lock;
    type Args<'a> = ();

    fn layout(_: &()) -> Result<ObjectLayout, CreateError> {
        Ok(LAYOUT)
    }

    fn attach(segment: Arc<Segment>) -> Result<Lock, Mismatch> {
        object::check_layout(&segment.info().layout, Some(LAYOUT))?;
        Lock::from_state(segment, 0)
    }

    fn segment(&self) -> &Segment {
        self.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect_at(segment, 0)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name())
            .field("owner", &self.owner())
            .finish()
    }
}

impl Lock {
    /// Creates an unlocked lock in an anonymous segment, shared with children started
    /// with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created (e.g. out of memory).
    pub fn new() -> Result<Lock, CreateError> {
        Lock::create_anonymous(())
    }

    /// Creates an unlocked lock named `name` (in `/dev/shm`, mode 0600), which other
    /// processes can [`open`](Lock::open). The name is removed when the last handle of
    /// the creating process is dropped.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid name, a name that exists already, permissions.
    pub fn create(name: &str) -> Result<Lock, CreateError> {
        Lock::create_with(name, (), CreateOptions::new())
    }

    /// Opens the lock named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: no such segment, not a `Lock` (`WrongKind`), a layout this
    /// build cannot use (`IncompatibleLayout`), or a corrupt header.
    pub fn open(name: &str) -> Result<Lock, OpenError> {
        Lock::open_with(name, OpenOptions::new())
    }

    /// A handle to the lock state at byte `offset` of `segment`'s payload (objects
    /// that embed a lock: a `Value`, a `Condition`).
    ///
    /// # Errors
    ///
    /// [`Mismatch`] if the payload cannot hold a lock state there.
    pub(crate) fn from_state(segment: Arc<Segment>, offset: usize) -> Result<Lock, Mismatch> {
        Ok(Lock {
            state: Shared::at(segment, offset)?,
        })
    }

    /// The owner word.
    #[inline]
    fn word(&self) -> &AtomicU64 {
        &self.state.state().owner
    }

    /// The waiters' eventcount.
    #[inline]
    fn wake(&self) -> &EventCount {
        &self.state.state().wake
    }

    /// The segment's name, `None` for an anonymous lock.
    pub fn name(&self) -> Option<&str> {
        self.state.name()
    }

    /// Acquires the lock, waiting as long as it takes (Python's `acquire()`).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] carrying the guard if the previous holder died
    /// holding the lock (see [the type docs](Lock#a-holder-that-dies)); never
    /// `Timeout` or `WouldBlock`.
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.acquire_within(None)
    }

    /// Acquires the lock, waiting at most `timeout` (Python's
    /// `acquire(timeout=...)`). A zero timeout does not wait, but unlike
    /// [`try_acquire`](Lock::try_acquire) it checks whether the holder died.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] once `timeout` has passed (never earlier);
    /// [`AcquireError::OwnerDied`] as for [`acquire`](Lock::acquire).
    #[inline]
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.acquire_within(Some(timeout))
    }

    /// Acquires the lock if it is free, without waiting or any system call (Python's
    /// `acquire(block=False)`).
    ///
    /// # Errors
    ///
    /// [`AcquireError::WouldBlock`] if another holder has it (even a dead one: use
    /// `acquire_timeout(Duration::ZERO)` to check for that);
    /// [`AcquireError::OwnerDied`] if it is free but still marked inconsistent.
    #[inline]
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let me = owner::process_word();
        match self.attempt(me) {
            Some(taken) => self.guard(taken, me),
            None => Err(AcquireError::WouldBlock),
        }
    }

    #[inline]
    fn acquire_within(
        &self,
        timeout: Option<Duration>,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let me = owner::process_word();
        if self
            .word()
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(LockGuard {
                lock: self,
                me,
                held: true,
            });
        }
        self.acquire_slow(me, timeout)
    }

    #[cold]
    fn acquire_slow(
        &self,
        me: u64,
        timeout: Option<Duration>,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        match self.wait_for_lock(me, timeout.map(Deadline::after)) {
            Ok(taken) => self.guard(taken, me),
            Err(TimedOut) => Err(AcquireError::Timeout),
        }
    }

    /// Waits until the lock is taken by `me` (from a free or a dead holder).
    pub(crate) fn wait_for_lock(
        &self,
        me: u64,
        deadline: Option<Deadline>,
    ) -> Result<Taken, TimedOut> {
        self.wake().wait_until_checked(
            Spin::DEFAULT,
            deadline,
            || self.attempt(me),
            || self.take_over(me),
        )
    }

    fn guard(&self, taken: Taken, me: u64) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let guard = LockGuard {
            lock: self,
            me,
            held: true,
        };
        match taken {
            Taken::Clean => Ok(guard),
            Taken::Recovered => Err(AcquireError::OwnerDied(guard)),
        }
    }

    /// Takes the lock for `me` if it is free: a load first, so that spinning waiters
    /// do not steal the line from the holder with failing CASes.
    #[inline]
    pub(crate) fn attempt(&self, me: u64) -> Option<Taken> {
        let word = self.word();
        let cur = word.load(Ordering::Relaxed);
        if owner::id_of(cur) != 0 {
            return None;
        }
        // Acquire: pairs with the Release CAS in `unlock_as` / `release`, so the last
        // holder's writes to the protected state are visible to us.
        if cur == 0 {
            word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| Taken::Clean)
        } else {
            // Free but flagged (a holder died and nobody repaired), or stray bits a
            // peer wrote: whoever takes it must treat the state as suspect.
            word.compare_exchange(cur, me | INCONSISTENT, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| Taken::Recovered)
        }
    }

    /// The stall check: takes the lock over from a holder that is no longer running.
    fn take_over(&self, me: u64) -> Option<Taken> {
        let word = self.word();
        let cur = word.load(Ordering::Acquire);
        if owner::id_of(cur) == 0 {
            return self.attempt(me);
        }
        if owner::holder_alive(cur) {
            return None;
        }
        // The CAS from the exact dead word: of several waiters that found the holder
        // dead, one wins; the others see a live owner at their next check. Acquire
        // pairs with whatever Release the dead holder last made.
        word.compare_exchange(cur, me | INCONSISTENT, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Taken::Recovered)
    }

    /// Releases the lock if `me` holds it (with or without the flag, which it keeps);
    /// returns whether it did.
    #[inline]
    pub(crate) fn unlock_as(&self, me: u64) -> bool {
        let word = self.word();
        let mut cur = me;
        loop {
            // Release: publishes the holder's writes to the protected state; pairs
            // with the Acquire CAS of the next acquirer.
            match word.compare_exchange(
                cur,
                cur & INCONSISTENT,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.wake().notify_one();
                    return true;
                }
                // Ours, but the flag differs from our guess: retry with it.
                Err(actual) if actual & !INCONSISTENT == me && actual != cur => cur = actual,
                // Not ours any more: someone released it for us (`release`).
                Err(_) => return false,
            }
        }
    }

    /// Releases the lock, whoever holds it (Python's `release()`, which for a
    /// `multiprocessing.Lock` may be called by another process than the acquirer).
    /// Use it for a lock whose guard was given up with [`std::mem::forget`]; with a
    /// guard, just drop the guard. A release keeps the inconsistent mark, if any.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotLocked`] if the lock is not held.
    pub fn release(&self) -> Result<(), ReleaseError> {
        let word = self.word();
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            if owner::id_of(cur) == 0 {
                return Err(ReleaseError::NotLocked);
            }
            // Release: as in `unlock_as`.
            match word.compare_exchange_weak(
                cur,
                cur & INCONSISTENT,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.wake().notify_one();
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether some process holds the lock (Python's `locked()`), as seen from any
    /// process. A snapshot: it may change right after.
    pub fn locked(&self) -> bool {
        owner::id_of(self.word().load(Ordering::Relaxed)) != 0
    }

    /// The pid of the holding process, `None` if unlocked. A snapshot.
    pub fn owner(&self) -> Option<u32> {
        match owner::id_of(self.word().load(Ordering::Relaxed)) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Whether the lock is marked inconsistent: a holder died holding it and no later
    /// holder has called [`LockGuard::mark_consistent`] yet.
    pub fn is_consistent(&self) -> bool {
        self.word().load(Ordering::Relaxed) & INCONSISTENT == 0
    }

    /// Processes asleep waiting for the lock (or killed while asleep). A snapshot.
    pub fn waiters(&self) -> u32 {
        self.wake().waiters()
    }

    /// Whether `other` is a handle to this very lock in this process's mappings: a
    /// clone, a handle inherited from the same parent handle, the lock a
    /// [`Value::with_lock`](crate::Value::with_lock) keeps. (Two separate
    /// [`open`](Lock::open)s of one name map it twice and compare unequal.)
    pub fn same_lock(&self, other: &Lock) -> bool {
        self.state.same(&other.state)
    }
}

/// Proof of holding a [`Lock`]; releases it when dropped.
///
/// A guard may be sent to another thread of the process and dropped there (the lock
/// belongs to the process). After [`Lock::release`] was called on the lock by
/// someone else, dropping the guard does nothing.
///
/// A guard can also lose the lock in one way of its own: a timed
/// [`Condition`](super::Condition) wait that could not take the lock back by its
/// deadline (plus [`RELOCK_GRACE`](super::RELOCK_GRACE)) returns
/// [`WaitError::NotReacquired`](super::WaitError::NotReacquired) and leaves the guard
/// *released*: [`is_held`](LockGuard::is_held) is `false`, dropping it does nothing
/// (it cannot release a later hold of the same process), `mark_consistent` does
/// nothing, and a wait with it is [`WaitError::NotOwner`](super::WaitError::NotOwner).
/// Drop it and acquire the lock anew.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    /// The holder's owner word, without the flag.
    me: u64,
    /// `false` once a condition wait failed to take the lock back: the guard holds
    /// nothing, and must not release (the word `me` names this process, which may
    /// hold the lock again through another guard).
    held: bool,
}

impl<'a> LockGuard<'a> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }

    /// Whether this guard still stands for a hold of the lock: `true` from the
    /// acquire on, `false` only after a [`Condition`](super::Condition) wait with it
    /// returned [`WaitError::NotReacquired`](super::WaitError::NotReacquired).
    /// (A [`Lock::release`] by someone else is not seen here.)
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Whether the state the lock protects is known to be consistent: `false` after
    /// [`AcquireError::OwnerDied`] until [`mark_consistent`](LockGuard::mark_consistent).
    pub fn is_consistent(&self) -> bool {
        self.lock.is_consistent()
    }

    /// Declares the protected state repaired after [`AcquireError::OwnerDied`]: later
    /// acquirers get the lock normally again. Does nothing on a consistent lock, or
    /// if the guard no longer holds the lock ([`is_held`](LockGuard::is_held)).
    pub fn mark_consistent(&mut self) {
        if !self.held {
            return;
        }
        // Only from our own flagged word: nobody else writes the word while we hold
        // it, except a `release` on our behalf (then there is nothing to mark).
        let _ = self.lock.word().compare_exchange(
            self.me | INCONSISTENT,
            self.me,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Gives the lock up for a [`Condition`](super::Condition) wait; `false` if this
    /// guard or this process no longer holds it.
    pub(crate) fn unlock_for_wait(&mut self) -> bool {
        self.held && self.lock.unlock_as(self.me)
    }

    /// Takes the lock back after a condition wait, waiting until `deadline` (`None`:
    /// as long as it takes). On a timeout the guard is left released
    /// ([`is_held`](LockGuard::is_held) is `false`).
    pub(crate) fn relock_after_wait(
        &mut self,
        deadline: Option<Deadline>,
    ) -> Result<Taken, TimedOut> {
        let taken = match self.lock.attempt(self.me) {
            Some(taken) => Ok(taken),
            None => self.lock.wait_for_lock(self.me, deadline),
        };
        self.held = taken.is_ok();
        taken
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.held {
            self.lock.unlock_as(self.me);
        }
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", self.lock)
            .field("held", &self.held)
            .field("consistent", &self.is_consistent())
            .finish()
    }
}

/// `shmproc inspect` rows for a `Lock` segment (or the lock state at `offset` of any
/// segment's payload).
pub(crate) fn inspect_at(segment: &Segment, offset: usize) -> Vec<(&'static str, String)> {
    let (Some(word), Some(waiters)) = (
        object::peek::<u64>(segment, offset + OWNER_OFFSET),
        // EventCount is (epoch: u32, waiters: u32), repr(C).
        object::peek::<u32>(segment, offset + WAKE_OFFSET + 4),
    ) else {
        return object::unreadable(segment);
    };
    vec![
        (
            "locked",
            if owner::id_of(word) != 0 { "yes" } else { "no" }.to_string(),
        ),
        ("owner", object::show_owner(word)),
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
