//! The SPSC byte ring: length-prefixed records for one writer and one reader, over
//! caller-provided memory. The `Pipe` uses one per direction.
//!
//! # Memory layout
//!
//! ```text
//! offset  size      what
//!      0   128      write position (bytes, counts up forever); written by the writer
//!    128   128      read position; written by the reader
//!    256   128      readable: eventcount the reader sleeps on (8 bytes), then at
//!                   264 the reader's presence word (8 bytes, see below)
//!    384   128      writable: eventcount the writer sleeps on
//!    512   capacity record data (capacity a power of two, >= 256)
//! ```
//!
//! # Records
//!
//! Every record starts at a 16-byte boundary with a 16-byte header — fragment length
//! (u32), flags (u32), and a stamp (u64, its position + 1) — followed by the
//! fragment, padded to 16 bytes. Records never wrap: when a record does not fit before the end of the
//! data area, the writer fills the rest with a PAD record. A message longer than
//! [`Spsc::max_fragment`] travels as several fragments, the first flagged FIRST, all
//! but the last flagged MORE, so any size streams through a small ring.
//!
//! # Protocol
//!
//! The writer writes a record's length, flags and bytes, then its stamp (Release;
//! paired with the reader's Acquire load of the stamp). The reader polls the stamp at
//! its read position — the line the record itself is on, so a hand-off moves one
//! cache line, not an index line and then a data line — reads the record, then stores
//! the new read position (Release; paired with the writer's Acquire load before it
//! reuses the space). The writer keeps the read position in a local cache and reloads
//! it only when the cache says the ring is full. The write position is stored too,
//! for `used()` and tools; the reader never needs it.
//!
//! The reader's presence word is not part of the protocol: the ring never reads or
//! writes it. It is zero in fresh memory, and the owner of the reading side may
//! publish there whether anyone still reads (the Pipe keeps a count of the processes
//! holding the receiving end). It shares the line of the `readable` eventcount, whose
//! waiter count the writer loads after every write to decide whether to wake the
//! reader, so a writer that looks at it on every write loads no extra line.
//!
//! # Trust
//!
//! Positions and headers may be scribbled on by a peer: the reader checks every
//! header (length, flags, bounds against the capacity and the published write
//! position) before touching data, and reports [`Corrupt`] instead of reading out of
//! bounds or looping.

use crate::layout::padded::CachePadded;
use crate::shim::{AtomicU64, Ordering};
use crate::wait::EventCount;
use std::cell::Cell;
use std::ptr::NonNull;

const CONTROL_SIZE: usize = 512;
const HEADER: usize = 16;

/// The record is the first fragment of a message.
pub const FIRST: u32 = 1;
/// More fragments of the same message follow.
pub const MORE: u32 = 2;
/// Padding to the end of the data area; carries nothing.
const PAD: u32 = 4;

#[repr(C)]
struct Control {
    write: CachePadded<AtomicU64>,
    read: CachePadded<AtomicU64>,
    readable: CachePadded<ReadableLine>,
    writable: CachePadded<EventCount>,
}

/// The line the reader sleeps on, and the reader side's presence word beside it.
#[repr(C)]
struct ReadableLine {
    event: EventCount,
    /// Never touched by the ring (see the module docs); zero in fresh memory.
    presence: std::sync::atomic::AtomicU64,
}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Control, write) == 0);
    assert!(offset_of!(Control, read) == 128);
    assert!(offset_of!(Control, readable) == 256);
    assert!(offset_of!(ReadableLine, event) == 0);
    assert!(offset_of!(ReadableLine, presence) == 8);
    assert!(size_of::<ReadableLine>() == 16);
    assert!(offset_of!(Control, writable) == 384);
    assert!(size_of::<Control>() == CONTROL_SIZE);
};

use super::error::CorruptPart;
pub use super::error::{Corrupt, LayoutError};

/// A handle to an SPSC byte ring in caller-provided memory (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Spsc {
    base: NonNull<u8>,
    capacity: u64,
}

// SAFETY: the ring is built for concurrent use by two processes; the handle is a
// pointer and a number, and every shared access is atomic or covered by the record
// protocol.
unsafe impl Send for Spsc {}
// SAFETY: as for Send.
unsafe impl Sync for Spsc {}

