//! The pieces objects are built from: [`SharedState`] and its handle [`Shared`],
//! the fresh [`Payload`] a new object fills, layout [`Mismatch`]es, and safe reads
//! for `shmproc inspect`.

use crate::layout::header::ObjectLayout;
use crate::segment::Segment;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

/// A `#[repr(C)]` struct of shared state that lives in a segment and is used by every
/// process only through shared references to its atomics.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` (or `repr(transparent)`) and consist only of
/// atomics and of other `SharedState` types, with no padding that is read: every bit
/// pattern of `size_of::<Self>()` bytes must be a valid value (a peer may write
/// anything), all-zero bytes must be a valid state of a new object, and the type must
/// hold no pointers or references (its bytes are shared between address spaces).
/// Its alignment must be at most 128 (segment payloads are 128-aligned).
pub unsafe trait SharedState: Sync + 'static {}

/// The zero-filled payload of a new object, before any other process can see it:
/// what [`Object::init`](super::Object::init) fills.
pub struct Payload<'a> {
    /// Start of the payload; 128-aligned, valid for `len` bytes, not yet shared.
    ptr: NonNull<u8>,
    len: usize,
    _payload: PhantomData<&'a mut [u8]>,
}

impl Payload<'_> {
    /// The payload at `ptr`, `len` bytes, as [`Segment`]'s init callbacks hand it.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes, 128-aligned, and not yet
    /// visible to any other process or thread for as long as the `Payload` lives
    /// ([`write`](Payload::write) relies on all three).
    pub(crate) unsafe fn new(ptr: NonNull<u8>, len: usize) -> Payload<'static> {
        Payload {
            ptr,
            len,
            _payload: PhantomData,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the payload, for layouts that place their own structures (a
    /// ring's `init`, which has its own `unsafe` contract).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Writes `values` at byte `offset`. Returns `false`, writing nothing, if they
    /// do not fit or `offset` is not aligned for `T`.
    pub fn write<T: bytemuck::Pod>(&mut self, offset: usize, values: &[T]) -> bool {
        let bytes: &[u8] = bytemuck::cast_slice(values);
        let fits = offset
            .checked_add(bytes.len())
            .is_some_and(|end| end <= self.len);
        if !fits || offset % align_of::<T>() != 0 {
            return false;
        }
        // SAFETY: offset + bytes.len() <= len (checked), the payload is ours alone
        // until the segment is published, and bytes come from a distinct slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        };
        true
    }
}

/// One way an existing object's layout differs from what a handle needs: what
/// [`Object::attach`](super::Object::attach) returns, and what
/// [`OpenError::IncompatibleLayout`](crate::segment::OpenError::IncompatibleLayout)
/// reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// What differs ("payload size", "lock type"…).
    pub what: &'static str,
    /// What this handle needs.
    pub expected: String,
    /// What the segment has.
    pub found: String,
}

