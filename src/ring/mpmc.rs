//! The MPMC ring: a bounded ring of fixed-size slots over caller-provided memory, for
//! any number of producer and consumer processes, robust to any of them being killed.
//!
//! # Memory layout
//!
//! ```text
//! offset             size        what
//!      0              128        tail: next position producers claim
//!    128              128        head: next position consumers claim
//!    256              128        not_empty: eventcount consumers sleep on
//!    384              128        not_full: eventcount producers sleep on
//!    512              128        user words: 8 atomic u64 (JoinableQueue's task count …)
//!    640              128        user eventcount
//!    768       16 × capacity     slot control: (state, meta) per slot
//!      …  slot_size × capacity   slot data, 128-aligned, contiguous
//! ```
//!
//! Positions (`head`, `tail`) count up forever as u64; slot `pos % capacity` holds
//! position `pos`. A message takes `span` consecutive slots of contiguous data (never
//! wrapping: a message that would wrap is preceded by a padding entry that fills the
//! ring's end).
//!
//! # The slot state word
//!
//! Only the *lead* slot of a message changes state; the other slots of a multi-slot
//! message stay EMPTY at their old position until the message is consumed.
//!
//! ```text
//! bits 63..24  stamp  position mod 2^40 this state refers to
//! bits 23..22  kind   0 EMPTY    free for a producer at position `stamp`
//!                     1 WRITING  claimed by producer `pid` for position `stamp`
//!                     2 FULL     message at `stamp` ready for consumers
//!                     3 READING  claimed by consumer `pid`
//! bits 21..0   pid    owner for WRITING / READING (Linux pids are < 2^22)
//! ```
//!
//! The meta word of a lead slot holds `len` (bits 0..32), `span` (bits 32..48) and
//! flags (bit 48: SKIP, a padding entry or a message abandoned by a dead producer).
//!
//! # Protocol
//!
//! Producer at `tail == pos` (span `k`): check slots `pos..pos+k` are EMPTY at their
//! positions (else the ring is full) → CAS lead EMPTY(pos) → WRITING(pos, me) → store
//! meta → CAS tail `pos → pos+k` (Release) → write the data → store lead FULL(pos)
//! (Release; paired with the consumer's Acquire load of the state).
//!
//! Consumer at `head == pos`: load lead (Acquire); if FULL(pos): CAS → READING(pos, me)
//! → read meta (span) → CAS head `pos → pos+span` → read the data → free the other
//! slots (CAS EMPTY(p) → EMPTY(p+capacity)) → store lead EMPTY(pos+capacity)
//! (Release; paired with the producer's Acquire load when it checks the slot is free).
//!
//! Only the owner of the lead at `tail` advances `tail` (others wait, a few
//! instructions), and likewise for `head`, so nobody needs to know another's span.
//!
//! # Failure model
//!
//! A process killed with SIGKILL leaves at most one lead slot in WRITING or READING
//! with its pid. [`Ring::repair`] (which blocked callers run when a wait stalls) finds
//! such slots whose owner is dead and resolves them:
//!
//! - WRITING by a dead producer: the message it was writing is **lost**; the slot
//!   becomes a SKIP entry (covering the span it had claimed) that consumers step over.
//! - READING by a dead consumer: the message it was taking is **lost** (it had been
//!   taken but not returned); its slots are freed.
//!
//! No other message is lost, none is delivered twice, and none torn: a consumer reads
//! data only after the producer's Release store of FULL, and producers write a slot
//! only after the consumer's Release store of EMPTY.
//!
//! # Trust
//!
//! Every word of the ring may be scribbled on by a peer. The ring keeps its own copy of
//! capacity and slot size (never re-read from shared memory), checks every meta word
//! against them before touching data (so no access is ever out of bounds), and
//! reports an inconsistent ring as [`PopError::Corrupt`] rather than looping forever.

use crate::layout::padded::CachePadded;
use crate::os::proc;
use crate::wait::EventCount;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes before the slot control array.
const CONTROL_OFFSET: usize = 768;
/// Bytes of control per slot: state and meta words.
const CONTROL_SIZE: usize = 16;
/// Stamps are positions modulo 2^40.
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const READING: u64 = 3;

/// Meta flag: a padding entry or a message abandoned by a dead producer.
const SKIP: u64 = 1 << 48;

/// Largest capacity: stamps must tell apart positions in two consecutive laps.
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest message span in slots (the meta word holds 16 bits).
const MAX_SPAN: u64 = u16::MAX as u64;