/// One record as the reader found it, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Read position of its header.
    pos: u64,
    /// Fragment length in bytes (checked against the ring by `peek`; private, so a
    /// caller cannot make the reader copy past the record).
    len: usize,
    /// [`FIRST`] and/or [`MORE`].
    flags: u32,
}

impl Record {
    /// Fragment length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the fragment is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`FIRST`] and/or [`MORE`].
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

impl Spsc {
    /// Bytes of memory a ring of `capacity` data bytes needs; `None` unless
    /// `capacity` is a power of two of at least 256 (and the sum fits).
    pub fn bytes_for(capacity: u64) -> Option<usize> {
        if capacity < 256 || !capacity.is_power_of_two() {
            return None;
        }
        CONTROL_SIZE.checked_add(usize::try_from(capacity).ok()?)
    }

    fn check(ptr: NonNull<u8>, len: usize, capacity: u64) -> Result<(), LayoutError> {
        let needed = Spsc::bytes_for(capacity).ok_or(LayoutError::InvalidParameters {
            capacity,
            slot_size: 0,
        })?;
        if len < needed {
            return Err(LayoutError::TooSmall { needed, given: len });
        }
        if ptr.as_ptr() as usize % 128 != 0 {
            return Err(LayoutError::Misaligned);
        }
        Ok(())
    }

    /// A handle to a ring in zero-filled memory (zeros are an empty ring, so the same
    /// call serves the creator and every later user).
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if `capacity` is invalid or the memory too small or misaligned.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as the
    /// handle is used, zero-filled when first used as a ring, and afterwards accessed
    /// by everyone only through `Spsc` handles of the same capacity, with at most one
    /// process writing and one reading at a time.
    pub unsafe fn attach(ptr: NonNull<u8>, len: usize, capacity: u64) -> Result<Spsc, LayoutError> {
        Spsc::check(ptr, len, capacity)?;
        Ok(Spsc {
            base: ptr,
            capacity,
        })
    }

    #[inline]
    fn control(&self) -> &Control {
        // SAFETY: the memory holds CONTROL_SIZE bytes, 128-aligned (checked at attach),
        // and Control consists only of atomics.
        unsafe { &*self.base.as_ptr().cast::<Control>() }
    }

    /// Pointer to data byte `idx` (`idx <= capacity`: one past the end is the start
    /// of an empty fragment in the ring's last header slot).
    #[inline]
    fn data(&self, idx: usize) -> *mut u8 {
        debug_assert!((idx as u64) <= self.capacity);
        // SAFETY: CONTROL_SIZE + idx <= bytes_for(capacity).
        unsafe { self.base.as_ptr().add(CONTROL_SIZE + idx) }
    }

    /// The stamp word of the record header at position `pos`.
    #[inline]
    fn stamp(&self, pos: u64) -> &AtomicU64 {
        let idx = (pos & (self.capacity - 1) & !15) as usize;
        // SAFETY: idx is 16-aligned and below capacity, so bytes idx+8..idx+16 are in
        // the data area and 8-aligned (the area starts 128-aligned); stamps are only
        // accessed atomically.
        unsafe { AtomicU64::from_ptr(self.data(idx + 8).cast()) }
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The longest fragment: a quarter of the ring less a header, so the writer can
    /// fill one part while the reader drains another.
    pub fn max_fragment(&self) -> usize {
        (self.capacity as usize / 4 - HEADER) & !15
    }

    /// The eventcount the reader sleeps on.
    pub fn readable(&self) -> &EventCount {
        &self.control().readable.event
    }

    /// The reader's presence word, on the line of [`readable`](Spsc::readable): the
    /// ring never uses it (see the module docs); zero in fresh memory.
    pub fn reader_presence(&self) -> &std::sync::atomic::AtomicU64 {
        &self.control().readable.presence
    }

    /// The eventcount the writer sleeps on.
    pub fn writable(&self) -> &EventCount {
        &self.control().writable
    }

    /// The reader's position: bytes it has consumed, counting up forever (a
    /// snapshot; a writer that sees it move knows the reader is at work). Acquire;
    /// paired with the reader's Release store in `consume`.
    pub fn read_position(&self) -> u64 {
        self.control().read.load(Ordering::Acquire)
    }

    /// Bytes written and not yet read (a snapshot, clamped to the capacity).
    pub fn used(&self) -> u64 {
        let c = self.control();
        let w = c.write.load(Ordering::Acquire);
        let r = c.read.load(Ordering::Acquire);
        w.wrapping_sub(r).min(self.capacity)
    }

    /// The writer's side, with its cache of the read position.
    pub fn writer(&self) -> Writer {
        Writer {
            ring: *self,
            cached_read: Cell::new(0),
        }
    }

    /// The reader's side, with its cache of the write position.
    pub fn reader(&self) -> Reader {
        Reader { ring: *self }
    }
}

/// The writing side of an [`Spsc`] ring. Not `Sync`: one writer at a time.
#[derive(Debug)]
pub struct Writer {
    ring: Spsc,
    /// Last read position seen; the reader only moves it forward, so a stale value
    /// only understates the free space.
    cached_read: Cell<u64>,
}

impl Writer {
    /// The ring.
    pub fn ring(&self) -> &Spsc {
        &self.ring
    }

