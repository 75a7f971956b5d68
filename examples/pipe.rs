//! The Rust twin of the Pipe example in Python's multiprocessing documentation:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! Run with `cargo run --example pipe`.

use shmproc::pipe::RecvError;
use shmproc::{Connection, Process, pipe};

fn f(conn: Connection) {
    conn.send(&[42i64, -1]).unwrap();
    conn.send_bytes(b"hello").unwrap();
    conn.close();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent_conn, child_conn) = pipe(true)?;
    let mut p = Process::spawn(move || f(child_conn))?;
    println!("{:?}", parent_conn.recv::<[i64; 2]>()?);
    println!("{}", String::from_utf8_lossy(&parent_conn.recv_bytes()?));
    // The child closed its end: once drained, the parent sees end of file.
    assert_eq!(parent_conn.recv_bytes(), Err(RecvError::Eof));
    p.join()?;
    Ok(())
}
