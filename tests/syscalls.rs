//! System calls made on the hot paths, counted by the kernel, not timed.
//!
//! A child process counts every system call of its measuring thread with a seccomp
//! filter that hands each one to a supervisor thread (`SECCOMP_RET_USER_NOTIF`), which
//! counts it by number and lets it run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Nothing
//! is mocked: the calls are the kernel's own record of what the code asked of it.
//!
//! - Put/get, send/recv, lock/unlock and the other fast paths, when they need not
//!   wait, make no system call at all: the count is exactly zero.
//! - Streaming and ping-pong between two processes may wait, and a wait may yield,
//!   sleep and wake; a Pipe polls its peer's pidfds now and then. Calls of any other
//!   kind are allowed only as a one-time cost per holder of the other end (a read
//!   of its start time in /proc and a `pidfd_open`), never per message: a Pipe
//!   once read /proc on every stall check (11,582 openat, statx and close and
//!   69,492 read calls in 100 k round trips), and before that on every spin.

use shmproc::value::RawArray;
use shmproc::wait::Spin;
use shmproc::{ByteQueue, Dict, Event, Lock, Process, Queue, RLock, RawValue, Semaphore, pipe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Syscall numbers counted (x86_64 and aarch64 numbers are both below this).
const NR_SLOTS: usize = 512;

/// Counts the system calls of the thread that installed it, while counting is on.
mod counter {
    use super::*;

    static LISTENER: AtomicI32 = AtomicI32::new(-1);
    static COUNTING: AtomicBool = AtomicBool::new(false);
    static COUNTS: [AtomicU64; NR_SLOTS] = [const { AtomicU64::new(0) }; NR_SLOTS];

    /// Installs the filter on the calling thread (once per process): from here on,
    /// each of its system calls waits for the supervisor thread's go-ahead.
    pub fn install() {
        // The supervisor starts before the filter exists, so its own calls are not
        // filtered (a filter without TSYNC covers only the thread that installs it).
        std::thread::spawn(supervise);
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        );
        let mut filter = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_USER_NOTIF,
        }];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: `prog` points at a valid one-instruction program that outlives the
        // call (the kernel copies it).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        assert!(
            fd >= 0,
            "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): {}",
            std::io::Error::last_os_error()
        );
        // An atomic store: handing the descriptor over makes no system call, which
        // would now wait for a supervisor that does not yet have it.
        LISTENER.store(fd as i32, Ordering::SeqCst);
    }

    fn supervise() {
        let fd = loop {
            match LISTENER.load(Ordering::SeqCst) {
                -1 => std::thread::yield_now(),
                fd => break fd,
            }
        };
        loop {
            // SAFETY: all-zero bytes are a valid seccomp_notif (plain integers), and
            // the kernel requires the buffer to be zeroed.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: `req` is a writable seccomp_notif for the kernel to fill.
            let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
            if r != 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            if COUNTING.load(Ordering::SeqCst) {
                COUNTS[req.data.nr as usize % NR_SLOTS].fetch_add(1, Ordering::Relaxed);
            }
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            };
            // SAFETY: `resp` is a valid response for the notification just received.
            // A failure (the caller was interrupted by a signal) needs no answer.
            unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
        }
    }

    /// Counts the calls `f` makes into `out` (one slot per syscall number).
    pub fn count<R>(out: &RawArray<u64>, base: usize, f: impl FnOnce() -> R) -> R {
        COUNTING.store(true, Ordering::SeqCst);
        let r = f();
        COUNTING.store(false, Ordering::SeqCst);
        for (nr, c) in COUNTS.iter().enumerate() {
            out.store(base + nr, c.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        r
    }
}

/// Calls outside [`wait_path`] allowed in a whole streaming or ping-pong run: what
/// finding the other end's few holders costs once each (about ten calls a holder),
/// far below one per message (1 M messages, 100 k round trips).
const ONCE_PER_HOLDER: u64 = 200;

/// The system calls a wait may make: yielding, the registration's barrier, sleeping
/// and waking, a poll of a peer's pidfd and a `tgkill(pid, tid, 0)` of a thread
/// holding a claim (a stall check before sleeping, or a sender's liveness check),
/// and the clock where the vDSO falls back to a call.
fn wait_path(nr: usize) -> bool {
    [
        libc::SYS_futex,
        libc::SYS_tgkill,
        libc::SYS_sched_yield,
        libc::SYS_membarrier,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_clock_gettime,
    ]
    .contains(&(nr as libc::c_long))
}

fn name(nr: usize) -> String {
    let names = [
        (libc::SYS_futex, "futex"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_tgkill, "tgkill"),
        (libc::SYS_membarrier, "membarrier"),
        (libc::SYS_poll, "poll"),
        (libc::SYS_ppoll, "ppoll"),
        (libc::SYS_clock_gettime, "clock_gettime"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_read, "read"),
        (libc::SYS_write, "write"),
        (libc::SYS_close, "close"),
        (libc::SYS_statx, "statx"),
        (libc::SYS_fstat, "fstat"),
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_brk, "brk"),
        (libc::SYS_getpid, "getpid"),
        (libc::SYS_gettid, "gettid"),
        (libc::SYS_pidfd_open, "pidfd_open"),
    ];
    names
        .iter()
        .find(|(n, _)| *n as usize == nr)
        .map_or_else(|| format!("syscall {nr}"), |(_, s)| s.to_string())
}

