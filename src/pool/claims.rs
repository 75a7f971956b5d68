//! The claim table: which task each worker is running, in shared memory, so the
//! parent knows which task a dead worker took with it.
//!
//! One 128-byte line per worker slot. A worker stores its pid and the task's id
//! before it runs the task's function and clears the id after it has put the result;
//! the parent reads the line after the worker has died (and been reaped). The parent
//! trusts nothing it reads: an id that names no task of that worker is ignored.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::{self, Mismatch, Object, Shared, SharedState};
use crate::segment::{CreateError, Segment};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One worker's claim.
#[repr(C)]
struct Claim {
    /// The pid of the worker that stored `task`; 0 before any.
    pid: AtomicU32,
    /// The pid of the worker once its initializer returned (0 before).
    ready: AtomicU32,
    /// The id of the task the worker is running; 0 while it runs none. Any value is
    /// valid (a scribbled id names no task, or the wrong one: a wrong report).
    task: AtomicU64,
}

/// A slot's line.
#[repr(C)]
pub(super) struct ClaimState {
    claim: CachePadded<Claim>,
}

// SAFETY: repr(C), atomics only on a padded line: any bytes are a valid state, zero
// is "no claim", no pointers, alignment 128.
unsafe impl SharedState for ClaimState {}

const LINE: usize = size_of::<ClaimState>();
const _: () = assert!(LINE == 128);
const _: () = assert!(std::mem::offset_of!(Claim, task) == 8);

impl ClaimState {
    /// The worker `pid` starts task `id`.
    pub(super) fn begin(&self, pid: u32, id: u64) {
        self.claim.pid.store(pid, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `running`, so the pid is seen with
        // the id. (A reader runs after the worker died; waitpid orders it anyway.)
        self.claim.task.store(id, Ordering::Release);
    }

    /// The worker finished its task (its result is in the result queue).
    pub(super) fn end(&self) {
        // Release: pairs with the Acquire load in `running`.
        self.claim.task.store(0, Ordering::Release);
    }

    /// Forgets the claim (before a replacement worker starts in the slot).
    pub(super) fn clear(&self) {
        self.claim.task.store(0, Ordering::Relaxed);
        self.claim.pid.store(0, Ordering::Relaxed);
        self.claim.ready.store(0, Ordering::Relaxed);
    }

    /// The worker `pid` is past its initializer.
    pub(super) fn mark_ready(&self, pid: u32) {
        self.claim.ready.store(pid, Ordering::Release);
    }

    /// Whether the worker `pid` got past its initializer (read after it died).
    pub(super) fn was_ready(&self, pid: u32) -> bool {
        self.claim.ready.load(Ordering::Acquire) == pid
    }

    /// The task worker `pid` was running, if the line says it was that worker's.
    pub(super) fn running(&self, pid: u32) -> Option<u64> {
        // Acquire: pairs with the Release stores in `begin` and `end`.
        let id = self.claim.task.load(Ordering::Acquire);
        (id != 0 && self.claim.pid.load(Ordering::Relaxed) == pid).then_some(id)
    }
}

/// The table: one [`ClaimState`] per worker slot.
#[derive(Clone)]
pub(crate) struct Claims {
    slots: Vec<Shared<ClaimState>>,
    segment: Arc<Segment>,
}

fn layout(slots: u64) -> Option<ObjectLayout> {
    Some(ObjectLayout {
        kind: ObjectKind::Pool,
        elem: ElemType::NONE,
        slot_size: LINE as u32,
        capacity: slots,
        payload_size: slots.checked_mul(LINE as u64)?,
    })
}

impl Claims {
    /// The claim line of worker slot `slot` (`None` past the table's end).
    pub(super) fn slot(&self, slot: usize) -> Option<&Shared<ClaimState>> {
        self.slots.get(slot)
    }
}

impl Object for Claims {
    const KIND: ObjectKind = ObjectKind::Pool;
    /// The number of worker slots.
    type Args<'a> = usize;

    fn layout(slots: &usize) -> Result<ObjectLayout, CreateError> {
        layout(*slots as u64)
            .filter(|_| *slots > 0)
            .ok_or_else(|| CreateError::InvalidArgument(format!("a claim table of {slots} slots")))
    }

    fn attach(segment: Arc<Segment>) -> Result<Claims, Mismatch> {
        let found = segment.info().layout;
        object::check_layout(&found, layout(found.capacity))?;
        let n = usize::try_from(found.capacity)
            .map_err(|_| Mismatch::new("capacity", "a usable capacity", found.capacity))?;
        let slots = (0..n)
            .map(|i| Shared::at(Arc::clone(&segment), i * LINE))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Claims { slots, segment })
    }

    fn segment(&self) -> &Segment {
        &self.segment
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        let slots = segment.payload_len() / LINE;
        let mut busy = 0;
        for i in 0..slots {
            if object::peek::<u64>(segment, i * LINE + 8).is_some_and(|t| t != 0) {
                busy += 1;
            }
        }
        vec![
            ("worker slots", slots.to_string()),
            ("running tasks", busy.to_string()),
        ]
    }
}
