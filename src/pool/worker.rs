//! The worker process: takes tasks from its own queue, runs them, puts results.

use super::claims::Claims;
use super::task::{self, Key, Refused};
use crate::os::proc::{self, ProcessId};
use crate::queue::ByteQueue;
use crate::start::{
    Decoder, Encoder, HandoffError, Portable, StartMethod, code_address, code_offset, in_executable,
};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The longest panic message a result carries (longer ones are cut).
const MAX_MESSAGE: usize = 4096;

/// What a worker is started with: its queues, its claim line and the pool's
/// settings. Everything it uses is in here (nothing behind the parent's locks); a
/// spawned or forkserver worker gets it as a start request ([`Portable`]).
pub(super) struct Spec {
    /// Tasks for this worker only, put by the parent.
    pub(super) tasks: ByteQueue,
    /// Results of every worker, taken by the parent.
    pub(super) results: ByteQueue,
    /// The claim table, and this worker's line of it.
    pub(super) claims: Claims,
    pub(super) slot: usize,
    /// The pool's MAC key (private memory; inherited or in the start request).
    pub(super) key: Key,
    /// Runs once before the first task.
    pub(super) initializer: Option<fn()>,
    /// Exit after this many tasks (`None`: never).
    pub(super) maxtasks: Option<usize>,
    /// The parent's pid and start time.
    pub(super) parent: ProcessId,
    /// How the worker was started, which says how it learns of the parent's death.
    pub(super) method: StartMethod,
}

impl Portable for Spec {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        let (k0, k1) = self.key.words();
        let init = self.initializer.map(|f| code_offset(f as usize));
        self.tasks.encode(enc)?;
        self.results.encode(enc)?;
        self.claims.encode(enc)?;
        (self.slot as u64, k0, k1, init).encode(enc)?;
        let maxtasks = self.maxtasks.map(|n| n as u64);
        let method = match self.method {
            StartMethod::Fork => 0u8,
            StartMethod::Spawn => 1,
            StartMethod::Forkserver => 2,
        };
        (maxtasks, self.parent.pid, self.parent.start_ticks, method).encode(enc)
    }

    fn decode(dec: &mut Decoder) -> Result<Spec, HandoffError> {
        let (tasks, results, claims) = <(ByteQueue, ByteQueue, Claims)>::decode(dec)?;
        let (slot, k0, k1, init) = <(u64, u64, u64, Option<u64>)>::decode(dec)?;
        let (maxtasks, pid, start_ticks, method) = <(Option<u64>, u32, u64, u8)>::decode(dec)?;
        let initializer = match init {
            None => None,
            Some(offset) => {
                let addr = code_address(offset);
                if !in_executable(addr) {
                    return Err(HandoffError::Malformed(
                        "the initializer's offset is outside the executable's code".into(),
                    ));
                }
                // SAFETY: the offset came in the start request, which only the pool's
                // parent can send (a socketpair it holds), computed by `encode` from an
                // `fn()` of this very executable (the request's inode check); offsets
                // name the same function in every process that runs it.
                Some(unsafe { std::mem::transmute::<usize, fn()>(addr) })
            }
        };
        let method = match method {
            0 => StartMethod::Fork,
            1 => StartMethod::Spawn,
            2 => StartMethod::Forkserver,
            m => return Err(HandoffError::Malformed(format!("start method {m}"))),
        };
        Ok(Spec {
            tasks,
            results,
            claims,
            slot: usize::try_from(slot)
                .map_err(|_| HandoffError::Malformed("worker slot out of range".into()))?,
            key: Key::from_words(k0, k1),
            initializer,
            maxtasks: maxtasks.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            parent: ProcessId { pid, start_ticks },
            method,
        })
    }
}

/// A spawned or forkserver worker's start function.
pub(super) fn entry(spec: Spec) -> i32 {
    run(spec)
}

