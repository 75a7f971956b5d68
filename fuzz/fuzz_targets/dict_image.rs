//! Arbitrary bytes as the memory of a `Dict` (its header, stripe states, first index
//! table and first records): reads, writes, iteration, clear and inspect must never
//! panic, read out of bounds or loop forever — at worst they report `Corrupt` or
//! return wrong data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::Object;
use shmproc::dict::{Dict, DictOptions};
use std::sync::atomic::{AtomicU64, Ordering};

/// The payload layout of a 1 MiB dict (see src/dict/map/mod.rs): the header, 16 stripes
/// of (lock 256 B, state 512 B), the index region, then 16 data regions of 64 KiB.
const STRIPE_STATES: usize = 1024;
const INDEX_BASE: usize = 1024 + 16 * 768;
const DATA_BASE: usize = INDEX_BASE + 4 * 16 * (1 << 17);

fuzz_target!(|data: &[u8]| {
    let Some((&shape, image)) = data.split_first() else {
        return;
    };
    let Ok(d) = Dict::<u64, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20))
    else {
        return;
    };
    // A few honest entries first, so the image overwrites a live map.
    for k in 0..u64::from(shape % 32) {
        let _ = d.insert(k, vec![k as u8; (k * 5 % 40) as usize]);
    }
    let seg = d.segment();
    let base = seg.payload().as_ptr();
    // The image's 8-byte words go, in turn, to: the map header (64 words), the
    // stripe states (64 words each, lock states left alone: an arbitrary owner word
    // would only make every lock wait for its liveness check), the first index table
    // (256 words) and the first records of stripe 0 (the rest).
    let mut spots = Vec::new();
    spots.extend((0..64).map(|w| w * 8));
    for s in 0..16 {
        spots.extend((0..64).map(|w| STRIPE_STATES + s * 768 + 256 + w * 8));
    }
    spots.extend((0..256).map(|w| INDEX_BASE + w * 8));
    spots.extend((0..8192).map(|w| DATA_BASE + w * 8));
    let order = usize::from(shape >> 5);
    for (i, chunk) in image.chunks(9).enumerate() {
        let Some((&skip, word)) = chunk.split_first() else {
            break;
        };
        let mut w = [0u8; 8];
        w[..word.len()].copy_from_slice(word);
        let at = spots[(i * 7 + usize::from(skip) * 64 + order) % spots.len()];
        assert!(at + 8 <= seg.payload_len());
        // SAFETY: in bounds of the payload (checked above), 8-aligned; the dict only
        // reads these words atomically.
        unsafe { AtomicU64::from_ptr(base.add(at).cast()) }
            .store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
    let _ = d.len();
    for k in 0..40u64 {
        let _ = d.get(&k);
    }
    let _ = d.items();
    for k in 0..8u64 {
        let _ = d.insert(k * 3, vec![1; 12]);
        let _ = d.remove(&(k * 5));
    }
    let _ = d.clear();
    let _ = shmproc::inspect::object_state(seg);
});
