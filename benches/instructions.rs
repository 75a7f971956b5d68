//! Instructions per operation, counted by valgrind's callgrind: a cost that repeats
//! exactly from run to run, however noisy the machine, so a change to a fast path can
//! be judged by a count instead of a rate.
//!
//! ```sh
//! RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=target/callgrind \
//!   cargo bench --bench instructions [-- OP...]
//! ```
//!
//! `--cfg rustix_use_libc` is needed: rustix's default (`linux_raw`) backend finds the
//! vDSO in a way that crashes under valgrind (SIGSEGV in `check_elf_base` at the first
//! clock read, which a Queue's first put makes; rustix issue 1559); built on libc it
//! runs. The separate target directory keeps the default build's artifacts from being
//! rebuilt with and without the flag in turn. A build without the flag says so when
//! valgrind's run of it fails; without valgrind the driver says so and fails.
//!
//! For each operation the driver runs this binary under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=…measured_loop*`
//! twice, with N₁ and N₂ = 2·N₁ iterations, and prints
//! (Ir(N₂) − Ir(N₁)) / (N₂ − N₁): the instructions of one iteration, with start-up,
//! setup and teardown outside the count (only the measured loop is collected) and the
//! loop's entry cancelled by the difference. Every row includes the loop's own
//! counter and branch; the `empty_loop` row shows how much that is. The operations
//! run in one process and one thread, each set up (objects created, a first call
//! that caches the process's identity and registers its barrier) before its loop, so
//! the counts repeat exactly. A count with a fraction is work done every so many
//! operations (a ring's wrap, a periodic check of the peer), shared out. These are
//! instructions, not time: a fence or a cache miss counts as one.
//!
//! - `queue_put_get`: `Queue<u64>` put then get, one item at a time;
//! - `pipe_send_recv`: `pipe(false)`, `send` a `u64` on one end, `recv` on the other;
//! - `lock_unlock`, `rlock_unlock`: `Lock` / `RLock` acquire and drop of the guard;
//! - `notify_nobody`: `EventCount::notify_all` with nobody waiting;
//! - `bytequeue_put_get_4k`: `ByteQueue` (256 × 4 KiB) put of 4096 bytes, `get_into`
//!   a reused buffer;
//! - `queue_put_get_4k`: `Queue<[u8; 4096]>` (256) put of an item by value (a copy
//!   of one the caller has), get by value; `queue_put_ref_get_into_4k`: the same with `put_ref` and `get_into` a
//!   reused item; `queue_loan_get_ref_4k`: the same queue in place, `loan` a slot,
//!   write 8 bytes at each end, commit, `get_ref` and read them (the queue's own cost
//!   at this size, without the item's copies);
//! - `pipe_send_recv_4k`: `pipe(false)`, `send` a `[u8; 4096]`, `recv` it by value;
//! - `dict_update_one`: `Dict<u64, u64>` of 1 k keys, `update` with one present key;
//! - `value_get_set`: `Value<u64>` get then set (each under the value's lock);
//! - `rawvalue_load_store`: `RawValue<u64>` load then store.
//!
//! `instructions OP N` runs one operation N times (what the driver runs under
//! valgrind). Without `--bench` (as `cargo test --benches` runs it) or `--all`, the
//! binary runs each operation a few times natively as a check, without valgrind.

use shmproc::queue::ByteQueue;
use shmproc::sync::{Lock, RLock};
use shmproc::value::{RawArray, RawValue, Value};
use shmproc::wait::EventCount;
use shmproc::{Dict, Queue, pipe};
use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;

/// The operations and their N₁ (N₂ is twice that; a power of two, so a ring's wrap
/// comes round a whole number of times in the difference).
const OPS: &[(&str, u64)] = &[
    ("empty_loop", 1 << 16),
    ("queue_put_get", 1 << 16),
    ("pipe_send_recv", 1 << 16),
    ("lock_unlock", 1 << 16),
    ("rlock_unlock", 1 << 16),
    ("notify_nobody", 1 << 16),
    ("bytequeue_put_get_4k", 1 << 12),
    ("queue_put_get_4k", 1 << 12),
    ("queue_put_ref_get_into_4k", 1 << 12),
    ("queue_loan_get_ref_4k", 1 << 12),
    ("pipe_send_recv_4k", 1 << 12),
    ("value_get_set", 1 << 16),
    ("dict_update_one", 1 << 14),
    ("rawvalue_load_store", 1 << 16),
];

/// The callgrind pattern naming [`measured_loop`] (every monomorphization).
const MEASURED: &str = "instructions::measured_loop*";

/// Runs `op` once outside the count (first-call work: identity, barrier
/// registration), then `n` times in [`measured_loop`].
#[inline(never)]
fn measure<F: FnMut()>(n: u64, mut op: F) {
    op();
    measured_loop(n, &mut op);
}

