//! Large items written and read in place: a producer process fills 64 KiB frames
//! straight in the queue's slots (`loan`, then `commit`), and the consumer reads each
//! where it lies (`get_ref`) — no copy into or out of the ring, iceoryx2's shape with
//! Python's `Queue` around it. Run with `cargo run --release --example frames`.

use bytemuck::{Pod, Zeroable};
use shmproc::{Process, Queue};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Frame {
    number: u64,
    checksum: u64,
    /// 16 rows of 4 KiB.
    rows: [[u8; 4096]; 16],
}

fn checksum(rows: &[[u8; 4096]; 16]) -> u64 {
    rows.as_flattened()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FRAMES: u64 = 200;
    let q = Queue::<Frame>::new(8)?;
    let mut camera = Process::spawn(|| {
        for n in 0..FRAMES {
            let mut frame = q.loan().expect("a slot");
            for (i, p) in frame.rows.as_flattened_mut().iter_mut().enumerate() {
                *p = (i as u64 ^ n) as u8;
            }
            frame.number = n;
            frame.checksum = checksum(&frame.rows);
            frame.commit();
        }
    })?;
    for n in 0..FRAMES {
        let frame = q.get_ref()?;
        assert_eq!(frame.number, n, "frames arrive in order");
        assert_eq!(frame.checksum, checksum(&frame.rows), "frame {n} is whole");
        // The slot goes back to the camera when `frame` drops.
    }
    camera.join()?;
    println!(
        "{FRAMES} frames of {} KiB read in place",
        size_of::<Frame>() / 1024
    );
    Ok(())
}
