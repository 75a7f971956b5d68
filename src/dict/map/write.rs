//! Writing: finding a key under its stripe lock, publishing a new entry through the
//! intent record, and clearing the map.

use super::entry::{is_live, split, stripe_of, tag_of};
use super::fault::Fault;
use super::{
    Action, Decide, EMPTY, Map, OP_FREE, OP_NONE, OP_PUBLISH, Place, STRIPES, TOMB, WRITE_ROUNDS,
    crash_point,
};
use crate::dict::WriteError;
use std::sync::atomic::Ordering;

impl Map {
    /// Where `key` is in the current table (its stripe lock held).
    pub(super) fn find(&self, key: &[u8], h: u64) -> Result<(Place, u64, u32), Fault> {
        let (t, log2) = self.table(self.header().table.load(Ordering::Acquire))?;
        let s = stripe_of(h);
        let tag = tag_of(h);
        let mut free = None;
        for probe in 0..1u64 << log2 {
            let i = h.wrapping_add(probe) & ((1 << log2) - 1);
            let (_, entry) = self.bucket(t, log2, i);
            let e = entry.load(Ordering::Acquire);
            let bucket = t + 16 * i;
            if e == EMPTY {
                return Ok((
                    Place::Absent {
                        free: free.or(Some(bucket)),
                    },
                    t,
                    log2,
                ));
            }
            if e == TOMB {
                free = free.or(Some(bucket));
                continue;
            }
            let (block, _, etag) = split(e);
            if etag != tag || self.region_of(block) != Some(s) {
                continue;
            }
            // Records of our stripe do not change while we hold its lock.
            let (block, klen, _) = self.record_at(e)?;
            if klen == key.len() && self.bytes_equal(block + 8, key) {
                return Ok((Place::Present { bucket, entry: e }, t, log2));
            }
        }
        Ok((Place::Absent { free }, t, log2))
    }

    /// Changes `key` (hash `h`) as `decide` says, given its current value; returns
    /// the value it had. `decide` may run more than once (after a resize) and only
    /// its last answer counts.
    pub(crate) fn modify(
        &self,
        key: &[u8],
        h: u64,
        decide: &mut Decide<'_>,
    ) -> Result<Option<Vec<u8>>, WriteError> {
        let mut old = Vec::new();
        Ok(self.modify_into(key, h, decide, &mut old)?.then_some(old))
    }

    /// [`modify`](Map::modify), the value the key had written into `old` (cleared
    /// first): whether it had one.
    pub(crate) fn modify_into(
        &self,
        key: &[u8],
        h: u64,
        decide: &mut Decide<'_>,
        old: &mut Vec<u8>,
    ) -> Result<bool, WriteError> {
        let s = stripe_of(h);
        for _ in 0..WRITE_ROUNDS {
            let guard = self.lock(s)?;
            let (place, t, log2) = self.find(key, h)?;
            match place {
                Place::Present { bucket, entry } => {
                    // Our stripe's records do not change while we hold its lock.
                    old.clear();
                    self.copy_value(entry, old)?;
                    match decide(Some(old))? {
                        Action::Keep => {}
                        Action::Put(value) => {
                            let new = self.write_record(s, h, key, &value)?;
                            self.publish(s, bucket, entry, new)?;
                        }
                        Action::Remove => self.publish(s, bucket, entry, TOMB)?,
                    }
                    return Ok(true);
                }
                Place::Absent { free } => {
                    let used = self.header().used.load(Ordering::Relaxed);
                    let crowded = used.saturating_add(STRIPES as u64) >= (3 << log2) / 4;
                    let Some(free) = free.filter(|_| !crowded) else {
                        drop(guard);
                        self.resize(t | u64::from(log2))?;
                        continue;
                    };
                    let value = match decide(None)? {
                        Action::Put(value) => value,
                        Action::Keep | Action::Remove => return Ok(false),
                    };
                    let new = self.write_record(s, h, key, &value)?;
                    if self.insert_new(s, t, log2, free, new)? {
                        return Ok(false);
                    }
                    drop(guard);
                    self.resize(t | u64::from(log2))?;
                }
            }
        }
        Err(WriteError::Full(
            "the index did not make room after several resizes".into(),
        ))
    }

