//! [`SimpleQueue<T>`]: Python's `multiprocessing.SimpleQueue`.

use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions};
use bytemuck::Pod;

use super::Queue;
use super::error::*;
use crate::object::Object;

/// A simpler queue: `put`, `get`, `empty`, `close` — Python's `SimpleQueue`.
/// Bounded like every shared-memory queue (Python's is unbounded): `put` waits while
/// it is full; capacity 0 gives [`UNBOUNDED_MAXSIZE`](super::UNBOUNDED_MAXSIZE) items, with `put` failing at
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
    pub(super) queue: Queue<T>,
}

impl<T: Pod> SimpleQueue<T> {
    /// An anonymous simple queue holding up to `capacity` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::new`].
    pub fn new(capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        SimpleQueue::create_anonymous(capacity)
    }

    /// Creates a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::create`].
    pub fn create(name: &str, capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        SimpleQueue::create_with(name, capacity, CreateOptions::new())
    }

    /// Opens a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::open`].
    pub fn open(name: &str) -> Result<SimpleQueue<T>, OpenError> {
        SimpleQueue::open_with(name, OpenOptions::new())
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Closed`] after [`close`](Self::close).
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
