//! Shared values and arrays of plain-old-data: Python's `multiprocessing.Value`,
//! `Array`, `RawValue` and `RawArray`.
//!
//! `T` is any [`bytemuck::Pod`] type: integers, floats, arrays of them and
//! `#[repr(C)]` structs deriving `Pod` — types for which every bit pattern is a valid
//! value, so bytes another process wrote can never be undefined behavior to read.
//!
//! # Layout
//!
//! ```text
//! Value<T>, Array<T>:        [0, 256) a Lock's state | [256, ..) the data
//! RawValue<T>, RawArray<T>:  [0, ..) the data
//! with_lock(.., &lock):      [0, ..) the data (the lock lives in its own segment)
//! ```
//!
//! The header records the element type (name, size, alignment), the data offset (as
//! the slot size: 256 with a lock, 0 without) and the length (as the capacity: 1 for
//! a value). Opening checks all three, so a `Value<u64>` opened as `Value<u32>`, or a
//! `RawValue` opened as a `Value`, is an [`OpenError::IncompatibleLayout`] naming
//! both sides.
//!
//! # Two ways to share, never mixed
//!
//! The locked types hand out references to the data only while their [`Lock`] is
//! held (through [`ValueGuard`] / [`ArrayGuard`]); `get`/`set` take the lock too, and
//! the `_with` forms ([`Value::get_with`], …) copy under a hold the caller proves with
//! its [`LockGuard`] — how several values sharing one lock
//! ([`Value::with_lock`]) are read and written together. The
//! raw types never form a reference to the data: they copy it with relaxed atomic
//! loads and stores and offer atomic read-modify-write operations on integers
//! ([`AtomicInteger`]). A racing write leaves a mix of old and new bytes — a valid
//! `T`, perhaps not a meaningful one — never undefined behavior.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::object::{self, Mismatch, Object, Payload};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::sync::{AcquireError, LOCK_STATE_SIZE, Lock, LockGuard};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize, Ordering,
};
use std::time::Duration;

/// The bound on element types, re-exported from [`bytemuck`]: derive it (with
/// `#[repr(C)]`) for your own structs, with `bytemuck` as a dependency.
pub use bytemuck::{Pod, Zeroable};

/// Where the data starts in a locked object's payload: right after the lock state.
const LOCKED_DATA_OFFSET: usize = LOCK_STATE_SIZE;
const _: () = assert!(LOCKED_DATA_OFFSET % 128 == 0);

/// Rejects, at compile time, element types the 128-byte aligned payload cannot
/// align.
const fn check_align<T>() {
    assert!(
        align_of::<T>() <= 128,
        "shmproc values need an alignment of at most 128"
    );
}

/// The layout of a value or array of `len` `T`s, its data at `offset`; `None` if the
/// size overflows.
fn layout_of<T>(kind: ObjectKind, offset: usize, len: u64) -> Option<ObjectLayout> {
    let data = len.checked_mul(size_of::<T>() as u64)?;
    Some(ObjectLayout {
        kind,
        elem: ElemType::of::<T>(),
        slot_size: offset as u32,
        capacity: len,
        payload_size: data.checked_add(offset as u64)?,
    })
}

fn describe_offset(offset: u32) -> String {
    match offset as usize {
        0 => "none (a RawValue or RawArray)".to_string(),
        LOCKED_DATA_OFFSET => "a Lock (a Value or Array)".to_string(),
        other => format!("data at offset {other}"),
    }
}

/// The layout of a new value or array of `len` `T`s with the data at `offset`.
///
/// # Errors
///
/// [`CreateError::InvalidArgument`] if the data would span more than `isize::MAX`
/// bytes (it is handed out as a slice), naming the largest length.
fn data_layout<T: Pod>(
    kind: ObjectKind,
    offset: usize,
    len: usize,
) -> Result<ObjectLayout, CreateError> {
    const { check_align::<T>() };
    let max_len = (isize::MAX as usize - offset)
        .checked_div(size_of::<T>())
        .unwrap_or(usize::MAX);
    layout_of::<T>(kind, offset, len as u64)
        .filter(|_| len <= max_len)
        .ok_or_else(|| {
            CreateError::InvalidArgument(format!(
                "{len} elements of {} ({} bytes each) do not fit in memory: \
                 the length must be at most {max_len}",
                std::any::type_name::<T>(),
                size_of::<T>()
            ))
        })
}

