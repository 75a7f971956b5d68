//! The raw types: [`RawValue`] and [`RawArray`], without a lock, copied with relaxed
//! atomics.

use super::copy::{AtomicInteger, copy_in, copy_out};
use super::{AccessError, ArrayInit, attach_data, data_layout, inspect};
use crate::layout::header::{ObjectKind, ObjectLayout};
use crate::object::{Mismatch, Object, Payload};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

// ---------------------------------------------------------------------------------
// RawValue

/// A `T` in shared memory without a lock, like Python's
/// `multiprocessing.RawValue` (or `Value(..., lock=False)`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) copy with relaxed atomic loads
/// and stores (a racing write may leave a mix of old and new bytes); integer types
/// have atomic [`load`](RawValue::load), [`store`](RawValue::store),
/// [`fetch_add`](RawValue::fetch_add) and friends.
///
/// # Examples
///
/// ```
/// use shmproc::value::RawValue;
/// use shmproc::Process;
/// use std::sync::atomic::Ordering;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hits = RawValue::new(0u64)?;
/// let mut kids = Vec::new();
/// for _ in 0..4 {
///     kids.push(Process::spawn(|| {
///         for _ in 0..1000 {
///             hits.fetch_add(1, Ordering::Relaxed);
///         }
///     })?);
/// }
/// for kid in &mut kids {
///     kid.join()?;
/// }
/// assert_eq!(hits.load(Ordering::SeqCst), 4000);
/// # Ok(()) }
/// ```
pub struct RawValue<T: Pod> {
    pub(super) segment: Arc<Segment>,
    pub(super) data: NonNull<T>,
}

// SAFETY: the data is only accessed through atomics (copy_in/copy_out and the
// AtomicInteger operations), in the mapping `segment` keeps alive; T is plain data.
unsafe impl<T: Pod> Send for RawValue<T> {}
// SAFETY: as for Send.
unsafe impl<T: Pod> Sync for RawValue<T> {}

impl<T: Pod> Clone for RawValue<T> {
    fn clone(&self) -> RawValue<T> {
        RawValue {
            segment: Arc::clone(&self.segment),
            data: self.data,
        }
    }
}

impl<T: Pod> Object for RawValue<T> {
    const KIND: ObjectKind = ObjectKind::Value;
    /// The initial value.
    type Args<'a> = T;

    fn layout(_: &T) -> Result<ObjectLayout, CreateError> {
        data_layout::<T>(ObjectKind::Value, 0, 1)
    }

    fn init(value: T, payload: &mut Payload<'_>) {
        ArrayInit::Copy(&[value]).write(payload, 0);
    }

    fn attach(segment: Arc<Segment>) -> Result<RawValue<T>, Mismatch> {
        let (data, _) = attach_data::<T>(&segment, ObjectKind::Value, 0)?;
        Ok(RawValue { segment, data })
    }

    fn segment(&self) -> &Segment {
        &self.segment
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("name", &self.name())
            .field("value", &self.get())
            .finish()
    }
}

impl<T: Pod> RawValue<T> {
    /// Creates a raw value holding `value` in an anonymous segment shared with
    /// children started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new(value: T) -> Result<RawValue<T>, CreateError> {
        RawValue::create_anonymous(value)
    }

    /// Creates a raw value named `name` holding `value`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str, value: T) -> Result<RawValue<T>, CreateError> {
        RawValue::create_with(name, value, CreateOptions::new())
    }

    /// Opens the raw value named `name`, which must hold a `T` without a lock.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Value`, another element type or a lock
    /// (`IncompatibleLayout`), a corrupt header.
    pub fn open(name: &str) -> Result<RawValue<T>, OpenError> {
        RawValue::open_with(name, OpenOptions::new())
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.segment.name()
    }

    /// A copy of the value (Python's `.value`).
    pub fn get(&self) -> T {
        let mut out = T::zeroed();
        // SAFETY: data is valid and aligned for one T in the live mapping, accessed
        // only atomically; `out` is local.
        unsafe { copy_out(self.data.as_ptr(), &mut out, 1) };
        out
    }

    /// Stores `value` (Python's `.value = v`).
    pub fn set(&self, value: T) {
        // SAFETY: as for get.
        unsafe { copy_in(&value, self.data.as_ptr(), 1) };
    }

    /// A raw pointer to the value in shared memory, for code that synchronizes by
    /// other means. Any access through it must be atomic or otherwise race-free.
    pub fn as_ptr(&self) -> *mut T {
        self.data.as_ptr()
    }
}

