//! What went wrong inside the map.

use crate::dict::{ReadError, WriteError};

/// What went wrong inside the map, before it is told to the caller in the words of
/// the operation ([`ReadError`] or [`WriteError`]).
#[derive(Debug)]
pub(crate) enum Fault {
    /// The map's memory holds something no writer writes.
    Corrupt(String),
    /// The map cannot hold more (a region or the index is at its limit).
    Full(String),
    /// Reserving memory for growth failed.
    Reserve(std::io::Error),
    /// The caller's closure or decoder refused.
    Refused(WriteError),
}

impl From<Fault> for ReadError {
    fn from(f: Fault) -> ReadError {
        match f {
            Fault::Corrupt(why) | Fault::Full(why) => ReadError::Corrupt(why),
            Fault::Reserve(e) => ReadError::Corrupt(format!("cannot reserve map memory: {e}")),
            Fault::Refused(e) => ReadError::Corrupt(e.to_string()),
        }
    }
}

impl From<Fault> for WriteError {
    fn from(f: Fault) -> WriteError {
        match f {
            Fault::Corrupt(why) => WriteError::Corrupt(why),
            Fault::Full(why) => WriteError::Full(why),
            Fault::Reserve(e) => WriteError::OutOfMemory(e.to_string()),
            Fault::Refused(e) => e,
        }
    }
}

pub(super) fn corrupt(what: impl Into<String>) -> Fault {
    Fault::Corrupt(what.into())
}
