//! The locked types: [`Value`] (an [`Array`] of one) and [`Array`], and the guards
//! that give access to their data while the lock is held.

use super::copy::{copy_in, copy_out};
use super::error::check_guard;
use super::{
    AccessError, ArrayInit, LOCKED_DATA_OFFSET, RawArray, RawValue, attach_data, data_layout,
    inspect,
};
use crate::layout::header::{ObjectKind, ObjectLayout};
use crate::object::{Mismatch, Object, Payload};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::sync::{AcquireError, Lock, LockGuard};
use bytemuck::Pod;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

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
