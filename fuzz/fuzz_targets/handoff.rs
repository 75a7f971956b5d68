//! Arbitrary bytes as a start request's arguments (what a spawned or forkserver
//! child decodes): decoding must never panic, allocate without bound or loop — at
//! worst it reports `Malformed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::start::{Decoder, Portable};

type Args = (u64, String, Vec<u8>, Option<Vec<u32>>, (bool, char, i16), Vec<()>);

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new(data, Vec::new());
    if let Ok(v) = Args::decode(&mut dec) {
        // What decoded encodes back to the bytes it came from.
        if dec.finish().is_ok() {
            let mut enc = shmproc::start::Encoder::default();
            v.encode(&mut enc).unwrap();
            assert_eq!(enc.into_parts().0, data);
        }
    }
    // An object handle over bytes with no descriptors: an error, never a panic.
    let mut dec = Decoder::new(data, Vec::new());
    let _ = shmproc::sync::Lock::decode(&mut dec);
});