/// Arms the worker's exit when the pool's parent dies; false if it already has.
///
/// A forked or spawned worker is the parent's own child: the kernel sends it SIGKILL
/// when the thread that started it ends (`PR_SET_PDEATHSIG`; the pool starts every
/// worker from one thread that lives as long as the pool). A forkserver worker is the
/// server's child, so a thread of its own waits on the parent's pidfd and ends the
/// worker when it becomes readable.
fn watch_parent(spec: &Spec) -> bool {
    match spec.method {
        StartMethod::Fork | StartMethod::Spawn => {
            proc::die_with_parent().is_ok() && proc::parent_pid() == spec.parent.pid
        }
        StartMethod::Forkserver => {
            let Ok(pidfd) = proc::Pidfd::open(spec.parent.pid) else {
                return false;
            };
            // The pid could have been reused before the open: check it is the parent.
            if !proc::is_alive(spec.parent.pid, spec.parent.start_ticks) {
                return false;
            }
            std::thread::Builder::new()
                .name("shmproc-pool-watch".into())
                .spawn(move || {
                    while !pidfd.exited() {
                        let _ = pidfd.wait_readable();
                    }
                    proc::exit_immediately(1);
                })
                .is_ok()
        }
    }
}

/// The text of a panic payload.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let mut m = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    };
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    m
}

/// The worker's life; returns its exit code.
pub(super) fn run(spec: Spec) -> i32 {
    if !watch_parent(&spec) {
        return 1;
    }
    let Some(claim) = spec.claims.slot(spec.slot).cloned() else {
        return 1;
    };
    let pid = proc::current_pid();
    let mut msg = Vec::new();
    if let Some(init) = spec.initializer {
        if let Err(p) = catch_unwind(init) {
            let text = panic_message(&*p);
            task::encode_result(&mut msg, 0, pid, task::RESULT_INIT, text.as_bytes());
            let _ = spec.results.put(&msg);
            return 1;
        }
    }
    claim.state().mark_ready(pid);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut done = 0usize;
    loop {
        // Any error ends the worker: shut down (the pool is joining) or a broken
        // queue (the parent replaces the worker, with a fresh queue).
        if spec.tasks.get_into(&mut buf).is_err() {
            return 0;
        }
        match task::verify(&spec.key, &buf) {
            Err((id, why)) => {
                task::encode_result(&mut msg, id, pid, task::RESULT_CORRUPT, why.as_bytes());
            }
            Ok(t) => {
                claim.state().begin(pid, t.id);
                out.clear();
                match catch_unwind(AssertUnwindSafe(|| t.run(&mut out))) {
                    Ok(Ok(())) => task::encode_result(&mut msg, t.id, pid, task::RESULT_OK, &out),
                    Ok(Err(Refused::Corrupt(why))) => task::encode_result(
                        &mut msg,
                        t.id,
                        pid,
                        task::RESULT_CORRUPT,
                        why.as_bytes(),
                    ),
                    Ok(Err(Refused::Encoding(why))) => task::encode_result(
                        &mut msg,
                        t.id,
                        pid,
                        task::RESULT_ENCODING,
                        why.as_bytes(),
                    ),
                    Err(p) => {
                        let text = panic_message(&*p);
                        task::encode_result(
                            &mut msg,
                            t.id,
                            pid,
                            task::RESULT_PANIC,
                            text.as_bytes(),
                        )
                    }
                }
            }
        }
        if msg.len() > spec.results.max_message() {
            let why = format!(
                "a result message of {} bytes does not fit the result queue ({} bytes)",
                msg.len(),
                spec.results.max_message()
            );
            let id = task::decode_result(&msg).map_or(0, |(id, ..)| id);
            task::encode_result(&mut msg, id, pid, task::RESULT_ENCODING, why.as_bytes());
        }
        if spec.results.put(&msg).is_err() {
            return 0;
        }
        claim.state().end();
        done += 1;
        if spec.maxtasks.is_some_and(|max| done >= max) {
            return 0;
        }
    }
}