    /// Writes one record holding `fragment` (at most [`Spsc::max_fragment`] bytes) if
    /// there is room now, and publishes it. Does not notify: the caller does, once per
    /// message or batch. Returns whether it was written.
    ///
    /// # Panics
    ///
    /// Never for a peer's bytes; `debug_assert!`s that `fragment` is at most
    /// `max_fragment` bytes (longer fragments are cut to it in release builds — the
    /// caller's contract).
    #[inline(always)]
    pub fn try_write(&self, fragment: &[u8], flags: u32) -> bool {
        debug_assert!(fragment.len() <= self.ring.max_fragment());
        let fragment = &fragment[..fragment.len().min(self.ring.max_fragment())];
        let cap = self.ring.capacity;
        let c = self.ring.control();
        let w = c.write.load(Ordering::Relaxed);
        if w % 16 != 0 {
            // Only a scribbling peer misaligns the write position: refuse to write
            // rather than write out of bounds.
            return false;
        }
        let need = (HEADER + fragment.len().next_multiple_of(16)) as u64;
        let idx = w & (cap - 1);
        let to_end = cap - idx;
        let total_need = if need <= to_end { need } else { to_end + need };
        let cached_used = w.wrapping_sub(self.cached_read.get());
        if cached_used > cap || cap - cached_used < total_need {
            // Paired with the reader's Release store of the read position: the space
            // it freed is no longer being read.
            self.cached_read.set(c.read.load(Ordering::Acquire));
            let used = w.wrapping_sub(self.cached_read.get());
            if used > cap || cap - used < total_need {
                return false;
            }
        }
        let mut at = w;
        if need > to_end {
            self.write_header(at, (to_end as usize - HEADER) as u32, PAD);
            self.ring
                .stamp(at)
                .store(at.wrapping_add(1), Ordering::Release);
            at = at.wrapping_add(to_end);
        }
        self.write_header(at, fragment.len() as u32, flags & (FIRST | MORE));
        let idx = (at & (cap - 1)) as usize;
        // SAFETY: the record [at, at + need) is free (checked above), contiguous
        // (need <= cap - idx after padding) and inside the data area.
        unsafe {
            super::copy_bytes(
                fragment.as_ptr(),
                self.ring.data(idx + HEADER),
                fragment.len(),
            );
        }
        // Publishes the record; paired with the reader's Acquire load of the stamp.
        self.ring
            .stamp(at)
            .store(at.wrapping_add(1), Ordering::Release);
        c.write.store(at.wrapping_add(need), Ordering::Release);
        true
    }

    #[inline]
    fn write_header(&self, at: u64, len: u32, flags: u32) {
        let idx = (at & (self.ring.capacity - 1)) as usize;
        let mut h = [0u8; 8];
        h[0..4].copy_from_slice(&len.to_ne_bytes());
        h[4..8].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: idx is 16-aligned and idx + 16 <= capacity (records and pads are
        // multiples of 16); the space is free (checked by the caller).
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), self.ring.data(idx), 8) };
    }
}

