//! [`ByteQueue`]: byte messages of any length up to the ring, with in-place
//! `loan` / `get_ref`.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::ring::mpmc::{PopError, PushError, ReadSlot, WriteSlot};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::wait::Spin;
use std::time::Duration;

use super::Queue;
use super::core::*;
use super::error::*;
use crate::object::{Mismatch, Object, Payload};
use std::sync::Arc;

/// A bounded MPMC queue of byte messages of any length up to its size: a message
/// larger than one slot spans consecutive slots, claimed and published at once.
///
/// Besides `put`/`get`, it offers zero-copy: [`loan`](ByteQueue::loan) a buffer in
/// the ring, write in place, [`commit`](Loan::commit); [`get_ref`](ByteQueue::get_ref)
/// to read in place through a guard; and [`get_into`](ByteQueue::get_into) to reuse a
/// buffer (no allocation per message).
///
/// # Examples
///
/// ```
/// use shmproc::ByteQueue;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = ByteQueue::new(64, 64)?; // 64 slots of 64 bytes
/// q.put(b"hello")?;
/// q.put(&[7u8; 1000])?; // spans 16 slots
/// assert_eq!(q.get()?, b"hello");
/// let mut buf = Vec::new();
/// q.get_into(&mut buf)?;
/// assert_eq!(buf, vec![7u8; 1000]);
/// assert!(q.put(&vec![0u8; 64 * 64 + 1]).is_err()); // can never fit
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ByteQueue {
    queue: Queue<u8>,
}

/// A buffer loaned from a [`ByteQueue`]: write the message in place, then
/// [`commit`](Loan::commit). Dropped uncommitted, it is discarded (consumers never
/// see it).
#[derive(Debug)]
pub struct Loan<'a> {
    slot: WriteSlot<'a>,
}

impl Loan<'_> {
    /// The buffer, exactly as long as the loan asked for. Its initial contents are
    /// unspecified: write every byte.
    pub fn buf(&mut self) -> &mut [u8] {
        self.slot.buf()
    }

    /// Publishes the message.
    pub fn commit(self) {
        self.slot.commit();
    }
}

/// A message read in place from a [`ByteQueue`]; its slots are returned to the queue
/// when the guard drops.
#[derive(Debug)]
pub struct MessageRef<'a> {
    slot: ReadSlot<'a>,
}

impl std::ops::Deref for MessageRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.slot.bytes()
    }
}

impl Object for ByteQueue {
    const KIND: ObjectKind = ObjectKind::Queue;
    /// `(slots, slot_size)`: how many slots of how many bytes (rounded up to 8).
    type Args<'a> = (usize, usize);

    fn layout(&(slots, slot_size): &(usize, usize)) -> Result<ObjectLayout, CreateError> {
        ByteQueue::layout(ObjectKind::Queue, BYTES, slots, slot_size)
    }

    fn init(args: (usize, usize), payload: &mut Payload<'_>) {
        if let Ok(layout) = <ByteQueue as Object>::layout(&args) {
            Core::init(&layout, false, payload);
        }
    }

    fn attach(segment: Arc<Segment>) -> Result<ByteQueue, Mismatch> {
        Core::attach(segment, BYTES, None).map(ByteQueue::with_core)
    }

    fn segment(&self) -> &Segment {
        &self.queue.core.segment
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        describe(segment)
    }
}

impl ByteQueue {
    pub(super) fn layout(
        kind: ObjectKind,
        elem: ElemType,
        slots: usize,
        slot_size: usize,
    ) -> Result<ObjectLayout, CreateError> {
        if slots == 0 || slot_size == 0 {
            return Err(CreateError::InvalidArgument(format!(
                "a byte queue needs at least one slot of at least one byte (asked for {slots} slots of {slot_size} bytes)"
            )));
        }
        Core::layout(
            kind,
            elem,
            slots as u64,
            (slot_size as u64).next_multiple_of(8),
        )
    }

    pub(super) fn with_core(core: Core) -> ByteQueue {
        ByteQueue {
            queue: Queue::with_core(core),
        }
    }

    /// An anonymous byte queue of `slots` slots of `slot_size` bytes (rounded up to a
    /// multiple of 8). Messages of up to `slots × slot_size` bytes fit.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for zero or oversized parameters; OS errors.
    pub fn new(slots: usize, slot_size: usize) -> Result<ByteQueue, CreateError> {
        ByteQueue::create_anonymous((slots, slot_size))
    }

    /// Creates a named byte queue.
    ///
    /// # Errors
    ///
    /// As for [`ByteQueue::new`] and [`Segment::create`].
    pub fn create(name: &str, slots: usize, slot_size: usize) -> Result<ByteQueue, CreateError> {
        ByteQueue::create_with(name, (slots, slot_size), CreateOptions::new())
    }

