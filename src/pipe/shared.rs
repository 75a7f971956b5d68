//! What both ends share in the segment: the holder registries' words and the
//! two rings, checked against the header before anything is touched.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::Mismatch;
use crate::ring::spsc::{self, Spsc};
use crate::segment::Segment;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Entries in each end's holder registry.
pub(super) const HOLDERS: usize = 15;
pub(super) const ACTIVE: u64 = 1 << 62;
/// The entry was inherited through a fork, not created or opened by its process.
pub(super) const INHERITED: u64 = 1 << 63;
pub(super) const START_BITS: u64 = (1 << 30) - 1;

/// Who holds one end: `ever` is set once anyone has registered (so a named end no
/// one opened yet is "not connected yet", not "closed"); each entry is 0 or
/// `pid | (start_ticks & 2^30-1) << 32 | ACTIVE? | INHERITED?`.
#[repr(C)]
pub(super) struct Holders {
    pub(super) ever: AtomicU64,
    pub(super) entries: [AtomicU64; HOLDERS],
}

#[repr(C)]
pub(super) struct PipeControl {
    pub(super) ends: [CachePadded<Holders>; 2],
}

const _: () = assert!(size_of::<Holders>() == 128);
const _: () = assert!(size_of::<PipeControl>() == 256);

/// The segment, shared by the handles of both ends in one process.
#[derive(Debug)]
pub(super) struct PipeShared {
    pub(super) segment: Arc<Segment>,
    /// Ring carrying messages to end A (read by A, written by B).
    pub(super) to_a: Spsc,
    /// Ring carrying messages to end B; `None` for a one-way pipe.
    pub(super) to_b: Option<Spsc>,
}

impl PipeShared {
    pub(super) fn control(&self) -> &PipeControl {
        // SAFETY: the payload starts with 256 bytes of PipeControl (checked against
        // the layout at open), 128-aligned, made only of atomics.
        unsafe { &*self.segment.payload().as_ptr().cast::<PipeControl>() }
    }

    pub(super) fn holders(&self, end: usize) -> &Holders {
        &self.control().ends[end & 1]
    }

    /// The presence word of `end`: on the readable line of the ring that `end`
    /// receives from, so the other end's sender reads it with the line its notify
    /// loads anyway. `None` for the send-only end of a one-way pipe (nobody sends to
    /// it). Bit 0 is set once anyone has registered; the rest counts the end's
    /// registry entries, two per entry (see [`Registration::claim_entry`]).
    pub(super) fn presence(&self, end: usize) -> Option<&AtomicU64> {
        if end & 1 == 0 {
            Some(self.to_a.reader_presence())
        } else {
            self.to_b.as_ref().map(|r| r.reader_presence())
        }
    }
}

pub(super) fn layout(capacity: u64, duplex: bool) -> Option<ObjectLayout> {
    let ring = Spsc::bytes_for(capacity)? as u64;
    let directions: u64 = if duplex { 2 } else { 1 };
    Some(ObjectLayout {
        kind: ObjectKind::Pipe,
        elem: ElemType::NONE,
        slot_size: directions as u32,
        capacity,
        payload_size: size_of::<PipeControl>() as u64 + ring.checked_mul(directions)?,
    })
}

impl PipeShared {
    /// The shared part over a validated `Pipe` segment: checks the direction count
    /// and the sizes before touching the payload.
    pub(super) fn attach(segment: Arc<Segment>) -> Result<PipeShared, Mismatch> {
        let l = segment.info().layout;
        if l.elem != ElemType::NONE {
            return Err(Mismatch::new("element type", ElemType::NONE, l.elem));
        }
        let duplex = match l.slot_size {
            1 => false,
            2 => true,
            n => return Err(Mismatch::new("direction count", "1 or 2", n)),
        };
        let expected = layout(l.capacity, duplex);
        if expected.map(|e| e.payload_size) != Some(l.payload_size) {
            return Err(Mismatch::new(
                "pipe size",
                format!("a pipe of {} bytes per direction", l.capacity),
                format!("{} bytes of payload", l.payload_size),
            ));
        }
        let ring_len = Spsc::bytes_for(l.capacity).unwrap_or(0);
        let base = segment.payload();
        let at = |i: usize| {
            // SAFETY: 256 + i * ring_len + ring_len <= payload_size (checked above),
            // so the pointer stays inside the payload; 128-aligned since ring_len is
            // 512 + a power of two >= 256.
            let p = unsafe { base.add(size_of::<PipeControl>() + i * ring_len) };
            // SAFETY: the ring memory lives as long as the segment, which PipeShared
            // keeps; it was zero-filled at creation and is used only through Spsc
            // handles of this capacity.
            unsafe { Spsc::attach(p, ring_len, l.capacity) }
        };
        let bad = |e: spsc::LayoutError| Mismatch::new("pipe ring", "a valid byte ring", e);
        let to_a = at(0).map_err(bad)?;
        let to_b = if duplex {
            Some(at(1).map_err(bad)?)
        } else {
            None
        };
        Ok(PipeShared {
            segment,
            to_a,
            to_b,
        })
    }
}