impl<T: AtomicInteger> RawValue<T> {
    /// Atomically loads the value.
    pub fn load(&self, order: Ordering) -> T {
        // SAFETY: aligned to size_of::<T>() (128-aligned payload), valid, and every
        // access of ours to it is atomic with this width.
        unsafe { T::atomic_load(self.data.as_ptr(), order) }
    }

    /// Atomically stores `v`.
    pub fn store(&self, v: T, order: Ordering) {
        // SAFETY: as for load.
        unsafe { T::atomic_store(self.data.as_ptr(), v, order) }
    }

    /// Atomically replaces the value with `v`, returning the previous one.
    pub fn swap(&self, v: T, order: Ordering) -> T {
        // SAFETY: as for load.
        unsafe { T::atomic_swap(self.data.as_ptr(), v, order) }
    }

    /// Atomically adds `v` (wrapping), returning the previous value.
    pub fn fetch_add(&self, v: T, order: Ordering) -> T {
        // SAFETY: as for load.
        unsafe { T::atomic_fetch_add(self.data.as_ptr(), v, order) }
    }

    /// Atomically subtracts `v` (wrapping), returning the previous value.
    pub fn fetch_sub(&self, v: T, order: Ordering) -> T {
        // SAFETY: as for load.
        unsafe { T::atomic_fetch_sub(self.data.as_ptr(), v, order) }
    }

    /// Atomically stores `new` if the value is `current`; returns the previous value,
    /// `Ok` if it was `current`.
    ///
    /// # Errors
    ///
    /// `Err(actual)` if the value was not `current` (nothing is stored).
    pub fn compare_exchange(
        &self,
        current: T,
        new: T,
        success: Ordering,
        failure: Ordering,
    ) -> Result<T, T> {
        // SAFETY: as for load.
        unsafe { T::atomic_compare_exchange(self.data.as_ptr(), current, new, success, failure) }
    }
}

// ---------------------------------------------------------------------------------
// RawArray

/// A fixed-length array of `T` in shared memory without a lock, like Python's
/// `multiprocessing.RawArray`. New arrays are zero-filled.
///
/// Elements are copied with relaxed atomic loads and stores; integer elements have
/// atomic operations by index.
///
/// # Examples
///
/// ```
/// use shmproc::value::RawArray;
/// use shmproc::Process;
/// use std::sync::atomic::Ordering;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let slots = RawArray::<u32>::new(4)?;
/// let mut child = Process::spawn(|| {
///     slots.set(2, 7);
///     slots.fetch_add(3, 1, Ordering::Relaxed);
/// })?;
/// child.join()?;
/// assert_eq!(slots.to_vec(), [0, 0, 7, 1]);
/// assert_eq!(slots.get(9), None);
/// # Ok(()) }
/// ```
pub struct RawArray<T: Pod> {
    pub(super) segment: Arc<Segment>,
    pub(super) data: NonNull<T>,
    pub(super) len: usize,
    _type: PhantomData<T>,
}

// SAFETY: as for RawValue.
unsafe impl<T: Pod> Send for RawArray<T> {}
// SAFETY: as for RawValue.
unsafe impl<T: Pod> Sync for RawArray<T> {}

impl<T: Pod> Clone for RawArray<T> {
    fn clone(&self) -> RawArray<T> {
        RawArray {
            segment: Arc::clone(&self.segment),
            data: self.data,
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("name", &self.name())
            .finish()
    }
}

impl<T: Pod> RawArray<T> {
    /// Creates a zero-filled raw array of `len` elements in an anonymous segment
    /// shared with children started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] if `len` elements would span more than
    /// `isize::MAX` bytes (the message gives the largest length); another
    /// [`CreateError`] if the segment cannot be created (e.g. out of memory).
    pub fn new(len: usize) -> Result<RawArray<T>, CreateError> {
        RawArray::create_anonymous(ArrayInit::Zeros(len))
    }

