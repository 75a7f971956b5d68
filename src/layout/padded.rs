//! A fixed 128-byte cache-line padding for values placed in shared memory.

use std::ops::Deref;

/// Pads and aligns `T` to 128 bytes, so two `CachePadded` values never share a cache
/// line (nor an adjacent-line prefetch pair on x86).
///
/// Unlike `crossbeam_utils::CachePadded`, whose alignment depends on the target, this
/// alignment is the same on every architecture: it is part of the shared-memory layout,
/// and two processes built for different targets must agree on it.
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> CachePadded<T> {
        CachePadded { value }
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

const _: () = assert!(std::mem::size_of::<CachePadded<u8>>() == 128);
const _: () = assert!(std::mem::align_of::<CachePadded<u64>>() == 128);
const _: () = assert!(std::mem::size_of::<CachePadded<[u8; 129]>>() == 256);
