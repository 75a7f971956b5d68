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
        ObjectKind::Queue | ObjectKind::JoinableQueue | ObjectKind::SimpleQueue => {
            crate::queue::describe(segment)
        }
        _ => Vec::new(),
    }
}