    /// Creates a raw array holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// As for [`new`](RawArray::new).
    pub fn from_slice(values: &[T]) -> Result<RawArray<T>, CreateError> {
        RawArray::create_anonymous(ArrayInit::Copy(values))
    }

    /// Creates a zero-filled raw array of `len` elements named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions, size.
    pub fn create(name: &str, len: usize) -> Result<RawArray<T>, CreateError> {
        RawArray::create_with(name, ArrayInit::Zeros(len), CreateOptions::new())
    }

    /// Creates a raw array named `name` holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// As for [`create`](RawArray::create).
    pub fn create_from_slice(name: &str, values: &[T]) -> Result<RawArray<T>, CreateError> {
        RawArray::create_with(name, ArrayInit::Copy(values), CreateOptions::new())
    }

    /// Opens the raw array named `name`, which must hold `T`s without a lock; its
    /// length comes from the segment.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not an `Array`, another element type or a lock
    /// (`IncompatibleLayout`), a corrupt header.
    pub fn open(name: &str) -> Result<RawArray<T>, OpenError> {
        RawArray::open_with(name, OpenOptions::new())
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.segment.name()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A pointer to element `i`, `None` if `i >= len`.
    fn at(&self, i: usize) -> Option<*mut T> {
        // SAFETY: i < len (checked) elements lie within the payload (checked layout).
        (i < self.len).then(|| unsafe { self.data.as_ptr().add(i) })
    }

    /// A copy of element `i`, `None` if out of range (Python's `arr[i]`).
    pub fn get(&self, i: usize) -> Option<T> {
        let at = self.at(i)?;
        let mut out = T::zeroed();
        // SAFETY: element i is valid and aligned in the live mapping, accessed only
        // atomically; `out` is local.
        unsafe { copy_out(at, &mut out, 1) };
        Some(out)
    }

    /// Stores `value` at `i` (Python's `arr[i] = v`); returns `false`, storing
    /// nothing, if `i >= len` (where Python raises `IndexError`).
    pub fn set(&self, i: usize, value: T) -> bool {
        let Some(at) = self.at(i) else {
            return false;
        };
        // SAFETY: as for get.
        unsafe { copy_in(&value, at, 1) };
        true
    }

    /// A copy of all elements (Python's `arr[:]`).
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len];
        // SAFETY: len elements are valid in the live mapping, accessed only
        // atomically; `out` is local and as long.
        unsafe { copy_out(self.data.as_ptr(), out.as_mut_ptr(), self.len) };
        out
    }

    /// Copies all elements into `dst`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Length`] if `dst.len() != len`; nothing is copied.
    pub fn copy_to_slice(&self, dst: &mut [T]) -> Result<(), AccessError> {
        self.same_len(dst.len())?;
        // SAFETY: len elements are valid in the live mapping; dst is local and as
        // long (checked).
        unsafe { copy_out(self.data.as_ptr(), dst.as_mut_ptr(), self.len) };
        Ok(())
    }

    /// Overwrites all elements with `src` (Python's `arr[:] = values`).
    ///
    /// # Errors
    ///
    /// [`AccessError::Length`] if `src.len() != len`; nothing is written.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), AccessError> {
        self.same_len(src.len())?;
        // SAFETY: as for copy_to_slice.
        unsafe { copy_in(src.as_ptr(), self.data.as_ptr(), self.len) };
        Ok(())
    }

    fn same_len(&self, found: usize) -> Result<(), AccessError> {
        if found == self.len {
            Ok(())
        } else {
            Err(AccessError::Length {
                expected: self.len,
                found,
            })
        }
    }

    /// A raw pointer to the first element in shared memory, for code that
    /// synchronizes by other means. Any access through it must be atomic or
    /// otherwise race-free.
    pub fn as_ptr(&self) -> *mut T {
        self.data.as_ptr()
    }
}

