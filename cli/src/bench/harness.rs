//! What every measurement shares: shared control memory, child processes that die
//! with the benchmark, sequence checks, and the four measurement shapes (one-way
//! stream, round trip, wake-up, many-to-many), each for processes and for threads.
//!
//! Nothing is allocated and nothing is printed inside a timed region: closures get
//! their buffers from outside, and a sequence check is one compare.

use hdrhistogram::Histogram;
use shmproc::Process;
use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
use shmproc::layout::padded::CachePadded;
use shmproc::segment::Segment;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Errors of a measurement: a message saying which message went wrong, or which
/// call failed.
pub type BenchResult<T> = Result<T, String>;

/// `map_err(err)`: any error as its message.
pub fn err<E: Display>(e: E) -> String {
    e.to_string()
}

/// What one measurement of one system gives.
pub enum Sample {
    /// `msgs` messages of `msg_bytes` bytes each in `secs` seconds.
    Rate {
        msgs: u64,
        msg_bytes: u64,
        secs: f64,
    },
    /// Every timed trip or wake-up, in nanoseconds.
    Latency(Histogram<u64>),
}

impl Sample {
    fn rate(msgs: u64, msg_bytes: u64, secs: f64) -> Sample {
        Sample::Rate {
            msgs,
            msg_bytes,
            secs: secs.max(1e-9),
        }
    }
}

/// A histogram for nanosecond latencies from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process, so a
/// timestamp taken by one process can be subtracted from another's.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The check every consumer makes on every message: one compare on the fast path.
#[inline]
pub fn expect_seq(got: u64, want: u64) -> BenchResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(seq_error(got, want))
    }
}

#[cold]
fn seq_error(got: u64, want: u64) -> String {
    if got < want {
        format!("message {got} arrived again or out of order (expected {want})")
    } else {
        format!("message {want} was lost or reordered (got {got} in its place)")
    }
}

/// Control words shared by the processes of one measurement. All zero at start.
#[repr(C)]
pub struct Ctl {
    /// Start flag (0: wait).
    pub go: CachePadded<AtomicU64>,
    /// Producer index of the raw ring; the ping word of the atomic bounce; the futex
    /// word of the bare futex wake.
    pub a: CachePadded<AtomicU64>,
    /// Consumer index of the raw ring; the pong word of the atomic bounce; the
    /// timestamp of the bare futex wake.
    pub b: CachePadded<AtomicU64>,
    /// Per-consumer results of the many-to-many shape: count, checksum, end time.
    pub results: CachePadded<[AtomicU64; 8]>,
}

/// Offset of the data area (raw ring slots) in a [`Shm`].
const DATA_OFFSET: usize = 4096;
const _: () = assert!(size_of::<Ctl>() <= DATA_OFFSET);

/// Anonymous shared memory for the baselines: a [`Ctl`] and a data area, inherited
/// by forked children.
pub struct Shm {
    seg: Segment,
}

impl Shm {
    /// Zero-filled shared memory with `data_bytes` of data area.
    pub fn new(data_bytes: usize) -> BenchResult<Shm> {
        let layout = ObjectLayout {
            kind: ObjectKind::Raw,
            elem: ElemType::NONE,
            slot_size: 0,
            capacity: 0,
            payload_size: (DATA_OFFSET + data_bytes) as u64,
        };
        let seg =
            Segment::anonymous(&layout, |_, _| {}).map_err(|e| format!("shared memory: {e}"))?;
        Ok(Shm { seg })
    }

    /// The control words.
    pub fn ctl(&self) -> &Ctl {
        // SAFETY: the payload is at least DATA_OFFSET >= size_of::<Ctl>() bytes,
        // aligned to at least 1024 (it follows the 1 KiB header in a page-aligned
        // mapping), zero-filled (a valid Ctl: all atomics), lives as long as `self`,
        // and every process touches these words only through the atomics.
        unsafe { &*self.seg.payload().as_ptr().cast::<Ctl>() }
    }

    /// The data area (`data_bytes` long, 4096-aligned).
    pub fn data(&self) -> *mut u8 {
        // SAFETY: the payload is DATA_OFFSET + data_bytes long, so the offset stays
        // inside the mapping.
        unsafe { self.seg.payload().as_ptr().add(DATA_OFFSET) }
    }
}

/// Forks a child running `f`; the child is killed if the benchmark dies, so nothing
/// spins on forever.
pub fn spawn(f: impl FnOnce() -> BenchResult<()>) -> BenchResult<Process> {
    Process::spawn_returning(|| {
        // SAFETY: prctl(PR_SET_PDEATHSIG, signal) takes no pointers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        f()
    })
    .map_err(|e| format!("fork: {e}"))
}

