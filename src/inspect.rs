//! What `shmproc inspect` shows of an object beyond its header.

use crate::layout::header::ObjectKind;
use crate::segment::Segment;

/// The live state of the object in `segment`, as (label, value) rows: depth, waiters
/// and the like. Each object kind reports its own; kinds with nothing beyond their
/// header (such as `Raw`) report no rows.
///
/// Everything is read from shared memory another process may be scribbling on: values
/// may be stale or wrong, never unsafe to read.
pub fn object_state(segment: &Segment) -> Vec<(&'static str, String)> {
    match segment.info().layout.kind {
        ObjectKind::Raw => Vec::new(),
        ObjectKind::Lock => crate::sync::inspect_lock(segment, 0),
        ObjectKind::RLock => crate::sync::inspect_rlock(segment),
        ObjectKind::Semaphore | ObjectKind::BoundedSemaphore => {
            crate::sync::inspect_semaphore(segment)
        }
        ObjectKind::Event => crate::sync::inspect_event(segment),
        ObjectKind::Condition => crate::sync::inspect_condition(segment),
        ObjectKind::Barrier => crate::sync::inspect_barrier(segment),
        ObjectKind::Value | ObjectKind::Array => crate::value::inspect(segment),
        ObjectKind::Pipe => crate::pipe::describe(segment),
        ObjectKind::Queue | ObjectKind::JoinableQueue | ObjectKind::SimpleQueue => {
            crate::queue::describe(segment)
        }
        _ => Vec::new(),
    }
}
