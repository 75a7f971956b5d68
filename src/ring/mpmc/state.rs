//! The slot state word and meta word: their fields, the entry kinds and the owner
//! values with a meaning of their own (see "The slot state word" in the module docs).

/// Stamps are positions modulo 2^40.
const STAMP_BITS: u32 = 40;
pub(super) const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
pub(super) const OWNER_MASK: u64 = (1 << 22) - 1;
/// Owner of a READING mark made by a repairer: nobody in particular, so other
/// repairers may redo the work (every step of it is a CAS, so redoing is harmless).
pub(super) const ANON: u64 = OWNER_MASK - 1;
/// [`ANON`] for a one-slot message (whose state word was all there was to it).
pub(super) const ANON_ONE: u64 = OWNER_MASK - 2;
/// Largest owner field of a FULL entry that holds its message's length (+ 1).
pub(super) const INLINE_MAX: u64 = OWNER_MASK - 3;
/// Owner field of a FULL entry that is a one-slot SKIP made by a repairer: the state
/// word alone says so, so the repair is one CAS and writes no meta word.
pub(super) const SKIP_ONE: u64 = OWNER_MASK;

pub(super) const EMPTY: u64 = 0;
pub(super) const WRITING: u64 = 1;
pub(super) const FULL: u64 = 2;
pub(super) const READING: u64 = 3;

/// Meta flag: a padding entry or a message abandoned by a dead producer.
pub(super) const SKIP: u64 = 1 << 48;

#[inline]
pub(super) fn stamp(pos: u64) -> u64 {
    pos & STAMP_MASK
}

#[inline]
pub(super) fn state(stamp_of: u64, kind: u64, owner: u64) -> u64 {
    (stamp(stamp_of) << 24) | (kind << 22) | (owner & OWNER_MASK)
}

#[inline]
pub(super) fn decode(word: u64) -> (u64, u64, u64) {
    (word >> 24, (word >> 22) & 3, word & OWNER_MASK)
}

#[inline]
pub(super) fn meta(len: u64, span: u64, flags: u64) -> u64 {
    (len & 0xFFFF_FFFF) | ((span & 0xFFFF) << 32) | flags
}