/// Joins the children after the parent's part gave `res`: on an error they are
/// killed first (they may be blocked on a full queue); a child that failed fails the
/// measurement.
pub fn finish<T>(children: Vec<Process>, res: BenchResult<T>) -> BenchResult<T> {
    let failed = res.is_err();
    let mut child_err = None;
    for mut c in children {
        if failed {
            let _ = c.kill();
        }
        match c.join() {
            Ok(s) if s.success() || failed => {}
            Ok(s) => child_err = Some(format!("a child process failed (exit code {})", s.code())),
            Err(e) => child_err = Some(format!("waitpid: {e}")),
        }
    }
    let v = res?;
    child_err.map_or(Ok(v), Err)
}

/// One producer process, the consumer in this process. `send(i)` is called for
/// `i` in `0..total` in the child; `recv()` returns the sequence number of the next
/// message and is checked against `i`. The first `warm` messages are not timed.
pub fn one_way<S, R>(
    total: u64,
    warm: u64,
    msg_bytes: u64,
    mut send: S,
    recv: R,
) -> BenchResult<Sample>
where
    S: FnMut(u64) -> BenchResult<()>,
    R: FnMut() -> BenchResult<u64>,
{
    let child = spawn(move || (0..total).try_for_each(&mut send))?;
    let res = consume(total, warm, recv);
    finish(vec![child], res).map(|secs| Sample::rate(total - warm, msg_bytes, secs))
}

/// [`one_way`] between two threads of this process.
pub fn one_way_threads<S, R>(
    total: u64,
    warm: u64,
    msg_bytes: u64,
    mut send: S,
    recv: R,
) -> BenchResult<Sample>
where
    S: FnMut(u64) -> BenchResult<()> + Send,
    R: FnMut() -> BenchResult<u64>,
{
    beside_thread(
        move || (0..total).try_for_each(&mut send),
        || consume(total, warm, recv),
    )
    .map(|secs| Sample::rate(total - warm, msg_bytes, secs))
}