/// The nonzero counts of slot block `proc` whose syscall number passes `keep`, by name.
fn counted_if(counts: &RawArray<u64>, proc: usize, keep: fn(usize) -> bool) -> Vec<(String, u64)> {
    (0..NR_SLOTS)
        .filter(|&nr| keep(nr))
        .map(|nr| {
            (
                nr,
                counts
                    .load(proc * NR_SLOTS + nr, Ordering::Relaxed)
                    .unwrap_or(0),
            )
        })
        .filter(|&(_, c)| c > 0)
        .map(|(nr, c)| (name(nr), c))
        .collect()
}

fn counted(counts: &RawArray<u64>, proc: usize) -> Vec<(String, u64)> {
    counted_if(counts, proc, |_| true)
}

/// Held by each test: a child forked by another test of this binary while a pipe
/// is alive becomes one of its holders (as in Python, a fork inherits every end), and
/// each new holder costs a counted child a few calls to find.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks a child that installs the counter and runs `body`, which counts what it
/// wants into block `proc` of `counts`; the child's exit code is `body`'s.
fn counted_child(body: impl FnOnce() -> i32) -> Process {
    Process::spawn_returning(|| {
        counter::install();
        body()
    })
    .expect("fork")
}

fn join(mut p: Process, what: &str) {
    let status = p.join().expect("join");
    assert!(status.success(), "{what}: the child failed ({status:?})");
}

#[test]
fn the_fast_paths_make_no_system_call() {
    let _serial = one_at_a_time();
    let counts = RawArray::<u64>::new(NR_SLOTS).unwrap();
    let q = Queue::<u64>::new(1024).unwrap();
    let bq = ByteQueue::new(64, 4096).unwrap();
    let (a, b) = pipe(true).unwrap();
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(1).unwrap();
    let event = Event::new().unwrap();
    let value = RawValue::<u64>::new(0).unwrap();
    let dict = Dict::<u64, u64>::new().unwrap();
    for k in 0..1000 {
        dict.insert(k, k * 3).unwrap();
    }
    let child = counted_child(|| {
        let msg = [7u8; 4096];
        let mut buf = Vec::with_capacity(4096);
        let mut bytes = [0u8; 4096];
        // First uses: identities cached, pages touched, scratch buffers grown.
        drop(lock.acquire());
        drop(rlock.acquire());
        bq.put(&msg).unwrap();
        bq.get_into(&mut buf).unwrap();
        a.send_bytes(&msg).unwrap();
        b.recv_bytes_into(&mut bytes, 0).unwrap();
        dict.get(&1).unwrap();
        q.put(0).unwrap();
        q.get().unwrap();
        sem.acquire();
        sem.release().unwrap();
        event.set();
        event.clear();
        value.set(0);
        counter::count(&counts, 0, || {
            for round in 0..100u64 {
                for i in 0..1024 {
                    q.put(round * 1024 + i).unwrap();
                }
                for i in 0..1024 {
                    assert_eq!(q.get().unwrap(), round * 1024 + i);
                }
            }
            for i in 0..10_000u64 {
                bq.put(&msg).unwrap();
                assert_eq!(bq.get_into(&mut buf).unwrap(), 4096);
                let mut loan = bq.loan(4096).unwrap();
                loan.buf()[0] = i as u8;
                loan.commit();
                assert_eq!(bq.get_ref().unwrap()[0], i as u8);
            }
            for i in 0..100_000u64 {
                a.send(&i).unwrap();
                assert_eq!(b.recv::<u64>().unwrap(), i);
                b.send(&i).unwrap();
                assert_eq!(a.recv::<u64>().unwrap(), i);
            }
            for _ in 0..10_000 {
                a.send_bytes(&msg).unwrap();
                assert_eq!(b.recv_bytes_into(&mut bytes, 0).unwrap(), 4096);
            }
            for i in 0..100_000u64 {
                drop(lock.acquire().unwrap());
                let outer = rlock.acquire().unwrap();
                drop(rlock.acquire().unwrap());
                drop(outer);
                sem.acquire();
                sem.release().unwrap();
                event.set();
                assert!(event.is_set());
                event.clear();
                value.set(i);
                assert_eq!(value.get(), i);
                assert_eq!(dict.get(&(i % 1000)).unwrap(), Some(i % 1000 * 3));
            }
        });
        0
    });
    join(child, "fast paths");
    let made = counted(&counts, 0);
    assert!(
        made.is_empty(),
        "the fast paths made system calls: {made:?}"
    );
}

