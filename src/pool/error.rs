//! [`PoolError`]: why a pool call or a task failed.

use crate::process::ExitStatus;
use std::fmt;
use std::io;

/// Why a [`Pool`](super::Pool) call, or one of the tasks it ran, failed.
///
/// Task failures name the worker process: a panic carries its message
/// ([`Panicked`](PoolError::Panicked)), a worker that died in the middle of a task
/// carries how it ended ([`WorkerDied`](PoolError::WorkerDied)).
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// An argument out of range: zero or too many processes, a chunksize or
    /// maxtasksperchild of 0, an item type too large for a task message.
    InvalidArgument(String),
    /// The pool was closed or terminated: it takes no new work (Python's
    /// `ValueError: Pool not running`).
    Closed,
    /// [`join`](super::Pool::join) before [`close`](super::Pool::close) or
    /// [`terminate`](super::Pool::terminate) (Python's `ValueError`).
    StillRunning,
    /// The task's function panicked in worker `pid` (Python re-raises the worker's
    /// exception).
    Panicked {
        /// The worker's process id.
        pid: u32,
        /// The panic message.
        message: String,
    },
    /// Worker `pid` died while running the task (killed by a signal, or it exited).
    /// The worker was replaced; the pool's other tasks are unaffected.
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The pool's initializer panicked in worker `pid`; the pool runs no tasks.
    Initializer {
        /// The worker's process id.
        pid: u32,
        /// The panic message.
        message: String,
    },
    /// The pool was terminated before the task finished.
    Terminated,
    /// The result was not ready within the timeout (Python's
    /// `multiprocessing.TimeoutError`). The handle can be waited on again.
    Timeout,
    /// The result was already taken from this handle.
    ResultTaken,
    /// A task or result message was inconsistent (a process scribbled on the pool's
    /// shared memory): the task failed, nothing was run from it.
    Corrupt(String),
    /// A serde value could not be encoded or decoded (in this process, or in the
    /// worker, which the message names), or a result was too large for the result
    /// queue (feature `serde`).
    Encoding(String),
    /// Starting a worker failed (`fork`: the process limit, memory).
    Os(io::Error),
    /// The pool's queues failed (creating them, or a queue error a task met).
    Queue(String),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            PoolError::Closed => f.write_str("pool is not running (closed or terminated)"),
            PoolError::StillRunning => {
                f.write_str("pool is still running: close or terminate it before join")
            }
            PoolError::Panicked { pid, message } => {
                write!(f, "task panicked in worker {pid}: {message}")
            }
            PoolError::WorkerDied { pid, status } => {
                write!(f, "worker {pid} died while running the task ({status})")
            }
            PoolError::Initializer { pid, message } => {
                write!(
                    f,
                    "the pool's initializer panicked in worker {pid}: {message}"
                )
            }
            PoolError::Terminated => f.write_str("pool was terminated before the task finished"),
            PoolError::Timeout => f.write_str("result not ready within the timeout"),
            PoolError::ResultTaken => f.write_str("result was already taken"),
            PoolError::Corrupt(why) => write!(f, "pool message is corrupt: {why}"),
            PoolError::Encoding(why) => write!(f, "encoding failed: {why}"),
            PoolError::Os(e) => write!(f, "starting a worker failed: {e}"),
            PoolError::Queue(why) => write!(f, "pool queue failed: {why}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// The one place queue errors become pool errors (the queue's error types are the
/// queue module's to change).
pub(super) fn from_queue(e: impl fmt::Display) -> PoolError {
    PoolError::Queue(e.to_string())
}
