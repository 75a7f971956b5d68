//! A test-only check of the map's bookkeeping.

use super::entry::{is_live, split};
use super::{INDEX_BASE, MAX_CLASS, MIN_CLASS, MIN_LOG2, Map, OP_NONE, STRIPES};
use std::sync::atomic::Ordering;

impl Map {
    /// Checks the map's bookkeeping after recovering every stripe and any resize:
    /// every byte of every region handed out is exactly one live record or one free
    /// block (nothing leaked, nothing freed twice), every table is current or free,
    /// and each stripe's count is its live entries.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let _guards = self.lock_all().map_err(|e| format!("{e:?}"))?;
        let header = self.header();
        let desc = header.table.load(Ordering::Relaxed);
        let (t, log2) = self.table(desc).map_err(|e| format!("{e:?}"))?;
        let mut blocks: Vec<Vec<(u64, u64)>> = vec![Vec::new(); STRIPES];
        let mut live = [0u64; STRIPES];
        for i in 0..1u64 << log2 {
            let e = self.bucket(t, log2, i).1.load(Ordering::Relaxed);
            if is_live(e) {
                let (block, class, _) = split(e);
                let s = self.region_of(block).ok_or("entry outside the regions")?;
                blocks[s].push((block, 1 << class));
                live[s] += 1;
            }
        }
        for s in 0..STRIPES {
            let st = self.stripe(s);
            if st.op.load(Ordering::Relaxed) != OP_NONE {
                return Err(format!("stripe {s}: intent left"));
            }
            if st.len.load(Ordering::Relaxed) != live[s] {
                return Err(format!(
                    "stripe {s}: len {} but {} live",
                    st.len.load(Ordering::Relaxed),
                    live[s]
                ));
            }
            for class in MIN_CLASS..=MAX_CLASS {
                let mut at = st.free[class as usize].load(Ordering::Relaxed);
                while at != 0 {
                    blocks[s].push((at, 1 << class));
                    self.check_block(s, at, class)
                        .map_err(|e| format!("{e:?}"))?;
                    // SAFETY: checked.
                    at = unsafe { self.word(at) }.load(Ordering::Relaxed);
                    if blocks[s].len() > 1 << 20 {
                        return Err("a free list with a cycle".into());
                    }
                }
            }
            blocks[s].sort_unstable();
            let mut end = self.region_start(s);
            for &(b, size) in &blocks[s] {
                if b != end {
                    return Err(format!(
                        "stripe {s}: block {b:#x} where {end:#x} was expected (leak or overlap)"
                    ));
                }
                end = b + size;
            }
            if end != self.region_start(s) + st.top.load(Ordering::Relaxed) {
                return Err(format!(
                    "stripe {s}: blocks end at {end:#x}, top says otherwise"
                ));
            }
        }
        let mut tables = vec![(t, 16u64 << log2)];
        for l in MIN_LOG2..=self.geo.max_log2 {
            let mut at = header.free_tables[l as usize].load(Ordering::Relaxed);
            while at != 0 {
                tables.push((at, 16 << l));
                // SAFETY: a table of the index region (checked when freed).
                at = unsafe { self.word(at) }.load(Ordering::Relaxed);
                if tables.len() > 1000 {
                    return Err("a table list with a cycle".into());
                }
            }
        }
        tables.sort_unstable();
        let mut end = INDEX_BASE as u64;
        for &(off, size) in &tables {
            if off != end {
                return Err(format!("table {off:#x} where {end:#x} was expected"));
            }
            end = off + size;
        }
        if end != INDEX_BASE as u64 + header.index_top.load(Ordering::Relaxed) {
            return Err("tables do not add up to the index top".into());
        }
        if header.rz_op.load(Ordering::Relaxed) != OP_NONE {
            return Err("resize intent left".into());
        }
        Ok(())
    }
}
