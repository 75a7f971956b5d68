//! The queues' errors: one per operation family, each handing the item back where
//! it can.

use crate::ring::mpmc::{PopError, PushError};
use std::fmt;

use super::UNBOUNDED_MAXSIZE;

/// Why an item was not put. The item is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PutError<T> {
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

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Closed(t)
            | PutError::ShutDown(t)
            | PutError::DefaultMaxsizeReached(t) => t,
        }
    }

    /// The same error carrying `u` instead.
    pub(super) fn carrying<U>(self, u: U) -> PutError<U> {
        match self {
            PutError::Full(_) => PutError::Full(u),
            PutError::Closed(_) => PutError::Closed(u),
            PutError::ShutDown(_) => PutError::ShutDown(u),
            PutError::DefaultMaxsizeReached(_) => PutError::DefaultMaxsizeReached(u),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::ShutDown(_) => f.write_str("ShutDown(..)"),
            PutError::DefaultMaxsizeReached(_) => f.write_str("DefaultMaxsizeReached(..)"),
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

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("queue is full"),
            PutError::Closed(_) => f.write_str("queue handle is closed"),
            PutError::ShutDown(_) => f.write_str("queue is shut down"),
            PutError::DefaultMaxsizeReached(_) => default_maxsize_message(f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why no item was got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetError {
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

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("queue is empty"),
            GetError::Closed => f.write_str("queue handle is closed"),
            GetError::ShutDown => f.write_str("queue is shut down and empty"),
            GetError::Corrupt(why) => write!(f, "queue is corrupt: {why}"),
        }
    }
}

impl std::error::Error for GetError {}

impl From<PopError> for GetError {
    fn from(e: PopError) -> GetError {
        match e {
            PopError::Empty => GetError::Empty,
            PopError::Corrupt(why) => GetError::Corrupt(why.to_string()),
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

/// Why a byte message was not put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutBytesError {
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

impl fmt::Display for PutBytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutBytesError::Full => f.write_str("queue is full"),
            PutBytesError::ShutDown => f.write_str("queue is shut down"),
            PutBytesError::DefaultMaxsizeReached => default_maxsize_message(f),
            PutBytesError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this queue holds messages of at most {max} bytes"
            ),
            PutBytesError::Closed => f.write_str("queue handle is closed"),
        }
    }
}

impl std::error::Error for PutBytesError {}

impl From<PushError> for PutBytesError {
    fn from(e: PushError) -> PutBytesError {
        match e {
            PushError::Full => PutBytesError::Full,
            PushError::TooLarge { len, max } => PutBytesError::TooLarge { len, max },
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