    /// Publishes `new` over the live entry `old` in `bucket` (a replace, or TOMB for
    /// a removal), then frees `old`'s block.
    pub(super) fn publish(&self, s: usize, bucket: u64, old: u64, new: u64) -> Result<(), Fault> {
        let st = self.stripe(s);
        let len = st.len.load(Ordering::Relaxed);
        let len_after = if new == TOMB {
            len.saturating_sub(1)
        } else {
            len
        };
        st.bucket.store(bucket, Ordering::Relaxed);
        st.old.store(old, Ordering::Relaxed);
        st.new.store(new, Ordering::Relaxed);
        st.len_after.store(len_after, Ordering::Relaxed);
        st.op.store(OP_PUBLISH, Ordering::Release);
        crash_point();
        // SAFETY: a bucket `find` returned from the checked table, stable under our
        // lock (no resize without it).
        let (version, entry) = unsafe { (self.word(bucket), self.word(bucket + 8)) };
        // Release: publishes the record; paired with the readers' Acquire load.
        entry.store(new, Ordering::Release);
        crash_point();
        // Release: orders the bump after the publish for readers that re-check it;
        // every later free (and reuse) of the old block comes after it.
        version.fetch_add(1, Ordering::Release);
        crash_point();
        st.len.store(len_after, Ordering::Relaxed);
        crash_point();
        st.op.store(OP_FREE, Ordering::Release);
        crash_point();
        self.free_entry(s, old);
        st.op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Publishes the new entry `new` into the first free bucket from `free` on (CAS
    /// from EMPTY or TOMB: other stripes claim buckets too); `false` (the block
    /// returned) if the table has no free bucket left.
    pub(super) fn insert_new(
        &self,
        s: usize,
        t: u64,
        log2: u32,
        free: u64,
        new: u64,
    ) -> Result<bool, Fault> {
        let st = self.stripe(s);
        let len_after = st.len.load(Ordering::Relaxed).saturating_add(1);
        st.old.store(EMPTY, Ordering::Relaxed);
        st.new.store(new, Ordering::Relaxed);
        st.len_after.store(len_after, Ordering::Relaxed);
        st.bucket.store(free, Ordering::Relaxed);
        st.op.store(OP_PUBLISH, Ordering::Release);
        crash_point();
        let start = (free - t) / 16;
        for probe in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, start + probe);
            let bucket = t + 16 * ((start + probe) & ((1 << log2) - 1));
            let cur = entry.load(Ordering::Relaxed);
            if is_live(cur) {
                continue;
            }
            st.bucket.store(bucket, Ordering::Release);
            crash_point();
            // Release: publishes the record (paired with the readers' Acquire load);
            // Acquire on failure is not needed (we only move on).
            if entry
                .compare_exchange(cur, new, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                crash_point();
                version.fetch_add(1, Ordering::Release);
                crash_point();
                st.len.store(len_after, Ordering::Relaxed);
                crash_point();
                if cur == EMPTY {
                    self.header().used.fetch_add(1, Ordering::Relaxed);
                }
                st.op.store(OP_NONE, Ordering::Release);
                return Ok(true);
            }
        }
        // No free bucket: give the block back.
        self.free_entry(s, new);
        st.op.store(OP_NONE, Ordering::Release);
        Ok(false)
    }

    /// Removes every entry, stripe by stripe (each stripe under its lock).
    pub(crate) fn clear(&self) -> Result<(), WriteError> {
        for s in 0..STRIPES {
            let _guard = self.lock(s)?;
            let (t, log2) = self.table(self.header().table.load(Ordering::Acquire))?;
            for i in 0..1u64 << log2 {
                let (_, entry) = self.bucket(t, log2, i);
                let e = entry.load(Ordering::Acquire);
                if is_live(e) && self.region_of(split(e).0) == Some(s) {
                    self.publish(s, t + 16 * i, e, TOMB)?;
                }
            }
        }
        Ok(())
    }
}
