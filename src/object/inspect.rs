//! What `shmproc inspect` shows of an object beyond its header: one table from the
//! header's object kind to the object's [`Object::inspect`].

use super::Object;
use crate::layout::header::ObjectKind;
use crate::pipe::Connection;
use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::segment::Segment;
use crate::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use crate::value::{Array, Value};

/// Rows of (label, value) an object reports.
type Rows = Vec<(&'static str, String)>;

/// An object kind's inspect hook.
type Inspect = fn(&Segment) -> Rows;

/// The inspect hook of each kind. Generic objects answer for every type parameter
/// alike (the rows come from the segment, not the handle), so one instance stands
/// for all.
const INSPECTORS: &[(ObjectKind, Inspect)] = &[
    (ObjectKind::Lock, Lock::inspect),
    (ObjectKind::RLock, RLock::inspect),
    (ObjectKind::Semaphore, Semaphore::inspect),
    (ObjectKind::BoundedSemaphore, BoundedSemaphore::inspect),
    (ObjectKind::Event, Event::inspect),
    (ObjectKind::Condition, Condition::<Lock>::inspect),
    (ObjectKind::Barrier, Barrier::inspect),
    (ObjectKind::Value, Value::<u8>::inspect),
    (ObjectKind::Array, Array::<u8>::inspect),
    (ObjectKind::Pipe, Connection::inspect),
    (ObjectKind::Queue, Queue::<u8>::inspect),
    (ObjectKind::JoinableQueue, JoinableQueue::<u8>::inspect),
    (ObjectKind::SimpleQueue, SimpleQueue::<u8>::inspect),
    (ObjectKind::Dict, crate::dict::inspect),
    (ObjectKind::List, crate::dict::list_inspect),
    (ObjectKind::Pool, <crate::pool::Claims as Object>::inspect),
];

/// The live state of the object in `segment`, as (label, value) rows: depth, waiters
/// and the like. Each object kind reports its own; kinds with nothing beyond their
/// header (such as `Raw`) report no rows.
///
/// Everything is read from shared memory another process may be scribbling on: values
/// may be stale or wrong, never unsafe to read.
pub fn object_state(segment: &Segment) -> Rows {
    let kind = segment.info().layout.kind;
    INSPECTORS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or_else(Vec::new, |(_, inspect)| inspect(segment))
}
