//! # shmproc
//!
//! Python's `multiprocessing` toolkit for Rust, built on shared memory: every object
//! lives in an mmap'd segment, processes exchange data with atomic loads and stores,
//! and a process sleeps in the kernel (on a futex) only when it has to wait.
//!
//! | Python | shmproc |
//! |---|---|
//! | `Process(target=f)` | [`Process::spawn`] (fork; children inherit objects) |
//! | `get_context('spawn' / 'forkserver').Process(target=f, args=a)` | [`Process::start`] with a [`start::StartMethod`]; objects travel as handles ([`start::Portable`]) |
//! | `Pool(n)`: `map`, `imap`, `imap_unordered`, `apply_async`, … | [`Pool`] |
//! | `Queue`, `JoinableQueue`, `SimpleQueue` | [`Queue`], [`JoinableQueue`], [`SimpleQueue`]; [`ByteQueue`] for byte messages |
//! | `Pipe()`, `Connection`, `connection.wait` | [`pipe()`], [`Connection`], [`pipe::wait`] |
//! | `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition`, `Barrier` | [`sync`] |
//! | `Value`, `Array`, `RawValue`, `RawArray` | [`value`] |
//! | `Manager().dict()`, `Manager().list()` | [`Dict`], [`List`] |
//! | `shared_memory.SharedMemory` | [`segment::Segment`] |
//!
//! ```
//! use shmproc::{Process, Queue};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let q = Queue::<u64>::new(64)?;
//! let mut child = Process::spawn(|| {
//!     for i in 1..=10 {
//!         q.put(i * i).unwrap();
//!     }
//! })?;
//! let total: u64 = (0..10).map(|_| q.get().unwrap()).sum();
//! assert_eq!(total, 385);
//! child.join()?;
//! # Ok(()) }
//! ```
//!
//! The layers underneath are public for embedders: [`segment`] (named and anonymous
//! segments with a validated header, [`layout::header`]), [`wait`] (the futex
//! eventcount every blocking call uses) and [`ring`] (the lock-free rings, over
//! memory the caller hands in).
//!
//! ## Example: the eventcount directly
//!
//! A child process wakes its parent through an eventcount in an anonymous segment:
//!
//! ```
//! use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
//! use shmproc::segment::Segment;
//! use shmproc::wait::EventCount;
//! use shmproc::Process;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layout = ObjectLayout {
//!     kind: ObjectKind::Raw,
//!     elem: ElemType::NONE,
//!     slot_size: 0,
//!     capacity: 0,
//!     payload_size: 16,
//! };
//! let seg = Segment::anonymous(&layout, |_, _| {})?;
//! let base = seg.payload().as_ptr();
//! // SAFETY: the payload is 16 bytes, 128-aligned, and only used through atomics.
//! let (event, flag) = unsafe { (EventCount::from_ptr(base), AtomicU32::from_ptr(base.add(8).cast())) };
//!
//! let mut child = Process::spawn(|| {
//!     flag.store(42, Ordering::SeqCst);
//!     event.notify_all();
//! })?;
//! let got = event.wait_until(None, || match flag.load(Ordering::SeqCst) {
//!     0 => None,
//!     v => Some(v),
//! })?;
//! assert_eq!(got, 42);
//! assert!(child.join()?.success());
//! # Ok(()) }
//! ```
//!
//! ## Safety and trust
//!
//! Shared memory is input: another process may write anything into it. Every header
//! field is validated when a segment is opened, sizes come from `fstat` and never from
//! the header, and no reference is ever formed to memory another process writes except
//! to atomics.

#![cfg(target_os = "linux")]

pub mod dict;
pub mod layout;
pub mod object;
mod os;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod ring;
pub mod segment;
mod shim;
pub mod start;
pub mod sync;
pub mod value;
pub mod wait;

pub use dict::{Dict, List};
pub use object::{Object, inspect};
pub use os::clock::Deadline;
pub use pipe::{Connection, pipe};
pub use pool::{AsyncResult, IMap, Pool, PoolBuilder, PoolError};
pub use process::{ExitStatus, Process};
pub use queue::{ByteQueue, JoinableQueue, Queue, SimpleQueue};
pub use sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
pub use value::{Array, RawArray, RawValue, Value};

/// Counters of the system calls shmproc makes, for tests and benchmarks that show the
/// fast paths make none.
pub mod stats {
    pub use crate::os::futex::{wait_calls, wake_calls};
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