/// Takes messages `0..total` from `recv`, checking each; times all but the first
/// `warm`, in seconds.
pub fn consume(
    total: u64,
    warm: u64,
    mut recv: impl FnMut() -> BenchResult<u64>,
) -> BenchResult<f64> {
    for i in 0..warm {
        expect_seq(recv()?, i)?;
    }
    let t0 = Instant::now();
    for i in warm..total {
        expect_seq(recv()?, i)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Round trips: `ping(i)` (this process) sends `i` and waits for its echo; `echo(i)`
/// (a child) receives `i` and sends it back. Every trip after the first `warm` is
/// timed.
pub fn round_trips<E, P>(trips: u64, warm: u64, mut echo: E, ping: P) -> BenchResult<Sample>
where
    E: FnMut(u64) -> BenchResult<()>,
    P: FnMut(u64) -> BenchResult<()>,
{
    let child = spawn(move || (0..trips).try_for_each(&mut echo))?;
    let res = time_trips(trips, warm, ping);
    finish(vec![child], res).map(Sample::Latency)
}

/// [`round_trips`] between two threads of this process.
pub fn round_trips_threads<E, P>(trips: u64, warm: u64, mut echo: E, ping: P) -> BenchResult<Sample>
where
    E: FnMut(u64) -> BenchResult<()> + Send,
    P: FnMut(u64) -> BenchResult<()>,
{
    beside_thread(
        move || (0..trips).try_for_each(&mut echo),
        || time_trips(trips, warm, ping),
    )
    .map(Sample::Latency)
}

/// Runs `other` in a second thread while this one runs `this`; this thread's result
/// once both have ended and neither failed.
fn beside_thread<R>(
    other: impl FnOnce() -> BenchResult<()> + Send,
    this: impl FnOnce() -> BenchResult<R>,
) -> BenchResult<R> {
    std::thread::scope(|s| {
        let thread = s.spawn(other);
        let res = this();
        let other_res = thread
            .join()
            .map_err(|_| "the other thread panicked".to_string())?;
        let v = res?;
        other_res?;
        Ok(v)
    })
}

/// Calls `ping(i)` for `i` in `0..trips` and records how long each took, all but
/// the first `warm`.
pub fn time_trips(
    trips: u64,
    warm: u64,
    mut ping: impl FnMut(u64) -> BenchResult<()>,
) -> BenchResult<Histogram<u64>> {
    let mut h = histogram();
    for i in 0..trips {
        let t0 = Instant::now();
        ping(i)?;
        let ns = t0.elapsed().as_nanos() as u64;
        if i >= warm {
            h.saturating_record(ns.max(1));
        }
    }
    Ok(h)
}

/// Wake-ups: a child sleeps `gap` (long enough for the consumer to stop spinning and
/// sleep in the kernel), takes a timestamp and calls `wake(i, now_ns)`; this process,
/// blocked in `sleep()`, gets `(i, timestamp)` back and records now − timestamp.
pub fn wakes<W, S>(
    samples: u64,
    warm: u64,
    gap: Duration,
    mut wake: W,
    mut sleep: S,
) -> BenchResult<Sample>
where
    W: FnMut(u64, u64) -> BenchResult<()>,
    S: FnMut() -> BenchResult<(u64, u64)>,
{
    let child = spawn(move || {
        for i in 0..samples {
            std::thread::sleep(gap);
            wake(i, now_ns())?;
        }
        Ok(())
    })?;
    let res = (|| {
        let mut h = histogram();
        for i in 0..samples {
            let (seq, sent) = sleep()?;
            let ns = now_ns().saturating_sub(sent);
            expect_seq(seq, i)?;
            if i >= warm {
                h.saturating_record(ns.max(1));
            }
        }
        Ok(h)
    })();
    finish(vec![child], res).map(Sample::Latency)
}

/// The end-of-stream item of the many-to-many shape.
pub const STOP: u64 = u64::MAX;

/// An item of producer `p`, sequence `i`.
#[inline]
pub fn mpmc_item(p: u64, i: u64) -> u64 {
    (p << 48) | i
}

/// What one consumer of the many-to-many shape saw.
#[derive(Default, Clone, Copy)]
struct Consumed {
    count: u64,
    sum: u64,
    end_ns: u64,
}

/// A consumer: takes items until the first STOP, checking that each producer's
/// items arrive in increasing order.
fn consume_mpmc(mut get: impl FnMut() -> BenchResult<u64>) -> BenchResult<Consumed> {
    let mut next = [0u64; 2];
    let mut c = Consumed::default();
    loop {
        let item = get()?;
        if item == STOP {
            c.end_ns = now_ns();
            return Ok(c);
        }
        let (p, i) = ((item >> 48) as usize, item & ((1 << 48) - 1));
        if p > 1 || i < next[p] {
            return Err(format!(
                "producer {p}'s message {i} arrived out of order (after {})",
                next[p].wrapping_sub(1)
            ));
        }
        next[p] = i + 1;
        c.count += 1;
        c.sum = c.sum.wrapping_add(i);
    }
}

/// Checks that two consumers together got every item of two producers exactly once
/// and turns the run into a rate from `t0_ns`.
fn mpmc_sample(per_producer: u64, t0_ns: u64, got: [Consumed; 2]) -> BenchResult<Sample> {
    let count = got[0].count + got[1].count;
    let sum = got[0].sum.wrapping_add(got[1].sum);
    // Each producer sends 0..n: the sequence numbers add up to 2 × n(n−1)/2.
    let want_sum = per_producer.wrapping_mul(per_producer.saturating_sub(1));
    if count != 2 * per_producer || sum != want_sum {
        return Err(format!(
            "consumers got {count} items (checksum {sum}), expected {} (checksum {want_sum})",
            2 * per_producer
        ));
    }
    let end = got[0].end_ns.max(got[1].end_ns);
    Ok(Sample::rate(
        count,
        8,
        end.saturating_sub(t0_ns) as f64 / 1e9,
    ))
}

/// Two producer and two consumer processes on one queue: `put` and `get` are
/// called in the children. Timed from the start flag to the last consumer's end.
pub fn mpmc<P, G>(per_producer: u64, put: P, get: G) -> BenchResult<Sample>
where
    P: Fn(u64) -> BenchResult<()>,
    G: Fn() -> BenchResult<u64>,
{
    let shm = Shm::new(0)?;
    let ctl = shm.ctl();
    let mut kids = Vec::new();
    let res = (|| {
        for c in 0..2 {
            let get = &get;
            kids.push(spawn(move || {
                let got = consume_mpmc(get)?;
                let r = &ctl.results[c * 3..c * 3 + 3];
                r[0].store(got.count, Ordering::Relaxed);
                r[1].store(got.sum, Ordering::Relaxed);
                r[2].store(got.end_ns, Ordering::Relaxed);
                Ok(())
            })?);
        }
        for p in 0..2 {
            let put = &put;
            kids.push(spawn(move || {
                while ctl.go.load(Ordering::Acquire) == 0 {
                    std::hint::spin_loop();
                }
                (0..per_producer).try_for_each(|i| put(mpmc_item(p, i)))?;
                put(STOP)
            })?);
        }
        let t0 = now_ns();
        // Starts the producers; paired with their Acquire loads.
        ctl.go.store(1, Ordering::Release);
        Ok(t0)
    })();
    let t0 = finish(kids, res)?;
    let got = [0, 1].map(|c| {
        let r = &ctl.results[c * 3..c * 3 + 3];
        Consumed {
            count: r[0].load(Ordering::Relaxed),
            sum: r[1].load(Ordering::Relaxed),
            end_ns: r[2].load(Ordering::Relaxed),
        }
    });
    mpmc_sample(per_producer, t0, got)
}

/// [`mpmc`] with four threads of this process.
pub fn mpmc_threads<P, G>(per_producer: u64, put: P, get: G) -> BenchResult<Sample>
where
    P: Fn(u64) -> BenchResult<()> + Sync,
    G: Fn() -> BenchResult<u64> + Sync,
{
    let go = AtomicU64::new(0);
    std::thread::scope(|s| {
        let consumers: Vec<_> = (0..2).map(|_| s.spawn(|| consume_mpmc(&get))).collect();
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let (put, go) = (&put, &go);
                s.spawn(move || {
                    while go.load(Ordering::Acquire) == 0 {
                        std::hint::spin_loop();
                    }
                    (0..per_producer).try_for_each(|i| put(mpmc_item(p, i)))?;
                    put(STOP)
                })
            })
            .collect();
        let t0 = now_ns();
        go.store(1, Ordering::Release);
        for p in producers {
            p.join()
                .map_err(|_| "producer thread panicked".to_string())??;
        }
        let mut got = [Consumed::default(); 2];
        for (g, c) in got.iter_mut().zip(consumers) {
            *g = c
                .join()
                .map_err(|_| "consumer thread panicked".to_string())??;
        }
        mpmc_sample(per_producer, t0, got)
    })
}

