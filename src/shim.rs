//! The one door through which the lock-free rings and the eventcount reach atomics,
//! the futex, memory barriers and the identity and liveness of processes and threads
//! (STYLE rule 5), so that the same algorithm code runs under a model checker.
//!
//! A normal build re-exports `std`'s atomics and the OS answers. A build with
//! `RUSTFLAGS="--cfg shmproc_model"` swaps in [`model`](self) versions:
//!
//! - atomics with the same layout as `std`'s (the rings cast shared memory to them)
//!   whose every operation is first a scheduling point of the
//!   [shuttle](https://docs.rs/shuttle) model checker, which then explores
//!   interleavings one atomic operation at a time;
//! - thread ids from the model (every model thread is a thread of this process) and
//!   a liveness answer that knows which model threads a test has *killed*: stopped
//!   for good before one of their atomic operations, as SIGKILL stops a process at
//!   any instruction;
//! - a futex of the model (the eventcount's sleep and wake: a model thread blocks on
//!   a condition variable of the model, so a lost wake-up is a deadlock shuttle
//!   reports) and no-op memory barriers (shuttle's interleavings are sequentially
//!   consistent).
//!
//! What the model does not check: shuttle runs one thread at a time, so every
//! interleaving it explores is sequentially consistent. It checks the protocol's
//! logic — claims, intents, marks, repair, a kill at any atomic step — not whether
//! the memory orderings are strong enough (those are argued in comments, pair by
//! pair). Outside a model test (`model::active()` false) the model build behaves like
//! the normal one.

pub(crate) use std::sync::atomic::Ordering;

// Process identity, liveness and the clock: the same answers in both builds (every
// model thread is a thread of this one process, so its pid and start time are real),
// but reached only through here, so a model test could stand in for them.
pub(crate) use crate::os::clock::monotonic_now;
pub(crate) use crate::os::proc::{cached_pid, is_alive};

/// This process's start time in clock ticks since boot (`/proc/self/stat`; a read,
/// not for hot paths).
pub(crate) fn start_ticks() -> u64 {
    crate::os::proc::ProcessId::current().start_ticks
}

#[cfg(not(shmproc_model))]
pub(crate) use crate::os::futex::{
    wait as futex_wait, wait_any as futex_wait_any, wake as futex_wake,
};
#[cfg(not(shmproc_model))]
pub(crate) use crate::os::membarrier::{heavy as membarrier_heavy, light as membarrier_light};
#[cfg(not(shmproc_model))]
pub(crate) use crate::os::proc::{cached_tid, thread_exists};
#[cfg(not(shmproc_model))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

/// Whether `identity` (`pid << 32 | tid` from [`cached_pid`] and `cached_tid`,
/// computed earlier *on the calling thread* and remembered) is still the calling
/// thread's: one load. A thread keeps its tid for as long as its process lives, so
/// only the pid can have changed, and it has when the thread is the one a fork left
/// in a child (whose pid cache the atfork handler cleared). A pid that is not cached
/// never matches: the caller recomputes.
#[cfg(not(shmproc_model))]
#[inline]
pub(crate) fn identity_current(identity: u64) -> bool {
    identity >> 32 == u64::from(crate::os::proc::pid_if_cached())
}

#[cfg(shmproc_model)]
pub(crate) mod model;
#[cfg(shmproc_model)]
pub(crate) use model::{
    AtomicU32, AtomicU64, cached_tid, futex_wait, futex_wait_any, futex_wake, identity_current,
    membarrier_heavy, membarrier_light, thread_exists,
};
