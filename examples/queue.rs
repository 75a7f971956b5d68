//! The Rust twin of the Queue example in Python's multiprocessing documentation:
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def f(q):
//!     q.put([42, None, 'hello'])
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     p = Process(target=f, args=(q,))
//!     p.start()
//!     print(q.get())    # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! Items are plain-old-data (no pickling): here a `#[repr(C)]` struct. Byte messages
//! of any length go through a `ByteQueue`. Run with `cargo run --example queue`.

use bytemuck::{Pod, Zeroable};
use shmproc::{ByteQueue, Process, Queue};

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Item {
    answer: i64,
    maybe: i64, // Python's None, as a sentinel
    greeting: [u8; 8],
}

fn f(q: &Queue<Item>, bytes: &ByteQueue) {
    q.put(Item {
        answer: 42,
        maybe: -1,
        greeting: *b"hello\0\0\0",
    })
    .unwrap();
    bytes.put("and a message of any length".as_bytes()).unwrap();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::<Item>::new(16)?;
    let bytes = ByteQueue::new(16, 64)?;
    let mut p = Process::spawn(|| f(&q, &bytes))?;
    println!("{:?}", q.get()?);
    println!("{}", String::from_utf8_lossy(&bytes.get()?));
    p.join()?;
    Ok(())
}
