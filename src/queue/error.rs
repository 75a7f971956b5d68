//! The queues' errors: one per operation family, each handing the item back where
//! it can.

use crate::ring::mpmc::{PopError, PushError};
use std::fmt;

use super::UNBOUNDED_MAXSIZE;

/// Why a blocking [`put`](super::Queue::put) failed: the queue cannot take items
/// through this handle any more. The item is handed back. (A blocking put never finds
/// the queue "full": it waits; see [`TryPutError`] for `put_nowait` and
/// `put_timeout`.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PutError<T> {
    /// This handle was closed.
    Closed(T),
    /// The queue was shut down (Python 3.13's `queue.ShutDown`), by this process or
    /// another, before or while this put waited.
    ShutDown(T),
    /// The queue was made with `maxsize` 0 (Python's "no limit") and holds
    /// [`UNBOUNDED_MAXSIZE`] items already: the default ran out. (Such a put does not
    /// wait.)
    DefaultMaxsizeReached(T),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Closed(t) | PutError::ShutDown(t) | PutError::DefaultMaxsizeReached(t) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&TryPutError::from(self.as_ref()), f)
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&TryPutError::from(self.as_ref()), f)
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> PutError<T> {
    fn as_ref(&self) -> PutError<()> {
        match self {
            PutError::Closed(_) => PutError::Closed(()),
            PutError::ShutDown(_) => PutError::ShutDown(()),
            PutError::DefaultMaxsizeReached(_) => PutError::DefaultMaxsizeReached(()),
        }
    }
}

impl<T> From<PutError<T>> for TryPutError<T> {
    fn from(e: PutError<T>) -> TryPutError<T> {
        match e {
            PutError::Closed(t) => TryPutError::Closed(t),
            PutError::ShutDown(t) => TryPutError::ShutDown(t),
            PutError::DefaultMaxsizeReached(t) => TryPutError::DefaultMaxsizeReached(t),
        }
    }
}

/// Why a [`put_nowait`](super::Queue::put_nowait) or
/// [`put_timeout`](super::Queue::put_timeout) failed. The item is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TryPutError<T> {
    /// The queue stayed full (for `put_nowait`, or until the timeout) — Python's
    /// `queue.Full`.
    Full(T),
    /// This handle was closed.
    Closed(T),
    /// The queue was shut down (Python 3.13's `queue.ShutDown`), by this process or
    /// another.
    ShutDown(T),
    /// The queue was made with `maxsize` 0 (Python's "no limit") and holds
    /// [`UNBOUNDED_MAXSIZE`] items already: the default ran out. (Such a put does not
    /// wait.)
    DefaultMaxsizeReached(T),
}

impl<T> TryPutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(t)
            | TryPutError::Closed(t)
            | TryPutError::ShutDown(t)
            | TryPutError::DefaultMaxsizeReached(t) => t,
        }
    }

    /// What a blocking put that gave up reports. It gives up without room only once
    /// the queue was shut down or its default maxsize ran out (it waits otherwise),
    /// so `Full` cannot reach here; were it to, "shut down" is the one answer that
    /// tells the caller to stop putting.
    pub(super) fn blocking(self) -> PutError<T> {
        match self {
            TryPutError::Closed(t) => PutError::Closed(t),
            TryPutError::ShutDown(t) | TryPutError::Full(t) => PutError::ShutDown(t),
            TryPutError::DefaultMaxsizeReached(t) => PutError::DefaultMaxsizeReached(t),
        }
    }

    /// The same error carrying `u` instead.
    pub(super) fn carrying<U>(self, u: U) -> TryPutError<U> {
        match self {
            TryPutError::Full(_) => TryPutError::Full(u),
            TryPutError::Closed(_) => TryPutError::Closed(u),
            TryPutError::ShutDown(_) => TryPutError::ShutDown(u),
            TryPutError::DefaultMaxsizeReached(_) => TryPutError::DefaultMaxsizeReached(u),
        }
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("Full(..)"),
            TryPutError::Closed(_) => f.write_str("Closed(..)"),
            TryPutError::ShutDown(_) => f.write_str("ShutDown(..)"),
            TryPutError::DefaultMaxsizeReached(_) => f.write_str("DefaultMaxsizeReached(..)"),
        }
    }
}

/// The message of a `DefaultMaxsizeReached` error.
fn default_maxsize_message(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "queue is full: it was made with maxsize 0 (no limit in Python), which in shared memory means the default of {UNBOUNDED_MAXSIZE} items (queue::UNBOUNDED_MAXSIZE); make it with a larger maxsize"
    )
}

impl<T> fmt::Display for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("queue is full"),
            TryPutError::Closed(_) => f.write_str("queue handle is closed"),
            TryPutError::ShutDown(_) => f.write_str("queue is shut down"),
            TryPutError::DefaultMaxsizeReached(_) => default_maxsize_message(f),
        }
    }
}

impl<T> std::error::Error for TryPutError<T> {}

/// Why a blocking [`get`](super::Queue::get) failed. (A blocking get never finds the
/// queue "empty": it waits; see [`TryGetError`] for `get_nowait` and `get_timeout`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetError {
    /// This handle was closed.
    Closed,
    /// The queue was shut down and nothing is left in it (Python 3.13's
    /// `queue.ShutDown`).
    ShutDown,
    /// The queue's shared memory is inconsistent, or a message has the wrong size
    /// for this handle's type (a peer scribbled on it). The bad message was dropped.
    Corrupt(String),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&TryGetError::from(self.clone()), f)
    }
}