#[test]
fn a_put_in_one_process_and_its_get_in_another_make_no_system_call() {
    let _serial = one_at_a_time();
    let counts = RawArray::<u64>::new(2 * NR_SLOTS).unwrap();
    let q = Queue::<u64>::new(4096).unwrap();
    // Nobody waits in either phase: the consumer starts after the producer is done.
    // A process's first put or get caches its identity (pid, start time from /proc)
    // and registers it for membarrier: once, before the count.
    join(
        counted_child(|| {
            q.put(0).unwrap();
            counter::count(&counts, 0, || {
                for i in 1..4096 {
                    q.put(i).unwrap();
                }
            });
            0
        }),
        "producer",
    );
    join(
        counted_child(|| {
            let first = q.get() == Ok(0);
            let rest = counter::count(&counts, NR_SLOTS, || (1..4096).all(|i| q.get() == Ok(i)));
            if first && rest { 0 } else { 1 }
        }),
        "consumer",
    );
    assert_eq!(counted(&counts, 0), vec![], "put made system calls");
    assert_eq!(counted(&counts, 1), vec![], "get made system calls");
}

/// Runs two sides in two counted processes at once and checks that the calls
/// either made outside the wait path are few enough to be per holder, not per
/// message; prints what they made per message. Each side is a
/// first step, run before the count (a process's first use of an object caches its
/// identity), and the rest, counted; each returns whether what it saw was right.
fn only_waits_between<P1, P2, C1, C2>(
    shape: &str,
    msgs: u64,
    producer: (P1, P2),
    consumer: (C1, C2),
) where
    P1: FnOnce() -> bool,
    P2: FnOnce() -> bool,
    C1: FnOnce() -> bool,
    C2: FnOnce() -> bool,
{
    let counts = RawArray::<u64>::new(2 * NR_SLOTS).unwrap();
    let side = |proc: usize, first: Step<'_>, rest: Step<'_>| {
        let counts = &counts;
        counted_child(move || {
            let ok = first() && counter::count(counts, proc * NR_SLOTS, rest);
            if ok { 0 } else { 1 }
        })
    };
    let p = side(0, Box::new(producer.0), Box::new(producer.1));
    let c = side(1, Box::new(consumer.0), Box::new(consumer.1));
    join(p, &format!("{shape}: producer"));
    join(c, &format!("{shape}: consumer"));
    for (side, proc) in [("producer", 0), ("consumer", 1)] {
        let all = counted(&counts, proc);
        let total: u64 = all.iter().map(|(_, c)| c).sum();
        eprintln!(
            "{shape} {side}: {:.5} system calls per message {all:?}",
            total as f64 / msgs as f64
        );
        let other = counted_if(&counts, proc, |nr| !wait_path(nr));
        assert!(
            other.iter().map(|(_, c)| c).sum::<u64>() <= ONCE_PER_HOLDER,
            "{shape}: the {side} made system calls outside waiting: {other:?} (all: {all:?})"
        );
    }
}

/// One side's step: whether what it saw was right.
type Step<'a> = Box<dyn FnOnce() -> bool + 'a>;

const STREAM: u64 = 1_000_000;
const TRIPS: u64 = 100_000;