/// The fixed part of the ring, at the start of its memory.
#[repr(C)]
struct Control {
    /// Next position producers claim. Advanced only by the owner of the lead slot at
    /// `tail` (or by `repair` for a dead owner).
    tail: CachePadded<AtomicU64>,
    /// Next position consumers claim. Advanced only by the owner of the lead slot at
    /// `head` (or by `repair`).
    head: CachePadded<AtomicU64>,
    not_empty: CachePadded<EventCount>,
    not_full: CachePadded<EventCount>,
    user_words: CachePadded<[AtomicU64; 8]>,
    user_event: CachePadded<EventCount>,
}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Control, tail) == 0);
    assert!(offset_of!(Control, head) == 128);
    assert!(offset_of!(Control, not_empty) == 256);
    assert!(offset_of!(Control, not_full) == 384);
    assert!(offset_of!(Control, user_words) == 512);
    assert!(offset_of!(Control, user_event) == 640);
    assert!(size_of::<Control>() == CONTROL_OFFSET);
};

#[inline]
fn stamp(pos: u64) -> u64 {
    pos & STAMP_MASK
}

#[inline]
fn state(stamp_of: u64, kind: u64, pid: u32) -> u64 {
    (stamp(stamp_of) << 24) | (kind << 22) | (u64::from(pid) & PID_MASK)
}

#[inline]
fn decode(word: u64) -> (u64, u64, u32) {
    (word >> 24, (word >> 22) & 3, (word & PID_MASK) as u32)
}

#[inline]
fn meta(len: u64, span: u64, flags: u64) -> u64 {
    (len & 0xFFFF_FFFF) | ((span & 0xFFFF) << 32) | flags
}

/// The current process's pid as stored in state words (cached; no syscall).
#[inline]
fn my_pid() -> u32 {
    proc::cached_pid()
}

/// How many times a producer (consumer) re-reads `tail` (`head`) while another
/// process holds the lead slot there and is about to move it on.
const BUSY_SPINS: u32 = 256;

/// Why a message could not be put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// No room now (or the lead slot at `tail` is mid-claim by another producer).
    Full,
    /// The message can never fit this ring.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message this ring holds.
        max: usize,
    },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring is full"),
            PushError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this ring holds messages of at most {max} bytes"
            ),
        }
    }
}

impl std::error::Error for PushError {}

/// Why no message was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to take now (or the next message is still being written).
    Empty,
    /// The ring's shared state is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring is empty"),
            PopError::Corrupt(why) => write!(f, "ring is corrupt: {why}"),
        }
    }
}

impl std::error::Error for PopError {}

/// Why memory could not be used as a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Capacity 0, above [`MAX_CAPACITY`], or a slot size that is 0 or not a multiple
    /// of 8.
    InvalidParameters {
        /// Capacity asked for.
        capacity: u64,
        /// Slot size asked for.
        slot_size: u64,
    },
    /// The memory is smaller than [`Ring::bytes_for`] says the ring needs.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// The memory is not aligned to 128 bytes.
    Misaligned,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::InvalidParameters {
                capacity,
                slot_size,
            } => write!(
                f,
                "invalid ring parameters: capacity {capacity} (1..={MAX_CAPACITY}), slot size {slot_size} (a non-zero multiple of 8)"
            ),
            LayoutError::TooSmall { needed, given } => {
                write!(f, "ring needs {needed} bytes, got {given}")
            }
            LayoutError::Misaligned => f.write_str("ring memory must be 128-byte aligned"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// A handle to an MPMC ring in memory the caller provides (see the module docs).
///
/// The handle holds the ring's capacity and slot size itself; memory shared with
/// other processes is touched only through atomics and through the data bytes of
/// slots this handle owns by the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    base: NonNull<u8>,
    capacity: u64,
    slot_size: usize,
}

// SAFETY: the ring is designed for concurrent use from many processes; a handle is a
// pointer and two numbers, and every shared access it makes is atomic or covered by
// slot ownership.
unsafe impl Send for Ring {}
// SAFETY: as for Send.
unsafe impl Sync for Ring {}

/// A claimed message, written in place and published with
/// [`commit`](WriteSlot::commit). Dropping it uncommitted (or a panic while writing)
/// turns it into a SKIP entry that consumers step over, so the ring never wedges.
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
    done: bool,
}

impl WriteSlot<'_> {
    /// The message's bytes, `len` of them as claimed (zeroed or left from earlier
    /// messages: write every byte you publish).
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        let idx = (self.pos % self.ring.capacity) as usize;
        // SAFETY: slots idx..idx+span are ours (lead WRITING by us; the others free at
        // their positions, which only the owner of the lead may take), contiguous
        // (claims never wrap) and inside the data area; len <= span * slot_size.
        unsafe { std::slice::from_raw_parts_mut(self.ring.data(idx), self.len) }
    }

    /// Publishes the message and wakes a sleeping consumer.
    #[inline]
    pub fn commit(mut self) {
        self.done = true;
        self.ring.publish(self.pos, self.len, self.span, 0);
        self.ring.not_empty().notify_one();
    }

    /// Publishes without waking anyone: for batches, which notify once at the end
    /// (see [`Ring::notify_consumers`]).
    #[inline]
    pub fn commit_quiet(mut self) {
        self.done = true;
        self.ring.publish(self.pos, self.len, self.span, 0);
    }
}