/// Checks that `segment` holds `T`s of `kind` at `offset` (the lock, or none, as
/// the handle needs) and returns the data pointer and the length.
fn attach_data<T: Pod>(
    segment: &Segment,
    kind: ObjectKind,
    offset: usize,
) -> Result<(NonNull<T>, usize), Mismatch> {
    const { check_align::<T>() };
    let found = segment.info().layout;
    if found.slot_size as usize != offset {
        return Err(Mismatch::new(
            "lock",
            describe_offset(offset as u32),
            describe_offset(found.slot_size),
        ));
    }
    if kind == ObjectKind::Value && found.capacity != 1 {
        return Err(Mismatch::new("length", 1, found.capacity));
    }
    let len = usize::try_from(found.capacity).ok();
    let expected = len
        .and_then(|n| data_layout::<T>(kind, offset, n).ok())
        .filter(|l| usize::try_from(l.payload_size).is_ok());
    object::check_layout(&found, expected)?;
    // SAFETY: the layout check (payload size = offset + len * size_of::<T>(), within
    // the mapping by the header's validation) covers offset.
    let data = unsafe { data_ptr(segment, offset) };
    Ok((data, len.unwrap_or(0)))
}

/// What a new [`Array`] or [`RawArray`] starts with (Python's `size_or_initializer`).
#[derive(Clone, Copy, Debug)]
pub enum ArrayInit<'a, T> {
    /// This many zero elements.
    Zeros(usize),
    /// A copy of these.
    Copy(&'a [T]),
}

impl<T: Pod> ArrayInit<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayInit::Zeros(len) => *len,
            ArrayInit::Copy(values) => values.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the contents into fresh, zero-filled data at `offset` of `payload`.
    fn write(self, payload: &mut Payload<'_>, offset: usize) {
        if let ArrayInit::Copy(values) = self {
            let written = payload.write(offset, values);
            debug_assert!(written, "the layout holds the values");
        }
    }
}

/// The data pointer of `segment`.
///
/// # Safety
///
/// The segment's layout must have been created or checked for `T`s at `offset`.
unsafe fn data_ptr<T>(segment: &Segment, offset: usize) -> NonNull<T> {
    // SAFETY: offset <= payload size by the caller's contract.
    unsafe { segment.payload().add(offset) }.cast()
}

