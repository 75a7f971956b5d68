//! Python's `multiprocessing` synchronization primitives, in shared memory:
//! [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`],
//! [`Condition`] and [`Barrier`].
//!
//! Each object lives in its own segment. `T::new(..)` makes an anonymous one (a
//! memfd) that children started with [`Process`](crate::Process) inherit, as Python
//! hands a `Lock` to a child; `T::create(name, ..)` makes a named one (in `/dev/shm`)
//! that any process can [`open`](Lock::open) by name. Handles are cheap to clone and
//! `Send + Sync`.
//!
//! Names and semantics follow Python's `multiprocessing` and `threading` docs. Every
//! blocking call comes in three forms: blocking (`acquire`, `wait`), with a timeout
//! (`acquire_timeout`, `wait_timeout`: never returns before the timeout has passed)
//! and non-blocking (`try_acquire`; for waits, a zero timeout). Waiting spins for a
//! few microseconds, then sleeps on a futex in the segment; waking a sleeper costs a
//! system call only when somebody sleeps, so an uncontended acquire and release make
//! none.
//!
//! # Failure model
//!
//! A process may die at any instruction (SIGKILL). A [`Lock`] or [`RLock`] whose
//! holder died is taken over by the next acquirer, who gets
//! [`AcquireError::OwnerDied`] with the guard and must repair the protected state
//! (see [`Lock`]). A [`Semaphore`] has no owner: units a dead process acquired are
//! lost with it. A [`Barrier`] cannot tell a dead party from a slow one: use
//! timeouts, which break the barrier for every waiter.
//!
//! # Trust model
//!
//! Another process may write anything into the segment. Every word read from it is
//! checked: a scribbled lock word that cannot name a running holder (pid 0 with
//! other bits set, an impossible pid, a start time no process has) reads as a dead
//! holder (`OwnerDied`), a scribbled barrier as broken, a scribbled count as a wrong
//! count — never undefined behavior or a panic. A word scribbled to name a live
//! process looks like a real holder: the blocking forms wait for it, every timed
//! form returns by its deadline (a [`Condition`] wait's re-take by the deadline plus
//! [`RELOCK_GRACE`], with [`WaitError::NotReacquired`]).
//!
//! # Examples
//!
//! ```
//! use shmproc::sync::{Event, Lock};
//! use shmproc::Process;
//! use std::time::Duration;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ready = Event::new()?;
//! let lock = Lock::new()?;
//! let mut child = Process::spawn(|| {
//!     let _guard = lock.acquire();
//!     ready.set();
//!     std::thread::sleep(Duration::from_millis(20));
//! })?;
//! assert!(ready.wait_timeout(Duration::from_secs(10)));
//! // The child holds the lock for a while; this waits for it.
//! let guard = lock.acquire().map_err(|e| e.without_guard())?;
//! drop(guard);
//! assert!(child.join()?.success());
//! # Ok(()) }
//! ```

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

#[cfg(all(test, shmproc_model))]
mod model_tests;

pub use barrier::{Barrier, BrokenBarrier, MAX_PARTIES};
pub use condition::{Condition, ConditionLock, MAX_WAITERS, RELOCK_GRACE, WaitError};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreReleaseError};

pub(crate) use lock::STATE_SIZE as LOCK_STATE_SIZE;

use std::fmt;

/// Why an acquire did not simply return a guard: one error for the blocking, timed
/// and non-blocking forms of [`Lock`], [`RLock`] and [`Semaphore`] acquires (each
/// form documents which variants it returns).
///
/// `G` is the guard handed over with [`OwnerDied`](AcquireError::OwnerDied);
/// semaphores, which have no owner, use [`std::convert::Infallible`], so a `match`
/// on their errors need not mention it.
pub enum AcquireError<G = ()> {
    /// The timeout passed before the lock became free (`_timeout` forms only).
    Timeout,
    /// The lock is held by someone else (`try_` forms only).
    WouldBlock,
    /// The lock was acquired, but its previous holder died holding it (or released
    /// it without repairing after such a death), or the lock word named no holder
    /// that can be running (pid 0 with other bits set, an impossible pid, a start
    /// time no process of that pid has: a peer scribbled on it): the state it
    /// protects may be half-updated. Carries the guard: the caller holds the lock, must repair the
    /// state and call `mark_consistent` on the guard (see [`Lock`]).
    OwnerDied(G),
}

impl<G> AcquireError<G> {
    /// The same error with the guard (if any) turned into another type — a guard
    /// that wraps the lock's, as a `Value`'s does.
    pub fn map_guard<H>(self, f: impl FnOnce(G) -> H) -> AcquireError<H> {
        match self {
            AcquireError::OwnerDied(g) => AcquireError::OwnerDied(f(g)),
            AcquireError::Timeout => AcquireError::Timeout,
            AcquireError::WouldBlock => AcquireError::WouldBlock,
        }
    }

    /// The guard, if this is [`OwnerDied`](AcquireError::OwnerDied).
    pub fn into_guard(self) -> Option<G> {
        match self {
            AcquireError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// The same error without the guard, which is dropped — releasing the lock but
    /// leaving it marked inconsistent for the next acquirer. The result no longer
    /// borrows the lock, so it can be returned with `?`.
    pub fn without_guard(self) -> AcquireError {
        match self {
            AcquireError::Timeout => AcquireError::Timeout,
            AcquireError::WouldBlock => AcquireError::WouldBlock,
            AcquireError::OwnerDied(_) => AcquireError::OwnerDied(()),
        }
    }

    /// Whether this is [`OwnerDied`](AcquireError::OwnerDied).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, AcquireError::OwnerDied(_))
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Timeout => f.write_str("Timeout"),
            AcquireError::WouldBlock => f.write_str("WouldBlock"),
            AcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Timeout => f.write_str("timed out waiting to acquire"),
            AcquireError::WouldBlock => f.write_str("held by another owner"),
            AcquireError::OwnerDied(_) => f.write_str(
                "acquired after its previous holder died holding it (or the lock word \
                 named no running process): the protected state may be inconsistent",
            ),
        }
    }
}

impl<G> std::error::Error for AcquireError<G> {}

impl<G> PartialEq for AcquireError<G> {
    /// Compares the kinds of error (guards are not compared).
    fn eq(&self, other: &AcquireError<G>) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Why a [`Lock`] or [`RLock`] could not be released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// Nobody holds it (Python: "release unlocked lock").
    NotLocked,
    /// Another thread holds it ([`RLock`] only; Python: "cannot release un-acquired
    /// lock").
    NotOwner,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NotLocked => f.write_str("release of a lock that is not held"),
            ReleaseError::NotOwner => {
                f.write_str("release of a lock held by another thread or process")
            }
        }
    }
}

impl std::error::Error for ReleaseError {}

// Every handle crosses threads: the state handles are `Send + Sync` because their
// shared state is atomics only (see `object::Shared`).
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    let _ = send_sync::<Lock>;
    let _ = send_sync::<RLock>;
    let _ = send_sync::<Event>;
    let _ = send_sync::<Semaphore>;
    let _ = send_sync::<BoundedSemaphore>;
    let _ = send_sync::<Barrier>;
};
