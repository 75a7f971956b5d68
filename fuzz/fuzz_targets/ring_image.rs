//! Arbitrary bytes as the memory of a ring (the MPMC queue ring and the SPSC pipe
//! ring): taking messages must never panic, read out of bounds or loop forever — at
//! worst it reports `Corrupt` or returns wrong data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::ring::{HeapMemory, mpmc, spsc};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, image)) = data.split_first() else {
        return;
    };
    if shape & 1 == 0 {
        let capacity = u64::from(shape >> 1 & 7) + 1;
        let slot = 8 * (u64::from(shape >> 4) + 1);
        let len = mpmc::Ring::bytes_for(capacity, slot).unwrap();
        // The image covers the ring's first 256 bytes (tail, head) and then the slot
        // control words and data. The thread records between them stay zero (free):
        // a record with an arbitrary owner makes every operation read /proc, and the
        // fuzz inputs (a few KiB) would not reach past the records anyway.
        let data_offset = len - (capacity * slot) as usize;
        let control_offset = data_offset - (capacity as usize * 16).next_multiple_of(128);
        let mem = HeapMemory::with_contents(len, &image[..image.len().min(256)]).unwrap();
        if image.len() > 256 {
            let rest = &image[256..];
            let n = rest.len().min(len - control_offset);
            // SAFETY: control_offset + n <= len bytes of our own memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    rest.as_ptr(),
                    mem.ptr().as_ptr().add(control_offset),
                    n,
                )
            };
        }
        // SAFETY: len bytes of 128-aligned memory, used only through this ring.
        let ring = unsafe { mpmc::Ring::attach(mem.ptr(), len, capacity, slot) }.unwrap();
        // Takes through the guard, the copy (whose one-slot fast path reads the
        // length from the state word) and runs of items, in turn.
        let mut out = [0u8; 64];
        for i in 0..2 * capacity + 2 {
            if i % 3 == 2 {
                let n = ring.try_pop_slice(&mut out, 8);
                assert!(n * 8 <= out.len());
                continue;
            }
            let taken = if i % 2 == 0 {
                ring.try_take()
                    .map(|m| assert!(m.bytes().len() <= ring.max_message()))
            } else {
                ring.try_pop_into(&mut out)
                    .map(|n| assert!(n <= ring.max_message()))
            };
            match taken {
                Ok(()) => {}
                Err(mpmc::PopError::Empty) => break,
                Err(mpmc::PopError::Corrupt(_)) => {}
            }
        }
        let _ = ring.try_push(b"xyz");
        let _ = ring.len();
        if let Ok(mut w) = ring.try_claim(3) {
            w.buf().copy_from_slice(b"abc");
            w.commit();
        }
        let _ = ring.try_pop_with(|b| b.len());
    } else {
        let capacity = 256u64 << (shape >> 1 & 3);
        let len = spsc::Spsc::bytes_for(capacity).unwrap();
        let mem = HeapMemory::with_contents(len, image).unwrap();
        // SAFETY: as above.
        let ring = unsafe { spsc::Spsc::attach(mem.ptr(), len, capacity) }.unwrap();
        let reader = ring.reader();
        for _ in 0..64 {
            match reader.peek() {
                Ok(Some(rec)) => {
                    let mut got = Vec::new();
                    reader.append_to(&rec, &mut got);
                    assert!(got.len() <= ring.max_fragment());
                    reader.consume(&rec);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let _ = ring.writer().try_write(b"xyz", spsc::FIRST);
    }
});
