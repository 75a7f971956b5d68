//! The pipe's errors, one per operation family: [`SendError`] and [`RecvError`] for
//! the blocking forms, which wait as long as it takes and so never time out, and
//! [`SendTimeoutError`] and [`RecvTimeoutError`] for the `_timeout` forms.

use crate::ring::spsc::{self};
use std::fmt;

/// Why a blocking send ([`send`](super::Connection::send),
/// [`send_bytes`](super::Connection::send_bytes), …) failed. (A blocking send waits
/// for room as long as it takes; see [`SendTimeoutError`] for
/// [`send_bytes_timeout`](super::Connection::send_bytes_timeout).)
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only receives.
    ReceiveOnly,
    /// Every holder of the other end has closed it or died (Python's
    /// `BrokenPipeError`); nothing was written. Seen by the first send after the last
    /// holder closed, and within `2 ×` [`LIVENESS_EVERY`] sends of the last holder's
    /// death (see the module docs).
    ///
    /// [`LIVENESS_EVERY`]: super::LIVENESS_EVERY
    BrokenPipe,
    /// A bad `offset` or `size` (the message says which and why).
    InvalidArgument(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection is closed"),
            SendError::ReceiveOnly => {
                f.write_str("this end of a one-way pipe only receives; send on the other end")
            }
            SendError::BrokenPipe => f.write_str("broken pipe: the other end is closed"),
            SendError::InvalidArgument(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a [`send_bytes_timeout`](super::Connection::send_bytes_timeout) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendTimeoutError {
    /// The ring stayed full until the timeout (part of a long message may have been
    /// sent: the receiver then waits for the rest).
    Timeout,
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only receives.
    ReceiveOnly,
    /// Every holder of the other end has closed it or died (Python's
    /// `BrokenPipeError`), as for [`SendError::BrokenPipe`].
    BrokenPipe,
}

impl SendTimeoutError {
    /// What a blocking send that gave up reports. It gives up only when the
    /// connection is closed, one-way or broken (it waits otherwise, with no
    /// deadline), so `Timeout` cannot reach here; were it to, "broken pipe" is the
    /// one answer that tells the caller to stop sending.
    pub(super) fn blocking(self) -> SendError {
        match self {
            SendTimeoutError::Closed => SendError::Closed,
            SendTimeoutError::ReceiveOnly => SendError::ReceiveOnly,
            SendTimeoutError::BrokenPipe | SendTimeoutError::Timeout => SendError::BrokenPipe,
        }
    }
}

impl fmt::Display for SendTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout => f.write_str("timed out waiting for room in the pipe"),
            other => fmt::Display::fmt(&other.clone().blocking(), f),
        }
    }
}

impl std::error::Error for SendTimeoutError {}

/// Why a blocking receive ([`recv`](super::Connection::recv),
/// [`recv_bytes`](super::Connection::recv_bytes), …) or a
/// [`poll`](super::Connection::poll) failed. (A blocking receive waits as long as it
/// takes; see [`RecvTimeoutError`] for the `_timeout` forms.)
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Every holder of the other end has closed it or died, and everything it sent
    /// has been received (Python's `EOFError`).
    Eof,
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only sends.
    SendOnly,
    /// The message did not fit the buffer; here is all of it (Python's
    /// `BufferTooShort`, whose argument is the message).
    BufferTooShort(Vec<u8>),
    /// `recv::<T>` got a message that is not the size of a `T` (it was consumed).
    WrongSize {
        /// `size_of::<T>()`.
        expected: usize,
        /// The message's length.
        found: usize,
    },
    /// A bad offset for `recv_bytes_into`.
    InvalidArgument(String),
    /// The pipe's shared memory is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl fmt::Debug for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::BufferTooShort(m) => write!(f, "BufferTooShort({} bytes)", m.len()),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("end of file: the other end is closed"),
            RecvError::Closed => f.write_str("connection is closed"),
            RecvError::SendOnly => {
                f.write_str("this end of a one-way pipe only sends; receive on the other end")
            }
            RecvError::BufferTooShort(m) => write!(
                f,
                "buffer too short for a message of {} bytes (the message is in the error)",
                m.len()
            ),
            RecvError::WrongSize { expected, found } => write!(
                f,
                "received a message of {found} bytes, expected {expected}"
            ),
            RecvError::InvalidArgument(why) => f.write_str(why),
            RecvError::Corrupt(why) => write!(f, "pipe is corrupt: {why}"),
        }
    }
}

impl std::error::Error for RecvError {}

impl From<spsc::Corrupt> for RecvError {
    fn from(e: spsc::Corrupt) -> RecvError {
        RecvError::Corrupt(e.to_string())
    }
}

/// Why a [`recv_bytes_timeout`](super::Connection::recv_bytes_timeout) or
/// [`recv_timeout`](super::Connection::recv_timeout) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the timeout.
    Timeout,
    /// Every holder of the other end has closed it or died, and everything it sent
    /// has been received (Python's `EOFError`).
    Eof,
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only sends.
    SendOnly,
    /// `recv_timeout::<T>` got a message that is not the size of a `T` (it was
    /// consumed).
    WrongSize {
        /// `size_of::<T>()`.
        expected: usize,
        /// The message's length.
        found: usize,
    },
    /// The pipe's shared memory is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl RecvTimeoutError {
    /// What a blocking receive that gave up reports. It gives up only at EOF, on a
    /// closed or one-way end, a message of the wrong size or corrupt memory (it
    /// waits otherwise, with no deadline), so `Timeout` cannot reach here; were it
    /// to, EOF is the one answer that tells the caller to stop receiving.
    pub(super) fn blocking(self) -> RecvError {
        match self {
            RecvTimeoutError::Eof | RecvTimeoutError::Timeout => RecvError::Eof,
            RecvTimeoutError::Closed => RecvError::Closed,
            RecvTimeoutError::SendOnly => RecvError::SendOnly,
            RecvTimeoutError::WrongSize { expected, found } => {
                RecvError::WrongSize { expected, found }
            }
            RecvTimeoutError::Corrupt(why) => RecvError::Corrupt(why),
        }
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting for a message"),
            other => fmt::Display::fmt(&other.clone().blocking(), f),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

impl From<spsc::Corrupt> for RecvTimeoutError {
    fn from(e: spsc::Corrupt) -> RecvTimeoutError {
        RecvTimeoutError::Corrupt(e.to_string())
    }
}
