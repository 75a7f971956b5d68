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
//!
//! [`OpenError::IncompatibleLayout`]: crate::segment::OpenError::IncompatibleLayout
//! [`LockGuard`]: crate::sync::LockGuard

mod copy;
mod error;
mod locked;
mod raw;

pub use copy::AtomicInteger;
pub use error::AccessError;
pub use locked::{Array, ArrayGuard, Value, ValueGuard};
pub use raw::{RawArray, RawValue};

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::object::{self, Mismatch, Object, Payload};
use crate::segment::{CreateError, Segment};
use crate::sync::{LOCK_STATE_SIZE, Lock};
use std::ptr::NonNull;

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