    /// Opens a named byte queue (any slot size).
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`].
    pub fn open(name: &str) -> Result<ByteQueue, OpenError> {
        ByteQueue::open_with(name, OpenOptions::new())
    }

    /// The largest message this queue can hold, in bytes.
    pub fn max_message(&self) -> usize {
        self.core().ring.max_message()
    }

    pub(super) fn core(&self) -> &Core {
        &self.queue.core
    }

    pub(super) fn loan_block(
        &self,
        len: usize,
        block: Block,
    ) -> Result<Loan<'_>, TryPutBytesError> {
        if self.queue.handle.closed() {
            return Err(TryPutBytesError::Closed);
        }
        if self.core().shut_down() {
            return Err(TryPutBytesError::ShutDown);
        }
        let slot = self
            .core()
            .claim(len, block, &self.queue.handle)
            .map_err(|e| self.put_error(e))?;
        Ok(Loan { slot })
    }

    pub(super) fn put_block(&self, msg: &[u8], block: Block) -> Result<(), TryPutBytesError> {
        if self.queue.handle.closed() {
            return Err(TryPutBytesError::Closed);
        }
        if self.core().shut_down() {
            return Err(TryPutBytesError::ShutDown);
        }
        // A copy straight into the ring, no guard.
        self.core()
            .push(msg, block, &self.queue.handle)
            .map_err(|e| self.put_error(e))
    }

    /// What a failed claim means: a `Full` after a shutdown (which ends a waiting
    /// put) is `ShutDown`, and in a queue made with maxsize 0 the default ran out.
    #[cold]
    pub(super) fn put_error(&self, e: PushError) -> TryPutBytesError {
        match e {
            PushError::Full if self.core().shut_down() => TryPutBytesError::ShutDown,
            PushError::Full if self.core().unbounded() => TryPutBytesError::DefaultMaxsizeReached,
            e => e.into(),
        }
    }

    /// Puts a message, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutBytesError::TooLarge`] if it can never fit (the message says both sizes);
    /// [`PutBytesError::Closed`].
    pub fn put(&self, msg: &[u8]) -> Result<(), PutBytesError> {
        self.put_block(msg, Block::Until(None))
            .map_err(TryPutBytesError::blocking)
    }

    /// Puts a message, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`TryPutBytesError::Full`] if there was no room in time; as for [`put`](Self::put).
    pub fn put_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), TryPutBytesError> {
        self.put_block(msg, Block::timeout(timeout))
    }

    /// Puts a message if there is room now.
    ///
    /// # Errors
    ///
    /// [`TryPutBytesError::Full`]; as for [`put`](Self::put).
    pub fn put_nowait(&self, msg: &[u8]) -> Result<(), TryPutBytesError> {
        self.put_block(msg, Block::No)
    }

    /// Loans a buffer of `len` bytes in the ring (waiting while full) to write a
    /// message in place: no copy.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put).
    pub fn loan(&self, len: usize) -> Result<Loan<'_>, PutBytesError> {
        self.loan_block(len, Block::Until(None))
            .map_err(TryPutBytesError::blocking)
    }

    /// Loans a buffer if there is room now.
    ///
    /// # Errors
    ///
    /// As for [`put_nowait`](Self::put_nowait).
    pub fn try_loan(&self, len: usize) -> Result<Loan<'_>, TryPutBytesError> {
        self.loan_block(len, Block::No)
    }

    pub(super) fn take_block(&self, block: Block) -> Result<MessageRef<'_>, TryGetError> {
        if self.queue.handle.closed() {
            return Err(TryGetError::Closed);
        }
        let slot = self
            .core()
            .take(block, &self.queue.handle)
            .map_err(|e| self.core().get_error(e))?;
        Ok(MessageRef { slot })
    }

    /// Takes a message (waiting while empty) into a new `Vec`.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`]; [`GetError::Corrupt`].
    pub fn get(&self) -> Result<Vec<u8>, GetError> {
        self.take_block(Block::Until(None))
            .map(|m| m.to_vec())
            .map_err(TryGetError::blocking)
    }

    /// Takes a message, waiting up to `timeout`; never `Empty` before the timeout.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`]; as for [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, TryGetError> {
        self.take_block(Block::timeout(timeout)).map(|m| m.to_vec())
    }

    /// Takes a message if one is there now.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`]; as for [`get`](Self::get).
    pub fn get_nowait(&self) -> Result<Vec<u8>, TryGetError> {
        self.take_block(Block::No).map(|m| m.to_vec())
    }

    /// Takes a message (waiting while empty) into `buf`, replacing its contents and
    /// reusing its allocation; returns the length.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        self.get_into_blocking(buf).map_err(TryGetError::blocking)
    }

    #[inline]
    fn get_into_blocking(&self, buf: &mut Vec<u8>) -> Result<usize, TryGetError> {
        if !self.queue.handle.closed() {
            // The fast path: one message read in place, without moving a guard.
            let copy = |m: &[u8]| {
                buf.clear();
                buf.extend_from_slice(m);
                m.len()
            };
            match self.core().ring.try_pop_with(copy) {
                Ok(n) => return Ok(n),
                Err(PopError::Empty) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let m = self.take_block(Block::Until(None))?;
        buf.clear();
        buf.extend_from_slice(&m);
        Ok(m.len())
    }

    /// Takes a message (waiting while empty) to read in place.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    pub fn get_ref(&self) -> Result<MessageRef<'_>, GetError> {
        self.take_block(Block::Until(None))
            .map_err(TryGetError::blocking)
    }

    /// Takes a message to read in place if one is there now.
    ///
    /// # Errors
    ///
    /// As for [`get_nowait`](Self::get_nowait).
    pub fn get_ref_nowait(&self) -> Result<MessageRef<'_>, TryGetError> {
        self.take_block(Block::No)
    }

    /// Approximate slots in use (a message spans one or more).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn qsize(&self) -> Result<usize, Closed> {
        self.queue.qsize()
    }

    /// Whether the queue looks empty.
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn empty(&self) -> Result<bool, Closed> {
        self.queue.empty()
    }

    /// Whether every slot looks taken.
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn full(&self) -> Result<bool, Closed> {
        self.queue.full()
    }

    /// Closes this handle.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.queue.closed()
    }

    /// Shuts the queue down for every process; see [`Queue::shutdown`].
    pub fn shutdown(&self, immediate: bool) {
        self.queue.shutdown(immediate);
    }

    /// How blocking calls on this handle wait.
    pub fn set_spin(&self, spin: Spin) {
        self.queue.set_spin(spin);
    }
}
