//! Benchmarks of the synchronization primitives.
//!
//! ```sh
//! cargo bench --bench sync
//! ```
//!
//! - `uncontended/*`: acquire + release with nobody else around, against
//!   `std::sync::Mutex` (whose futex is process-private). The run also counts futex
//!   system calls made during these benchmarks, and prints them: there are none.
//! - `notify_no_waiter/*`: an eventcount notify with nobody asleep.
//! - Event wake latency across processes (printed after the criterion runs, as
//!   percentiles): the time from `set()` in one process to the return of `wait()` in
//!   another, with the waiter still spinning and with the waiter asleep in the
//!   kernel.

use criterion::{Criterion, black_box};
use shmproc::Process;
use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
use shmproc::segment::Segment;
use shmproc::sync::{Event, Lock, RLock, Semaphore};
use shmproc::value::{RawArray, RawValue, Value};
use shmproc::wait::EventCount;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn uncontended(c: &mut Criterion) {
    let lock = Lock::new().expect("lock");
    let rlock = RLock::new().expect("rlock");
    let sem = Semaphore::new(1).expect("semaphore");
    let value = Value::new(0u64).expect("value");
    let mutex = std::sync::Mutex::new(0u64);
    // Warm up: the first acquire caches this process's identity.
    drop(lock.acquire());
    drop(rlock.acquire());
    let (wakes, waits) = (shmproc::stats::wake_calls(), shmproc::stats::wait_calls());

    let mut g = c.benchmark_group("uncontended");
    g.bench_function("std::sync::Mutex lock+unlock", |b| {
        b.iter(|| drop(black_box(&mutex).lock()))
    });
    g.bench_function("Lock acquire+release", |b| {
        b.iter(|| drop(black_box(&lock).acquire()))
    });
    g.bench_function("Lock try_acquire+release", |b| {
        b.iter(|| drop(black_box(&lock).try_acquire()))
    });
    g.bench_function("RLock acquire+release", |b| {
        b.iter(|| drop(black_box(&rlock).acquire()))
    });
    g.bench_function("Semaphore acquire+release", |b| {
        b.iter(|| {
            black_box(&sem).acquire();
            let _ = sem.release();
        })
    });
    g.bench_function("Value<u64> lock+increment", |b| {
        b.iter(|| {
            if let Ok(mut v) = black_box(&value).lock() {
                v.update(|v| *v += 1);
            }
        })
    });
    g.finish();

    println!(
        "futex system calls during the uncontended benchmarks: {} wake, {} wait",
        shmproc::stats::wake_calls() - wakes,
        shmproc::stats::wait_calls() - waits
    );
}

fn notify_no_waiter(c: &mut Criterion) {
    let layout = ObjectLayout {
        kind: ObjectKind::Raw,
        elem: ElemType::NONE,
        slot_size: 0,
        capacity: 0,
        payload_size: 128,
    };
    let seg = Segment::anonymous(&layout, |_, _| {}).expect("segment");
    // SAFETY: the payload is 128 bytes, 128-aligned, used only as this eventcount.
    let ec = unsafe { EventCount::from_ptr(seg.payload().as_ptr()) };
    let event = Event::new().expect("event");

    let mut g = c.benchmark_group("notify_no_waiter");
    g.bench_function("EventCount::notify_all", |b| {
        b.iter(|| black_box(ec).notify_all())
    });
    g.bench_function("EventCount::notify_one", |b| {
        b.iter(|| black_box(ec).notify_one())
    });
    g.bench_function("Event set+clear", |b| {
        b.iter(|| {
            black_box(&event).set();
            event.clear();
        })
    });
    g.finish();
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Busy-waits `d`, so the other process is spinning in its wait when we set.
fn spin_for(d: Duration) {
    let until = now_ns() + d.as_nanos() as u64;
    while now_ns() < until {
        std::hint::spin_loop();
    }
}

/// Whether the kernel shows process `pid` asleep (state `S` in `/proc/PID/stat`).
fn sleeping(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    after_name.split_whitespace().next() == Some("S")
}

/// One-way Event wake latencies across two processes, in nanoseconds: the parent
/// stamps the time and sets `ping`; the child, waiting on `ping`, records how long
/// after the stamp its `wait` returned, then clears `ping` and sets `pong`.
fn wake_latencies(rounds: usize, asleep: bool) -> Vec<u64> {
    let ping = Event::new().expect("event");
    let pong = Event::new().expect("event");
    let stamp = RawValue::new(0u64).expect("value");
    let lat = RawArray::<u64>::new(rounds).expect("array");
    let mut child = Process::spawn(|| {
        for i in 0..rounds {
            if !ping.wait_timeout(Duration::from_secs(10)) {
                return;
            }
            lat.store(
                i,
                now_ns() - stamp.load(Ordering::SeqCst),
                Ordering::Relaxed,
            );
            ping.clear();
            pong.set();
        }
    })
    .expect("fork");
    for _ in 0..rounds {
        if asleep {
            // Wait until the child sleeps in FUTEX_WAIT (after its 50 µs spin): it
            // has registered as a sleeper, and the kernel shows it sleeping.
            while ping.waiters() == 0 || !sleeping(child.pid()) {
                std::hint::spin_loop();
            }
        } else {
            spin_for(Duration::from_micros(5));
        }
        stamp.store(now_ns(), Ordering::SeqCst);
        ping.set();
        if !pong.wait_timeout(Duration::from_secs(10)) {
            break;
        }
        pong.clear();
    }
    let _ = child.join();
    let mut v = lat.to_vec();
    v.sort_unstable();
    v
}

fn event_wake_latency(quick: bool) {
    let pct = |v: &[u64], p: f64| -> f64 {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    for (asleep, rounds) in [(false, 20_000), (true, 5_000)] {
        let rounds = if quick { 100 } else { rounds };
        let v = wake_latencies(rounds, asleep);
        println!(
            "event wake latency across processes, waiter {:8}: p50 {:7.2} µs  p90 {:7.2} µs  \
             p99 {:7.2} µs  p99.9 {:7.2} µs  max {:8.2} µs  ({} rounds)",
            if asleep { "asleep" } else { "spinning" },
            pct(&v, 0.50),
            pct(&v, 0.90),
            pct(&v, 0.99),
            pct(&v, 0.999),
            pct(&v, 1.0),
            v.len()
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    notify_no_waiter(&mut c);
    c.final_summary();
    event_wake_latency(quick);
}
