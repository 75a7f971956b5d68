//! The errors: one enum per operation.

use super::MAX_CAPACITY;
use std::fmt;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to take now (or the next message is still being written).
    Empty,
    /// The ring's shared state is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring is empty"),
            PopError::Corrupt(why) => write!(f, "ring is corrupt: {why}"),
        }
    }
}

impl std::error::Error for PopError {}

/// Why memory could not be used as a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Capacity 0, above [`MAX_CAPACITY`], or a slot size that is 0 or not a multiple
    /// of 8.
    InvalidParameters {
        /// Capacity asked for.
        capacity: u64,
        /// Slot size asked for.
        slot_size: u64,
    },
    /// The memory is smaller than [`Ring::bytes_for`] says the ring needs.
    ///
    /// [`Ring::bytes_for`]: super::Ring::bytes_for
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// The memory is not aligned to 128 bytes.
    Misaligned,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::InvalidParameters {
                capacity,
                slot_size,
            } => write!(
                f,
                "invalid ring parameters: capacity {capacity} (1..={MAX_CAPACITY}), slot size {slot_size} (a non-zero multiple of 8)"
            ),
            LayoutError::TooSmall { needed, given } => {
                write!(f, "ring needs {needed} bytes, got {given}")
            }
            LayoutError::Misaligned => f.write_str("ring memory must be 128-byte aligned"),
        }
    }
}

impl std::error::Error for LayoutError {}
