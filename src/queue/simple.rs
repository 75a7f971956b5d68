//! [`SimpleQueue<T>`]: Python's `multiprocessing.SimpleQueue`.

use crate::layout::header::ObjectKind;
use crate::segment::{CreateError, CreateOptions, OpenError};
use bytemuck::Pod;

use super::Queue;
use super::error::*;

/// A simpler queue: `put`, `get`, `empty`, `close` — Python's `SimpleQueue`.
/// Bounded like every shared-memory queue (Python's is unbounded): `put` waits while
/// it is full; capacity 0 gives [`UNBOUNDED_MAXSIZE`] items, with `put` failing at
/// once when they run out (see [`Queue::new`]).
///
/// # Examples
///
/// ```
/// use shmproc::SimpleQueue;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = SimpleQueue::<i32>::new(4)?;
/// q.put(-1)?;
/// assert!(!q.empty()?);
/// assert_eq!(q.get()?, -1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Pod> SimpleQueue<T> {
    /// An anonymous simple queue holding up to `capacity` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::new`].
    pub fn new(capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        let queue = Queue::new_kind(ObjectKind::SimpleQueue, capacity)?;
        Ok(SimpleQueue { queue })
    }

    /// Creates a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::create`].
    pub fn create(name: &str, capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        let kind = ObjectKind::SimpleQueue;
        let queue = Queue::create_kind(name, kind, capacity, CreateOptions::new())?;
        Ok(SimpleQueue { queue })
    }

    /// Opens a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::open`].
    pub fn open(name: &str) -> Result<SimpleQueue<T>, OpenError> {
        let queue = Queue::open_kind(name, ObjectKind::SimpleQueue)?;
        Ok(SimpleQueue { queue })
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] after [`close`](Self::close).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] after [`close`](Self::close); [`GetError::Corrupt`].
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }

    /// Whether the queue looks empty (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn empty(&self) -> Result<bool, Closed> {
        self.queue.empty()
    }

    /// Closes this handle.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.queue.closed()
    }
}