/// The only code callgrind counts (`--toggle-collect`): `n` calls of `op`.
#[inline(never)]
fn measured_loop<F: FnMut()>(n: u64, op: &mut F) {
    for _ in 0..black_box(n) {
        op();
    }
}

/// Sets up operation `name` and runs it `n` times (+1 warm-up).
fn run(name: &str, n: u64) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{name}: {e}");
    match name {
        "empty_loop" => measure(n, || black_box(())),
        "queue_put_get" => {
            let q = Queue::<u64>::new(1024).map_err(|e| err(&e))?;
            measure(n, || {
                q.put(black_box(7)).expect("put");
                black_box(q.get().expect("get"));
            });
        }
        "pipe_send_recv" => {
            let (rx, tx) = pipe(false).map_err(|e| err(&e))?;
            measure(n, || {
                tx.send(&black_box(7u64)).expect("send");
                black_box(rx.recv::<u64>().expect("recv"));
            });
        }
        "lock_unlock" => {
            let lock = Lock::new().map_err(|e| err(&e))?;
            measure(n, || drop(black_box(&lock).acquire().expect("acquire")));
        }
        "rlock_unlock" => {
            let lock = RLock::new().map_err(|e| err(&e))?;
            measure(n, || drop(black_box(&lock).acquire().expect("acquire")));
        }
        "notify_nobody" => {
            let words = RawArray::<u64>::new(2).map_err(|e| err(&e))?;
            // SAFETY: the array's first 8 bytes are 8-aligned, live as long as `words`
            // and are used only as this eventcount, in this process alone.
            let ec = unsafe { EventCount::from_ptr(words.as_ptr().cast()) };
            measure(n, || black_box(ec).notify_all());
        }
        "bytequeue_put_get_4k" => {
            let q = ByteQueue::new(256, 4096).map_err(|e| err(&e))?;
            let msg = vec![7u8; 4096];
            let mut buf = Vec::with_capacity(4096);
            measure(n, || {
                q.put(black_box(&msg)).expect("put");
                black_box(q.get_into(&mut buf).expect("get_into"));
            });
        }
        "queue_put_get_4k" => {
            let q = Queue::<[u8; 4096]>::new(256).map_err(|e| err(&e))?;
            let msg = [7u8; 4096];
            measure(n, || {
                q.put(black_box(msg)).expect("put");
                black_box(q.get().expect("get"));
            });
        }
        "queue_put_ref_get_into_4k" => {
            let q = Queue::<[u8; 4096]>::new(256).map_err(|e| err(&e))?;
            let msg = [7u8; 4096];
            let mut out = [0u8; 4096];
            measure(n, || {
                q.put_ref(black_box(&msg)).expect("put_ref");
                q.get_into(black_box(&mut out)).expect("get_into");
            });
        }
        "queue_loan_get_ref_4k" => {
            let q = Queue::<[u8; 4096]>::new(256).map_err(|e| err(&e))?;
            measure(n, || {
                let mut slot = q.loan().expect("loan");
                slot[..8].copy_from_slice(&black_box(7u64).to_le_bytes());
                slot[4088..].copy_from_slice(&black_box(9u64).to_le_bytes());
                slot.commit();
                let item = q.get_ref().expect("get_ref");
                black_box((item[0], item[4095]));
            });
        }
        "pipe_send_recv_4k" => {
            let (rx, tx) = pipe(false).map_err(|e| err(&e))?;
            let msg = [7u8; 4096];
            measure(n, || {
                tx.send(black_box(&msg)).expect("send");
                black_box(rx.recv::<[u8; 4096]>().expect("recv"));
            });
        }
        "dict_update_one" => {
            let d = Dict::<u64, u64>::new().map_err(|e| err(&e))?;
            for k in 0..1024u64 {
                d.insert(k, k).map_err(|e| err(&e))?;
            }
            let mut k = 0u64;
            measure(n, || {
                k = (k + 1) & 1023;
                d.update([(black_box(k), k)]).expect("update");
            });
        }
        "value_get_set" => {
            let v = Value::new(0u64).map_err(|e| err(&e))?;
            measure(n, || {
                let x = black_box(&v).get().expect("get");
                v.set(black_box(x + 1)).expect("set");
            });
        }
        "rawvalue_load_store" => {
            let v = RawValue::new(0u64).map_err(|e| err(&e))?;
            measure(n, || {
                let x = black_box(&v).load(Ordering::Acquire);
                v.store(black_box(x + 1), Ordering::Release);
            });
        }
        _ => return Err(format!("unknown operation {name:?}")),
    }
    Ok(())
}

const NO_VALGRIND: &str = "error: valgrind is not installed (or not on PATH); this bench \
    counts instructions with `valgrind --tool=callgrind` (apt-get install valgrind)";

