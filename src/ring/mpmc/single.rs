//! Single messages: claiming and taking one message, and the copying put and get
//! with their one-slot fast paths.

use super::protocol::move_index;
use super::records::NONE;
use super::state::{
    EMPTY, FULL, INLINE_MAX, OWNER_MASK, READING, SKIP, SKIP_ONE, WRITING, decode, stamp, state,
};
use super::{MAX_SPAN, PopError, PushError, Ring};
use crate::ring::error::{Corrupt, CorruptPart};
use crate::ring::{Dest, copy_bytes};
use crate::shim::Ordering;

/// `take_raw` flags above the meta bits: nothing taken; head is stuck on a state
/// that makes no sense; the meta was impossible.
const RAW_NOTHING: u64 = 1 << 63;
const RAW_STUCK: u64 = 1 << 62;
const RAW_INVALID: u64 = 1 << 61;

impl Ring {
    /// Slots a message of `len` bytes spans.
    #[inline]
    fn span_for(&self, len: usize) -> u64 {
        if len <= self.slot_size {
            return 1; // the common case, without a division
        }
        len.div_ceil(self.slot_size) as u64
    }

    /// Claims room for a message of `len` bytes: (record, position, span). Plain
    /// numbers: the caller builds a guard, or copies, in place.
    #[inline(always)]
    pub(super) fn claim_message(&self, len: usize) -> Result<(usize, u64, u64), PushError> {
        let span = self.span_for(len);
        if span > self.capacity || span > MAX_SPAN || len > u32::MAX as usize {
            return Err(PushError::TooLarge {
                len,
                max: self.max_message(),
            });
        }
        let rec = self.my_record().ok_or(PushError::Full)?;
        let pos = self.claim_raw(rec, span).ok_or(PushError::Full)?;
        Ok((rec, pos, span))
    }

    /// Claims `span` slots at `tail` for a message, first filling the end of the ring
    /// with a SKIP entry if the message would wrap; the position, or `None` if the
    /// ring is full. (Returns a plain number, not a guard: the guard is built inline
    /// by the caller, so it lives in registers.)
    #[inline]
    fn claim_raw(&self, rec: usize, span: u64) -> Option<u64> {
        let c = self.control();
        loop {
            let pos = c.tail.load(Ordering::Acquire);
            let idx = self.index(pos);
            let (span_here, is_pad) = if idx + span > self.capacity {
                (self.capacity - idx, true)
            } else {
                (span, false)
            };
            if let Some(busy) = self.first_busy(pos, idx, span_here) {
                if c.tail.load(Ordering::Acquire) != pos
                    || (self.padding_at(busy) && self.skip_at_head(rec))
                {
                    continue; // tail moved on, or room was made: retry
                }
                return None;
            }
            if !self.claim_at(pos, span_here, rec) {
                continue;
            }
            if is_pad {
                self.finish_claim(rec, pos, 0, span_here, SKIP);
                continue;
            }
            return Some(pos);
        }
    }

    /// Takes the next message (stepping over SKIP entries, dropping and reporting
    /// one with impossible meta): its position and meta word. Plain numbers: the
    /// caller builds a guard, or copies, in place.
    #[inline(always)]
    pub(super) fn take_message(&self, rec: usize) -> Result<(u64, u64), PopError> {
        loop {
            let (pos, m) = self.take_raw(rec);
            if m & RAW_NOTHING != 0 {
                return Err(if m & RAW_STUCK != 0 {
                    self.stuck_at(pos)
                } else {
                    PopError::Empty
                });
            }
            if m & (RAW_INVALID | SKIP) == 0 {
                return Ok((pos, m));
            }
            let span = if m & RAW_INVALID != 0 {
                1
            } else {
                (m >> 32) & 0xFFFF
            };
            self.finish_take(rec, pos, span);
            self.wake_producers();
            if m & RAW_INVALID != 0 {
                return Err(self.invalid_meta(pos, m));
            }
        }
    }

