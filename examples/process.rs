//! The Rust twin of the first example in Python's multiprocessing documentation:
//!
//! ```python
//! from multiprocessing import Process
//!
//! def f(name):
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     p = Process(target=f, args=('bob',))
//!     p.start()
//!     p.join()
//! ```
//!
//! Run with `cargo run --example process`.

use shmproc::Process;

fn f(name: &str) {
    println!("hello {name} (from pid {})", std::process::id());
}

fn main() -> std::io::Result<()> {
    let mut p = Process::spawn(|| f("bob"))?;
    let status = p.join()?;
    println!("child {} ended with {status}", p.pid());
    Ok(())
}
