//! The steps every claim and take is made of (see "Protocol" in the module docs):
//! intents and the CAS on `tail` or `head`, marks, publishing and freeing entries,
//! and reading an entry's meta.

use super::Ring;
use super::records::NONE;
use super::state::{
    EMPTY, FULL, INLINE_MAX, READING, SKIP, SKIP_ONE, WRITING, decode, meta, state,
};
use crate::shim::{AtomicU64, Ordering};

/// Records the intent `pos..pos+span` in a record's (start, end) words, then moves
/// `index` (`tail` or `head`) from `pos` past it with a CAS; false, with the intent
/// withdrawn, if `index` had moved on.
#[inline(always)]
pub(super) fn move_index(
    index: &AtomicU64,
    start: &AtomicU64,
    end: &AtomicU64,
    pos: u64,
    span: u64,
) -> bool {
    // Release, paired with the Acquire load of `start` in `Record::claims` /
    // `Record::takes`: a repairer that reads this intent also sees the end (and a
    // mark the caller stored before). The CAS (Release; paired with the repairer's
    // Acquire loads of `tail`/`head`) makes the intent visible to anyone who sees the
    // index move.
    end.store(pos.wrapping_add(span), Ordering::Relaxed);
    start.store(pos, Ordering::Release);
    if index
        .compare_exchange(
            pos,
            pos.wrapping_add(span),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_err()
    {
        // Withdrawn (Release, paired with the same Acquire loads): nothing of this
        // attempt is left for a repairer to act on.
        start.store(NONE, Ordering::Release);
        return false;
    }
    true
}

impl Ring {
    /// The first of slots `pos..pos+span` (from index `idx`) that is not free in this
    /// lap, if any.
    #[inline]
    pub(super) fn first_busy(&self, pos: u64, idx: u64, span: u64) -> Option<usize> {
        (0..span).map(|j| (idx + j) as usize).find(|&i| {
            // Paired with the consumer's Release store of EMPTY in `release`.
            self.state(i).load(Ordering::Acquire)
                != state(pos.wrapping_add(i as u64 - idx), EMPTY, 0)
        })
    }

    /// Whether slot `idx` holds a padding (SKIP) entry nobody has taken yet: the one
    /// kind of entry a producer steps over itself rather than wait for a consumer.
    /// Reads only the slot, never `head` (a line the consumers move).
    pub(super) fn padding_at(&self, idx: usize) -> bool {
        let (_, kind, owner) = decode(self.state(idx).load(Ordering::Acquire));
        kind == FULL
            && (owner == SKIP_ONE
                || owner == 0 && self.meta_word(idx).load(Ordering::Relaxed) & SKIP != 0)
    }

    /// Publishes a claim (with `flags`: SKIP for padding or an abandoned claim) and
    /// clears the intent that covered it.
    #[inline]
    pub(super) fn finish_claim(&self, rec: usize, pos: u64, len: usize, span: u64, flags: u64) {
        self.publish(pos, len, span, flags);
        self.finish_intent(rec, pos);
    }

    /// Clears the producer intent at `pos` once its slots' states tell the story.
    #[inline]
    pub(super) fn finish_intent(&self, rec: usize, pos: u64) {
        self.clear_intent(&self.record(rec).prod_pos, rec, pos);
    }

    /// Clears an intent word that still says `pos` (not one a later claim or take
    /// replaced, nor another process's: see `record_is_mine`).
    #[inline]
    fn clear_intent(&self, start: &AtomicU64, rec: usize, pos: u64) {
        if start.load(Ordering::Relaxed) == pos && self.record_is_mine(rec) {
            start.store(NONE, Ordering::Release);
        }
    }

    /// Marks the lead of a claim (`WRITING`) or take (`READING`) this thread still
    /// holds with its record, before its intent moves on to another position.
    pub(super) fn mark(&self, pos: u64, kind: u64, rec: usize) {
        let idx = self.index(pos) as usize;
        // Release, paired with the Acquire loads of slot states in `repair` and
        // `repair_head` (and the AcqRel CAS in `take_over_taken`): a repairer that
        // sees a READING mark also sees the span stored in the meta word just before
        // it (`move_with_intent`).
        self.state(idx)
            .store(state(pos, kind, rec as u64 + 1), Ordering::Release);
    }

    /// If the entry at `head` is a SKIP entry (padding), consumes it, so a producer
    /// never waits for a consumer to step over padding. Whether it did.
    pub(super) fn skip_at_head(&self, rec: usize) -> bool {
        let c = self.control();
        let pos = c.head.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        let word = self.state(idx).load(Ordering::Acquire);
        let span = if word == state(pos, FULL, SKIP_ONE) {
            1
        } else if word == state(pos, FULL, 0) {
            let m = self.meta_word(idx).load(Ordering::Relaxed);
            if m & SKIP == 0 {
                return false;
            }
            self.valid_span(idx, m).unwrap_or(1)
        } else {
            return false;
        };
        if !self.take_at(pos, span, rec) {
            return false;
        }
        self.finish_take(rec, pos, span);
        self.not_full().notify_all();
        true
    }

    /// Claims positions `pos..pos+span` with a CAS on tail, recording the intent
    /// first; false if tail moved on meanwhile (the intent is withdrawn).
    #[inline]
    pub(super) fn claim_at(&self, pos: u64, span: u64, rec: usize) -> bool {
        let r = self.record(rec);
        let tail = &self.control().tail;
        self.move_with_intent(tail, &r.prod_pos, &r.prod_end, WRITING, pos, span, rec)
    }

    /// Takes positions `pos..pos+span` (a message of `span` slots, or a run of
    /// one-slot messages) with a CAS on head, recording the intent first; false if
    /// head moved on meanwhile (the intent is withdrawn).
    #[inline]
    pub(super) fn take_at(&self, pos: u64, span: u64, rec: usize) -> bool {
        let r = self.record(rec);
        let head = &self.control().head;
        self.move_with_intent(head, &r.cons_pos, &r.cons_end, READING, pos, span, rec)
    }

    /// How `tail` and `head` move: mark the lead of an earlier claim or take the
    /// thread still holds with `held_kind`, then [`move_index`]. (The one-slot fast
    /// paths call `move_index` directly, having checked they hold nothing.)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn move_with_intent(
        &self,
        index: &AtomicU64,
        start: &AtomicU64,
        end: &AtomicU64,
        held_kind: u64,
        pos: u64,
        span: u64,
        rec: usize,
    ) -> bool {
        let held = start.load(Ordering::Relaxed);
        if held != NONE {
            // Still holding an earlier one: mark it, so the one intent covers the
            // new one. A take's span goes to its meta word first (the entry is ours
            // until released), for a repairer that must free its slots.
            if held_kind == READING {
                let span = end.load(Ordering::Relaxed).wrapping_sub(held);
                self.meta_word(self.index(held) as usize)
                    .store(meta(0, span, 0), Ordering::Relaxed);
            }
            self.mark(held, held_kind, rec);
        }
        move_index(index, start, end, pos, span)
    }

    /// Frees a taken entry and clears the intent that covered it.
    #[inline]
    pub(super) fn finish_take(&self, rec: usize, pos: u64, span: u64) {
        self.release(pos, span);
        self.finish_take_intent(rec, pos);
    }

    /// Clears the consumer intent at `pos` once its slots are freed.
    #[inline]
    pub(super) fn finish_take_intent(&self, rec: usize, pos: u64) {
        self.clear_intent(&self.record(rec).cons_pos, rec, pos);
    }

    /// The span in the meta word of lead slot `idx`, if it is possible there (the
    /// message must not run past the end of the ring).
    pub(super) fn lead_span(&self, idx: usize) -> Option<u64> {
        self.valid_span(idx, self.meta_word(idx).load(Ordering::Relaxed))
    }

    /// The span in meta word `m` of lead slot `idx`, if the entry is possible there:
    /// one slot at least, not past the end of the ring, its length within its slots.
    /// The one rule every reader of a meta word applies.
    #[inline]
    pub(super) fn valid_span(&self, idx: usize, m: u64) -> Option<u64> {
        let len = m & 0xFFFF_FFFF;
        let span = (m >> 32) & 0xFFFF;
        (span >= 1 && span <= self.capacity - idx as u64 && len <= span * self.slot_size as u64)
            .then_some(span)
    }

    /// Makes the lead slot FULL: a one-slot message with its length in the state
    /// word, anything else with a meta word.
    #[inline]
    pub(super) fn publish(&self, pos: u64, len: usize, span: u64, flags: u64) {
        debug_assert!(span >= 1 && len as u64 <= span * self.slot_size as u64);
        let idx = self.index(pos) as usize;
        let owner = if span == 1 && flags == 0 && (len as u64) < INLINE_MAX {
            len as u64 + 1
        } else {
            self.meta_word(idx)
                .store(meta(len as u64, span, flags), Ordering::Relaxed);
            0
        };
        // Publishes data and meta; paired with the Acquire loads in `take_raw`,
        // `pop_one` and `take_run`.
        self.state(idx)
            .store(state(pos, FULL, owner), Ordering::Release);
    }

    /// The meta of a FULL entry at slot `idx` whose state word has owner field
    /// `owner`: from the state word itself, or from the meta word. An owner field no
    /// FULL entry has (a scribble) gives a meta word no check accepts (span 0).
    #[inline]
    pub(super) fn full_meta(&self, idx: usize, owner: u64) -> u64 {
        match owner {
            0 => self.meta_word(idx).load(Ordering::Relaxed),
            SKIP_ONE => SKIP | 1 << 32,
            o if o <= INLINE_MAX => meta(o - 1, 1, 0),
            _ => 0,
        }
    }

    /// Frees the slots of a taken message: the other slots first, the lead last.
    #[inline]
    pub(super) fn release(&self, pos: u64, span: u64) {
        let idx = self.index(pos);
        for j in 1..span {
            // Paired with the producer's Acquire load in `first_busy`.
            self.state((idx + j) as usize).store(
                state(pos.wrapping_add(j).wrapping_add(self.capacity), EMPTY, 0),
                Ordering::Release,
            );
        }
        self.state(idx as usize).store(
            state(pos.wrapping_add(self.capacity), EMPTY, 0),
            Ordering::Release,
        );
    }
}