    /// Takes the entry at head with a CAS: its position and meta word, with
    /// [`RAW_INVALID`] set if the meta is impossible (the entry was taken as one
    /// slot), or [`RAW_NOTHING`] (and [`RAW_STUCK`] if head sits on a state that
    /// makes no sense). Plain numbers, so the guard lives in the caller's registers.
    #[inline]
    fn take_raw(&self, rec: usize) -> (u64, u64) {
        let c = self.control();
        let mut stale = 0;
        loop {
            let pos = c.head.load(Ordering::Acquire);
            let idx = self.index(pos) as usize;
            let word = self.state(idx).load(Ordering::Acquire);
            if word == state(pos, FULL, SKIP_ONE) {
                // A one-slot SKIP entry left by a repair (no meta to read).
                if self.take_at(pos, 1, rec) {
                    return (pos, SKIP | 1 << 32);
                }
                continue;
            }
            if word & !OWNER_MASK != state(pos, FULL, 0) {
                let (st, kind, _) = decode(word);
                if st == stamp(pos) && (kind == EMPTY || kind == WRITING) {
                    // Nothing published yet, or still being written.
                    return (pos, RAW_NOTHING);
                }
                if c.head.load(Ordering::Acquire) != pos {
                    continue;
                }
                stale += 1;
                if stale > 64 {
                    if c.tail.load(Ordering::Acquire) == pos {
                        // Empty: the slot's previous lap is not freed yet.
                        return (pos, RAW_NOTHING);
                    }
                    // Tail moved past `pos`, so a producer saw the slot free for `pos`
                    // before its CAS (AcqRel; paired with the Acquire load above): a
                    // look now sees that state or a later one. The model checker
                    // found the race this settles: a repair, a claim and a publish,
                    // all after the last poll. A slot still stale is stuck.
                    let (st, kind, _) = decode(self.state(idx).load(Ordering::Acquire));
                    if st == stamp(pos) && kind != READING {
                        stale = 0;
                        continue; // the next poll returns or takes
                    }
                    return (pos, RAW_NOTHING | RAW_STUCK);
                }
                std::hint::spin_loop();
                continue;
            }
            // FULL(pos) and head == pos: meta is the producer's and stays so until
            // the entry is taken, which our CAS on head decides.
            let m = self.full_meta(idx, word & OWNER_MASK);
            let valid = self.valid_span(idx, m);
            if !self.take_at(pos, valid.unwrap_or(1), rec) {
                continue;
            }
            return (pos, if valid.is_some() { m } else { m | RAW_INVALID });
        }
    }

    #[cold]
    fn stuck_at(&self, pos: u64) -> PopError {
        let idx = self.index(pos) as usize;
        let word = self.state(idx).load(Ordering::Relaxed);
        PopError::Corrupt(Corrupt {
            part: CorruptPart::SlotState,
            at: idx as u64,
            position: pos,
            found: word,
        })
    }

    #[cold]
    fn invalid_meta(&self, pos: u64, m: u64) -> PopError {
        let m = m & !RAW_INVALID;
        PopError::Corrupt(Corrupt {
            part: CorruptPart::SlotMeta,
            at: self.index(pos),
            position: pos,
            found: m,
        })
    }