impl Mismatch {
    /// A mismatch of `what` between two displayable values.
    pub fn new(
        what: &'static str,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Mismatch {
        Mismatch {
            what,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// Compares an existing object's layout with the one this handle computes (`None`:
/// the found capacity is unusable, e.g. zero parties or a size that overflows).
pub(crate) fn check_layout(
    found: &ObjectLayout,
    expected: Option<ObjectLayout>,
) -> Result<(), Mismatch> {
    let Some(expected) = expected else {
        return Err(Mismatch::new(
            "capacity",
            "a usable capacity",
            found.capacity,
        ));
    };
    if found.elem != expected.elem {
        return Err(Mismatch::new("element type", expected.elem, found.elem));
    }
    if found.slot_size != expected.slot_size {
        return Err(Mismatch::new(
            "slot size",
            expected.slot_size,
            found.slot_size,
        ));
    }
    if found.capacity != expected.capacity {
        return Err(Mismatch::new("capacity", expected.capacity, found.capacity));
    }
    if found.payload_size != expected.payload_size {
        return Err(Mismatch::new(
            "payload size",
            format!("{} bytes", expected.payload_size),
            format!("{} bytes", found.payload_size),
        ));
    }
    Ok(())
}

/// A handle to an object's shared state: a `#[repr(C)]` struct of atomics `S` at a
/// 128-aligned offset of a segment's payload, which the handle keeps mapped. What
/// every lock, event, semaphore and barrier handle consists of.
pub(crate) struct Shared<S> {
    segment: Arc<Segment>,
    /// `S` inside `segment`'s payload (see [`Shared::at`]).
    state: NonNull<S>,
}

// SAFETY: the pointer points into the mapping `segment` keeps alive, and `S` is only
// ever accessed through shared references to atomics (`S: Sync`), from any thread.
unsafe impl<S: Sync> Send for Shared<S> {}
// SAFETY: as for Send.
unsafe impl<S: Sync> Sync for Shared<S> {}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Shared<S> {
        Shared {
            segment: Arc::clone(&self.segment),
            state: self.state,
        }
    }
}

impl<S: SharedState> Shared<S> {
    /// A handle to the `S` at byte `offset` of `segment`'s payload.
    ///
    /// # Errors
    ///
    /// [`Mismatch`] if `offset` is not a multiple of 128 or the payload is too short
    /// to hold an `S` there.
    pub(crate) fn at(segment: Arc<Segment>, offset: usize) -> Result<Shared<S>, Mismatch> {
        let end = offset.checked_add(size_of::<S>());
        if offset % 128 != 0 || end.is_none_or(|end| end > segment.payload_len()) {
            return Err(Mismatch::new(
                "payload size",
                format!("at least {} bytes", offset.saturating_add(size_of::<S>())),
                format!("{} bytes", segment.payload_len()),
            ));
        }
        // SAFETY: offset + size_of::<S>() <= the payload's length (checked above).
        let state = unsafe { segment.payload().add(offset) }.cast();
        Ok(Shared { segment, state })
    }

    /// The segment the handle keeps mapped.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The state.
    #[inline]
    pub(crate) fn state(&self) -> &S {
        // SAFETY: in bounds of the mapping self.segment keeps alive (checked by
        // `at`), aligned (the payload is 128-aligned, the offset a multiple of 128,
        // S's alignment at most 128), and valid for any bytes, so a reference is
        // sound even while other processes write (`SharedState`'s contract).
        unsafe { self.state.as_ref() }
    }

    /// The segment's name, `None` if anonymous.
    pub(crate) fn name(&self) -> Option<&str> {
        self.segment.name()
    }

    /// Whether both handles are to the same state in this process's mappings.
    pub(crate) fn same(&self, other: &Shared<S>) -> bool {
        self.state == other.state
    }
}

/// Reads a `u32` or `u64` of an object's state for `shmproc inspect`, from a mapping
/// that may be read-only, without forming a reference to it. `None` if it lies outside
/// the payload or is misaligned.
pub(crate) fn peek<T: bytemuck::Pod>(segment: &Segment, offset: usize) -> Option<T> {
    if offset.checked_add(size_of::<T>())? > segment.payload_len() || offset % align_of::<T>() != 0
    {
        return None;
    }
    // SAFETY: in bounds of the payload (checked above), aligned (the payload is
    // 128-aligned, the offset a multiple of T's alignment), and a volatile read of a
    // plain-old-data value has no validity requirement; a racing writer can only make
    // the value stale.
    Some(unsafe {
        segment
            .payload()
            .as_ptr()
            .add(offset)
            .cast::<T>()
            .read_volatile()
    })
}

/// The inspect rows for an object whose payload is too small to hold its state (only
/// a segment written by something other than shmproc can be like that).
pub(crate) fn unreadable(segment: &Segment) -> Vec<(&'static str, String)> {
    vec![(
        "state",
        format!(
            "unreadable: the payload has {} bytes, too few for a {}",
            segment.payload_len(),
            segment.info().layout.kind
        ),
    )]
}

/// "pid 123 (alive)" for an owner word, or "nobody".
pub(crate) fn show_owner(word: u64) -> String {
    match super::owner::id_of(word) {
        0 => "nobody".to_string(),
        id => format!(
            "{id} ({})",
            if super::owner::holder_alive(word) {
                "alive"
            } else {
                "dead"
            }
        ),
    }
}