impl WriteSlot<'_> {
    fn commit_pad(mut self) {
        self.done = true;
        self.ring.publish(self.pos, 0, self.span, SKIP);
    }
}

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ring.publish(self.pos, 0, self.span, SKIP);
            self.ring.not_empty().notify_all();
        }
    }
}

/// A message taken by a consumer, read in place; its slots are freed when the guard
/// drops. The bytes are shared memory owned by this consumer until then.
#[derive(Debug)]
pub struct ReadSlot<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    span: u64,
    notify: bool,
}

impl ReadSlot<'_> {
    /// The message's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let idx = (self.pos % self.ring.capacity) as usize;
        // SAFETY: the slots pos..pos+span are ours (lead READING by us), contiguous
        // and in bounds (span <= capacity - idx, checked when taken), holding
        // len <= span * slot_size bytes published by the producer's Release store of
        // FULL, which our Acquire load saw.
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
    fn drop(&mut self) {
        self.ring.release(self.pos, self.span);
        if self.notify {
            self.ring.not_full().notify_one();
        }
    }
}

impl Ring {
    /// Bytes of memory a ring of `capacity` slots of `slot_size` bytes needs, or
    /// `None` if the parameters are invalid or the size overflows.
    pub fn bytes_for(capacity: u64, slot_size: u64) -> Option<usize> {
        if capacity == 0 || capacity > MAX_CAPACITY || slot_size == 0 || slot_size % 8 != 0 {
            return None;
        }
        let control = usize::try_from(capacity).ok()?.checked_mul(CONTROL_SIZE)?;
        let data_offset = (CONTROL_OFFSET.checked_add(control)?).checked_next_multiple_of(128)?;
        let data = usize::try_from(capacity)
            .ok()?
            .checked_mul(usize::try_from(slot_size).ok()?)?;
        data_offset.checked_add(data)
    }

    fn check(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<(), LayoutError> {
        let needed =
            Ring::bytes_for(capacity, slot_size).ok_or(LayoutError::InvalidParameters {
                capacity,
                slot_size,
            })?;
        if len < needed {
            return Err(LayoutError::TooSmall { needed, given: len });
        }
        if ptr.as_ptr() as usize % 128 != 0 {
            return Err(LayoutError::Misaligned);
        }
        Ok(())
    }

    /// Initializes a ring in zero-filled memory and returns a handle to it.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the parameters are invalid or the memory too small or
    /// misaligned.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as any
    /// handle to the ring is used, zero-filled, and not yet visible to any other user;
    /// afterwards every user (in every process) must access it only through `Ring`
    /// handles with the same capacity and slot size.
    pub unsafe fn init(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<Ring, LayoutError> {
        Ring::check(ptr, len, capacity, slot_size)?;
        let ring = Ring {
            base: ptr,
            capacity,
            slot_size: slot_size as usize,
        };
        for i in 0..capacity {
            ring.state(i as usize)
                .store(state(i, EMPTY, 0), Ordering::Relaxed);
        }
        Ok(ring)
    }

    /// A handle to a ring that [`init`](Ring::init) set up, possibly in another
    /// process.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the parameters are invalid or the memory too small or
    /// misaligned.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as the
    /// handle is used, and be a ring initialized with the same capacity and slot size,
    /// accessed by everyone only through `Ring` handles. (Its *contents* need not be
    /// trusted: a scribbled ring gives errors or wrong data, never out-of-bounds
    /// access.)
    pub unsafe fn attach(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<Ring, LayoutError> {
        Ring::check(ptr, len, capacity, slot_size)?;
        Ok(Ring {
            base: ptr,
            capacity,
            slot_size: slot_size as usize,
        })
    }

    #[inline]
    fn control(&self) -> &Control {
        // SAFETY: the memory holds at least CONTROL_OFFSET bytes, 128-aligned (checked
        // at init/attach), and Control consists only of atomics.
        unsafe { &*self.base.as_ptr().cast::<Control>() }
    }

    #[inline]
    fn state(&self, idx: usize) -> &AtomicU64 {
        debug_assert!((idx as u64) < self.capacity);
        // SAFETY: idx < capacity, so the word lies inside the control array that
        // bytes_for counted; 8-aligned; only accessed atomically.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CONTROL_OFFSET + idx * CONTROL_SIZE)
                .cast::<AtomicU64>()
        }
    }

    #[inline]
    fn meta_word(&self, idx: usize) -> &AtomicU64 {
        debug_assert!((idx as u64) < self.capacity);
        // SAFETY: as for `state`, one word further.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CONTROL_OFFSET + idx * CONTROL_SIZE + 8)
                .cast::<AtomicU64>()
        }
    }

    /// Pointer to the data of slot `idx`.
    #[inline]
    fn data(&self, idx: usize) -> *mut u8 {
        debug_assert!((idx as u64) < self.capacity);
        let offset = (CONTROL_OFFSET + self.capacity as usize * CONTROL_SIZE).next_multiple_of(128);
        // SAFETY: offset + idx * slot_size < bytes_for(capacity, slot_size).
        unsafe { self.base.as_ptr().add(offset + idx * self.slot_size) }
    }

    /// Capacity in slots.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of data per slot.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The largest message the ring can ever hold, in bytes.
    pub fn max_message(&self) -> usize {
        (self.capacity.min(MAX_SPAN) as usize).saturating_mul(self.slot_size)
    }

    /// Slots in use (claimed by producers and not yet freed by consumers), clamped to
    /// `0..=capacity`. A snapshot: it may be stale by the time it is returned.
    pub fn len(&self) -> u64 {
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        let tail = c.tail.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.capacity)
    }

