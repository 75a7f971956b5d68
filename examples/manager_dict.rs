//! The Rust twin of Python's `Manager().dict()` seed program: five processes each
//! set `return_dict[procnum] = procnum`, and the parent prints the values.
//!
//! ```python
//! import multiprocessing
//!
//! def worker(procnum, return_dict):
//!     return_dict[procnum] = procnum
//!
//! if __name__ == "__main__":
//!     manager = multiprocessing.Manager()
//!     return_dict = manager.dict()
//!     jobs = []
//!     for i in range(5):
//!         p = multiprocessing.Process(target=worker, args=(i, return_dict))
//!         jobs.append(p)
//!         p.start()
//!     for proc in jobs:
//!         proc.join()
//!     print(return_dict.values())
//! ```
//!
//! prints (in some order) `[0, 1, 2, 3, 4]`. Here the dict lives in shared memory:
//! no manager process, no socket round trip or pickle per operation.
//!
//! Run with `cargo run --example manager_dict`.

use shmproc::dict::WriteError;
use shmproc::{Dict, Process};

fn worker(procnum: u32, return_dict: &Dict<u32, u32>) -> Result<(), WriteError> {
    return_dict.insert(procnum, procnum)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let return_dict = Dict::<u32, u32>::new()?;
    let mut jobs = Vec::new();
    for i in 0..5 {
        let return_dict = &return_dict;
        jobs.push(Process::spawn_returning(move || worker(i, return_dict))?);
    }
    for proc in &mut jobs {
        proc.join()?;
    }
    let mut values = return_dict.values()?;
    values.sort();
    println!("{values:?}");
    Ok(())
}
