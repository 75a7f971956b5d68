//! The one door through which the lock-free rings reach atomics and the identity and
//! liveness of threads (STYLE rule 5), so that the same algorithm code runs under a
//! model checker.
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
//!   any instruction.
//!
//! What the model does not check: shuttle runs one thread at a time, so every
//! interleaving it explores is sequentially consistent. It checks the protocol's
//! logic — claims, intents, marks, repair, a kill at any atomic step — not whether
//! the memory orderings are strong enough (those are argued in comments, pair by
//! pair). Outside a model test (`model::active()` false) the model build behaves like
//! the normal one.

pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(shmproc_model))]
pub(crate) use crate::os::proc::{cached_tid, thread_exists};
#[cfg(not(shmproc_model))]
pub(crate) use std::sync::atomic::AtomicU64;

#[cfg(shmproc_model)]
pub(crate) mod model;
#[cfg(shmproc_model)]
pub(crate) use model::{AtomicU64, cached_tid, thread_exists};
