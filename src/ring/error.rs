//! The errors both rings share: what a corrupt ring looked like, and why memory
//! cannot hold a ring. Both are `Copy` and allocate nothing, so the hot paths that
//! can return them stay free of drop glue.

use std::fmt;

/// What part of a ring was found inconsistent (a peer scribbled on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptPart {
    /// An MPMC slot whose state word cannot follow from the protocol at the head.
    SlotState,
    /// An MPMC message's meta word (length, span) that does not fit the ring.
    SlotMeta,
    /// An SPSC read position that is not on a record boundary.
    ReadPosition,
    /// An SPSC padding record whose length does not reach the ring's end.
    Padding,
    /// An SPSC record header whose length or flags do not fit the ring.
    RecordHeader,
}

/// A ring's shared state is inconsistent: which part, where, and the word found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// What was inconsistent.
    pub part: CorruptPart,
    /// Where: the slot index (MPMC) or byte offset (SPSC).
    pub at: u64,
    /// The ring position concerned (0 if none).
    pub position: u64,
    /// The word found there (a state word, a meta word, a header as `len << 32 |
    /// flags`, a position).
    pub found: u64,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Corrupt {
            part,
            at,
            position,
            found,
        } = *self;
        match part {
            CorruptPart::SlotState => write!(
                f,
                "ring is corrupt: slot {at} at head position {position} has state {found:#x}"
            ),
            CorruptPart::SlotMeta => write!(
                f,
                "ring is corrupt: slot {at} holds a message of {} bytes over {} slots (meta {found:#x})",
                found & 0xFFFF_FFFF,
                (found >> 32) & 0xFFFF
            ),
            CorruptPart::ReadPosition => write!(
                f,
                "byte ring is corrupt: read position {found} is not 16-aligned"
            ),
            CorruptPart::Padding => write!(
                f,
                "byte ring is corrupt: bad padding of {found} bytes at offset {at}"
            ),
            CorruptPart::RecordHeader => write!(
                f,
                "byte ring is corrupt: record at offset {at}: {} bytes, flags {:#x}",
                found >> 32,
                found & 0xFFFF_FFFF
            ),
        }
    }
}

impl std::error::Error for Corrupt {}

/// Why memory could not be used as a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Parameters no ring can have: for the MPMC ring a capacity of 0 or above
    /// [`mpmc::MAX_CAPACITY`](super::mpmc::MAX_CAPACITY), or a slot size that is 0 or
    /// not a multiple of 8; for the SPSC ring a capacity that is not a power of two
    /// of at least 256 (`slot_size` is then 0).
    InvalidParameters {
        /// Capacity asked for.
        capacity: u64,
        /// Slot size asked for (0 for the byte ring).
        slot_size: u64,
    },
    /// The memory is smaller than the ring's `bytes_for` says it needs.
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
                slot_size: 0,
            } => write!(
                f,
                "byte ring capacity {capacity} must be a power of two of at least 256"
            ),
            LayoutError::InvalidParameters {
                capacity,
                slot_size,
            } => write!(
                f,
                "invalid ring parameters: capacity {capacity} (1..={}), slot size {slot_size} (a non-zero multiple of 8)",
                super::mpmc::MAX_CAPACITY
            ),
            LayoutError::TooSmall { needed, given } => {
                write!(f, "ring needs {needed} bytes, got {given}")
            }
            LayoutError::Misaligned => f.write_str("ring memory must be 128-byte aligned"),
        }
    }
}

impl std::error::Error for LayoutError {}
