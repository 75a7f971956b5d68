//! The errors: one enum per operation.

use std::fmt;

pub use crate::ring::error::{Corrupt, LayoutError};

/// Why a message could not be put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// No room now (or the lead slot at `tail` is mid-claim by another producer).
    Full,
    /// The message can never fit this ring.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message this ring holds.
        max: usize,
    },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring is full"),
            PushError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this ring holds messages of at most {max} bytes"
            ),
        }
    }
}

impl std::error::Error for PushError {}

/// Why no message was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to take now (or the next message is still being written).
    Empty,
    /// The ring's shared state is inconsistent (a peer scribbled on it).
    Corrupt(Corrupt),
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring is empty"),
            PopError::Corrupt(why) => why.fmt(f),
        }
    }
}

impl std::error::Error for PopError {}
