//! Copies in and out of shared memory with relaxed atomics, and the integer types with
//! atomic read-modify-write operations.

use bytemuck::Pod;
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize, Ordering,
};

/// The widest atomic access (8, 4, 2 or 1 bytes) that divides `T`'s size and
/// alignment: every copy of a `T` uses it, so the raw types never mix access sizes
/// on one location (and an integer's copies have the width of its atomic ops).
pub(super) const fn chunk_of<T>() -> usize {
    let (size, align) = (size_of::<T>(), align_of::<T>());
    if size % 8 == 0 && align >= 8 {
        8
    } else if size % 4 == 0 && align >= 4 {
        4
    } else if size % 2 == 0 && align >= 2 {
        2
    } else {
        1
    }
}

/// Copies `count` `T`s out of shared memory with relaxed atomic loads.
///
/// # Safety
///
/// `src` must be valid for reads of `count` `T`s, aligned, accessed by everyone only
/// atomically; `dst` valid for writes of `count` `T`s, aligned, not shared.
pub(super) unsafe fn copy_out<T: Pod>(src: *const T, dst: *mut T, count: usize) {
    let bytes = count * size_of::<T>();
    let (src, dst) = (src.cast::<u8>().cast_mut(), dst.cast::<u8>());
    let mut i = 0;
    macro_rules! copy {
        ($atomic:ty, $int:ty) => {
            while i < bytes {
                // SAFETY: i + size_of::<$int>() <= bytes, and both pointers are
                // aligned to it (chunk_of divides T's alignment and size).
                unsafe {
                    let v = <$atomic>::from_ptr(src.add(i).cast()).load(Ordering::Relaxed);
                    dst.add(i).cast::<$int>().write(v);
                }
                i += size_of::<$int>();
            }
        };
    }
    match chunk_of::<T>() {
        8 => copy!(AtomicU64, u64),
        4 => copy!(AtomicU32, u32),
        2 => copy!(AtomicU16, u16),
        _ => copy!(AtomicU8, u8),
    }
}

/// Copies `count` `T`s into shared memory with relaxed atomic stores.
///
/// # Safety
///
/// As for [`copy_out`], with the roles of `src` (local) and `dst` (shared) swapped.
pub(super) unsafe fn copy_in<T: Pod>(src: *const T, dst: *mut T, count: usize) {
    let bytes = count * size_of::<T>();
    let (src, dst) = (src.cast::<u8>(), dst.cast::<u8>());
    let mut i = 0;
    macro_rules! copy {
        ($atomic:ty, $int:ty) => {
            while i < bytes {
                // SAFETY: as in copy_out.
                unsafe {
                    let v = src.add(i).cast::<$int>().read();
                    <$atomic>::from_ptr(dst.add(i).cast()).store(v, Ordering::Relaxed);
                }
                i += size_of::<$int>();
            }
        };
    }
    match chunk_of::<T>() {
        8 => copy!(AtomicU64, u64),
        4 => copy!(AtomicU32, u32),
        2 => copy!(AtomicU16, u16),
        _ => copy!(AtomicU8, u8),
    }
}

mod private {
    pub trait Sealed {}
}

/// Integer types with atomic operations on [`RawValue`] and [`RawArray`]: `u8` …
/// `u64`, `i8` … `i64`, `usize`, `isize` (sealed).
///
/// [`RawValue`]: super::RawValue
/// [`RawArray`]: super::RawArray
pub trait AtomicInteger: Pod + private::Sealed {
    /// `Atomic*::load` at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid, aligned to `size_of::<Self>()`, and accessed by everyone
    /// only atomically with this width.
    #[doc(hidden)]
    unsafe fn atomic_load(ptr: *mut Self, order: Ordering) -> Self;
    /// `Atomic*::store`; safety as for `atomic_load`.
    ///
    /// # Safety
    ///
    /// As for `atomic_load`.
    #[doc(hidden)]
    unsafe fn atomic_store(ptr: *mut Self, v: Self, order: Ordering);
    /// `Atomic*::swap`.
    ///
    /// # Safety
    ///
    /// As for `atomic_load`.
    #[doc(hidden)]
    unsafe fn atomic_swap(ptr: *mut Self, v: Self, order: Ordering) -> Self;
    /// `Atomic*::fetch_add` (wrapping).
    ///
    /// # Safety
    ///
    /// As for `atomic_load`.
    #[doc(hidden)]
    unsafe fn atomic_fetch_add(ptr: *mut Self, v: Self, order: Ordering) -> Self;
    /// `Atomic*::fetch_sub` (wrapping).
    ///
    /// # Safety
    ///
    /// As for `atomic_load`.
    #[doc(hidden)]
    unsafe fn atomic_fetch_sub(ptr: *mut Self, v: Self, order: Ordering) -> Self;
    /// `Atomic*::compare_exchange`.
    ///
    /// # Safety
    ///
    /// As for `atomic_load`.
    #[doc(hidden)]
    unsafe fn atomic_compare_exchange(
        ptr: *mut Self,
        current: Self,
        new: Self,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self, Self>;
}

macro_rules! atomic_integer {
    ($($int:ty => $atomic:ty),* $(,)?) => {$(
        impl private::Sealed for $int {}
        const _: () = assert!(align_of::<$atomic>() == size_of::<$int>());
        const _: () = assert!(chunk_of::<$int>() == size_of::<$int>());
        impl AtomicInteger for $int {
            unsafe fn atomic_load(ptr: *mut $int, order: Ordering) -> $int {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }.load(order)
            }
            unsafe fn atomic_store(ptr: *mut $int, v: $int, order: Ordering) {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }.store(v, order)
            }
            unsafe fn atomic_swap(ptr: *mut $int, v: $int, order: Ordering) -> $int {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }.swap(v, order)
            }
            unsafe fn atomic_fetch_add(ptr: *mut $int, v: $int, order: Ordering) -> $int {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }.fetch_add(v, order)
            }
            unsafe fn atomic_fetch_sub(ptr: *mut $int, v: $int, order: Ordering) -> $int {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }.fetch_sub(v, order)
            }
            unsafe fn atomic_compare_exchange(
                ptr: *mut $int,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                // SAFETY: the caller's contract.
                unsafe { <$atomic>::from_ptr(ptr) }
                    .compare_exchange(current, new, success, failure)
            }
        }
    )*};
}

atomic_integer!(
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_size_and_alignment() {
        assert_eq!(chunk_of::<u64>(), 8);
        assert_eq!(chunk_of::<f64>(), 8);
        assert_eq!(chunk_of::<[u32; 3]>(), 4);
        assert_eq!(chunk_of::<[u8; 3]>(), 1);
        assert_eq!(chunk_of::<[u16; 5]>(), 2);
        assert_eq!(chunk_of::<[u64; 2]>(), 8);
    }
}
