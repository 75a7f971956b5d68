//! Futex calls per message of the streaming shapes, counted by shmproc's own
//! counters (`shmproc::stats`) in every process: a figure that does not drift with
//! the machine's load the way a rate does.
//!
//! ```sh
//! cargo bench --bench syscalls              # quiet machine
//! cargo bench --bench syscalls -- --hog 1   # one busy process beside the run
//! strace -f -c -o /tmp/s.txt target/release/deps/syscalls-* --hog 1   # every syscall
//! ```
//!
//! For each shape (Queue<u64> 1 producer → 1 consumer; 2 producers and 2 consumers)
//! and spin policy (the default spin, and sleep at once) it prints the rate (noisy)
//! and, per message, the FUTEX_WAIT and FUTEX_WAKE calls of all processes.
//! `--only 1P1C|2P2C|spin|sleep` picks rows, `--msgs N` sets the count.
//!
//! Probes used to explain single figures of `shmproc bench`:
//!
//! - `--first-runs K`: the spin 1P1C run K times in one process, each with the CPUs
//!   of both sides, minor faults and involuntary switches (`SYSCALLS_IDLE_MS=M`
//!   sleeps M ms before each run);
//! - `--wake spin|sleep`: the WAKE shape on a `Queue<[u64; 2]>`, p50 and p90, and
//!   how often the woken consumer ran on the producer's CPU;
//! - `--wake-ec bare|timed`: the same on a bare futex word, or on an eventcount
//!   without (default) or with a deadline — run under
//!   `perf stat -e timer:hrtimer_start,timer:hrtimer_cancel,syscalls:sys_enter_membarrier`
//!   to count what each adds per wake-up.

use shmproc::value::RawArray;
use shmproc::wait::Spin;
use shmproc::{Process, Queue};
use std::sync::atomic::Ordering;
use std::time::Instant;

const MSGS: u64 = 2_000_000;

/// Per-process counters: [futex waits, futex wakes] of each child.
fn report_counts(counts: &RawArray<u64>, slot: usize) {
    counts.store(2 * slot, shmproc::stats::wait_calls(), Ordering::Relaxed);
    counts.store(
        2 * slot + 1,
        shmproc::stats::wake_calls(),
        Ordering::Relaxed,
    );
}

fn one_to_one(spin: Spin, msgs: u64) -> (f64, u64, u64) {
    let q = Queue::<u64>::new(1024).expect("queue");
    q.set_spin(spin);
    let counts = RawArray::<u64>::new(8).expect("counts");
    let mut producer = {
        let (q, counts) = (q.clone(), counts.clone());
        Process::spawn_returning(move || {
            // SAFETY: sched_getcpu takes no arguments.
            counts.store(4, unsafe { libc::sched_getcpu() } as u64, Ordering::Relaxed);
            for i in 0..msgs {
                q.put(i).expect("put");
            }
            report_counts(&counts, 0);
            // SAFETY: as above.
            counts.store(5, unsafe { libc::sched_getcpu() } as u64, Ordering::Relaxed);
        })
        .expect("fork")
    };
    let (w0, k0) = (shmproc::stats::wait_calls(), shmproc::stats::wake_calls());
    let (faults0, switches0) = usage(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    for i in 0..msgs {
        assert_eq!(q.get().expect("get"), i);
    }
    let secs = t0.elapsed().as_secs_f64();
    assert!(producer.join().expect("join").success());
    if std::env::var_os("SYSCALLS_PLACEMENT").is_some() {
        // SAFETY: sched_getcpu takes no arguments.
        let me = unsafe { libc::sched_getcpu() };
        let (faults, switches) = usage(libc::RUSAGE_SELF);
        let (cfaults, cswitches) = usage(libc::RUSAGE_CHILDREN);
        println!(
            "  {:.3e} msgs/s; consumer cpu {me}, producer cpu {} -> {}; consumer faults {} switches {}, children so far {cfaults} / {cswitches}",
            msgs as f64 / secs,
            counts.get(4).unwrap_or(0),
            counts.get(5).unwrap_or(0),
            faults - faults0,
            switches - switches0,
        );
    }
    let waits = shmproc::stats::wait_calls() - w0 + counts.get(0).unwrap_or(0);
    let wakes = shmproc::stats::wake_calls() - k0 + counts.get(1).unwrap_or(0);
    (msgs as f64 / secs, waits, wakes)
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Minor faults and involuntary context switches so far (`getrusage`).
fn usage(who: libc::c_int) -> (i64, i64) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut u) };
    (u.ru_minflt, u.ru_nivcsw)
}

