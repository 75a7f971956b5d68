//! Why an access under a caller's guard was refused.

use crate::sync::{Lock, LockGuard};
use std::fmt;

/// Why an access under a caller's guard ([`Value::get_with`], [`Value::set_with`],
/// [`Array::to_vec_with`], [`Array::copy_from_slice_with`]) was refused.
///
/// [`Value::get_with`]: super::Value::get_with
/// [`Value::set_with`]: super::Value::set_with
/// [`Array::to_vec_with`]: super::Array::to_vec_with
/// [`Array::copy_from_slice_with`]: super::Array::copy_from_slice_with
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// The guard is of another lock than the one guarding this value or array.
    OtherLock,
    /// The guard no longer holds its lock (a condition wait could not take it
    /// back; see [`LockGuard::is_held`]).
    NotHeld,
    /// A slice of the wrong length was given.
    Length {
        /// The array's length.
        expected: usize,
        /// The slice's.
        found: usize,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::OtherLock => {
                f.write_str("the guard is of another lock than the one guarding this value")
            }
            AccessError::NotHeld => f.write_str("the guard no longer holds its lock"),
            AccessError::Length { expected, found } => {
                write!(f, "a slice of {found} elements for an array of {expected}")
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// Checks that `guard` holds `lock` (any handle of the same lock state).
pub(super) fn check_guard(lock: &Lock, guard: &LockGuard<'_>) -> Result<(), AccessError> {
    if !guard.lock().same_lock(lock) {
        return Err(AccessError::OtherLock);
    }
    if !guard.is_held() {
        return Err(AccessError::NotHeld);
    }
    Ok(())
}
