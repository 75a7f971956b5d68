//! The ring layer: lock-free algorithms over memory the caller hands in (a pointer and
//! a length), knowing nothing of files or names — public so other IPC crates can place
//! shmproc's rings in memory they own.
//!
//! - [`mpmc`]: bounded multi-producer multi-consumer ring of fixed-size slots, for
//!   messages of one slot or several consecutive slots (the `Queue`);
//! - [`spsc`]: single-producer single-consumer ring of length-prefixed byte records,
//!   streaming messages of any size in fragments (the `Pipe`).

pub mod mpmc;
pub mod spsc;