/// Why a valgrind run gave no count.
enum RunError {
    /// valgrind is not installed (or not on `PATH`).
    NoValgrind,
    /// The run failed: a message, and valgrind's output.
    Failed(String, String),
}

/// Instructions collected in [`measured_loop`] by one valgrind run of `name` × `n`,
/// and any warnings valgrind gave about unhandled system calls.
fn collected(name: &str, n: u64) -> Result<(u64, Vec<String>), RunError> {
    let exe =
        std::env::current_exe().map_err(|e| RunError::Failed(e.to_string(), String::new()))?;
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--callgrind-out-file=/dev/null")
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={MEASURED}"))
        .arg(exe)
        .arg(name)
        .arg(n.to_string())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RunError::NoValgrind,
            _ => RunError::Failed(format!("cannot run valgrind: {e}"), String::new()),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(RunError::Failed(
            format!("valgrind's run of {name} {n} failed ({})", out.status),
            stderr,
        ));
    }
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("unhandled") || l.contains("WARNING"))
        .map(str::to_owned)
        .collect();
    // "==PID== Collected : 123456"
    let count = stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok());
    match count {
        Some(0) => Err(RunError::Failed(
            format!("callgrind collected nothing in {MEASURED}: was it inlined or renamed?"),
            stderr,
        )),
        Some(c) => Ok((c, warnings)),
        None => Err(RunError::Failed(
            "no \"Collected :\" line in valgrind's output".to_owned(),
            stderr,
        )),
    }
}

/// Runs every chosen operation under valgrind twice and prints instructions per op.
fn drive(only: &[&str]) -> ExitCode {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("{NO_VALGRIND}");
        return ExitCode::FAILURE;
    }
    if cfg!(debug_assertions) {
        println!(
            "note: a debug build: these are not the optimized build's counts (use cargo bench)"
        );
    }
    println!(
        "instructions per operation (callgrind Ir, (Ir(2N) - Ir(N)) / N, one process, one thread)"
    );
    println!(
        "{:<22} {:>8} {:>14} {:>14} {:>10}",
        "op", "N", "Ir(N)", "Ir(2N)", "Ir/op"
    );
    let mut warned = Vec::<String>::new();
    for &(name, n1) in OPS {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let n2 = 2 * n1;
        let (ir1, ir2) = match collected(name, n1).and_then(|a| Ok((a, collected(name, n2)?))) {
            Ok(((ir1, w1), (ir2, w2))) => {
                for w in w1.into_iter().chain(w2) {
                    // The pid prefix differs by run: compare what follows it.
                    let text = w.split_once("== ").map_or(w.as_str(), |(_, t)| t);
                    if !warned.iter().any(|s| s == text) {
                        warned.push(text.to_owned());
                    }
                }
                (ir1, ir2)
            }
            Err(RunError::NoValgrind) => {
                eprintln!("{NO_VALGRIND}");
                return ExitCode::FAILURE;
            }
            Err(RunError::Failed(msg, stderr)) => {
                eprintln!("error: {msg}");
                let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
                for l in tail.into_iter().rev() {
                    eprintln!("  {l}");
                }
                if !cfg!(rustix_use_libc) {
                    let vdso = stderr.contains("rustix::backend");
                    eprintln!(
                        "{}This binary was built without `--cfg rustix_use_libc`: rustix's \
                         linux_raw backend crashes under valgrind when it first reads the \
                         clock through the vDSO. Build and run with\n  \
                         RUSTFLAGS=\"--cfg rustix_use_libc\" CARGO_TARGET_DIR=target/callgrind \
                         cargo bench --bench instructions",
                        if vdso { "The crash is in rustix. " } else { "" }
                    );
                }
                return ExitCode::FAILURE;
            }
        };
        let diff = ir2 as i128 - ir1 as i128;
        let per = if diff % i128::from(n1) == 0 {
            format!("{}", diff / i128::from(n1))
        } else {
            format!("{:.1}", diff as f64 / n1 as f64)
        };
        println!("{name:<22} {n1:>8} {ir1:>14} {ir2:>14} {per:>10}");
    }
    for w in warned {
        println!("valgrind: {w}");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench" || a == "--all");
    let positional: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [name, n] = positional[..] {
        if let Ok(n) = n.parse::<u64>() {
            return match run(name, n) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    if let Some(bad) = positional
        .iter()
        .find(|p| !OPS.iter().any(|(name, _)| name == *p))
    {
        let names: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "error: unknown operation {bad:?}; known: {}",
            names.join(" ")
        );
        return ExitCode::FAILURE;
    }
    if bench {
        return drive(&positional);
    }
    // `cargo test --benches`: check that every operation runs, without valgrind.
    for &(name, _) in OPS {
        if let Err(e) = run(name, 100) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "instructions: every operation ran (no counts without --bench or --all; \
         see the doc comment of benches/instructions.rs)"
    );
    ExitCode::SUCCESS
}