impl<T: AtomicInteger> RawArray<T> {
    /// Atomically loads element `i`; `None` if `i >= len`.
    pub fn load(&self, i: usize, order: Ordering) -> Option<T> {
        // SAFETY: element i (in range) is aligned to size_of::<T>() (a 128-aligned
        // base plus a multiple of the size), valid, and only accessed atomically with
        // this width.
        self.at(i).map(|at| unsafe { T::atomic_load(at, order) })
    }

    /// Atomically stores `v` at `i`; returns `false`, storing nothing, if
    /// `i >= len`.
    pub fn store(&self, i: usize, v: T, order: Ordering) -> bool {
        // SAFETY: as for load.
        self.at(i)
            .map(|at| unsafe { T::atomic_store(at, v, order) })
            .is_some()
    }

    /// Atomically replaces element `i` with `v`, returning the previous value;
    /// `None` if `i >= len`.
    pub fn swap(&self, i: usize, v: T, order: Ordering) -> Option<T> {
        // SAFETY: as for load.
        self.at(i).map(|at| unsafe { T::atomic_swap(at, v, order) })
    }

    /// Atomically adds `v` to element `i` (wrapping), returning the previous value;
    /// `None` if `i >= len`.
    pub fn fetch_add(&self, i: usize, v: T, order: Ordering) -> Option<T> {
        // SAFETY: as for load.
        self.at(i)
            .map(|at| unsafe { T::atomic_fetch_add(at, v, order) })
    }

    /// Atomically subtracts `v` from element `i` (wrapping), returning the previous
    /// value; `None` if `i >= len`.
    pub fn fetch_sub(&self, i: usize, v: T, order: Ordering) -> Option<T> {
        // SAFETY: as for load.
        self.at(i)
            .map(|at| unsafe { T::atomic_fetch_sub(at, v, order) })
    }

    /// Atomically stores `new` at `i` if it holds `current`: `Some(Ok(previous))`
    /// if it did, `Some(Err(actual))` if element `i` was not `current` (nothing is
    /// stored), `None` if `i >= len`.
    pub fn compare_exchange(
        &self,
        i: usize,
        current: T,
        new: T,
        success: Ordering,
        failure: Ordering,
    ) -> Option<Result<T, T>> {
        // SAFETY: as for load.
        self.at(i)
            .map(|at| unsafe { T::atomic_compare_exchange(at, current, new, success, failure) })
    }
}

impl<T: Pod> Object for RawArray<T> {
    const KIND: ObjectKind = ObjectKind::Array;
    type Args<'a> = ArrayInit<'a, T>;

    fn layout(init: &ArrayInit<'_, T>) -> Result<ObjectLayout, CreateError> {
        data_layout::<T>(ObjectKind::Array, 0, init.len())
    }

    fn init(init: ArrayInit<'_, T>, payload: &mut Payload<'_>) {
        init.write(payload, 0);
    }

    fn attach(segment: Arc<Segment>) -> Result<RawArray<T>, Mismatch> {
        let (data, len) = attach_data::<T>(&segment, ObjectKind::Array, 0)?;
        Ok(RawArray {
            segment,
            data,
            len,
            _type: PhantomData,
        })
    }

    fn segment(&self) -> &Segment {
        &self.segment
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_copies_round_trip() {
        let a = RawArray::<[u8; 3]>::from_slice(&[[1, 2, 3], [4, 5, 6]]).unwrap();
        assert_eq!(a.to_vec(), [[1, 2, 3], [4, 5, 6]]);
        a.set(1, [9, 9, 9]);
        assert_eq!(a.get(1), Some([9, 9, 9]));
        let v = RawValue::new([1.5f64, -2.0]).unwrap();
        assert_eq!(v.get(), [1.5, -2.0]);
        v.set([0.0, 3.25]);
        assert_eq!(v.get(), [0.0, 3.25]);
    }
}