    /// Whether no slot is in use (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The eventcount consumers sleep on; producers notify it after publishing.
    pub fn not_empty(&self) -> &EventCount {
        &self.control().not_empty
    }

    /// The eventcount producers sleep on; consumers notify it after freeing slots.
    pub fn not_full(&self) -> &EventCount {
        &self.control().not_full
    }

    /// Eight atomic words in the ring's memory for the layer above (a task count …).
    pub fn user_words(&self) -> &[AtomicU64; 8] {
        &self.control().user_words
    }

    /// An eventcount in the ring's memory for the layer above.
    pub fn user_event(&self) -> &EventCount {
        &self.control().user_event
    }

    /// Slots a message of `len` bytes spans.
    #[inline]
    fn span_for(&self, len: usize) -> u64 {
        (len.div_ceil(self.slot_size)).max(1) as u64
    }

    /// Claims room for one message of `len` bytes, to be written in place and
    /// committed. Does not block.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] if there is no room now; [`PushError::TooLarge`] if the
    /// message can never fit.
    #[inline]
    pub fn try_claim(&self, len: usize) -> Result<WriteSlot<'_>, PushError> {
        let span = self.span_for(len);
        if span > self.capacity || span > MAX_SPAN || len > u32::MAX as usize {
            return Err(PushError::TooLarge {
                len,
                max: self.max_message(),
            });
        }
        self.claim(len, span)
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

    /// Wakes sleeping consumers (after [`WriteSlot::commit_quiet`]s).
    pub fn notify_consumers(&self) {
        self.not_empty().notify_all();
    }

    /// Wakes sleeping producers (after [`ReadSlot::release_quiet`]s).
    pub fn notify_producers(&self) {
        self.not_full().notify_all();
    }

    /// Claims `span` slots at `tail` for a message of `len` bytes, first filling the
    /// end of the ring with a SKIP entry if the message would wrap.
    fn claim(&self, len: usize, span: u64) -> Result<WriteSlot<'_>, PushError> {
        let c = self.control();
        let me = my_pid();
        loop {
            let pos = c.tail.load(Ordering::Acquire);
            let idx = pos % self.capacity;
            let (span_here, is_pad) = if idx + span > self.capacity {
                (self.capacity - idx, true)
            } else {
                (span, false)
            };
            // All slots must be free at their positions in this lap.
            let lead = self.state(idx as usize).load(Ordering::Acquire);
            if lead != state(pos, EMPTY, 0) {
                let (st, kind, _) = decode(lead);
                if st == stamp(pos) && kind == WRITING && self.tail_moves(pos) {
                    // Another producer held the lead at tail and has moved tail on.
                    continue;
                }
                if c.tail.load(Ordering::Acquire) != pos || self.skip_at_head() {
                    continue; // tail moved on, or room was made: retry
                }
                return Err(PushError::Full);
            }
            let mut all_free = true;
            for j in 1..span_here {
                let w = self.state((idx + j) as usize).load(Ordering::Acquire);
                if w != state(pos.wrapping_add(j), EMPTY, 0) {
                    all_free = false;
                    break;
                }
            }
            if !all_free {
                if c.tail.load(Ordering::Acquire) != pos || self.skip_at_head() {
                    continue;
                }
                return Err(PushError::Full);
            }
            if self
                .state(idx as usize)
                .compare_exchange(
                    lead,
                    state(pos, WRITING, me),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let claim_len = if is_pad { 0 } else { len };
            self.meta_word(idx as usize)
                .store(meta(claim_len as u64, span_here, 0), Ordering::Relaxed);
            // Only the owner of the lead at tail moves tail (a repairer does so only
            // for a dead owner), so a plain store suffices. Publishes the meta word to
            // a repairer that sees the new tail; paired with the Acquire load of tail
            // in `repair_slot`.
            c.tail.store(pos.wrapping_add(span_here), Ordering::Release);
            let claim = WriteSlot {
                ring: self,
                pos,
                len: claim_len,
                span: span_here,
                done: false,
            };
            if is_pad {
                claim.commit_pad();
                continue;
            }
            return Ok(claim);
        }
    }