#[test]
fn streaming_makes_system_calls_only_to_wait() {
    let _serial = one_at_a_time();
    for spin in [Spin::DEFAULT, Spin::NONE] {
        let q = Queue::<u64>::new(1024).unwrap();
        q.set_spin(spin);
        only_waits_between(
            &format!("Queue<u64> stream, {spin:?}"),
            STREAM,
            (
                || q.put(0).is_ok(),
                || (1..STREAM).all(|i| q.put(i).is_ok()),
            ),
            (
                || q.get() == Ok(0),
                || (1..STREAM).all(|i| q.get() == Ok(i)),
            ),
        );
        let (rx, tx) = pipe(false).unwrap();
        rx.set_spin(spin);
        tx.set_spin(spin);
        only_waits_between(
            &format!("Pipe u64 stream, {spin:?}"),
            STREAM,
            (
                || tx.send(&0u64).is_ok(),
                || (1..STREAM).all(|i| tx.send(&i).is_ok()),
            ),
            (
                || rx.recv::<u64>() == Ok(0),
                || (1..STREAM).all(|i| rx.recv::<u64>() == Ok(i)),
            ),
        );
    }
}

#[test]
fn ping_pong_makes_system_calls_only_to_wait() {
    let _serial = one_at_a_time();
    let (a, b) = pipe(true).unwrap();
    let trip_a = |i: u64| a.send(&i).is_ok() && a.recv::<u64>() == Ok(i + 1);
    let trip_b = |i: u64| b.recv::<u64>() == Ok(i) && b.send(&(i + 1)).is_ok();
    only_waits_between(
        "Pipe u64 ping-pong",
        TRIPS,
        (|| trip_a(0), || (1..TRIPS).all(trip_a)),
        (|| trip_b(0), || (1..TRIPS).all(trip_b)),
    );
    let (there, back) = (
        Queue::<u64>::new(16).unwrap(),
        Queue::<u64>::new(16).unwrap(),
    );
    let trip_p = |i: u64| there.put(i).is_ok() && back.get() == Ok(i + 1);
    let trip_c = |i: u64| there.get() == Ok(i) && back.put(i + 1).is_ok();
    only_waits_between(
        "Queue<u64> pair ping-pong",
        TRIPS,
        (|| trip_p(0), || (1..TRIPS).all(trip_p)),
        (|| trip_c(0), || (1..TRIPS).all(trip_c)),
    );
}

/// A consumer whose waits keep outlasting its spin (a put every 5 ms against the
/// default 50 µs spin) stops spinning after a few of them: its later waits poll
/// briefly and sleep, without the `sched_yield` a spin makes between rounds of polls.
/// Counted, not timed: the 18 waits after the first 6 yield no more often than those
/// 6 did (spinning every time, they would yield three times as often; a wait that
/// ends within the spin's duration, which scheduling jitter can make of one, lets the
/// next few spin again). It still gets every item in order.
#[test]
fn a_consumer_whose_waits_outlast_the_spin_stops_spinning() {
    let _serial = one_at_a_time();
    const ITEMS: u64 = 24;
    const FIRST: u64 = 6;
    let counts = RawArray::<u64>::new(2 * NR_SLOTS).unwrap();
    let q = Queue::<u64>::new(16).unwrap();
    let ready = RawValue::<u64>::new(0).unwrap();
    let consumer = counted_child(|| {
        // A process's first get caches its identity: before the count, and before
        // the producer starts, so that every counted get waits.
        if q.get_nowait().is_ok() {
            return 2;
        }
        ready.store(1, Ordering::Release);
        let first = counter::count(&counts, 0, || (0..FIRST).all(|i| q.get() == Ok(i)));
        let rest = counter::count(&counts, NR_SLOTS, || {
            (FIRST..ITEMS).all(|i| q.get() == Ok(i))
        });
        if first && rest { 0 } else { 1 }
    });
    while ready.load(Ordering::Acquire) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for i in 0..ITEMS {
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.put(i).unwrap();
    }
    join(consumer, "consumer");
    let yields = |block: usize| {
        counts
            .load(
                block * NR_SLOTS + libc::SYS_sched_yield as usize,
                Ordering::Relaxed,
            )
            .unwrap_or(0)
    };
    assert!(
        yields(0) > 0,
        "the first waits did not spin (no sched_yield): {:?}",
        counted(&counts, 0)
    );
    assert!(
        yields(1) <= yields(0),
        "the {} waits after the first {FIRST} kept spinning: {:?}, against {:?}",
        ITEMS - FIRST,
        counted(&counts, 1),
        counted(&counts, 0)
    );
}