impl std::error::Error for GetError {}

impl From<GetError> for TryGetError {
    fn from(e: GetError) -> TryGetError {
        match e {
            GetError::Closed => TryGetError::Closed,
            GetError::ShutDown => TryGetError::ShutDown,
            GetError::Corrupt(why) => TryGetError::Corrupt(why),
        }
    }
}

impl TryGetError {
    /// What a blocking get that gave up reports: it gives up empty-handed only once
    /// the queue was shut down (it waits otherwise), so `Empty` means that.
    pub(super) fn blocking(self) -> GetError {
        match self {
            TryGetError::Closed => GetError::Closed,
            TryGetError::ShutDown | TryGetError::Empty => GetError::ShutDown,
            TryGetError::Corrupt(why) => GetError::Corrupt(why),
        }
    }
}

/// Why a [`get_nowait`](super::Queue::get_nowait) or
/// [`get_timeout`](super::Queue::get_timeout) got no item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryGetError {
    /// The queue stayed empty (for `get_nowait`, or until the timeout) — Python's
    /// `queue.Empty`.
    Empty,
    /// This handle was closed.
    Closed,
    /// The queue was shut down and nothing is left in it (Python 3.13's
    /// `queue.ShutDown`).
    ShutDown,
    /// The queue's shared memory is inconsistent, or a message has the wrong size
    /// for this handle's type (a peer scribbled on it). The bad message was dropped.
    Corrupt(String),
}

impl fmt::Display for TryGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryGetError::Empty => f.write_str("queue is empty"),
            TryGetError::Closed => f.write_str("queue handle is closed"),
            TryGetError::ShutDown => f.write_str("queue is shut down and empty"),
            TryGetError::Corrupt(why) => write!(f, "queue is corrupt: {why}"),
        }
    }
}

impl std::error::Error for TryGetError {}

impl From<PopError> for TryGetError {
    fn from(e: PopError) -> TryGetError {
        match e {
            PopError::Empty => TryGetError::Empty,
            PopError::Corrupt(why) => TryGetError::Corrupt(why.to_string()),
        }
    }
}

/// This queue handle was closed: what `qsize`, `empty` and `full` answer then
/// (Python's `ValueError: Queue is closed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue handle is closed")
    }
}

impl std::error::Error for Closed {}

/// Why a blocking byte put ([`ByteQueue::put`](super::ByteQueue::put),
/// [`loan`](super::ByteQueue::loan)) failed. (It never finds the queue full: it
/// waits; see [`TryPutBytesError`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutBytesError {
    /// The message can never fit this queue.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message the queue holds.
        max: usize,
    },
    /// This handle was closed.
    Closed,
    /// The queue was shut down.
    ShutDown,
    /// A queue made with `maxsize` 0 holds [`UNBOUNDED_MAXSIZE`] items already.
    DefaultMaxsizeReached,
}

impl fmt::Display for PutBytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&TryPutBytesError::from(*self), f)
    }
}

impl std::error::Error for PutBytesError {}

impl From<PutBytesError> for TryPutBytesError {
    fn from(e: PutBytesError) -> TryPutBytesError {
        match e {
            PutBytesError::TooLarge { len, max } => TryPutBytesError::TooLarge { len, max },
            PutBytesError::Closed => TryPutBytesError::Closed,
            PutBytesError::ShutDown => TryPutBytesError::ShutDown,
            PutBytesError::DefaultMaxsizeReached => TryPutBytesError::DefaultMaxsizeReached,
        }
    }
}

impl TryPutBytesError {
    /// What a blocking byte put that gave up reports (see [`TryPutError::blocking`]).
    pub(super) fn blocking(self) -> PutBytesError {
        match self {
            TryPutBytesError::TooLarge { len, max } => PutBytesError::TooLarge { len, max },
            TryPutBytesError::Closed => PutBytesError::Closed,
            TryPutBytesError::ShutDown | TryPutBytesError::Full => PutBytesError::ShutDown,
            TryPutBytesError::DefaultMaxsizeReached => PutBytesError::DefaultMaxsizeReached,
        }
    }
}

/// Why a byte message was not put by `put_nowait`, `put_timeout` or `try_loan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryPutBytesError {
    /// The queue stayed full (for `put_nowait`, or until the timeout).
    Full,
    /// The message can never fit this queue.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message the queue holds.
        max: usize,
    },
    /// This handle was closed.
    Closed,
    /// The queue was shut down.
    ShutDown,
    /// A queue made with `maxsize` 0 holds [`UNBOUNDED_MAXSIZE`] items already.
    DefaultMaxsizeReached,
}

impl fmt::Display for TryPutBytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutBytesError::Full => f.write_str("queue is full"),
            TryPutBytesError::ShutDown => f.write_str("queue is shut down"),
            TryPutBytesError::DefaultMaxsizeReached => default_maxsize_message(f),
            TryPutBytesError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this queue holds messages of at most {max} bytes"
            ),
            TryPutBytesError::Closed => f.write_str("queue handle is closed"),
        }
    }
}

impl std::error::Error for TryPutBytesError {}

impl From<PushError> for TryPutBytesError {
    fn from(e: PushError) -> TryPutBytesError {
        match e {
            PushError::Full => TryPutBytesError::Full,
            PushError::TooLarge { len, max } => TryPutBytesError::TooLarge { len, max },
        }
    }
}

/// Why `task_done` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than there were items put")
    }
}

impl std::error::Error for TaskDoneError {}
