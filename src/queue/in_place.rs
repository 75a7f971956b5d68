//! Typed in-place access to a [`Queue`]: [`Queue::loan`] a slot and write the item
//! where the consumer will read it, [`Queue::get_ref`] to read it there. For large
//! items, where each copy costs more than the hand-off: a consumer that reads part of
//! a 4 KiB item pulls only those cache lines from the producer's core.

use crate::ring::mpmc::{ReadSlot, WriteSlot};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::core::*;
use super::error::*;
use super::{JoinableQueue, Queue};

/// The alignment every slot of a `Queue<T>` has for `T`, up to this: the slots start
/// on a 128-byte boundary (`Ring::attach` checks the mapping) and are
/// `slot_for::<T>()` bytes apart (`Queue::attach_items` checks the header's slot size
/// against it; the handle keeps its own copy), which is `size_of::<T>()` — a
/// multiple of `T`'s alignment — rounded up to 8. No byte in shared memory moves a
/// slot: positions are reduced modulo the handle's own capacity.
const SLOT_ALIGN: usize = 128;

/// A slot loaned from a [`Queue<T>`]: write the item in place through `Deref`/`DerefMut`,
/// then [`commit`](ItemLoan::commit). Dropped uncommitted, it is discarded (consumers
/// never see it). Its initial contents are an earlier item's bytes or zeros (any bytes
/// are a valid `T`): write every field you mean to publish.
///
/// Like every claim it stays with the thread (and process) that made it: not `Send`.
#[derive(Debug)]
pub struct ItemLoan<'a, T> {
    /// A claim of exactly `size_of::<T>()` bytes in one slot, aligned for `T`.
    slot: WriteSlot<'a>,
    /// A [`JoinableQueue`]'s count of unfinished tasks, raised before the commit.
    count: Option<&'a AtomicU64>,
    _item: PhantomData<&'a mut T>,
}

impl<T: Pod> ItemLoan<'_, T> {
    /// Publishes the item and wakes a sleeping consumer.
    pub fn commit(self) {
        if let Some(count) = self.count {
            count.fetch_add(1, Ordering::SeqCst);
        }
        self.slot.commit();
    }
}

impl<T: Pod> Deref for ItemLoan<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: as in `deref_mut`; a shared borrow of the same bytes.
        unsafe { &*self.slot.as_ptr().cast::<T>() }
    }
}

impl<T: Pod> DerefMut for ItemLoan<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let bytes = self.slot.buf();
        // SAFETY: the slot is this producer's until the commit (see `WriteSlot`),
        // `size_of::<T>()` bytes long (the claim's length) and aligned for `T`
        // (see SLOT_ALIGN; `Queue::loan_block` refuses larger alignments); its bytes are initialized (zeroed
        // memory or earlier items) and any bytes are a valid `T` (`T: Pod`).
        unsafe { &mut *bytes.as_mut_ptr().cast::<T>() }
    }
}

/// An item taken from a [`Queue<T>`] and read in place through `Deref`; its slot
/// goes back to the queue when the guard drops. Not `Send`, like [`MessageRef`].
///
/// [`MessageRef`]: super::MessageRef
#[derive(Debug)]
pub struct ItemRef<'a, T> {
    /// A taken message checked to be exactly `size_of::<T>()` bytes, aligned for `T`.
    slot: ReadSlot<'a>,
    _item: PhantomData<&'a T>,
}

impl<T: Pod> Deref for ItemRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is this consumer's until the guard drops (see `ReadSlot`);
        // its message was checked to be `size_of::<T>()` bytes when it was taken
        // (`Queue::take_ref`), it is aligned for `T` (see SLOT_ALIGN), and any bytes
        // are a valid `T`.
        unsafe { &*self.slot.bytes().as_ptr().cast::<T>() }
    }
}

/// Refuses, at compile time, in-place access for a `T` aligned beyond the slots.
const fn assert_slot_aligned<T>() {
    assert!(
        align_of::<T>() <= SLOT_ALIGN,
        "in-place access to a Queue<T> needs align_of::<T>() <= 128; use put/get"
    );
}

