//! What every synchronization object and shared value does the same way: create its
//! segment (named or anonymous), open one by name and check its layout, and read its
//! state for `shmproc inspect`.

use crate::layout::header::{ObjectKind, ObjectLayout};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use std::ptr::NonNull;
use std::sync::Arc;

/// Creates the segment of a new object: named if `name` is given, else anonymous (a
/// memfd that children started with [`Process`](crate::Process) inherit). `init` gets
/// the zero-filled payload before anyone else can see it.
pub(crate) fn create(
    name: Option<&str>,
    layout: &ObjectLayout,
    init: impl FnOnce(NonNull<u8>, usize),
) -> Result<Arc<Segment>, CreateError> {
    let segment = match name {
        Some(name) => Segment::create(name, layout, CreateOptions::new(), init)?,
        None => Segment::anonymous(layout, init)?,
    };
    Ok(Arc::new(segment))
}

/// One way an existing object's layout differs from what a handle needs.
pub(crate) struct Mismatch {
    /// What differs ("payload size", "lock type"…).
    pub(crate) what: &'static str,
    /// What this handle needs.
    pub(crate) expected: String,
    /// What the segment has.
    pub(crate) found: String,
}

impl Mismatch {
    /// A mismatch of `what` between two displayable values.
    pub(crate) fn new(
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

/// Opens the named segment, which must hold an object of `kind`, and lets `check`
/// compare the rest of its validated layout (element type, capacity, payload size)
/// with what the handle computes. Nothing in the payload is touched before `check`
/// passes.
pub(crate) fn open(
    name: &str,
    kind: ObjectKind,
    check: impl FnOnce(&ObjectLayout) -> Result<(), Mismatch>,
) -> Result<Arc<Segment>, OpenError> {
    let segment = Segment::open_any(name, OpenOptions::new())?;
    let layout = segment.info().layout;
    let shown = || segment.name().unwrap_or(name).to_string();
    if layout.kind != kind {
        return Err(OpenError::WrongKind {
            name: shown(),
            expected: kind,
            found: layout.kind,
        });
    }
    if let Err(m) = check(&layout) {
        return Err(OpenError::IncompatibleLayout {
            name: shown(),
            what: m.what,
            expected: m.expected,
            found: m.found,
        });
    }
    Ok(Arc::new(segment))
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

impl<S> Shared<S> {
    /// A handle to the `S` at byte `offset` of `segment`'s payload.
    ///
    /// # Safety
    ///
    /// `offset` must be a multiple of 128 with `offset + size_of::<S>()` within the
    /// payload; `S` must consist of atomics only (valid for any bits, so a peer's
    /// scribbles are values, not undefined behavior), and every process must use
    /// those bytes only as an `S`.
    pub(crate) unsafe fn at(segment: Arc<Segment>, offset: usize) -> Shared<S> {
        debug_assert!(offset % 128 == 0 && offset + size_of::<S>() <= segment.payload_len());
        // SAFETY: in bounds of the payload by the caller's contract.
        let state = unsafe { segment.payload().add(offset) }.cast();
        Shared { segment, state }
    }

    /// The state.
    #[inline]
    pub(crate) fn state(&self) -> &S {
        // SAFETY: in the mapping self.segment keeps alive, aligned (the payload is
        // 128-aligned, `at`'s offset a multiple of 128), atomics only (`at`'s
        // contract).
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

/// Creates the segment of an object whose payload is exactly one zero-filled `S`
/// (anonymous if `name` is `None`), and a handle to it.
///
/// # Safety
///
/// `layout.payload_size` must be `size_of::<S>()`, `S` atomics only, and all-zero
/// bytes a valid initial state of the object.
pub(crate) unsafe fn create_state<S>(
    name: Option<&str>,
    layout: &ObjectLayout,
) -> Result<Shared<S>, CreateError> {
    let segment = create(name, layout, |_, _| {})?;
    // SAFETY: the payload is one S at offset 0 (the caller's contract), zero-filled.
    Ok(unsafe { Shared::at(segment, 0) })
}

/// Opens the object named `name` whose layout must be exactly `layout` (its payload
/// one `S`), and a handle to its state.
///
/// # Safety
///
/// As for [`create_state`].
pub(crate) unsafe fn open_state<S>(
    name: &str,
    layout: &ObjectLayout,
) -> Result<Shared<S>, OpenError> {
    let segment = open(name, layout.kind, |found| {
        check_layout(found, Some(*layout))
    })?;
    // SAFETY: the layout check guarantees the payload is layout.payload_size bytes,
    // one S (the caller's contract).
    Ok(unsafe { Shared::at(segment, 0) })
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