/// The widest atomic access (8, 4, 2 or 1 bytes) that divides `T`'s size and
/// alignment: every copy of a `T` uses it, so the raw types never mix access sizes
/// on one location (and an integer's copies have the width of its atomic ops).
const fn chunk_of<T>() -> usize {
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
unsafe fn copy_out<T: Pod>(src: *const T, dst: *mut T, count: usize) {
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
unsafe fn copy_in<T: Pod>(src: *const T, dst: *mut T, count: usize) {
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

/// Why an access under a caller's guard ([`Value::get_with`], [`Value::set_with`],
/// [`Array::to_vec_with`], [`Array::copy_from_slice_with`]) was refused.
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
fn check_guard(lock: &Lock, guard: &LockGuard<'_>) -> Result<(), AccessError> {
    if !guard.lock().same_lock(lock) {
        return Err(AccessError::OtherLock);
    }
    if !guard.is_held() {
        return Err(AccessError::NotHeld);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Value

/// A `T` in shared memory guarded by a [`Lock`], like Python's
/// `multiprocessing.Value(typecode, value)` (which is locked by default).
///
/// [`lock`](Value::lock) returns a [`ValueGuard`] that reads and writes the value
/// (by copy: [`get`](ValueGuard::get), [`set`](ValueGuard::set),
/// [`update`](ValueGuard::update)) while the lock is held; [`get`](Value::get) and
/// [`set`](Value::set) copy the value under the lock. Each value has a lock of its own, or shares one with other values and
/// arrays ([`with_lock`](Value::with_lock), Python's `lock=` argument). For lock-free
/// atomic integers, use [`RawValue`].
///
/// No reference into the shared value is ever handed out, not even under the lock: a
/// process that ignores the lock (or scribbles on the segment) can change the value
/// at any time, which gives a wrong value, never undefined behavior. If a holder dies, the next `lock` gets
/// [`AcquireError::OwnerDied`] with the guard: repair the value, then
/// [`ValueGuard::mark_consistent`] (see [`Lock`]).
///
/// # Examples
///
/// ```
/// use shmproc::value::Value;
/// use shmproc::Process;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = Value::new(0u64)?;
/// let mut kids = Vec::new();
/// for _ in 0..4 {
///     kids.push(Process::spawn(|| {
///         for _ in 0..100 {
///             if let Ok(mut n) = counter.lock() {
///                 n.update(|n| *n += 1);
///             }
///         }
///     })?);
/// }
/// for kid in &mut kids {
///     kid.join()?;
/// }
/// assert_eq!(counter.get()?, 400);
/// # Ok(()) }
/// ```
pub struct Value<T: Pod> {
    /// An array of one `T`, in a segment of kind `Value` (or, for a value made with
    /// [`with_lock`](Value::with_lock), its own segment beside the lock's).
    array: Array<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Value<T> {
        Value {
            array: self.array.clone(),
        }
    }
}

impl<T: Pod> Object for Value<T> {
    const KIND: ObjectKind = ObjectKind::Value;
    /// The initial value.
    type Args<'a> = T;

    fn layout(_: &T) -> Result<ObjectLayout, CreateError> {
        data_layout::<T>(ObjectKind::Value, LOCKED_DATA_OFFSET, 1)
    }

    fn init(value: T, payload: &mut Payload<'_>) {
        ArrayInit::Copy(&[value]).write(payload, LOCKED_DATA_OFFSET);
    }

    fn attach(segment: Arc<Segment>) -> Result<Value<T>, Mismatch> {
        // The kind's check (`attach_data`) holds the length to exactly 1.
        Array::attach_kind(segment, ObjectKind::Value).map(|array| Value { array })
    }

    fn segment(&self) -> &Segment {
        &self.array.segment
    }

    fn check_portable(&self) -> Result<(), String> {
        self.array.lock_is_own()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl<T: Pod> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("name", &self.name())
            .field("lock", &self.array.lock)
            .finish()
    }
}

impl<T: Pod> Value<T> {
    /// Creates a value holding `value`, with its lock, in an anonymous segment shared
    /// with children started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new(value: T) -> Result<Value<T>, CreateError> {
        Value::create_anonymous(value)
    }

    /// Creates a value named `name` holding `value`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str, value: T) -> Result<Value<T>, CreateError> {
        Value::create_with(name, value, CreateOptions::new())
    }

    /// Opens the value named `name`, which must hold a `T` with a lock.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Value`, another element type or no lock
    /// (`IncompatibleLayout`, naming both), a corrupt header.
    pub fn open(name: &str) -> Result<Value<T>, OpenError> {
        Value::open_with(name, OpenOptions::new())
    }

    /// Creates a value holding `value`, guarded by an existing `lock` (Python's
    /// `Value(typecode, value, lock=lock)`), in an anonymous segment shared with
    /// children started with [`Process`](crate::Process) afterwards. Several values
    /// and arrays made with one lock are guarded together: locking any of them
    /// locks them all, and [`get_with`](Value::get_with) /
    /// [`set_with`](Value::set_with) read and write each under one hold of it. The
    /// handle keeps the lock's segment alive; [`get_lock`](Value::get_lock) returns
    /// it.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::sync::Lock;
    /// use shmproc::value::Value;
    /// use shmproc::Process;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lock = Lock::new()?;
    /// let (from, to) = (Value::with_lock(100i64, &lock)?, Value::with_lock(0i64, &lock)?);
    /// let mut child = Process::spawn(|| {
    ///     // A transfer no process can see half done.
    ///     if let Ok(guard) = lock.acquire() {
    ///         let (Ok(a), Ok(b)) = (from.get_with(&guard), to.get_with(&guard)) else { return };
    ///         let _ = (from.set_with(&guard, a - 30), to.set_with(&guard, b + 30));
    ///     }
    /// })?;
    /// child.join()?;
    /// assert_eq!((from.get()?, to.get()?), (70, 30));
    /// assert!(from.get_lock().same_lock(&lock));
    /// # Ok(()) }
    /// ```
    pub fn with_lock(value: T, lock: &Lock) -> Result<Value<T>, CreateError> {
        // The data alone, as a raw value has it; the lock is the caller's.
        let RawValue { segment, data } = RawValue::new(value)?;
        Ok(Value {
            array: Array {
                lock: lock.clone(),
                segment,
                data,
                len: 1,
            },
        })
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.array.name()
    }

    /// The lock that guards the value (Python's `get_lock()`): its own, or the one
    /// given to [`with_lock`](Value::with_lock). Holding it through this handle does
    /// not give access to the value through [`lock`](Value::lock) (which would wait:
    /// the lock is not recursive); use [`get_with`](Value::get_with) and
    /// [`set_with`](Value::set_with) with that guard.
    pub fn get_lock(&self) -> &Lock {
        self.array.get_lock()
    }

    /// A copy of the value, read under a hold of its lock that the caller already
    /// has (`guard`, from [`get_lock`](Value::get_lock)`().acquire()` or any handle
    /// of the same lock) — how several values sharing one lock are read together.
    ///
    /// # Errors
    ///
    /// [`AccessError`] if `guard` is not a held guard of this value's lock.
    pub fn get_with(&self, guard: &LockGuard<'_>) -> Result<T, AccessError> {
        let mut out = [T::zeroed()];
        self.array.copy_out_with(guard, &mut out)?;
        Ok(out[0])
    }

    /// Stores `value` under a hold of its lock that the caller already has (see
    /// [`get_with`](Value::get_with)).
    ///
    /// # Errors
    ///
    /// [`AccessError`] if `guard` is not a held guard of this value's lock; the value
    /// is not stored.
    pub fn set_with(&self, guard: &LockGuard<'_>, value: T) -> Result<(), AccessError> {
        self.array.copy_from_slice_with(guard, &[value])
    }

    fn guard<'a>(
        r: Result<ArrayGuard<'a, T>, AcquireError<ArrayGuard<'a, T>>>,
    ) -> Result<ValueGuard<'a, T>, AcquireError<ValueGuard<'a, T>>> {
        let wrap = |array| ValueGuard { array };
        r.map(wrap).map_err(|e| e.map_guard(wrap))
    }

    /// Locks the value, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] with the guard if a holder died (see [`Lock`]).
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        Value::guard(self.array.lock())
    }

    /// Locks the value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] once `timeout` has passed (never earlier);
    /// [`AcquireError::OwnerDied`] as for [`lock`](Value::lock).
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        Value::guard(self.array.lock_timeout(timeout))
    }

    /// Locks the value if the lock is free, without waiting.
    ///
    /// # Errors
    ///
    /// [`AcquireError::WouldBlock`] if it is held; [`AcquireError::OwnerDied`] as for
    /// [`lock`](Value::lock).
    pub fn try_lock(&self) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        Value::guard(self.array.try_lock())
    }

    /// A copy of the value, read under the lock (Python's `.value`).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] if a holder died: the lock stays marked for the
    /// next [`lock`](Value::lock), which must repair.
    pub fn get(&self) -> Result<T, AcquireError> {
        self.lock()
            .map(|g| g.get())
            .map_err(AcquireError::without_guard)
    }

    /// Stores `value` under the lock (Python's `.value = v`).
    ///
    /// # Errors
    ///
    /// As for [`get`](Value::get); the value is not stored.
    pub fn set(&self, value: T) -> Result<(), AcquireError> {
        let mut g = self.lock().map_err(AcquireError::without_guard)?;
        g.set(value);
        Ok(())
    }
}

