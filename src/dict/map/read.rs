//! Reading: lock-free lookups validated by bucket versions and the table
//! generation, the locked fallback, and scans of every entry.

use super::entry::{is_live, pad8, record_bytes, split, stripe_of, tag_of};
use super::fault::{Fault, corrupt};
use super::{EMPTY, Item, Look, Map, READ_RETRIES, STRIPES};
use crate::dict::ReadError;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering, fence};

impl Map {
    /// The value stored for `key` (hash `h`), appended to `out`; `false` if absent.
    pub(crate) fn get(&self, key: &[u8], h: u64, out: &mut Vec<u8>) -> Result<bool, ReadError> {
        for _ in 0..READ_RETRIES {
            out.clear();
            match self.look(key, h, out)? {
                Look::Found => return Ok(true),
                Look::Absent => return Ok(false),
                Look::Retry => std::hint::spin_loop(),
            }
        }
        self.get_locked(key, h, out)
    }

    #[cold]
    pub(super) fn get_locked(
        &self,
        key: &[u8],
        h: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, ReadError> {
        let _guard = self.lock(stripe_of(h))?;
        out.clear();
        match self.look(key, h, out)? {
            Look::Found => Ok(true),
            Look::Absent => Ok(false),
            // Nothing of this key changes while we hold its stripe, nor the table.
            Look::Retry => Err(ReadError::Corrupt(
                "a bucket changed under its stripe lock".into(),
            )),
        }
    }

    /// One lock-free lookup (see the module docs).
    pub(super) fn look(&self, key: &[u8], h: u64, out: &mut Vec<u8>) -> Result<Look, Fault> {
        let header = self.header();
        // Acquire: pairs with the resizer's Release bump; the table it names is built.
        let generation = header.generation.load(Ordering::Acquire);
        let desc = header.table.load(Ordering::Acquire);
        let (t, log2) = match self.table(desc) {
            Ok(t) => t,
            Err(e) => return self.unless_moved(generation, e),
        };
        let s = stripe_of(h);
        let tag = tag_of(h);
        for probe in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, h.wrapping_add(probe));
            let v1 = version.load(Ordering::Acquire);
            // Acquire: pairs with the writer's Release publish; the record is written.
            let e = entry.load(Ordering::Acquire);
            if e == EMPTY {
                fence(Ordering::Acquire);
                return Ok(if header.generation.load(Ordering::Relaxed) == generation {
                    Look::Absent
                } else {
                    Look::Retry
                });
            }
            if !is_live(e) || split(e).2 != tag {
                continue;
            }
            let (block, class, _) = split(e);
            // A key of stripe s lives only in stripe s's region: anything else is
            // another stripe's key with our tag (or garbage, which is not ours either).
            if self.region_of(block) != Some(s) {
                continue;
            }
            if let Err(fault) = self.check_block(s, block, class) {
                if self.moved(version, v1, generation) {
                    return Ok(Look::Retry);
                }
                return Err(fault);
            }
            // SAFETY: the block was checked (in bounds, reserved).
            let head = unsafe { self.word(block) }.load(Ordering::Relaxed);
            let (klen, vlen) = ((head & 0xffff_ffff) as usize, (head >> 32) as usize);
            let fits = record_bytes(klen, vlen) <= 1 << class;
            if !fits || klen != key.len() || !self.bytes_equal(block + 8, key) {
                // Not our key — unless the block was freed and reused while we read
                // it: a replace of our key would change this bucket's version, and
                // moving on would report a present key absent.
                if self.moved(version, v1, generation) {
                    return Ok(Look::Retry);
                }
                if !fits {
                    return Err(corrupt(format!(
                        "record at {block:#x} longer than its block"
                    )));
                }
                continue;
            }
            self.read_bytes(block + 8 + pad8(klen as u64), vlen, out);
            return Ok(if self.moved(version, v1, generation) {
                Look::Retry
            } else {
                Look::Found
            });
        }
        // Every bucket probed, none empty (only a scribbled table is like that).
        fence(Ordering::Acquire);
        Ok(if header.generation.load(Ordering::Relaxed) == generation {
            Look::Absent
        } else {
            Look::Retry
        })
    }

    /// Whether the bucket's version or the table generation changed since they read
    /// `v1` and `generation`: the copy just made may be torn.
    #[inline]
    pub(super) fn moved(&self, version: &AtomicU64, v1: u64, generation: u64) -> bool {
        // Acquire fence: if a copied byte was written by a writer that reused the
        // block, that writer's Release (fence before its writes, or the lock chain
        // behind it) makes the bump that preceded the reuse visible here.
        fence(Ordering::Acquire);
        version.load(Ordering::Relaxed) != v1
            || self.header().generation.load(Ordering::Relaxed) != generation
    }

    pub(super) fn unless_moved(&self, generation: u64, fault: Fault) -> Result<Look, Fault> {
        fence(Ordering::Acquire);
        if self.header().generation.load(Ordering::Relaxed) != generation {
            Ok(Look::Retry)
        } else {
            Err(fault)
        }
    }

    /// The stripe whose region holds payload offset `off`.
    pub(super) fn region_of(&self, off: u64) -> Option<usize> {
        let rel = off.checked_sub(self.geo.data_base)?;
        let s = rel / self.geo.region_bytes;
        (s < STRIPES as u64).then_some(s as usize)
    }

    /// Live entries (the sum of the stripes' counts; a snapshot).
    pub(crate) fn len(&self) -> u64 {
        for s in 0..STRIPES {
            self.settle(s);
        }
        (0..STRIPES)
            .map(|s| self.stripe(s).len.load(Ordering::Relaxed).min(1 << 40))
            .sum()
    }

    /// Every (key, value) pair, as bytes, each key once (see `Dict::items`).
    pub(crate) fn items(&self) -> Result<Vec<Item>, ReadError> {
        for _ in 0..16 {
            if let Some(items) = self.scan(false)? {
                return Ok(items);
            }
        }
        // Tables replaced again and again, or buckets changing under every copy: a
        // scan with every stripe locked.
        let _guards = self.lock_all()?;
        self.scan(true)?
            .ok_or_else(|| ReadError::Corrupt("a bucket changed under its stripe lock".into()))
    }

    /// One scan of the current table; `None` if it must be restarted.
    pub(super) fn scan(&self, locked: bool) -> Result<Option<Vec<Item>>, Fault> {
        let header = self.header();
        let generation = header.generation.load(Ordering::Acquire);
        let (t, log2) = match self.table(header.table.load(Ordering::Acquire)) {
            Ok(t) => t,
            Err(e) => return self.unless_moved(generation, e).map(|_| None),
        };
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for i in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, i);
            let mut tries = 0;
            loop {
                let v1 = version.load(Ordering::Acquire);
                let e = entry.load(Ordering::Acquire);
                if !is_live(e) {
                    break;
                }
                match self.copy_record(e) {
                    Ok((k, v)) if !self.moved(version, v1, generation) => {
                        if seen.insert(k.clone()) {
                            items.push((k, v));
                        }
                        break;
                    }
                    Err(fault) if !self.moved(version, v1, generation) => return Err(fault),
                    _ => {}
                }
                if header.generation.load(Ordering::Relaxed) != generation {
                    return Ok(None);
                }
                tries += 1;
                if tries >= READ_RETRIES || locked {
                    return Ok(None);
                }
            }
        }
        Ok(Some(items))
    }

    /// The block of a record entry, with its key and value lengths, checked: the
    /// block lies in its stripe's region and the lengths fit it.
    pub(super) fn record_at(&self, e: u64) -> Result<(u64, usize, usize), Fault> {
        let (block, class, _) = split(e);
        let s = self
            .region_of(block)
            .ok_or_else(|| corrupt(format!("entry {e:#x} outside every region")))?;
        self.check_block(s, block, class)?;
        // SAFETY: checked above.
        let head = unsafe { self.word(block) }.load(Ordering::Relaxed);
        let (klen, vlen) = ((head & 0xffff_ffff) as usize, (head >> 32) as usize);
        if record_bytes(klen, vlen) > 1 << class {
            return Err(corrupt(format!(
                "record at {block:#x} longer than its block"
            )));
        }
        Ok((block, klen, vlen))
    }

    /// A record entry's key and value bytes (see [`record_at`](Map::record_at)); an
    /// unvalidated copy: the caller re-checks the bucket version.
    pub(super) fn copy_record(&self, e: u64) -> Result<(Vec<u8>, Vec<u8>), Fault> {
        let (block, klen, vlen) = self.record_at(e)?;
        let (mut k, mut v) = (Vec::new(), Vec::new());
        self.read_bytes(block + 8, klen, &mut k);
        self.read_bytes(block + 8 + pad8(klen as u64), vlen, &mut v);
        Ok((k, v))
    }

    /// A record entry's value bytes, appended to `out`, without copying its key.
    pub(super) fn copy_value(&self, e: u64, out: &mut Vec<u8>) -> Result<(), Fault> {
        let (block, klen, vlen) = self.record_at(e)?;
        self.read_bytes(block + 8 + pad8(klen as u64), vlen, out);
        Ok(())
    }
}