/// The reading side of an [`Spsc`] ring. Not `Sync`: one reader at a time.
#[derive(Debug)]
pub struct Reader {
    ring: Spsc,
}

impl Reader {
    /// The ring.
    pub fn ring(&self) -> &Spsc {
        &self.ring
    }

    /// The next record, if one is published; PAD records are consumed on the way.
    ///
    /// # Errors
    ///
    /// [`Corrupt`] if positions or the header make no sense.
    #[inline(always)]
    pub fn peek(&self) -> Result<Option<Record>, Corrupt> {
        let cap = self.ring.capacity;
        let c = self.ring.control();
        loop {
            let r = c.read.load(Ordering::Relaxed);
            if r % 16 != 0 {
                return Err(Corrupt {
                    part: CorruptPart::ReadPosition,
                    at: 0,
                    position: r,
                    found: r,
                });
            }
            // Paired with the writer's Release store of the stamp: the record's
            // header and bytes are complete.
            if self.ring.stamp(r).load(Ordering::Acquire) != r.wrapping_add(1) {
                return Ok(None);
            }
            let idx = (r & (cap - 1)) as usize;
            let mut h = [0u8; 8];
            // SAFETY: idx is 16-aligned, so idx + 16 <= capacity; the record is
            // published (its stamp matched).
            unsafe { std::ptr::copy_nonoverlapping(self.ring.data(idx), h.as_mut_ptr(), 8) };
            let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let flags = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
            let to_end = cap as usize - idx;
            if flags == PAD {
                if len != to_end - HEADER {
                    return Err(Corrupt {
                        part: CorruptPart::Padding,
                        at: idx as u64,
                        position: r,
                        found: len as u64,
                    });
                }
                // Releases the padding; paired with the writer's Acquire load.
                c.read
                    .store(r.wrapping_add(to_end as u64), Ordering::Release);
                continue;
            }
            let size = HEADER + len.next_multiple_of(16);
            if flags & !(FIRST | MORE) != 0 || len > self.ring.max_fragment() || size > to_end {
                return Err(Corrupt {
                    part: CorruptPart::RecordHeader,
                    at: idx as u64,
                    position: r,
                    found: (len as u64) << 32 | u64::from(flags),
                });
            }
            return Ok(Some(Record { pos: r, len, flags }));
        }
    }

    /// Copies the first `dst.len()` bytes (at most `record.len`) of a record returned
    /// by [`peek`](Reader::peek) into `dst`; returns how many.
    ///
    /// The ring hands out copies, never a `&[u8]` into its memory: that memory
    /// belongs to the writer again once the record is consumed, and a writer in
    /// another process may scribble on it at any time (the trust model). Copied
    /// before [`consume`](Reader::consume), the bytes are the writer's record; copied
    /// after, they may be anything, but never out of bounds.
    #[inline(always)]
    pub fn copy_to(&self, record: &Record, dst: &mut [u8]) -> usize {
        let n = dst.len().min(record.len);
        let idx = (record.pos & (self.ring.capacity - 1)) as usize;
        // SAFETY: `peek` checked idx + 16 + len <= capacity, and `Record`s come only
        // from `peek` (its fields are private), so the source is in the data area;
        // `dst` is a distinct, writable buffer of at least `n` bytes.
        unsafe { super::copy_bytes(self.ring.data(idx + HEADER), dst.as_mut_ptr(), n) };
        n
    }

    /// Appends a record's bytes to `out` (see [`copy_to`](Reader::copy_to)).
    #[inline]
    pub fn append_to(&self, record: &Record, out: &mut Vec<u8>) {
        let idx = (record.pos & (self.ring.capacity - 1)) as usize;
        out.reserve(record.len);
        let spare = out.spare_capacity_mut();
        // SAFETY: as in `copy_to`, the source holds `record.len` bytes of the data
        // area; `spare` has room for at least `record.len` bytes (reserved above).
        unsafe {
            super::copy_bytes(
                self.ring.data(idx + HEADER),
                spare.as_mut_ptr().cast::<u8>(),
                record.len,
            );
        }
        // SAFETY: the `record.len` bytes after the old length were just written.
        unsafe { out.set_len(out.len() + record.len) };
    }

