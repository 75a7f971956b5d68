//! [`JoinableQueue<T>`]: a [`Queue`] that counts unfinished tasks.

use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions};
use bytemuck::Pod;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Queue;
use super::core::*;
use super::error::*;
use crate::object::Object;

/// A [`Queue`] that counts unfinished tasks: Python's `JoinableQueue`.
///
/// Every successful `put` adds one unfinished task; [`task_done`](Self::task_done)
/// marks one finished; [`join`](Self::join) waits until none is left.
///
/// # Examples
///
/// ```
/// use shmproc::{JoinableQueue, Process};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = JoinableQueue::<u32>::new(8)?;
/// let mut worker = Process::spawn(|| {
///     for _ in 0..20 {
///         let _job = q.get().unwrap();
///         q.task_done().unwrap();
///     }
/// })?;
/// for job in 0..20 {
///     q.put(job)?;
/// }
/// q.join();
/// worker.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JoinableQueue<T> {
    pub(super) queue: Queue<T>,
}

impl<T: Pod> JoinableQueue<T> {
    /// An anonymous joinable queue of up to `maxsize` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::new`].
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>, CreateError> {
        JoinableQueue::create_anonymous(maxsize)
    }

    /// Creates a named joinable queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::create`].
    pub fn create(name: &str, maxsize: usize) -> Result<JoinableQueue<T>, CreateError> {
        JoinableQueue::create_with(name, maxsize, CreateOptions::new())
    }

    /// Opens a named joinable queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::open`].
    pub fn open(name: &str) -> Result<JoinableQueue<T>, OpenError> {
        JoinableQueue::open_with(name, OpenOptions::new())
    }

    pub(super) fn unfinished(&self) -> &std::sync::atomic::AtomicU64 {
        &self.queue.core.ring.user_words()[UNFINISHED_WORD]
    }

    /// Puts `item` (waiting while full) and counts it as an unfinished task.
    ///
    /// # Errors
    ///
    /// As for [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(None))
            .map_err(TryPutError::blocking)
    }

    /// Puts with a timeout; see [`Queue::put_timeout`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), TryPutError<T>> {
        self.put_block(item, Block::timeout(timeout))
    }

    /// Puts if there is room now; see [`Queue::put_nowait`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_block(item, Block::No)
    }

    pub(super) fn put_block(&self, item: T, block: Block) -> Result<(), TryPutError<T>> {
        self.queue.put_counted(item, block, Some(self.unfinished()))
    }

    /// Marks one task taken with `get` as finished; wakes `join`ers when none is left.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] if every task put is already marked done (Python's
    /// `ValueError`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let left = self
            .unfinished()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError)?;
        if left == 1 {
            self.queue.core.ring.user_event().notify_all();
        }
        Ok(())
    }

    /// Unfinished tasks: put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u64 {
        self.unfinished().load(Ordering::SeqCst)
    }

    /// Waits until every task put has been marked done.
    pub fn join(&self) {
        let _ = self.join_deadline(None);
    }

    /// Waits up to `timeout` until every task put has been marked done; whether they
    /// all were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_deadline(Some(Deadline::after(timeout)))
    }

    /// Shuts the queue down as [`Queue::shutdown`] does; with `immediate`, every
    /// item discarded counts as a finished task (Python: the unfinished count drops
    /// by the number drained), so a `join` with no task outstanding elsewhere
    /// returns. Tasks already taken still need their `task_done`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::JoinableQueue;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let q = JoinableQueue::<u32>::new(4)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// q.shutdown(true);
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// q.join(); // returns: nothing is unfinished
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        let drained = self.queue.core.shutdown(immediate);
        if drained > 0 {
            let _ = self
                .unfinished()
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(drained))
                });
        }
        self.queue.core.ring.user_event().notify_all();
    }

    pub(super) fn join_deadline(&self, deadline: Option<Deadline>) -> bool {
        self.queue
            .core
            .ring
            .user_event()
            .wait_until(deadline, || {
                (self.unfinished().load(Ordering::SeqCst) == 0).then_some(())
            })
            .is_ok()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    /// The underlying queue: `get`, `qsize`, `close`… (`put` on it directly would not
    /// count a task; `JoinableQueue`'s own `put` does.)
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}