/// A key spread over `0..keys` by the i-th step (splitmix64, so consecutive steps hit
/// unrelated keys and caches, not a stride).
#[inline]
pub fn key_of(i: u64, keys: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % keys.max(1)
}

/// Operations in this process, one caller: `op(i)` for `i` in `0..total`, all but the
/// first `warm` timed; each counts as one message of `msg_bytes`.
pub fn ops(
    total: u64,
    warm: u64,
    msg_bytes: u64,
    mut op: impl FnMut(u64) -> BenchResult<()>,
) -> BenchResult<Sample> {
    (0..warm).try_for_each(&mut op)?;
    let t0 = Instant::now();
    (warm..total).try_for_each(&mut op)?;
    Ok(Sample::rate(
        total - warm,
        msg_bytes,
        t0.elapsed().as_secs_f64(),
    ))
}

/// Two worker processes calling `op(worker, i)` for `i` in `0..per_worker`, started
/// together by a flag. Timed from the flag to the later worker's end.
pub fn two_workers<O>(per_worker: u64, msg_bytes: u64, op: O) -> BenchResult<Sample>
where
    O: Fn(u64, u64) -> BenchResult<()>,
{
    let shm = Shm::new(0)?;
    let ctl = shm.ctl();
    let mut kids = Vec::new();
    let res = (|| {
        for w in 0..2u64 {
            let op = &op;
            kids.push(spawn(move || {
                // Paired with the parent's Release store of the start flag.
                while ctl.go.load(Ordering::Acquire) == 0 {
                    std::hint::spin_loop();
                }
                (0..per_worker).try_for_each(|i| op(w, i))?;
                ctl.results[w as usize].store(now_ns(), Ordering::Relaxed);
                Ok(())
            })?);
        }
        let t0 = now_ns();
        // Starts the workers; paired with their Acquire loads.
        ctl.go.store(1, Ordering::Release);
        Ok(t0)
    })();
    // The workers' end times are read after they were joined (waitpid orders them).
    let t0 = finish(kids, res)?;
    let end = ctl.results[0]
        .load(Ordering::Relaxed)
        .max(ctl.results[1].load(Ordering::Relaxed));
    Ok(Sample::rate(
        2 * per_worker,
        msg_bytes,
        end.saturating_sub(t0) as f64 / 1e9,
    ))
}

/// [`two_workers`] with two threads of this process.
pub fn two_workers_threads<O>(per_worker: u64, msg_bytes: u64, op: O) -> BenchResult<Sample>
where
    O: Fn(u64, u64) -> BenchResult<()> + Sync,
{
    let go = AtomicU64::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let (op, go) = (&op, &go);
                s.spawn(move || {
                    while go.load(Ordering::Acquire) == 0 {
                        std::hint::spin_loop();
                    }
                    (0..per_worker).try_for_each(|i| op(w, i))?;
                    Ok::<u64, String>(now_ns())
                })
            })
            .collect();
        let t0 = now_ns();
        go.store(1, Ordering::Release);
        let mut end = t0;
        for w in workers {
            let e = w
                .join()
                .map_err(|_| "worker thread panicked".to_string())??;
            end = end.max(e);
        }
        Ok(Sample::rate(
            2 * per_worker,
            msg_bytes,
            end.saturating_sub(t0) as f64 / 1e9,
        ))
    })
}
