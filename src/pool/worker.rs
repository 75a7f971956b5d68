//! The worker process: takes tasks from its own queue, runs them, puts results.

use super::claims::ClaimState;
use super::task::{self, Key, Refused};
use crate::object::Shared;
use crate::os::proc;
use crate::queue::ByteQueue;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The longest panic message a result carries (longer ones are cut).
const MAX_MESSAGE: usize = 4096;

/// What a worker is forked with: its queues, its claim line and the pool's settings.
/// Everything it uses after `fork` is in here (nothing behind the parent's locks).
pub(super) struct Spec {
    /// Tasks for this worker only, put by the parent.
    pub(super) tasks: ByteQueue,
    /// Results of every worker, taken by the parent.
    pub(super) results: ByteQueue,
    /// This worker's line of the claim table.
    pub(super) claim: Shared<ClaimState>,
    /// The pool's MAC key (private memory, inherited through fork).
    pub(super) key: Key,
    /// Runs once before the first task.
    pub(super) initializer: Option<fn()>,
    /// Exit after this many tasks (`None`: never).
    pub(super) maxtasks: Option<usize>,
    /// The parent's pid.
    pub(super) parent: u32,
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
    // Die with the parent: the kernel sends SIGKILL when the thread that forked us
    // ends; if the parent died before that was armed, our parent pid has changed.
    if proc::die_with_parent().is_err() || proc::parent_pid() != spec.parent {
        return 1;
    }
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
                spec.claim.state().begin(pid, t.id);
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
        spec.claim.state().end();
        done += 1;
        if spec.maxtasks.is_some_and(|max| done >= max) {
            return 0;
        }
    }
}
