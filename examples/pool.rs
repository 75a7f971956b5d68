//! The Rust twin of Python's Pool example:
//!
//! ```python
//! from multiprocessing import Pool
//! import os
//!
//! def f(x):
//!     return x * x
//!
//! if __name__ == '__main__':
//!     with Pool(processes=3) as pool:
//!         print(pool.map(getpid, range(5)))   # five worker pids, with def getpid(_): return os.getpid()
//!         print(pool.map(f, range(10)))                   # [0, 1, 4, ..., 81]
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!         res = pool.apply_async(f, (20,))
//!         print(res.get(timeout=1))                       # 400
//! ```
//!
//! Run with `cargo run --example pool`.

use shmproc::{Pool, PoolError};
use std::time::Duration;

fn f(x: u64) -> u64 {
    x * x
}

fn worker_pid(_: u32) -> u32 {
    std::process::id()
}

fn main() -> Result<(), PoolError> {
    let pool = Pool::new(3)?;
    // The seed program: each of the five results is a worker's pid, not ours.
    let pids = pool.map(worker_pid, 0..5)?;
    println!("parent {}: worker pids {pids:?}", std::process::id());

    println!("{:?}", pool.map(f, 0..10)?);

    let mut unordered: Vec<u64> = pool.imap_unordered(f, 0..10)?.collect::<Result<_, _>>()?;
    unordered.sort_unstable();
    println!("{unordered:?}");

    let mut res = pool.apply_async(f, 20)?;
    println!("{}", res.get_timeout(Duration::from_secs(1))?);

    // A task that panics fails with the worker's pid and message; the pool goes on.
    match pool.apply(|x: u64| if x > 0 { panic!("no thanks") } else { x }, 1) {
        Err(e) => println!("{e}"),
        Ok(v) => println!("unexpected {v}"),
    }
    pool.close();
    pool.join()
}
