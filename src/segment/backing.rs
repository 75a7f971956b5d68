//! What the machine can back: a segment's size checked before anything is
//! allocated, and a failed reservation reported the same way.

use crate::os::memory;
use crate::os::shm::{self};
use std::io;

use super::create_io;
use super::error::CreateError;

/// What bounds the size of a new segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Free space in `/dev/shm` (named segments).
    ShmFree,
    /// Memory the machine can still back shared memory with: `MemAvailable +
    /// SwapFree` (every segment; the only bound on anonymous ones).
    Memory,
}

/// Fails with [`CreateError::InsufficientSpace`] unless the machine can back `size`
/// bytes: memory for every segment, and free space in `/dev/shm` for named ones. A
/// reading the OS does not offer (no `/proc`) is skipped; `fallocate` still catches a
/// full `/dev/shm`.
pub(super) fn check_backing(name: Option<&str>, size: u64) -> Result<(), CreateError> {
    let mut bounds = vec![(Backing::Memory, memory::available_bytes())];
    if name.is_some() {
        bounds.push((Backing::ShmFree, memory::free_bytes(shm::SHM_DIR)));
    }
    for (backing, available) in bounds {
        match available {
            Ok(available) if available < size => {
                return Err(CreateError::InsufficientSpace {
                    name: name.map(str::to_string),
                    requested: size,
                    available,
                    backing,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The error for a failed `fallocate`: out of space or memory is
/// [`CreateError::InsufficientSpace`] with what is free now; anything else is `Io`.
pub(super) fn reserve_error(name: Option<&str>, size: u64, e: io::Error) -> CreateError {
    let owned = name.map(str::to_string);
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::ENOMEM | libc::EFBIG)
    ) {
        let (backing, available) = match name {
            Some(_) => (Backing::ShmFree, memory::free_bytes(shm::SHM_DIR)),
            None => (Backing::Memory, memory::available_bytes()),
        };
        if let Ok(available) = available {
            return CreateError::InsufficientSpace {
                name: owned,
                requested: size,
                available,
                backing,
            };
        }
    }
    create_io(&owned, "reserving memory (fallocate)")(e)
}
