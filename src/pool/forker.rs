//! The forker: one thread of the parent that starts every worker of a pool (by
//! fork, spawn or forkserver request).
//!
//! A worker asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`),
//! and "parent" there means the *thread* that forked it. Replacement workers are
//! forked by whichever thread happens to be waiting on the pool; if that were a
//! short-lived thread, its end would kill the worker. So all forks happen in this
//! thread, which lives exactly as long as the pool.

use super::error::PoolError;
use super::worker::{self, Spec};
use crate::process::Process;
use crate::start::StartMethod;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A fork request and where the answer goes.
type Request = (Spec, mpsc::Sender<io::Result<Process>>);

/// The forking thread and its request channel.
pub(super) struct Forker {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Forker {
    /// Starts the thread.
    pub(super) fn start() -> Result<Forker, PoolError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("shmproc-pool-forker".to_string())
            .spawn(move || {
                for (spec, reply) in rx {
                    let started = match spec.method {
                        StartMethod::Fork => Process::spawn_returning(move || worker::run(spec)),
                        method => {
                            Process::start(method, worker::entry, spec).map_err(io::Error::from)
                        }
                    };
                    let _ = reply.send(started);
                }
            })
            .map_err(PoolError::Os)?;
        Ok(Forker {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Forks a worker running `spec`, from the forker thread.
    pub(super) fn fork(&self, spec: Spec) -> Result<Process, PoolError> {
        let gone = || PoolError::Os(io::Error::other("the pool's forker thread is gone"));
        let (tx, rx) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((spec, tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?.map_err(PoolError::Os)
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
