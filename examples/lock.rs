//! The Rust twin of the `Lock` example in Python's multiprocessing documentation
//! (synchronization between processes):
//!
//! ```python
//! from multiprocessing import Process, Lock
//!
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!
//!     for num in range(10):
//!         Process(target=f, args=(lock, num)).start()
//! ```
//!
//! Without the lock the output of the ten processes could interleave. Run with
//! `cargo run --example lock`.

use shmproc::Process;
use shmproc::sync::{AcquireError, Lock};
use std::io::Write;

fn f(l: &Lock, i: usize) -> Result<(), AcquireError> {
    // The guard releases the lock when it goes out of scope, like `finally`.
    let _guard = l.acquire().map_err(AcquireError::without_guard)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "hello world {i}");
    let _ = out.flush();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?;
    let mut children = Vec::new();
    for num in 0..10 {
        let lock = &lock;
        children.push(Process::spawn_returning(move || f(lock, num))?);
    }
    // Python joins non-daemon children at exit; here, explicitly.
    for mut child in children {
        child.join()?;
    }
    Ok(())
}