    /// If the entry at `head` is a SKIP entry (padding), consumes it, so a producer
    /// never waits for a consumer to step over padding. Whether it did.
    fn skip_at_head(&self) -> bool {
        let c = self.control();
        let pos = c.head.load(Ordering::Acquire);
        let idx = (pos % self.capacity) as usize;
        let word = self.state(idx).load(Ordering::Acquire);
        if word != state(pos, FULL, 0) || self.meta_word(idx).load(Ordering::Relaxed) & SKIP == 0 {
            return false;
        }
        if self
            .state(idx)
            .compare_exchange(
                word,
                state(pos, READING, my_pid()),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        let span = self.lead_span(idx).unwrap_or(1);
        self.advance_head(pos, span);
        self.release(pos, span);
        true
    }

    /// The span in the meta word of lead slot `idx`, if it is possible there (the
    /// message must not run past the end of the ring).
    fn lead_span(&self, idx: usize) -> Option<u64> {
        let span = (self.meta_word(idx).load(Ordering::Relaxed) >> 32) & 0xFFFF;
        (span >= 1 && span <= self.capacity - idx as u64).then_some(span)
    }

    /// Moves head from `pos` past a message of `span` slots this process just took:
    /// only the owner of the lead at head moves head, so a plain store suffices.
    #[inline]
    fn advance_head(&self, pos: u64, span: u64) {
        self.control()
            .head
            .store(pos.wrapping_add(span), Ordering::Release);
    }

    /// Moves head from `pos` past a message of `span` slots whose owner died, unless
    /// that owner moved it already (a repairer must never move head back).
    fn move_head(&self, pos: u64, span: u64) {
        let _ = self.control().head.compare_exchange(
            pos,
            pos.wrapping_add(span),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Waits briefly for `tail` to move past `pos`; whether it did.
    fn tail_moves(&self, pos: u64) -> bool {
        let tail = &self.control().tail;
        (0..BUSY_SPINS).any(|_| {
            std::hint::spin_loop();
            tail.load(Ordering::Acquire) != pos
        })
    }

    /// Waits briefly for `head` to move past `pos`; whether it did.
    fn head_moves(&self, pos: u64) -> bool {
        let head = &self.control().head;
        (0..BUSY_SPINS).any(|_| {
            std::hint::spin_loop();
            head.load(Ordering::Acquire) != pos
        })
    }

    /// Stores the meta word and makes the lead slot FULL.
    fn publish(&self, pos: u64, len: usize, span: u64, flags: u64) {
        let idx = (pos % self.capacity) as usize;
        self.meta_word(idx)
            .store(meta(len as u64, span, flags), Ordering::Relaxed);
        // Publishes data and meta; paired with the Acquire load in `try_pop_with`.
        self.state(idx)
            .store(state(pos, FULL, 0), Ordering::Release);
    }

    /// Takes the next message, to be read in place; its slots are freed when the
    /// guard drops. Steps over SKIP entries. Does not block.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] if there is nothing to take now; [`PopError::Corrupt`] if
    /// the ring's state is inconsistent (a message with impossible meta is dropped
    /// and reported, so the next call can go on).
    #[inline]
    pub fn try_take(&self) -> Result<ReadSlot<'_>, PopError> {
        loop {
            if let Some(slot) = self.take_one()? {
                return Ok(slot);
            }
        }
    }

    /// Takes one message and passes its bytes to `read`, returning what `read`
    /// returns. Does not block; wakes a sleeping producer.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take); `read` is not called then.
    pub fn try_pop_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        let slot = self.try_take()?;
        Ok(read(slot.bytes()))
    }

    /// Takes the message at head: `Ok(None)` after consuming a SKIP entry.
    fn take_one(&self) -> Result<Option<ReadSlot<'_>>, PopError> {
        let c = self.control();
        let me = my_pid();
        let mut stale = 0;
        loop {
            let pos = c.head.load(Ordering::Acquire);
            let idx = (pos % self.capacity) as usize;
            let word = self.state(idx).load(Ordering::Acquire);
            if word != state(pos, FULL, 0) {
                let (st, kind, _) = decode(word);
                if st == stamp(pos) && kind == READING && self.head_moves(pos) {
                    // Another consumer took this message and has moved head on.
                    continue;
                }
                if st == stamp(pos) && (kind == EMPTY || kind == WRITING || kind == READING) {
                    // Nothing published yet, or still being written (or taken by a
                    // consumer that is slow to move head on).
                    return Err(PopError::Empty);
                }
                if c.head.load(Ordering::Acquire) != pos {
                    continue;
                }
                stale += 1;
                if stale > 64 {
                    if c.tail.load(Ordering::Acquire) == pos {
                        return Err(PopError::Empty);
                    }
                    return Err(PopError::Corrupt(format!(
                        "slot {idx} at head position {pos} has state {word:#x}"
                    )));
                }
                std::hint::spin_loop();
                continue;
            }
            if self
                .state(idx)
                .compare_exchange(
                    word,
                    state(pos, READING, me),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let m = self.meta_word(idx).load(Ordering::Relaxed);
            let len = (m & 0xFFFF_FFFF) as usize;
            let span = (m >> 32) & 0xFFFF;
            let max_span = self.capacity - idx as u64;
            let valid = span >= 1 && span <= max_span && len <= span as usize * self.slot_size;
            let span = if valid { span } else { 1 };
            self.advance_head(pos, span);
            let slot = ReadSlot {
                ring: self,
                pos,
                len: if valid { len } else { 0 },
                span,
                notify: true,
            };
            if !valid {
                drop(slot);
                return Err(PopError::Corrupt(format!(
                    "slot {idx} holds a message of {len} bytes over {} slots (meta {m:#x})",
                    (m >> 32) & 0xFFFF
                )));
            }
            if m & SKIP != 0 {
                drop(slot);
                return Ok(None);
            }
            return Ok(Some(slot));
        }
    }

    /// Frees the slots of a taken message: the other slots first, the lead last.
    fn release(&self, pos: u64, span: u64) {
        let idx = pos % self.capacity;
        for j in 1..span {
            let p = pos.wrapping_add(j);
            let _ = self.state((idx + j) as usize).compare_exchange(
                state(p, EMPTY, 0),
                state(p.wrapping_add(self.capacity), EMPTY, 0),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        // Frees the lead; paired with the Acquire load in `claim`.
        self.state(idx as usize).store(
            state(pos.wrapping_add(self.capacity), EMPTY, 0),
            Ordering::Release,
        );
    }

    /// The owner pid of the lead slot at `head`, if it is being written or taken; a
    /// stalled consumer checks whether that process is alive.
    pub fn busy_at_head(&self) -> Option<u32> {
        let pos = self.control().head.load(Ordering::Acquire);
        self.owner_at(pos, |kind| kind == WRITING || kind == READING)
    }

    /// The owner pid of the lead slot at `tail`, if another producer is mid-claim.
    pub fn busy_at_tail(&self) -> Option<u32> {
        let pos = self.control().tail.load(Ordering::Acquire);
        self.owner_at(pos, |kind| kind == WRITING)
    }

    /// The pid in the state of the slot for position `pos`, if that state is for
    /// `pos` and of a kind `owned` accepts.
    fn owner_at(&self, pos: u64, owned: impl Fn(u64) -> bool) -> Option<u32> {
        let word = self
            .state((pos % self.capacity) as usize)
            .load(Ordering::Acquire);
        let (st, kind, pid) = decode(word);
        (st == stamp(pos) && owned(kind)).then_some(pid)
    }

    /// Position of `head` (for stall detection: a head that does not move while
    /// producers wait means consumers are stuck or gone).
    pub fn head_position(&self) -> u64 {
        self.control().head.load(Ordering::Acquire)
    }

    /// Finds slots left WRITING or READING by processes that no longer exist and
    /// resolves them (see "Failure model" in the module docs). Returns how many
    /// slots were repaired. Scans the whole ring: call it when a wait stalls, not on
    /// every operation.
    pub fn repair(&self) -> usize {
        let mut repaired = 0;
        let mut dead_cache: Vec<(u32, bool)> = Vec::new();
        let me = my_pid();
        for idx in 0..self.capacity as usize {
            let word = self.state(idx).load(Ordering::Acquire);
            let (_, kind, pid) = decode(word);
            if kind != WRITING && kind != READING || pid == me {
                continue;
            }
            let dead = match dead_cache.iter().find(|(p, _)| *p == pid) {
                Some(&(_, d)) => d,
                None => {
                    let d = !proc::is_alive(pid, 0);
                    dead_cache.push((pid, d));
                    d
                }
            };
            if dead && self.repair_slot(idx, word, me) {
                repaired += 1;
            }
        }
        if repaired > 0 {
            self.not_empty().notify_all();
            self.not_full().notify_all();
        }
        repaired
    }

    /// Resolves one slot whose owner is dead; false if someone else got there first
    /// or the slot's state makes no sense (left alone).
    fn repair_slot(&self, idx: usize, word: u64, me: u32) -> bool {
        let c = self.control();
        let (st, kind, _) = decode(word);
        let cap = self.capacity;
        // Take the slot over, so no other repairer acts on it.
        let taken = state(0, kind, me) | (st << 24);
        if self
            .state(idx)
            .compare_exchange(word, taken, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let m = self.meta_word(idx).load(Ordering::Relaxed);
        let max_span = cap - idx as u64;
        if kind == WRITING {
            // The full position: the one with this stamp at or just below tail.
            let tail = c.tail.load(Ordering::Acquire);
            let pos = tail.wrapping_sub(stamp(tail).wrapping_sub(st) & STAMP_MASK);
            if pos % cap != idx as u64 {
                return false;
            }
            let span = if tail == pos {
                // The producer died before moving tail: abandon one slot.
                let _ = c.tail.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                1
            } else {
                // It moved tail by its span (the meta store precedes that move).
                let span = (m >> 32) & 0xFFFF;
                if span >= 1 && span <= max_span && span <= tail.wrapping_sub(pos) {
                    span
                } else {
                    1
                }
            };
            self.publish(pos, 0, span, SKIP);
        } else {
            let head = c.head.load(Ordering::Acquire);
            let pos = head.wrapping_sub(stamp(head).wrapping_sub(st) & STAMP_MASK);
            if pos % cap != idx as u64 {
                return false;
            }
            let span = self.lead_span(idx).unwrap_or(1);
            self.move_head(pos, span);
            self.release(pos, span);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::collections::VecDeque;

    /// Heap memory for a ring, freed on drop.
    struct Mem {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl Mem {
        fn new(len: usize) -> Mem {
            let layout = Layout::from_size_align(len, 128).unwrap();
            // SAFETY: non-zero size.
            let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
            Mem { ptr, layout }
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            // SAFETY: allocated with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }

    fn ring(capacity: u64, slot: u64) -> (Mem, Ring) {
        let len = Ring::bytes_for(capacity, slot).unwrap();
        let mem = Mem::new(len);
        // SAFETY: fresh zeroed memory of len bytes, used only through this ring.
        let r = unsafe { Ring::init(mem.ptr, len, capacity, slot) }.unwrap();
        (mem, r)
    }

    fn push(r: &Ring, msg: &[u8]) -> Result<(), PushError> {
        r.try_push_with(msg.len(), |b| b.copy_from_slice(msg))
    }

    fn pop(r: &Ring) -> Result<Vec<u8>, PopError> {
        r.try_pop_with(|b| b.to_vec())
    }

    #[test]
    fn layout_checks() {
        assert_eq!(Ring::bytes_for(0, 8), None);
        assert_eq!(Ring::bytes_for(4, 12), None);
        assert_eq!(Ring::bytes_for(4, 8), Some(768 + 128 + 32));
        let mem = Mem::new(1024);
        // SAFETY: the memory is ours; the call fails before touching it.
        let err = unsafe { Ring::init(mem.ptr, 100, 4, 8) }.unwrap_err();
        assert_eq!(
            err,
            LayoutError::TooSmall {
                needed: 928,
                given: 100
            }
        );
    }

    #[test]
    fn fifo_with_wrap_and_multi_slot_messages() {
        let (_m, r) = ring(8, 8);
        assert_eq!(pop(&r), Err(PopError::Empty));
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut next = 0u8;
        let n = if cfg!(miri) { 200 } else { 20_000 };
        for i in 0..n {
            let len = (i * 7) % 30;
            let msg: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            if i % 3 != 2 {
                match push(&r, &msg) {
                    Ok(()) => model.push_back(msg),
                    Err(PushError::Full) => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                match pop(&r) {
                    Ok(got) => assert_eq!(Some(got), model.pop_front()),
                    Err(PopError::Empty) => assert!(model.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(r.len() <= 8);
        }
        while let Some(want) = model.pop_front() {
            assert_eq!(pop(&r).unwrap(), want);
        }
        assert_eq!(pop(&r), Err(PopError::Empty));
        assert!(r.is_empty());
    }

    #[test]
    fn sizes_zero_one_slot_and_the_largest() {
        let (_m, r) = ring(4, 16);
        assert_eq!(r.max_message(), 64);
        push(&r, &[]).unwrap();
        assert_eq!(pop(&r).unwrap(), Vec::<u8>::new());
        push(&r, &[1; 16]).unwrap();
        assert_eq!(pop(&r).unwrap(), vec![1; 16]);
        // The largest message needs the ring empty and aligned: padding first.
        push(&r, &[9; 64]).unwrap();
        assert_eq!(pop(&r).unwrap(), vec![9; 64]);
        assert_eq!(
            push(&r, &[0; 65]),
            Err(PushError::TooLarge { len: 65, max: 64 })
        );
    }

    #[test]
    fn full_hands_back_and_panicking_writer_skips() {
        let (_m, r) = ring(2, 8);
        push(&r, b"a").unwrap();
        push(&r, b"b").unwrap();
        assert_eq!(push(&r, b"c"), Err(PushError::Full));
        assert_eq!(pop(&r).unwrap(), b"a");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.try_push_with(1, |_| panic!("writer panics"))
        }));
        assert!(caught.is_err());
        // The abandoned claim became a SKIP entry: consumers step over it.
        assert_eq!(pop(&r).unwrap(), b"b");
        assert_eq!(pop(&r), Err(PopError::Empty));
        push(&r, b"d").unwrap();
        assert_eq!(pop(&r).unwrap(), b"d");
    }

    #[test]
    fn scribbled_ring_gives_errors_not_ub() {
        let (_m, r) = ring(4, 8);
        push(&r, b"x").unwrap();
        // A peer writes an impossible meta word (span 9 in a 4-slot ring).
        r.meta_word(0).store(meta(72, 9, 0), Ordering::Relaxed);
        assert!(matches!(pop(&r), Err(PopError::Corrupt(_))));
        // The bad entry was dropped; the ring goes on.
        push(&r, b"y").unwrap();
        assert_eq!(pop(&r).unwrap(), b"y");
        // A scribbled state word at head: an error, not an endless loop.
        r.state(2).store(u64::MAX, Ordering::Relaxed);
        r.control().tail.store(100, Ordering::Relaxed);
        assert!(pop(&r).is_err());
    }

    #[test]
    fn repair_resolves_slots_of_dead_processes() {
        let (_m, r) = ring(4, 8);
        push(&r, b"1").unwrap();
        // Fake a producer that died holding the next lead before moving tail (pid
        // 0x3FFFFF is above any real pid_max default, so it is "dead").
        let dead = PID_MASK as u32;
        r.state(1).store(state(1, WRITING, dead), Ordering::Relaxed);
        assert_eq!(r.busy_at_tail(), Some(dead));
        assert_eq!(r.repair(), 1);
        push(&r, b"2").unwrap();
        assert_eq!(pop(&r).unwrap(), b"1");
        assert_eq!(pop(&r).unwrap(), b"2"); // the abandoned slot was skipped
        // A consumer that died mid-read: its slots are freed, the message lost.
        push(&r, b"3").unwrap();
        let head = r.head_position();
        let idx = (head % 4) as usize;
        r.state(idx)
            .store(state(head, READING, dead), Ordering::Relaxed);
        assert_eq!(r.busy_at_head(), Some(dead));
        assert_eq!(r.repair(), 1);
        assert_eq!(pop(&r), Err(PopError::Empty));
        for m in [b"4", b"5", b"6", b"7"] {
            push(&r, m).unwrap();
        }
        assert_eq!(push(&r, b"8"), Err(PushError::Full));
    }

    #[test]
    fn threads_exchange_every_message_exactly_once_in_order_per_producer() {
        const PRODUCERS: u64 = 3;
        const CONSUMERS: usize = 3;
        let per = if cfg!(miri) { 100 } else { 100_000 };
        let (_m, r) = ring(16, 8);
        let done = std::sync::atomic::AtomicU64::new(0);
        let seen = std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let r = &r;
                s.spawn(move || {
                    for i in 0..per {
                        // Sizes 8..24 bytes: one to three slots.
                        let len = 8 + (i % 3) as usize * 8;
                        let mut msg = vec![0u8; len];
                        msg[..8].copy_from_slice(&((p << 56) | i).to_le_bytes());
                        while let Err(e) = push(r, &msg) {
                            assert_eq!(e, PushError::Full);
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let handles: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let (r, done) = (&r, &done);
                    s.spawn(move || {
                        let mut last = [None::<u64>; PRODUCERS as usize];
                        let mut got = Vec::new();
                        while done.load(Ordering::Relaxed) < PRODUCERS * per {
                            match pop(r) {
                                Ok(m) => {
                                    let v = u64::from_le_bytes(m[..8].try_into().unwrap());
                                    let (p, i) = ((v >> 56) as usize, v & ((1 << 56) - 1));
                                    assert_eq!(m.len(), 8 + (i % 3) as usize * 8);
                                    if let Some(prev) = last[p] {
                                        assert!(i > prev, "producer {p}: {i} after {prev}");
                                    }
                                    last[p] = Some(i);
                                    got.push(v);
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(PopError::Empty) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all: Vec<u64> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            all.sort_unstable();
            all
        });
        // Every message exactly once: no loss, no duplicate.
        let mut want: Vec<u64> = (0..PRODUCERS)
            .flat_map(|p| (0..per).map(move |i| (p << 56) | i))
            .collect();
        want.sort_unstable();
        assert!(
            seen == want,
            "{} delivered, {} sent",
            seen.len(),
            want.len()
        );
        assert_eq!(pop(&r), Err(PopError::Empty));
    }
}
