//! `pipe()` and `Connection`: Python's `multiprocessing.Pipe` on shared memory, one
//! SPSC byte ring ([`crate::ring::spsc`]) per direction.
//!
//! | Python | shmproc |
//! |---|---|
//! | `a, b = Pipe()` / `Pipe(duplex=False)` | [`pipe`]`(true)` / [`pipe`]`(false)` (`a` receives, `b` sends) |
//! | `send(obj)` / `recv()` | [`Connection::send`] / [`Connection::recv`] (plain-old-data values) |
//! | `send_bytes(buf, offset, size)` | [`Connection::send_bytes`], [`Connection::send_bytes_range`] |
//! | `recv_bytes()` / `recv_bytes_into(buf, offset)` | [`Connection::recv_bytes`] / [`Connection::recv_bytes_into`] |
//! | `poll(timeout)` | [`Connection::poll`] |
//! | `close()`, `closed`, `readable`, `writable` | [`Connection::close`], [`Connection::closed`], … |
//! | `EOFError`, `BufferTooShort` | [`RecvError::Eof`], [`RecvError::BufferTooShort`] (carrying the message) |
//! | `multiprocessing.connection.wait(conns, timeout)` | [`wait`] |
//! | `connection.wait([conn, process.sentinel, …])` | [`wait_any`] with [`Waitable`] |
//!
//! Messages of any size: a message longer than a quarter of the ring streams through
//! it in fragments, reassembled by the receiver; messages never merge and an empty
//! message is a message.
//!
//! # End of file, like an OS pipe
//!
//! Each end keeps a small registry of the processes holding it: the creator, every
//! child started with [`Process`](crate::Process) while the end was alive (a forked
//! child holds copies of everything, as it holds copies of file descriptors in
//! Python), and processes that opened it by name. Closing or dropping a `Connection`
//! removes its entry. A receiver gets [`RecvError::Eof`] once the ring is drained and
//! every holder of the other end has closed it or died — including by SIGKILL (found
//! by a liveness check when a wait stalls). Unlike Python, a process's own inherited
//! copy of the other end does not keep its receives from seeing EOF unless it has
//! used that copy.
//!
//! A send to a pipe whose other end is gone in that sense fails with
//! [`SendError::BrokenPipe`] and writes nothing (Python's `BrokenPipeError`):
//!
//! - the first send after every holder of the other end closed it fails: the send
//!   loads a count of the other end's holders, kept on the ring line it loads anyway
//!   to see whether the reader sleeps; a [`Process`](crate::Process) child frees its
//!   holds when it returns, so its exit counts as closing;
//! - holders that died without closing (SIGKILL) are found by a liveness check that
//!   a send runs once every [`LIVENESS_EVERY`] sends of its handle: if the other end
//!   consumed anything since the previous check it is alive (one load, no system
//!   call); otherwise a `poll(2)` of a pidfd per holder process decides. So the death
//!   is seen within `LIVENESS_EVERY` sends if the peer had stopped reading, within
//!   `2 × LIVENESS_EVERY` if it was reading up to its death; and by the check a send
//!   makes when it has to wait for room. From then on every send fails, without
//!   further system calls.
//!
//! A `Connection` is `Send` but not `Sync`: one thread uses an end at a time, and
//! two processes must not send (or receive) on the same end at the same time (the
//! ring is single-producer, single-consumer; doing so garbles data, at worst into a
//! `Corrupt` error, never undefined behavior).

mod connection;
mod error;
mod peer;
mod registry;
mod shared;
mod wait;

pub use connection::{Connection, pipe, pipe_with_capacity};
pub use error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError};
pub use peer::LIVENESS_EVERY;
pub(crate) use registry::{before_child_exit, before_fork};
pub use wait::{Sentinel, Waitable, wait, wait_any};

/// Default bytes per direction.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