    /// Copies `msg` into a new message and publishes it. Does not block; wakes a
    /// sleeping consumer. The fastest way to put a message that is already in
    /// memory: no guard, nothing but the copy between the claim and the publish.
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim).
    #[inline(always)]
    pub fn try_push(&self, msg: &[u8]) -> Result<(), PushError> {
        self.push_copy(msg, true)
    }

    /// [`try_push`](Ring::try_push) without waking anyone: for batches, which notify
    /// once at the end (see [`Ring::notify_consumers`]).
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim).
    #[inline(always)]
    pub fn try_push_quiet(&self, msg: &[u8]) -> Result<(), PushError> {
        self.push_copy(msg, false)
    }

    #[inline(always)]
    fn push_copy(&self, msg: &[u8], notify: bool) -> Result<(), PushError> {
        if self.push_one(msg) {
            if notify {
                self.not_empty().notify_one();
            }
            return Ok(());
        }
        self.push_copy_general(msg, notify)
    }

    /// The common case of a put, with nothing general in the way: a message of one
    /// slot, the slot at `tail` free, this thread holding no other claim, and no CAS
    /// lost. The same steps as the general path (intent, CAS, copy, publish, clear),
    /// in a straight line; false (having changed nothing) if any condition fails.
    #[inline(always)]
    fn push_one(&self, msg: &[u8]) -> bool {
        let len = msg.len();
        let Some((rec, pos, idx)) = self.claim_one(len) else {
            return false;
        };
        // SAFETY: slot idx is ours by the claim; len <= slot_size bytes inside the
        // data area (checked by `claim_one`); `msg` is private memory.
        unsafe { copy_bytes(msg.as_ptr(), self.data(idx), len) };
        self.publish(pos, len, 1, 0);
        // The claim is published: the intent no longer matters (Release, paired with
        // the Acquire load in `Record::claims`: who sees it cleared sees FULL).
        self.record(rec).prod_pos.store(NONE, Ordering::Release);
        true
    }

    /// The claim of [`push_one`](Ring::push_one) (and of a one-slot guard): a message
    /// of `len <= slot_size` bytes, the slot at `tail` free, this thread holding no
    /// other claim, no CAS lost. (record, position, slot index: computed once, since
    /// the handle's fields are loaded again after the atomics), or `None` having
    /// changed nothing.
    #[inline(always)]
    pub(super) fn claim_one(&self, len: usize) -> Option<(usize, u64, usize)> {
        if len > self.slot_size || len > u32::MAX as usize {
            return None; // the general path takes it (or says it is too large)
        }
        let rec = self.my_record()?;
        let c = self.control();
        let r = self.record(rec);
        let pos = c.tail.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        // Paired with the consumer's Release store of EMPTY in `release`.
        if self.state(idx).load(Ordering::Acquire) != state(pos, EMPTY, 0)
            || r.prod_pos.load(Ordering::Relaxed) != NONE
        {
            return None;
        }
        // Holding no other claim (checked above), so nothing to mark.
        move_index(&c.tail, &r.prod_pos, &r.prod_end, pos, 1).then_some((rec, pos, idx))
    }

    #[inline(never)]
    fn push_copy_general(&self, msg: &[u8], notify: bool) -> Result<(), PushError> {
        let len = msg.len();
        let (rec, pos, span) = self.claim_message(len)?;
        let idx = self.index(pos) as usize;
        // SAFETY: slots idx..idx+span are ours by the claim (see `WriteSlot::buf`);
        // len <= span * slot_size bytes inside the data area; `msg` is private
        // memory, so the ranges do not overlap. A copy cannot panic, so no guard is
        // needed to publish on unwinding.
        unsafe { copy_bytes(msg.as_ptr(), self.data(idx), len) };
        self.finish_claim(rec, pos, len, span, 0);
        if notify {
            self.not_empty().notify_one();
        }
        Ok(())
    }

    /// Takes one message and copies it into the start of `out`; returns its length.
    /// A message longer than `out` is cut to `out.len()` bytes (the length returned
    /// is still the whole message's). Does not block; wakes a sleeping producer.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take).
    #[inline(always)]
    pub fn try_pop_into(&self, out: &mut [u8]) -> Result<usize, PopError> {
        self.pop_copy(Dest::bytes(out), true)
    }

    /// [`try_pop_into`](Ring::try_pop_into) into memory that need not be initialized
    /// (see [`Dest`]): its first `out.len()` bytes (all, if it is shorter) are written.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take).
    #[inline(always)]
    pub fn try_pop_into_dest(&self, out: Dest<'_>) -> Result<usize, PopError> {
        self.pop_copy(out, true)
    }

    /// [`try_pop_into`](Ring::try_pop_into) without waking anyone: for batches,
    /// which notify once at the end (see [`Ring::notify_producers`]).
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take).
    #[inline(always)]
    pub fn try_pop_into_quiet(&self, out: &mut [u8]) -> Result<usize, PopError> {
        self.pop_copy(Dest::bytes(out), false)
    }

    #[inline(always)]
    fn pop_copy(&self, mut out: Dest<'_>, notify: bool) -> Result<usize, PopError> {
        if let Some(len) = self.pop_one(out.reborrow()) {
            if notify {
                self.wake_producers();
            }
            return Ok(len);
        }
        self.pop_copy_general(out, notify)
    }

    /// The common case of a get, with nothing general in the way: a published
    /// one-slot message at `head` with valid meta, this thread holding no other take,
    /// and no CAS lost. The same steps as the general path (intent, CAS, copy,
    /// release, clear), in a straight line; `None` (having changed nothing) if any
    /// condition fails.
    #[inline(always)]
    fn pop_one(&self, mut out: Dest<'_>) -> Option<usize> {
        let (rec, pos, idx, len) = self.take_one()?;
        // SAFETY: the entry is ours by the take; len <= slot_size bytes published by
        // the producer's Release store of FULL; `out` is private memory.
        unsafe { out.copy_from(self.data(idx), len) };
        self.release(pos, 1);
        // The slot is free: the intent no longer matters (Release, paired with the
        // Acquire load in `Record::takes`: who sees it cleared sees EMPTY).
        self.record(rec).cons_pos.store(NONE, Ordering::Release);
        Some(len)
    }

    /// The take of [`pop_one`](Ring::pop_one) (and of a one-slot guard): a
    /// published one-slot message at `head` with its length in the state word, this
    /// thread holding no other take, no CAS lost. (record, position, slot index,
    /// length), or `None` having changed nothing.
    #[inline(always)]
    pub(super) fn take_one(&self) -> Option<(usize, u64, usize, usize)> {
        let rec = self.my_record()?;
        let c = self.control();
        let r = self.record(rec);
        let pos = c.head.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        // Paired with the producer's Release store of FULL in `publish`.
        let word = self.state(idx).load(Ordering::Acquire);
        // A one-slot message with its length in the state word, a length that fits
        // the slot: anything else (meta words, SKIP entries, a scribbled word) takes
        // the general path.
        let owner = word & OWNER_MASK;
        let len = owner.wrapping_sub(1) as usize; // owner 0 (meta word): too long
        if word & !OWNER_MASK != state(pos, FULL, 0)
            || owner > INLINE_MAX
            || len > self.slot_size
            || r.cons_pos.load(Ordering::Relaxed) != NONE
        {
            return None;
        }
        // Holding no other take (checked above), so nothing to mark.
        move_index(&c.head, &r.cons_pos, &r.cons_end, pos, 1).then_some((rec, pos, idx, len))
    }

    #[inline(never)]
    fn pop_copy_general(&self, mut out: Dest<'_>, notify: bool) -> Result<usize, PopError> {
        let Some(rec) = self.my_record() else {
            return Err(PopError::Empty);
        };
        let (pos, m) = self.take_message(rec)?;
        let span = (m >> 32) & 0xFFFF;
        let len = (m & 0xFFFF_FFFF) as usize;
        let idx = self.index(pos) as usize;
        // SAFETY: the entry is ours by the take, its len <= span * slot_size
        // bytes published by the producer's Release store of FULL (see
        // `ReadSlot::bytes`); `out` is private memory. A copy cannot panic.
        unsafe { out.copy_from(self.data(idx), len) };
        self.finish_take(rec, pos, span);
        if notify {
            self.wake_producers();
        }
        Ok(len)
    }
}
