//! Arbitrary bytes as a segment image: header validation must never panic or read out
//! of bounds, and whatever it accepts must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::layout::header::{self, HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the "file length" fstat would report; the rest is the
    // image. Also try the honest length.
    let (len_bytes, image) = data.split_at(data.len().min(8));
    let mut claimed = [0u8; 8];
    claimed[..len_bytes.len()].copy_from_slice(len_bytes);
    for file_len in [u64::from_le_bytes(claimed), image.len() as u64] {
        if let Ok(info) = header::parse(image, file_len) {
            assert!(info.segment_size <= file_len);
            assert!(info.payload_offset >= HEADER_SIZE as u64);
            assert!(info.payload_offset + info.layout.payload_size <= info.segment_size);
            assert!(info.layout.elem.align.is_power_of_two());
        }
    }
    let _ = header::attached_in(image);
});