impl<T: Pod> Queue<T> {
    /// Loans the next free slot (waiting while the queue is full) to write an item in
    /// place: no copy into the ring, as iceoryx2's `loan`. Commit it to publish.
    ///
    /// ```
    /// use shmproc::Queue;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let q = Queue::<[u64; 512]>::new(4)?;
    /// let mut slot = q.loan()?;
    /// slot[0] = 7;
    /// slot[511] = 9;
    /// slot.commit();
    /// let item = q.get_ref()?;
    /// assert_eq!((item[0], item[511]), (7, 9));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`put_ref`](Queue::put_ref).
    pub fn loan(&self) -> Result<ItemLoan<'_, T>, PutError<()>> {
        self.loan_block(Block::Until(None), None)
            .map_err(TryPutError::blocking)
    }

    /// Loans a slot if one is free now.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`]; as for [`loan`](Queue::loan).
    pub fn try_loan(&self) -> Result<ItemLoan<'_, T>, TryPutError<()>> {
        self.loan_block(Block::No, None)
    }

    /// Loans a slot, waiting up to `timeout` while the queue is full.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if none came free in time; as for [`loan`](Queue::loan).
    pub fn loan_timeout(&self, timeout: Duration) -> Result<ItemLoan<'_, T>, TryPutError<()>> {
        self.loan_block(Block::timeout(timeout), None)
    }

    pub(super) fn loan_block<'a>(
        &'a self,
        block: Block,
        count: Option<&'a AtomicU64>,
    ) -> Result<ItemLoan<'a, T>, TryPutError<()>> {
        const { assert_slot_aligned::<T>() };
        if self.handle.closed() {
            return Err(TryPutError::Closed(()));
        }
        if self.core.shut_down() {
            return Err(TryPutError::ShutDown(()));
        }
        let slot = self
            .core
            .claim(size_of::<T>(), block, &self.handle)
            .map_err(|_| self.full_error(()))?;
        debug_assert!(slot.as_ptr().cast::<T>().is_aligned());
        Ok(ItemLoan {
            slot,
            count,
            _item: PhantomData,
        })
    }

    /// Takes an item (waiting while the queue is empty) to read in place: no copy out
    /// of the ring; only the bytes read cross between the processes' caches. The slot
    /// is freed when the guard drops, so keep it briefly: a full queue waits for it.
    ///
    /// # Errors
    ///
    /// As for [`get`](Queue::get).
    pub fn get_ref(&self) -> Result<ItemRef<'_, T>, GetError> {
        self.take_ref(Block::Until(None))
            .map_err(TryGetError::blocking)
    }

    /// Takes an item to read in place if one is there now.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`]; as for [`get`](Queue::get).
    pub fn get_ref_nowait(&self) -> Result<ItemRef<'_, T>, TryGetError> {
        self.take_ref(Block::No)
    }

    /// Takes an item to read in place, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`] if the queue stayed empty; as for [`get`](Queue::get).
    pub fn get_ref_timeout(&self, timeout: Duration) -> Result<ItemRef<'_, T>, TryGetError> {
        self.take_ref(Block::timeout(timeout))
    }

    fn take_ref(&self, block: Block) -> Result<ItemRef<'_, T>, TryGetError> {
        const { assert_slot_aligned::<T>() };
        if self.handle.closed() {
            return Err(TryGetError::Closed);
        }
        let slot = self
            .core
            .take(block, &self.handle)
            .map_err(|e| self.core.get_error(e))?;
        // The length is a peer's word: checked, like `get`'s. A bad message is
        // dropped (its slot freed with the guard) and reported.
        check_item_len::<T>(slot.bytes().len())?;
        debug_assert!(slot.bytes().as_ptr().cast::<T>().is_aligned());
        Ok(ItemRef {
            slot,
            _item: PhantomData,
        })
    }
}

impl<T: Pod> JoinableQueue<T> {
    /// [`Queue::loan`] for a joinable queue: the commit counts the item as an
    /// unfinished task (before any consumer can take it), as `put` does.
    ///
    /// # Errors
    ///
    /// As for [`Queue::loan`].
    pub fn loan(&self) -> Result<ItemLoan<'_, T>, PutError<()>> {
        self.queue
            .loan_block(Block::Until(None), Some(self.unfinished()))
            .map_err(TryPutError::blocking)
    }

    /// [`Queue::try_loan`], counting the committed item as an unfinished task.
    ///
    /// # Errors
    ///
    /// As for [`Queue::try_loan`].
    pub fn try_loan(&self) -> Result<ItemLoan<'_, T>, TryPutError<()>> {
        self.queue.loan_block(Block::No, Some(self.unfinished()))
    }
}
