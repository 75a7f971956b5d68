//! The guards: a message claimed and written in place ([`WriteSlot`]), a message
//! taken and read in place ([`ReadSlot`]), and the calls that hand them out.

use super::state::SKIP;
use super::{PopError, PushError, Ring};
use crate::shim;
use std::marker::PhantomData;

/// A claimed message, written in place and published with
/// [`commit`](WriteSlot::commit). Dropping it uncommitted (or a panic while writing)
/// turns it into a SKIP entry that consumers step over, so the ring never wedges.
///
/// A claim stays with the thread that made it (the thread's record names it), so the
/// guard is not `Send`; and with the process that made it: a guard captured by the
/// closure of a forked child is published (or turned into a SKIP entry when
/// dropped) only by the process that claimed it — in the child, `commit` and drop
/// do nothing. Do not move guards into children.
///
/// The buffer is shared memory owned by this producer until the commit; a peer that
/// ignores the protocol could change it meanwhile, and the bytes then published are
/// whatever is there.
#[derive(Debug)]
pub struct WriteSlot<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    span: u64,
    pub(super) rec: usize,
    /// The process that made the claim: only it publishes (see the type docs).
    pid: u32,
    done: bool,
    _thread: PhantomData<*const ()>,
}

impl WriteSlot<'_> {
    /// The message's bytes, `len` of them as claimed (zeroed or left from earlier
    /// messages: write every byte you publish).
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        let idx = self.ring.index(self.pos) as usize;
        // SAFETY: slots idx..idx+span are ours (claimed by our CAS on tail, so no
        // other producer writes them, and consumers read them only after FULL),
        // contiguous (claims never wrap) and inside the data area; len <= span *
        // slot_size.
        unsafe { std::slice::from_raw_parts_mut(self.ring.data(idx), self.len) }
    }

    /// Where the message's bytes start: a shared view of them (through [`buf`]'s
    /// length), for a reader of what this producer has written so far.
    ///
    /// [`buf`]: WriteSlot::buf
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ring.data(self.ring.index(self.pos) as usize)
    }

    /// Publishes the message and wakes a sleeping consumer.
    #[inline]
    pub fn commit(mut self) {
        self.finish(0);
        self.ring.not_empty().notify_one();
    }

    /// Publishes without waking anyone: for batches, which notify once at the end
    /// (see [`Ring::notify_consumers`]).
    #[inline]
    pub fn commit_quiet(mut self) {
        self.finish(0);
    }

    #[inline]
    fn finish(&mut self, flags: u64) {
        self.done = true;
        if self.pid != shim::cached_pid() {
            return; // a copy in a forked child: the claiming process resolves it
        }
        let len = if flags & SKIP != 0 { 0 } else { self.len };
        self.ring
            .finish_claim(self.rec, self.pos, len, self.span, flags);
    }
}

impl Drop for WriteSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.finish(SKIP);
            self.ring.not_empty().notify_all();
        }
    }
}

/// A message taken by a consumer, read in place; its slots are freed when the guard
/// drops. The bytes are shared memory owned by this consumer until then. Not `Send`,
/// and freed only by the process that took it, like [`WriteSlot`].
#[derive(Debug)]
pub struct ReadSlot<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    span: u64,
    pub(super) rec: usize,
    /// The process that took the message: only it frees the slots.
    pid: u32,
    notify: bool,
    _thread: PhantomData<*const ()>,
}

impl ReadSlot<'_> {
    /// The message's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let idx = self.ring.index(self.pos) as usize;
        // SAFETY: the slots pos..pos+span are ours (taken by our CAS on head),
        // contiguous and in bounds (span <= capacity - idx, checked when taken),
        // holding len <= span * slot_size bytes published by the producer's Release
        // store of FULL, which our Acquire load saw.
        unsafe { std::slice::from_raw_parts(self.ring.data(idx), self.len) }
    }

    /// Frees the slots without waking a sleeping producer: for batches, which notify
    /// once at the end (see [`Ring::notify_producers`]).
    #[inline]
    pub fn release_quiet(mut self) {
        self.notify = false;
    }
}

impl Drop for ReadSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.pid != shim::cached_pid() {
            return; // a copy in a forked child: the taking process frees it
        }
        self.ring.finish_take(self.rec, self.pos, self.span);
        if self.notify {
            self.ring.wake_producers();
        }
    }
}

impl Ring {
    /// Claims room for one message of `len` bytes, to be written in place and
    /// committed. Does not block.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] if there is no room now (or all [`RECORDS`] records are
    /// held by other live threads); [`PushError::TooLarge`] if the message can never
    /// fit.
    ///
    /// [`RECORDS`]: super::RECORDS
    #[inline]
    pub fn try_claim(&self, len: usize) -> Result<WriteSlot<'_>, PushError> {
        let (rec, pos, span) = match self.claim_one(len) {
            Some((rec, pos, _)) => (rec, pos, 1),
            None => self.claim_message(len)?,
        };
        Ok(WriteSlot {
            ring: self,
            pos,
            len,
            span,
            rec,
            pid: shim::cached_pid(),
            done: false,
            _thread: PhantomData,
        })
    }

    /// Puts one message of `len` bytes, written in place by `write`. Does not block;
    /// wakes a sleeping consumer.
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim); `write` is not called then.
    pub fn try_push_with(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), PushError> {
        let mut slot = self.try_claim(len)?;
        write(slot.buf());
        slot.commit();
        Ok(())
    }

    /// Takes the next message, to be read in place; its slots are freed when the
    /// guard drops. Steps over SKIP entries. Does not block.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] if there is nothing to take now (or all [`RECORDS`]
    /// records are held by other live threads); [`PopError::Corrupt`] if the ring's
    /// state is inconsistent (a message with impossible meta is dropped and
    /// reported, so the next call can go on).
    ///
    /// [`RECORDS`]: super::RECORDS
    #[inline]
    pub fn try_take(&self) -> Result<ReadSlot<'_>, PopError> {
        let (rec, pos, len, span) = match self.take_one() {
            Some((rec, pos, _, len)) => (rec, pos, len, 1),
            None => {
                let Some(rec) = self.my_record() else {
                    return Err(PopError::Empty);
                };
                let (pos, m) = self.take_message(rec)?;
                (rec, pos, (m & 0xFFFF_FFFF) as usize, (m >> 32) & 0xFFFF)
            }
        };
        Ok(ReadSlot {
            ring: self,
            pos,
            len,
            span,
            rec,
            pid: shim::cached_pid(),
            notify: true,
            _thread: PhantomData,
        })
    }

    /// Takes one message and passes its bytes to `read`, returning what `read`
    /// returns. Does not block; wakes a sleeping producer.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take); `read` is not called then.
    #[inline]
    pub fn try_pop_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        let slot = self.try_take()?;
        Ok(read(slot.bytes()))
    }
}
