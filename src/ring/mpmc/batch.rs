//! Runs of items: many one-slot messages claimed or taken with one CAS.

use super::state::{EMPTY, FULL, INLINE_MAX, meta, state};
use super::{PushError, Ring};
use crate::ring::copy_bytes;
use crate::shim::Ordering;

impl Ring {
    /// Puts as many of the messages in `items` — `items.len() / item_len` messages of
    /// `item_len` bytes each, at most one slot each — as fit now, claiming a run of
    /// slots with one CAS; returns how many. Wakes nobody: the caller notifies once
    /// (see [`Ring::notify_consumers`]).
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] if `item_len` exceeds a slot. (A full ring is `Ok(0)`.)
    pub fn try_push_slice(&self, items: &[u8], item_len: usize) -> Result<usize, PushError> {
        if item_len > self.slot_size || item_len == 0 && !items.is_empty() {
            return Err(PushError::TooLarge {
                len: item_len,
                max: self.slot_size,
            });
        }
        let count = items.len().checked_div(item_len).unwrap_or(0);
        let Some(rec) = self.my_record() else {
            return Ok(0);
        };
        let mut done = 0;
        while done < count {
            let Some((pos, k)) = self.claim_run(rec, (count - done) as u64) else {
                break;
            };
            let idx = self.index(pos) as usize;
            for j in 0..k as usize {
                let item = &items[(done + j) * item_len..][..item_len];
                // SAFETY: slot idx + j (< capacity: runs never wrap) is ours by the
                // claim; item_len <= slot_size bytes; `items` is private memory.
                unsafe { copy_bytes(item.as_ptr(), self.data(idx + j), item_len) };
                self.publish(pos + j as u64, item_len, 1, 0);
            }
            self.finish_intent(rec, pos);
            done += k as usize;
        }
        Ok(done)
    }

    /// Claims a run of up to `max` single-slot messages at `tail` with one CAS: as
    /// many slots as are free from `tail` on, not past the end of the ring. `None` if
    /// the slot at `tail` is not free (or all [`RECORDS`] records are taken).
    ///
    /// [`RECORDS`]: super::RECORDS
    fn claim_run(&self, rec: usize, max: u64) -> Option<(u64, u64)> {
        let c = self.control();
        loop {
            let pos = c.tail.load(Ordering::Acquire);
            let idx = self.index(pos);
            let limit = max.min(self.capacity - idx);
            // Paired with the consumers' Release stores of EMPTY.
            let k = (0..limit)
                .take_while(|&j| {
                    self.state((idx + j) as usize).load(Ordering::Acquire)
                        == state(pos.wrapping_add(j), EMPTY, 0)
                })
                .count() as u64;
            if k == 0 {
                if c.tail.load(Ordering::Acquire) != pos
                    || (self.padding_at(idx as usize) && self.skip_at_head(rec))
                {
                    continue;
                }
                return None;
            }
            if self.claim_at(pos, k, rec) {
                return Some((pos, k));
            }
        }
    }

    /// Takes as many single-slot messages of exactly `item_len` bytes as are there
    /// now, up to `out.len() / item_len`, with one CAS, and copies them into `out`
    /// one after another; returns how many. Stops before anything else (a SKIP
    /// entry, a longer or shorter message), which [`try_pop_into`](Ring::try_pop_into)
    /// then takes. Wakes nobody: the caller notifies once (see
    /// [`Ring::notify_producers`]).
    pub fn try_pop_slice(&self, out: &mut [u8], item_len: usize) -> usize {
        let max = out.len().checked_div(item_len).unwrap_or(0) as u64;
        let Some(rec) = self.my_record() else {
            return 0;
        };
        let Some((pos, k)) = self.take_run(rec, max, item_len) else {
            return 0;
        };
        let idx = self.index(pos) as usize;
        for j in 0..k as usize {
            // SAFETY: slot idx + j is ours by the take, holding item_len <= slot_size
            // bytes (checked in `take_run`) published by the producer's Release store
            // of FULL; `out` is private memory with room for k items.
            unsafe {
                copy_bytes(
                    self.data(idx + j),
                    out[j * item_len..].as_mut_ptr(),
                    item_len,
                )
            };
        }
        for j in 0..k {
            self.release(pos + j, 1);
        }
        self.finish_take_intent(rec, pos);
        k as usize
    }

    /// Takes a run of up to `max` single-slot messages of `item_len` bytes at head
    /// with one CAS. `None` if the entry at head is not one, or if `item_len` is 0 or
    /// more than a slot holds (so a taken item always lies within its slot).
    fn take_run(&self, rec: usize, max: u64, item_len: usize) -> Option<(u64, u64)> {
        if item_len == 0 || item_len > self.slot_size {
            return None;
        }
        let c = self.control();
        let want = meta(item_len as u64, 1, 0);
        // The state word of such an item published with its length inline, if a
        // length that long can be inline (else only the meta form matches).
        let inline = ((item_len as u64) < INLINE_MAX).then_some(item_len as u64 + 1);
        loop {
            let pos = c.head.load(Ordering::Acquire);
            let idx = self.index(pos);
            let limit = max.min(self.capacity - idx);
            // Paired with the producers' Release stores of FULL; the meta words are
            // theirs until taken, which the CAS below decides.
            let k = (0..limit)
                .take_while(|&j| {
                    let i = (idx + j) as usize;
                    let word = self.state(i).load(Ordering::Acquire);
                    let full = state(pos.wrapping_add(j), FULL, 0);
                    inline.is_some_and(|o| word == full | o)
                        || word == full && self.meta_word(i).load(Ordering::Relaxed) == want
                })
                .count() as u64;
            if k == 0 {
                return None;
            }
            if self.take_at(pos, k, rec) {
                return Some((pos, k));
            }
        }
    }
}
