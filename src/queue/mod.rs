//! `Queue`, `JoinableQueue`, `SimpleQueue` and `ByteQueue`: Python's
//! `multiprocessing.Queue` family on the robust MPMC ring ([`crate::ring::mpmc`]).
//!
//! Each item goes to exactly one consumer; any number of producer and consumer
//! processes may share a queue, by name or by inheriting it through
//! [`Process`](crate::Process).
//!
//! | Python | shmproc |
//! |---|---|
//! | `Queue(maxsize)` | [`Queue::new`] (anonymous), [`Queue::create`] / [`Queue::open`] (named) |
//! | `put(obj)` / `put(obj, timeout=t)` / `put_nowait(obj)` | [`Queue::put`] / [`Queue::put_timeout`] / [`Queue::put_nowait`] |
//! | `get()` / `get(timeout=t)` / `get_nowait()` | [`Queue::get`] / [`Queue::get_timeout`] / [`Queue::get_nowait`] |
//! | `Queue()` (no maxsize) | [`Queue::new`]`(0)`: room for [`UNBOUNDED_MAXSIZE`] items, then [`TryPutError::DefaultMaxsizeReached`] |
//! | `qsize()`, `empty()`, `full()` | [`Queue::qsize`], [`Queue::empty`], [`Queue::full`] (`Err(`[`Closed`]`)` on a closed handle, Python's `ValueError`) |
//! | `close()` | [`Queue::close`] (this handle only), [`Queue::closed`] |
//! | `shutdown(immediate)`, `queue.ShutDown` (3.13) | [`Queue::shutdown`], [`JoinableQueue::shutdown`]; [`TryPutError::ShutDown`], [`TryGetError::ShutDown`] |
//! | `queue.Full`, `queue.Empty` | [`TryPutError::Full`] (item handed back), [`TryGetError::Empty`] |
//! | `JoinableQueue.task_done()`, `join()` | [`JoinableQueue::task_done`], [`JoinableQueue::join`] |
//! | `SimpleQueue` | [`SimpleQueue`] |
//! | (none: pickled copies only) | in place, no copy: [`Queue::loan`] / [`Queue::get_ref`] ([`ItemLoan`], [`ItemRef`]); [`ByteQueue::loan`] / [`ByteQueue::get_ref`] |
//!
//! Errors follow the operation (crossbeam-channel's shape): a blocking `put` / `get`
//! returns [`PutError`] / [`GetError`], which have no "full" or "empty" — it waits —
//! while `put_nowait` / `put_timeout` and `get_nowait` / `get_timeout` return
//! [`TryPutError`] / [`TryGetError`], which add `Full` / `Empty` (Python raises
//! `queue.Full` / `queue.Empty` for both). Every put error hands the item back;
//! `TryPutError::from(PutError)` and `TryGetError::from(GetError)` join the two where a
//! caller handles both.
//!
//! Payloads: [`Queue<T>`] carries plain-old-data `T` (a copy into the slot, no
//! serialization); [`ByteQueue`] carries byte messages of any length up to the ring's
//! size, a message larger than a slot spanning consecutive slots.
//!
//! # What a crash can lose
//!
//! A process killed with SIGKILL loses at most the one message it had in flight: a
//! producer killed between claiming a slot and publishing it loses that message; a
//! consumer killed between taking a message and returning from `get` loses that one.
//! Survivors never hang on either: a blocked `put` or `get` that stalls checks whether
//! the owner of the slot it waits on is alive and repairs the ring if not. No message
//! is ever delivered twice or torn. (`JoinableQueue`: a message lost this way was
//! counted as unfinished and is never marked done, so `join` waits for it — use
//! [`JoinableQueue::join_timeout`] where producers may die.)

mod bytes;
mod core;
mod error;
mod fifo;
mod in_place;
mod joinable;
#[cfg(feature = "serde")]
mod serde;
mod simple;

pub use bytes::{ByteQueue, Loan, MessageRef};
pub use error::{
    Closed, GetError, PutBytesError, PutError, TaskDoneError, TryGetError, TryPutBytesError,
    TryPutError,
};
pub use fifo::Queue;
pub use in_place::{ItemLoan, ItemRef};
pub use joinable::JoinableQueue;
#[cfg(feature = "serde")]
pub use serde::{SerdeGetError, SerdePutError, SerdeQueue};
pub use simple::SimpleQueue;

/// The room a queue made with `maxsize` 0 gets: Python's "no limit" cannot be had
/// in a fixed-size segment, so such a queue holds up to this many items, and a `put`
/// that finds it full fails at once with [`TryPutError::DefaultMaxsizeReached`] (it does
/// not wait: in Python it would not have) instead of `Full`.
pub const UNBOUNDED_MAXSIZE: usize = 1 << 16;