/// Holds a [`Value`]'s lock and gives access to the value; unlocks when dropped.
///
/// Access is by copy ([`get`](ValueGuard::get), [`set`](ValueGuard::set),
/// [`update`](ValueGuard::update)), never by reference: the value lives in memory
/// that a process which does not respect the lock could write at any time, and a
/// Rust reference to it would then be undefined behavior (the trust model: a peer's
/// bytes can give wrong data, never UB). The copies use the same atomic-width loads
/// and stores as [`RawValue`]; for a `T` of a few words they cost what a reference
/// would.
#[must_use = "the value is unlocked as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    /// The guard of an array of exactly one element.
    array: ArrayGuard<'a, T>,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        // The array holds exactly one element (checked when the handle was made).
        self.array.get(0).unwrap_or_else(T::zeroed)
    }

    /// Stores `value`.
    pub fn set(&mut self, value: T) {
        self.array.set(0, value);
    }

    /// Applies `f` to a copy of the value and stores the result: `*v += 1` under the
    /// lock (Python's `with v.get_lock(): v.value += 1`). Returns what `f` returns.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut v = self.get();
        let r = f(&mut v);
        self.set(v);
        r
    }

    /// Declares the value repaired after [`AcquireError::OwnerDied`] (see
    /// [`LockGuard::mark_consistent`]).
    pub fn mark_consistent(&mut self) {
        self.array.mark_consistent();
    }

    /// Whether the value is known to be consistent (`false` after a holder died and
    /// before [`mark_consistent`](ValueGuard::mark_consistent)).
    pub fn is_consistent(&self) -> bool {
        self.array.is_consistent()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

// ---------------------------------------------------------------------------------
// Array

/// A fixed-length array of `T` in shared memory guarded by a [`Lock`], like
/// Python's `multiprocessing.Array(typecode, size_or_initializer)`. New arrays are
/// zero-filled.
///
/// [`lock`](Array::lock) returns an [`ArrayGuard`] that reads and writes elements (by
/// copy, as for [`Value`]) while the lock is held. The lock is the array's own, or one shared with
/// other values and arrays ([`with_lock`](Array::with_lock)). For lock-free access,
/// use [`RawArray`].
///
/// # Examples
///
/// ```
/// use shmproc::value::Array;
/// use shmproc::Process;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let arr = Array::<i32>::from_slice(&[1, 2, 3])?;
/// let mut child = Process::spawn(|| {
///     if let Ok(mut a) = arr.lock() {
///         a.update(|a| a.iter_mut().for_each(|x| *x *= 10));
///     }
/// })?;
/// child.join()?;
/// assert_eq!(arr.to_vec()?, [10, 20, 30]);
/// assert_eq!(arr.len(), 3);
/// # Ok(()) }
/// ```
pub struct Array<T: Pod> {
    /// The lock: in `segment` (at offset 0), or its own segment for an array made
    /// with [`with_lock`](Array::with_lock), which the handle keeps alive.
    lock: Lock,
    /// The segment holding the data.
    segment: Arc<Segment>,
    /// `len` `T`s in `segment`.
    data: NonNull<T>,
    /// From the validated header; `len * size_of::<T>()` fits the payload.
    len: usize,
}

// SAFETY: as for Value.
unsafe impl<T: Pod> Send for Array<T> {}
// SAFETY: as for Value.
unsafe impl<T: Pod> Sync for Array<T> {}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Array<T> {
        Array {
            lock: self.lock.clone(),
            segment: Arc::clone(&self.segment),
            data: self.data,
            len: self.len,
        }
    }
}