    /// Frees a record's space (does not notify the writer: the caller does).
    #[inline(always)]
    pub fn consume(&self, record: &Record) {
        let size = (HEADER + record.len.next_multiple_of(16)) as u64;
        // Releases the space; paired with the writer's Acquire load.
        self.ring
            .control()
            .read
            .store(record.pos.wrapping_add(size), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::HeapMemory;

    fn ring(cap: u64) -> (HeapMemory, Spsc) {
        let len = Spsc::bytes_for(cap).unwrap();
        let m = HeapMemory::new(len).unwrap();
        // SAFETY: fresh zeroed memory used only through this ring.
        let r = unsafe { Spsc::attach(m.ptr(), len, cap) }.unwrap();
        (m, r)
    }

    #[test]
    fn records_round_trip_with_padding() {
        let (_m, ring) = ring(256);
        let (w, r) = (ring.writer(), ring.reader());
        assert_eq!(ring.max_fragment(), 48);
        assert_eq!(r.peek(), Ok(None));
        for i in 0..1000usize {
            let msg: Vec<u8> = (0..i % 49).map(|b| (b + i) as u8).collect();
            assert!(w.try_write(&msg, FIRST));
            let rec = r.peek().unwrap().unwrap();
            assert_eq!((rec.len, rec.flags), (msg.len(), FIRST));
            let mut got = Vec::new();
            r.append_to(&rec, &mut got);
            assert_eq!(got, msg);
            r.consume(&rec);
        }
        assert_eq!(r.peek(), Ok(None));
    }

    #[test]
    fn the_presence_word_is_the_owners_alone() {
        let (_m, ring) = ring(256);
        let (w, r) = (ring.writer(), ring.reader());
        let p = ring.reader_presence();
        assert_eq!(p.load(std::sync::atomic::Ordering::Relaxed), 0);
        p.store(5, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..20 {
            assert!(w.try_write(b"x", FIRST));
            let rec = r.peek().unwrap().unwrap();
            r.consume(&rec);
        }
        ring.readable().notify_all();
        assert_eq!(p.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(ring.readable().waiters(), 0);
    }

    #[test]
    fn full_ring_refuses_then_accepts() {
        let (_m, ring) = ring(256);
        let (w, r) = (ring.writer(), ring.reader());
        let mut n = 0;
        while w.try_write(&[1; 48], FIRST) {
            n += 1;
        }
        assert_eq!(n, 4); // 4 records of 64 bytes
        let rec = r.peek().unwrap().unwrap();
        r.consume(&rec);
        assert!(w.try_write(&[2; 48], FIRST));
        assert!(!w.try_write(&[], FIRST));
    }

    #[test]
    fn scribbled_positions_and_headers_are_errors() {
        let (_m, ring) = ring(256);
        let (w, r) = (ring.writer(), ring.reader());
        assert!(w.try_write(b"hello", FIRST));
        // A header claiming more than a fragment may hold.
        // SAFETY: offset 0 of the data area, 4 bytes, no one else uses the ring.
        unsafe { std::ptr::copy_nonoverlapping(1000u32.to_ne_bytes().as_ptr(), ring.data(0), 4) };
        assert!(r.peek().is_err());
        // A misaligned read position.
        ring.control().read.store(3, Ordering::Relaxed);
        assert!(r.peek().is_err());
    }

    #[test]
    fn threads_stream_many_messages() {
        let (_m, ring) = ring(1024);
        let n = if cfg!(miri) { 100 } else { 100_000u32 };
        std::thread::scope(|s| {
            s.spawn(|| {
                let w = ring.writer();
                for i in 0..n {
                    let len = (i % 200) as usize;
                    let msg = vec![i as u8; len];
                    while !w.try_write(&msg, FIRST) {
                        std::hint::spin_loop();
                    }
                }
            });
            let r = ring.reader();
            for i in 0..n {
                let rec = loop {
                    if let Some(rec) = r.peek().unwrap() {
                        break rec;
                    }
                    std::hint::spin_loop();
                };
                let mut got = Vec::new();
                r.append_to(&rec, &mut got);
                assert_eq!(got, vec![i as u8; (i % 200) as usize]);
                r.consume(&rec);
            }
        });
    }
}
