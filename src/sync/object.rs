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

/// Reads a `u32` of an object's state for `shmproc inspect`, from a mapping that may
/// be read-only, without forming a reference to it. `None` if it lies outside the
/// payload.
pub(crate) fn peek_u32(segment: &Segment, offset: usize) -> Option<u32> {
    if offset.checked_add(4)? > segment.payload_len() || offset % 4 != 0 {
        return None;
    }
    // SAFETY: in bounds of the payload (checked above), 4-aligned (the payload is
    // 128-aligned), and a volatile read of a plain integer has no validity
    // requirement; a racing writer can only make the value stale.
    Some(unsafe {
        segment
            .payload()
            .as_ptr()
            .add(offset)
            .cast::<u32>()
            .read_volatile()
    })
}

/// As [`peek_u32`], for a `u64`.
pub(crate) fn peek_u64(segment: &Segment, offset: usize) -> Option<u64> {
    if offset.checked_add(8)? > segment.payload_len() || offset % 8 != 0 {
        return None;
    }
    // SAFETY: as in peek_u32, with 8 bytes and 8-alignment.
    Some(unsafe {
        segment
            .payload()
            .as_ptr()
            .add(offset)
            .cast::<u64>()
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