impl<T: Pod> Object for Array<T> {
    const KIND: ObjectKind = ObjectKind::Array;
    type Args<'a> = ArrayInit<'a, T>;

    fn layout(init: &ArrayInit<'_, T>) -> Result<ObjectLayout, CreateError> {
        data_layout::<T>(ObjectKind::Array, LOCKED_DATA_OFFSET, init.len())
    }

    fn init(init: ArrayInit<'_, T>, payload: &mut Payload<'_>) {
        init.write(payload, LOCKED_DATA_OFFSET);
    }

    fn attach(segment: Arc<Segment>) -> Result<Array<T>, Mismatch> {
        Array::attach_kind(segment, ObjectKind::Array)
    }

    fn segment(&self) -> &Segment {
        &self.segment
    }

    fn check_portable(&self) -> Result<(), String> {
        self.lock_is_own()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl<T: Pod> Array<T> {
    /// `Ok` if the lock is the one in the array's own segment (not one from
    /// [`with_lock`](Array::with_lock)), which a handed-over handle would lose.
    fn lock_is_own(&self) -> Result<(), String> {
        if std::ptr::eq(self.lock.segment(), &*self.segment) {
            Ok(())
        } else {
            Err(format!(
                "a {} made with with_lock cannot be handed to a spawned child: it would \
                 lose its lock (hand over the lock and an array with its own lock instead)",
                self.segment.info().layout.kind
            ))
        }
    }
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("name", &self.name())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Array<T> {
    /// Creates a zero-filled array of `len` elements, with its lock, in an anonymous
    /// segment shared with children started with [`Process`](crate::Process)
    /// afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] if `len` elements would span more than
    /// `isize::MAX` bytes (the message gives the largest length); another
    /// [`CreateError`] if the segment cannot be created (e.g. out of memory).
    pub fn new(len: usize) -> Result<Array<T>, CreateError> {
        Array::create_anonymous(ArrayInit::Zeros(len))
    }

    /// Creates an array holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Array::new).
    pub fn from_slice(values: &[T]) -> Result<Array<T>, CreateError> {
        Array::create_anonymous(ArrayInit::Copy(values))
    }

    /// Creates a zero-filled array of `len` elements named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions, size.
    pub fn create(name: &str, len: usize) -> Result<Array<T>, CreateError> {
        Array::create_with(name, ArrayInit::Zeros(len), CreateOptions::new())
    }

    /// Creates an array named `name` holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// As for [`create`](Array::create).
    pub fn create_from_slice(name: &str, values: &[T]) -> Result<Array<T>, CreateError> {
        Array::create_with(name, ArrayInit::Copy(values), CreateOptions::new())
    }

    /// Opens the array named `name`, which must hold `T`s with a lock; its length
    /// comes from the segment.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not an `Array`, another element type or no lock
    /// (`IncompatibleLayout`), a corrupt header.
    pub fn open(name: &str) -> Result<Array<T>, OpenError> {
        Array::open_with(name, OpenOptions::new())
    }

    /// Creates a zero-filled array of `len` elements guarded by an existing `lock`
    /// (Python's `Array(typecode, size, lock=lock)`), in an anonymous segment shared
    /// with children started with [`Process`](crate::Process) afterwards; see
    /// [`Value::with_lock`].
    ///
    /// # Errors
    ///
    /// As for [`new`](Array::new).
    pub fn with_lock(len: usize, lock: &Lock) -> Result<Array<T>, CreateError> {
        Array::make_with_lock(ArrayInit::Zeros(len), lock)
    }

    /// Creates an array holding a copy of `values`, guarded by an existing `lock`
    /// (see [`with_lock`](Array::with_lock)).
    ///
    /// # Errors
    ///
    /// As for [`new`](Array::new).
    pub fn from_slice_with_lock(values: &[T], lock: &Lock) -> Result<Array<T>, CreateError> {
        Array::make_with_lock(ArrayInit::Copy(values), lock)
    }

    /// The handle over a validated segment of `kind` (a `Value` is an `Array` of
    /// one) holding a lock and `T`s.
    fn attach_kind(segment: Arc<Segment>, kind: ObjectKind) -> Result<Array<T>, Mismatch> {
        let (data, len) = attach_data::<T>(&segment, kind, LOCKED_DATA_OFFSET)?;
        Ok(Array {
            lock: Lock::from_state(Arc::clone(&segment), 0)?,
            segment,
            data,
            len,
        })
    }

    fn make_with_lock(init: ArrayInit<'_, T>, lock: &Lock) -> Result<Array<T>, CreateError> {
        // The data alone, as a raw array has it; the lock is the caller's.
        let RawArray {
            segment, data, len, ..
        } = RawArray::create_anonymous(init)?;
        Ok(Array {
            lock: lock.clone(),
            segment,
            data,
            len,
        })
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.segment.name()
    }

    /// A copy of the elements, read under a hold of the array's lock that the
    /// caller already has (see [`Value::get_with`]).
    ///
    /// # Errors
    ///
    /// [`AccessError`] if `guard` is not a held guard of this array's lock.
    pub fn to_vec_with(&self, guard: &LockGuard<'_>) -> Result<Vec<T>, AccessError> {
        let mut out = vec![T::zeroed(); self.len];
        self.copy_out_with(guard, &mut out)?;
        Ok(out)
    }

    /// Copies every element into `out`, which must be exactly `len` long, under a
    /// hold of the array's lock that the caller proves with `guard`.
    fn copy_out_with(&self, guard: &LockGuard<'_>, out: &mut [T]) -> Result<(), AccessError> {
        check_guard(&self.lock, guard)?;
        if out.len() != self.len {
            return Err(AccessError::Length {
                expected: self.len,
                found: out.len(),
            });
        }
        // SAFETY: the lock is held (checked); len elements are valid and aligned in
        // the live mapping, touched by copy_out only through atomics; `out` is local
        // and exactly as long (checked).
        unsafe { copy_out(self.data.as_ptr(), out.as_mut_ptr(), self.len) };
        Ok(())
    }

    /// Overwrites the elements with `values` under a hold of the array's lock that
    /// the caller already has (see [`Value::get_with`]).
    ///
    /// # Errors
    ///
    /// [`AccessError`] if `guard` is not a held guard of this array's lock, or
    /// `values` is not exactly [`len`](Array::len) long; nothing is stored.
    pub fn copy_from_slice_with(
        &self,
        guard: &LockGuard<'_>,
        values: &[T],
    ) -> Result<(), AccessError> {
        check_guard(&self.lock, guard)?;
        if values.len() != self.len {
            return Err(AccessError::Length {
                expected: self.len,
                found: values.len(),
            });
        }
        // SAFETY: as for to_vec_with, the roles of the copy swapped.
        unsafe { copy_in(values.as_ptr(), self.data.as_ptr(), self.len) };
        Ok(())
    }

    /// The number of elements (Python's `len(arr)`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lock that guards the array (Python's `get_lock()`): its own, or the one
    /// given to [`with_lock`](Array::with_lock); see [`Value::get_lock`].
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    fn guard<'a>(
        &'a self,
        r: Result<LockGuard<'a>, AcquireError<LockGuard<'a>>>,
    ) -> Result<ArrayGuard<'a, T>, AcquireError<ArrayGuard<'a, T>>> {
        let (data, len) = (self.data, self.len);
        let wrap = move |guard| ArrayGuard { guard, data, len };
        r.map(wrap).map_err(|e| e.map_guard(wrap))
    }

    /// Locks the array, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] with the guard if a holder died (see [`Lock`]).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        self.guard(self.lock.acquire())
    }

    /// Locks the array, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] once `timeout` has passed (never earlier);
    /// [`AcquireError::OwnerDied`] as for [`lock`](Array::lock).
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }

    /// Locks the array if the lock is free, without waiting.
    ///
    /// # Errors
    ///
    /// [`AcquireError::WouldBlock`] if it is held; [`AcquireError::OwnerDied`] as for
    /// [`lock`](Array::lock).
    pub fn try_lock(&self) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        self.guard(self.lock.try_acquire())
    }

    /// A copy of the elements, read under the lock (Python's `arr[:]`).
    ///
    /// # Errors
    ///
    /// As for [`Value::get`].
    pub fn to_vec(&self) -> Result<Vec<T>, AcquireError> {
        self.lock()
            .map(|g| g.to_vec())
            .map_err(AcquireError::without_guard)
    }
}

/// Holds an [`Array`]'s lock and gives access to its elements; unlocks when dropped.
///
/// Access is by copy, never by reference, for the reason given at [`ValueGuard`]:
/// [`get`](ArrayGuard::get) / [`set`](ArrayGuard::set) one element,
/// [`to_vec`](ArrayGuard::to_vec) / [`copy_from_slice`](ArrayGuard::copy_from_slice)
/// all of them, and [`update`](ArrayGuard::update) to work on a local copy as a
/// slice (a copy out and back of the whole array: for large arrays touched a few
/// elements at a time, `get`/`set` or a [`RawArray`]'s atomics are cheaper).
#[must_use = "the array is unlocked as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    guard: LockGuard<'a>,
    /// `len` `T`s in the live mapping the `Array` keeps; the lock is held.
    data: NonNull<T>,
    len: usize,
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of element `i`, `None` if `i >= len`.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let mut out = T::zeroed();
        // SAFETY: i < len, so element i is valid and aligned in the live mapping (the
        // handle's checked layout), touched by copy_out only through atomics.
        unsafe { copy_out(self.data.as_ptr().add(i), &mut out, 1) };
        Some(out)
    }

    /// Stores `value` at `i`; returns `false`, storing nothing, if `i >= len`.
    pub fn set(&mut self, i: usize, value: T) -> bool {
        if i >= self.len {
            return false;
        }
        // SAFETY: as for get, the roles of the copy swapped.
        unsafe { copy_in(&value, self.data.as_ptr().add(i), 1) };
        true
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len];
        // SAFETY: len elements valid and aligned in the live mapping, touched only
        // through atomics; `out` is local and as long.
        unsafe { copy_out(self.data.as_ptr(), out.as_mut_ptr(), self.len) };
        out
    }

    /// Overwrites every element with `values`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Length`] if `values` is not exactly `len` long; nothing is
    /// written.
    pub fn copy_from_slice(&mut self, values: &[T]) -> Result<(), AccessError> {
        if values.len() != self.len {
            return Err(AccessError::Length {
                expected: self.len,
                found: values.len(),
            });
        }
        // SAFETY: as for to_vec, the roles of the copy swapped.
        unsafe { copy_in(values.as_ptr(), self.data.as_ptr(), self.len) };
        Ok(())
    }

    /// Applies `f` to a copy of the elements as a slice and stores them back (the
    /// whole array both ways). Returns what `f` returns.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let mut local = self.to_vec();
        let r = f(&mut local);
        // SAFETY: `local` has exactly len elements; as for copy_from_slice.
        unsafe { copy_in(local.as_ptr(), self.data.as_ptr(), self.len) };
        r
    }

    /// Declares the array repaired after [`AcquireError::OwnerDied`] (see
    /// [`LockGuard::mark_consistent`]).
    pub fn mark_consistent(&mut self) {
        self.guard.mark_consistent();
    }

    /// Whether the array is known to be consistent.
    pub fn is_consistent(&self) -> bool {
        self.guard.is_consistent()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_vec(), f)
    }
}

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
    segment: Arc<Segment>,
    data: NonNull<T>,
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
    segment: Arc<Segment>,
    data: NonNull<T>,
    len: usize,
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

/// `shmproc inspect` rows for a `Value` or `Array` segment.
fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let layout = segment.info().layout;
    let mut rows = vec![
        ("element", layout.elem.to_string()),
        ("length", layout.capacity.to_string()),
    ];
    if layout.slot_size as usize == LOCKED_DATA_OFFSET {
        rows.extend(Lock::inspect(segment));
    } else {
        rows.push(("lock", describe_offset(layout.slot_size)));
    }
    rows
}

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
