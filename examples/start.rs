//! Spawn and forkserver children in a multithreaded program: the twin of Python's
//!
//! ```python
//! import multiprocessing as mp
//! def worker(q, n):
//!     q.put(sum(range(n)))
//! if __name__ == "__main__":
//!     for method in ("spawn", "forkserver"):
//!         ctx = mp.get_context(method)
//!         q = ctx.Queue()
//!         p = ctx.Process(target=worker, args=(q, 1000))
//!         p.start(); print(method, q.get()); p.join()
//! ```
//!
//! Run with `cargo run --example start`.

use shmproc::start::StartMethod;
use shmproc::{Process, Queue};

fn worker((queue, n): (Queue<u64>, u64)) {
    queue.put((0..n).sum()).unwrap();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing in main: a spawned child (and the forkserver) re-executes this
    // program, and this call turns it into the child.
    shmproc::start::init();
    shmproc::start::start_forkserver()?;
    // A thread that would make fork unsafe: it holds a lock while children start.
    let busy = std::thread::spawn(|| {
        let m = std::sync::Mutex::new(0u64);
        let _held = m.lock().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    });
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let queue = Queue::<u64>::new(4)?;
        let mut child = Process::start(method, worker, (queue.clone(), 1000))?;
        println!("{method} {}", queue.get()?);
        child.join()?;
    }
    busy.join().unwrap();
    Ok(())
}