fn two_by_two(spin: Spin, per_producer: u64) -> (f64, u64, u64) {
    const STOP: u64 = u64::MAX;
    let q = Queue::<u64>::new(1024).expect("queue");
    q.set_spin(spin);
    let counts = RawArray::<u64>::new(8).expect("counts");
    let t0 = Instant::now();
    let mut kids = Vec::new();
    for c in 0..2 {
        let (q, counts) = (q.clone(), counts.clone());
        kids.push(
            Process::spawn_returning(move || {
                while q.get().expect("get") != STOP {}
                report_counts(&counts, c);
            })
            .expect("fork"),
        );
    }
    for p in 0..2 {
        let (q, counts) = (q.clone(), counts.clone());
        kids.push(
            Process::spawn_returning(move || {
                for i in 0..per_producer {
                    q.put(i).expect("put");
                }
                q.put(STOP).expect("put");
                report_counts(&counts, 2 + p);
            })
            .expect("fork"),
        );
    }
    for mut k in kids {
        assert!(k.join().expect("join").success());
    }
    let secs = t0.elapsed().as_secs_f64();
    let v = counts.to_vec();
    let waits = (0..4).map(|s| v[2 * s]).sum();
    let wakes = (0..4).map(|s| v[2 * s + 1]).sum();
    ((2 * per_producer) as f64 / secs, waits, wakes)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hogs: usize = args
        .iter()
        .position(|a| a == "--hog")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let msgs = args
        .iter()
        .position(|a| a == "--msgs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(MSGS);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if let Some(i) = args.iter().position(|a| a == "--wake-ec") {
        // The eventcount alone, woken 500 µs after each wait began: no deadline, or a
        // far deadline (the sleep then carries a timeout, as a stall-checked one does).
        let timed = args.get(i + 1).is_some_and(|a| a == "timed");
        let bare = args.get(i + 1).is_some_and(|a| a == "bare");
        let n = 2000u64;
        let words = RawArray::<u64>::new(4).expect("words");
        // SAFETY: the array's first 8 bytes are 8-aligned, live as long as `words`, and
        // are used only as this eventcount (atomics) in both processes.
        let ec = unsafe { shmproc::wait::EventCount::from_ptr(words.as_ptr().cast()) };
        let mut child = {
            let words = words.clone();
            Process::spawn_returning(move || {
                // SAFETY: as above, in the child's inherited mapping.
                let ec = unsafe { shmproc::wait::EventCount::from_ptr(words.as_ptr().cast()) };
                for i in 1..=n {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                    words.store(2, now_ns(), Ordering::Relaxed);
                    words.store(1, i, Ordering::Release);
                    if bare {
                        // SAFETY: FUTEX_WAKE on a valid, aligned u32 of shared memory.
                        unsafe {
                            libc::syscall(
                                libc::SYS_futex,
                                words.as_ptr().add(1),
                                libc::FUTEX_WAKE,
                                1,
                            )
                        };
                    } else {
                        ec.notify_one();
                    }
                }
            })
            .expect("fork")
        };
        let mut lat = Vec::with_capacity(n as usize);
        for i in 1..=n {
            let deadline =
                timed.then(|| shmproc::Deadline::after(std::time::Duration::from_millis(20)));
            if bare {
                loop {
                    let v = words.load(1, Ordering::Acquire).unwrap_or(0);
                    if v >= i {
                        break;
                    }
                    // SAFETY: FUTEX_WAIT on a valid, aligned u32 of shared memory (the low
                    // half of words[1], which stays below 2^32 here).
                    unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            words.as_ptr().add(1),
                            libc::FUTEX_WAIT,
                            v as u32,
                            0usize,
                        )
                    };
                }
                lat.push(now_ns() - words.get(2).unwrap_or(0));
                continue;
            }
            ec.wait_until_with(Spin::NONE, deadline, || {
                (words.load(1, Ordering::Acquire) >= Some(i)).then_some(())
            })
            .expect("woken");
            lat.push(now_ns() - words.get(2).unwrap_or(0));
        }
        assert!(child.join().expect("join").success());
        lat.sort_unstable();
        println!(
            "WAKE eventcount, {}: p50 {:.1} µs, p90 {:.1} µs",
            if bare {
                "bare futex"
            } else if timed {
                "20 ms timeout"
            } else {
                "no timeout"
            },
            lat[lat.len() / 2] as f64 / 1e3,
            lat[lat.len() * 9 / 10] as f64 / 1e3,
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--wake") {
        // WAKE: a consumer asleep in get, woken by a put 500 µs after the last one.
        let spin = match args.get(i + 1).map(String::as_str) {
            Some("sleep") => Spin::NONE,
            _ => Spin::DEFAULT,
        };
        let n = 2000;
        let q = Queue::<[u64; 2]>::new(16).expect("queue");
        q.set_spin(spin);
        let mut child = {
            let q = q.clone();
            Process::spawn_returning(move || {
                for i in 0..n {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                    // SAFETY: no arguments.
                    let cpu = unsafe { libc::sched_getcpu() } as u64;
                    q.put([i | cpu << 32, now_ns()]).expect("put");
                }
            })
            .expect("fork")
        };
        let (w0, k0) = (shmproc::stats::wait_calls(), shmproc::stats::wake_calls());
        let mut same = 0;
        let mut lat: Vec<u64> = (0..n)
            .map(|_| {
                let [i, t] = q.get().expect("get");
                let d = now_ns() - t;
                // SAFETY: no arguments.
                if unsafe { libc::sched_getcpu() } as u64 == i >> 32 {
                    same += 1;
                }
                d
            })
            .collect();
        eprintln!("consumer on the producer's CPU after {same} of {n} wake-ups");
        assert!(child.join().expect("join").success());
        lat.sort_unstable();
        println!(
            "WAKE {}: p50 {:.1} µs, p90 {:.1} µs; consumer futex waits/wake-up {:.2}",
            args.get(i + 1).map_or("spin", String::as_str),
            lat[lat.len() / 2] as f64 / 1e3,
            lat[lat.len() * 9 / 10] as f64 / 1e3,
            (shmproc::stats::wait_calls() - w0) as f64 / n as f64,
        );
        let _ = k0;
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--first-runs") {
        // The first-run question: the same measurement K times in one process.
        let k = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(5);
        // SAFETY: setenv before any thread exists.
        unsafe { std::env::set_var("SYSCALLS_PLACEMENT", "1") };
        // SYSCALLS_IDLE_MS: sleep that long before each run (is a run after idling slow?).
        let idle: u64 = std::env::var("SYSCALLS_IDLE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for _ in 0..k {
            std::thread::sleep(std::time::Duration::from_millis(idle));
            one_to_one(Spin::DEFAULT, msgs);
        }
        return;
    }
    let hog_procs: Vec<Process> = (0..hogs)
        .map(|_| {
            Process::spawn_returning(|| {
                // SAFETY: prctl(PR_SET_PDEATHSIG, signal) takes no pointers.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                let mut x = 1u64;
                while x != 0 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005) | 1);
                }
            })
            .expect("fork")
        })
        .collect();
    println!("{hogs} hog(s), {msgs} messages per run");
    println!(
        "{:<22} {:<6} {:>12} {:>12} {:>12}",
        "shape", "spin", "msgs/s", "waits/msg", "wakes/msg"
    );
    for (label, spin) in [("spin", Spin::DEFAULT), ("sleep", Spin::NONE)] {
        for shape in ["1P1C", "2P2C"] {
            if only.as_deref().is_some_and(|o| o != shape && o != label) {
                continue;
            }
            let (rate, waits, wakes) = if shape == "1P1C" {
                one_to_one(spin, msgs)
            } else {
                two_by_two(spin, msgs / 2)
            };
            println!(
                "{:<22} {:<6} {:>12.3e} {:>12.5} {:>12.5}",
                format!("Queue<u64> {shape}"),
                label,
                rate,
                waits as f64 / msgs as f64,
                wakes as f64 / msgs as f64
            );
        }
    }
    for p in hog_procs {
        let _ = p.kill();
    }
}
