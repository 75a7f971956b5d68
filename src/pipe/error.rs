//! The pipe's errors: [`SendError`] and [`RecvError`].

use crate::ring::spsc::{self};
use std::fmt;

/// Why a message was not sent.
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
    BrokenPipe,
    /// The ring stayed full until the timeout.
    Timeout,
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
            SendError::Timeout => f.write_str("timed out waiting for room in the pipe"),
            SendError::InvalidArgument(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SendError {}

/// Why no message was received.
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
    /// Nothing arrived before the timeout.
    Timeout,
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
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
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
