//! Repair: resolving the claims and takes of threads and processes that are gone
//! (see "Failure model" in the module docs).

use super::records::Liveness;
use super::state::{
    ANON, ANON_ONE, EMPTY, FULL, INLINE_MAX, READING, SKIP_ONE, STAMP_MASK, WRITING, decode, stamp,
    state,
};
use super::{RECORDS, Ring};
use crate::shim::Ordering;

impl Ring {
    /// Whether the owner named in a WRITING/READING mark is gone (a mark that names
    /// no record counts as gone).
    fn mark_owner_gone(&self, owner: u64, live: &mut Liveness) -> bool {
        owner == 0 || owner > RECORDS as u64 || !live.alive(self, owner as usize - 1)
    }

    /// Resolves claims and takes left unfinished by threads or processes that no
    /// longer exist (see "Failure model" in the module docs). Returns how many
    /// entries were repaired. Cheap when nothing is stuck (a scan of the slot
    /// states); call it when a wait stalls, not on every operation. Needs no record
    /// of its own, so it works even when every record is held by the dead.
    pub fn repair(&self) -> usize {
        let me = self.my_record();
        let mut live = Liveness::default();
        let mut repaired = 0;
        // Unpublished claims at head, one slot at a time: each becomes a one-slot
        // SKIP entry, which this repairer consumes at once (if it has a record) so
        // that the next slot can be judged.
        for _ in 0..self.capacity {
            if !self.repair_head(&mut live) {
                break;
            }
            repaired += 1;
            if !me.is_some_and(|me| self.skip_at_head(me)) {
                break;
            }
        }
        // Taken but never released.
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        for idx in 0..self.capacity as usize {
            let word = self.state(idx).load(Ordering::Acquire);
            let (st, kind, owner) = decode(word);
            if kind != FULL && kind != READING {
                continue;
            }
            // The position with this stamp at or below head.
            let pos = head.wrapping_sub(stamp(head).wrapping_sub(st) & STAMP_MASK);
            if pos == head
                || head.wrapping_sub(pos) > self.capacity
                || self.index(pos) != idx as u64
            {
                continue;
            }
            let gone = if kind == READING {
                self.mark_owner_gone(owner, &mut live)
            } else {
                // FULL behind head: taken, still in its taker's window. Gone if no
                // live record holds the intent.
                !(0..RECORDS).any(|i| self.record(i).takes(pos) && live.alive(self, i))
            };
            if gone && self.take_over_taken(pos, word) {
                repaired += 1;
            }
        }
        if repaired > 0 {
            self.not_empty().notify_all();
            self.not_full().notify_all();
        }
        repaired
    }

    /// If the entry at head is a claim whose claimants are all gone, makes it a
    /// one-slot SKIP entry. Whether it did.
    fn repair_head(&self, live: &mut Liveness) -> bool {
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        // Every intent stored before a CAS that moved tail to here is visible now.
        let tail = c.tail.load(Ordering::Acquire);
        let ahead = tail.wrapping_sub(head);
        if ahead == 0 || ahead > self.capacity {
            return false;
        }
        let idx = self.index(head) as usize;
        let word = self.state(idx).load(Ordering::Acquire);
        let (st, kind, owner) = decode(word);
        if st != stamp(head) {
            return false;
        }
        let gone = match kind {
            EMPTY => !(0..RECORDS).any(|i| self.record(i).claims(head) && live.alive(self, i)),
            WRITING => self.mark_owner_gone(owner, live),
            _ => false,
        };
        // One CAS from the very state judged: a late owner's publish and this
        // repair cannot both happen, and no meta word is written (a repairer that
        // stalls here cannot clobber a later message's).
        gone && self
            .state(idx)
            .compare_exchange(
                word,
                state(head, FULL, SKIP_ONE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Frees a taken message at `pos` whose taker is gone, taking it over from the
    /// state `word` it was judged in. Every step is a CAS, so a repairer that
    /// redoes the work of another (which left an [`ANON`] mark) changes nothing
    /// twice. Whether it did.
    fn take_over_taken(&self, pos: u64, word: u64) -> bool {
        let idx = self.index(pos) as usize;
        let (_, kind, owner) = decode(word);
        // One slot for sure (no meta word to read): a SKIP_ONE, a one-slot message
        // with its length in the state word, or another repairer's ANON_ONE mark.
        let one = owner == SKIP_ONE
            || owner == ANON_ONE
            || kind == FULL && owner != 0 && owner <= INLINE_MAX;
        let taken = state(pos, READING, if one { ANON_ONE } else { ANON });
        if self
            .state(idx)
            .compare_exchange(word, taken, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let span = if one {
            1
        } else {
            self.lead_span(idx).unwrap_or(1)
        };
        for j in 1..span {
            let p = pos.wrapping_add(j);
            // Paired with the producer's Acquire load in `first_busy`.
            let _ = self.state(idx + j as usize).compare_exchange(
                state(p, EMPTY, 0),
                state(p.wrapping_add(self.capacity), EMPTY, 0),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        // Paired with the producer's Acquire load in `first_busy`.
        let _ = self.state(idx).compare_exchange(
            taken,
            state(pos.wrapping_add(self.capacity), EMPTY, 0),
            Ordering::Release,
            Ordering::Relaxed,
        );
        true
    }
}
