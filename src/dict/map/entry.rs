//! Keys' hashes and the packing of bucket entries and record sizes.

use super::{MAX_CLASS, MIN_CLASS, STRIPES, TOMB};

/// A 64-bit hash of a key's bytes under a map's `seed`, the same in every process
/// and build (a map's layout depends on it: never change it without bumping the
/// layout version). The seed, drawn at the map's creation, makes the keys that
/// collide differ from map to map, so a program cannot be fed a fixed set of
/// colliding keys; it is a fast mixing hash, not a cryptographic PRF.
#[inline]
pub(crate) fn hash_seeded(seed: u64, bytes: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = 0x243f_6a88_85a3_08d3 ^ (bytes.len() as u64).wrapping_mul(M) ^ seed;
    if (1..=8).contains(&bytes.len()) {
        // One word (every integer key): the loop below, unrolled to its one round.
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        return fmix((h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29));
    }
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29);
    }
    fmix(h)
}

/// murmur3's fmix64.
#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
pub(super) fn stripe_of(h: u64) -> usize {
    (h >> 60) as usize & (STRIPES - 1)
}

#[inline]
pub(super) fn tag_of(h: u64) -> u64 {
    (h >> 44) & 0xffff
}

#[inline]
pub(super) fn make_entry(block: u64, class: u32, tag: u64) -> u64 {
    (block >> 3) | (u64::from(class) << 40) | (tag << 48)
}

#[inline]
pub(super) fn is_live(entry: u64) -> bool {
    entry > TOMB
}

/// (block offset, class, tag) of a live entry.
#[inline]
pub(super) fn split(entry: u64) -> (u64, u32, u64) {
    (
        (entry & ((1 << 40) - 1)) << 3,
        ((entry >> 40) & 63) as u32,
        entry >> 48,
    )
}

#[inline]
pub(super) fn pad8(n: u64) -> u64 {
    n.next_multiple_of(8)
}

/// Bytes of a record: header word, key padded to 8, value.
pub(super) fn record_bytes(klen: usize, vlen: usize) -> u64 {
    8 + pad8(klen as u64) + vlen as u64
}

/// The class (log2 size) of a block for `bytes`, `None` above [`MAX_CLASS`].
pub(super) fn class_for(bytes: u64) -> Option<u32> {
    let class = bytes.next_power_of_two().trailing_zeros().max(MIN_CLASS);
    (class <= MAX_CLASS && bytes <= 1 << MAX_CLASS).then_some(class)
}

/// The largest record a map of `region_bytes` regions holds.
pub(crate) fn max_record(region_bytes: u64) -> u64 {
    (1u64 << MAX_CLASS).min(1 << region_bytes.ilog2())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_pack_and_classes_round_up() {
        let e = make_entry(0x1234_5678, 9, 0xabcd);
        assert_eq!(split(e), (0x1234_5678, 9, 0xabcd));
        assert!(is_live(e));
        assert_eq!(class_for(1), Some(MIN_CLASS));
        assert_eq!(class_for(17), Some(5));
        assert_eq!(class_for(1 << MAX_CLASS), Some(MAX_CLASS));
        assert_eq!(class_for((1 << MAX_CLASS) + 1), None);
        assert_eq!(record_bytes(3, 5), 8 + 8 + 5);
    }

    /// The hash as first written (one loop for every length): the one-word fast
    /// path must give the same values, or existing maps would lose their keys.
    fn reference_hash(seed: u64, bytes: &[u8]) -> u64 {
        const M: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = 0x243f_6a88_85a3_08d3 ^ (bytes.len() as u64).wrapping_mul(M) ^ seed;
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29);
        }
        fmix(h)
    }

    #[test]
    fn the_fast_path_hashes_as_the_loop() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..40 {
            for _ in 0..50 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
                assert_eq!(
                    hash_seeded(x, &bytes),
                    reference_hash(x, &bytes),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn hash_spreads_stripes() {
        let mut seen = [0u32; STRIPES];
        for i in 0u64..1600 {
            seen[stripe_of(hash_seeded(0x5eed, &i.to_ne_bytes()))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
