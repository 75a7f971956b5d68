//! The OS layer: everything that makes a system call lives below this module.
//!
//! Linux only. Each file wraps one family of calls and returns `io::Result`; the first
//! doc line of a wrapper names the call it makes.

pub(crate) mod clock;
pub(crate) mod futex;
pub(crate) mod holders;
pub(crate) mod membarrier;
pub(crate) mod memory;
pub(crate) mod proc;
pub(crate) mod random;
pub(crate) mod shm;
pub(crate) mod socket;
