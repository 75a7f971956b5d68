//! Arbitrary bytes as a segment image: header validation must never panic or read out
//! of bounds, and whatever it accepts must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::layout::header::{self, HEADER_SIZE};

fn check(image: &[u8], file_len: u64) {
    if let Ok(info) = header::parse(image, file_len) {
        assert!(info.segment_size <= file_len);
        assert!(info.payload_offset >= HEADER_SIZE as u64);
        assert!(info.payload_offset + info.layout.payload_size <= info.segment_size);
        assert!(info.layout.elem.align.is_power_of_two());
        assert!(info.layout.elem.name.as_str().len() <= header::TYPE_NAME_MAX);
    }
    let _ = header::attached_in(image);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Raw bytes, at the length given and zero-padded to a whole header.
        0 => {
            check(rest, rest.len() as u64);
            let mut padded = rest.to_vec();
            padded.resize(padded.len().max(HEADER_SIZE), 0);
            let len = u64::from(mode) << 4;
            check(&padded, padded.len() as u64);
            check(&padded, len);
        }
        // A valid header with edits, checksum left stale or recomputed, so the checks
        // behind the checksum are reached too.
        m => {
            let image = header::fuzz_image(rest, m == 2);
            check(&image, image.len() as u64);
            check(&image, (image.len() as u64).saturating_sub(u64::from(mode)));
        }
    }
});
