//! Start methods: spawn and forkserver children, handed shmproc objects as handles.
//!
//! A spawned child re-executes this test binary, so the binary has its own `main`
//! (`harness = false`) that calls `shmproc::start::init()` before anything else, as
//! every program using spawn must. Run one test with `cargo test --test start NAME`.

mod common;

use common::TestName;
use shmproc::start::{Decoder, Encoder, HandoffError, Portable, StartError, StartMethod};
use shmproc::sync::{Event, Lock};
use shmproc::{Array, Connection, ExitStatus, Process, Queue, Value};
use std::sync::Mutex;
use std::time::Duration;

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Forkserver];

fn returns_seven(_: ()) -> i32 {
    7
}

fn panics(_: ()) {
    panic!("boom in a spawned child");
}

fn fails(_: ()) -> Result<(), String> {
    Err("an error".into())
}

fn reports_pid(q: Queue<u32>) {
    q.put(std::process::id()).unwrap();
}

/// Exit codes and panics come back as from a forked child; the child is a process of
/// its own, not the parent.
fn exit_codes_and_panics() {
    for method in METHODS {
        let mut p = Process::start(method, returns_seven, ()).unwrap();
        assert_eq!(p.join().unwrap(), ExitStatus::Exited(7), "{method}");
        let mut p = Process::start(method, panics, ()).unwrap();
        assert_eq!(p.join().unwrap().code(), 1, "{method}");
        let mut p = Process::start(method, fails, ()).unwrap();
        assert_eq!(p.join().unwrap().code(), 1, "{method}");
        let q = Queue::<u32>::new(4).unwrap();
        let mut p = Process::start(method, reports_pid, q.clone()).unwrap();
        let pid = q.get().unwrap();
        assert_eq!(pid, p.pid(), "{method}");
        assert_ne!(pid, std::process::id());
        assert!(p.join().unwrap().success());
        // join again: the same status, no error.
        assert!(p.join().unwrap().success());
    }
}

fn waits_for(e: Event) {
    e.wait();
}

/// join_timeout, is_alive, exitcode, terminate and kill behave the same for every
/// method.
fn lifecycle_controls() {
    for method in METHODS {
        let e = Event::new().unwrap();
        let mut p = Process::start(method, waits_for, e.clone()).unwrap();
        assert!(p.is_alive(), "{method}");
        assert_eq!(p.exitcode(), None);
        assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
        p.terminate().unwrap();
        assert_eq!(p.join().unwrap(), ExitStatus::Signaled(15), "{method}");
        assert_eq!(p.exitcode(), Some(-15));
        assert!(!p.is_alive());
        p.kill().unwrap(); // reaped: does nothing

        let mut p = Process::start(method, waits_for, e.clone()).unwrap();
        p.kill().unwrap();
        assert_eq!(p.join().unwrap(), ExitStatus::Signaled(9), "{method}");

        let mut p = Process::start(method, waits_for, e.clone()).unwrap();
        e.set();
        let status = p.join_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, Some(ExitStatus::Exited(0)), "{method}");
    }
}

type Kit = (Queue<u64>, Connection, Lock, Value<u64>, Array<u32>, Event);

/// Uses every object it was handed.
fn uses_the_kit((queue, conn, lock, value, array, named): Kit) {
    {
        let _g = lock.acquire().unwrap();
        value.set(value.get().unwrap() + 100).unwrap();
    }
    let mut a = array.lock().unwrap();
    for i in 0..a.len() {
        let v = a.get(i).unwrap();
        a.set(i, v * 10);
    }
    drop(a);
    for i in 0..10 {
        queue.put(i).unwrap();
    }
    conn.send(&0xfeed_u64).unwrap();
    let back: u64 = conn.recv().unwrap();
    conn.send(&(back + 1)).unwrap();
    named.set();
}

/// A spawned child receives a Queue, a pipe end, a Lock, a Value, an anonymous
/// Array and a named Event as handles, and uses them.
fn objects_travel_as_handles() {
    for method in METHODS {
        let name = TestName::new("start-event");
        let named = Event::create(&name).unwrap();
        let queue = Queue::<u64>::new(16).unwrap();
        let (ours, theirs) = shmproc::pipe(true).unwrap();
        let lock = Lock::new().unwrap();
        let value = Value::new(5u64).unwrap();
        let array = Array::<u32>::from_slice(&[1, 2, 3]).unwrap();
        let kit: Kit = (
            queue.clone(),
            theirs,
            lock.clone(),
            value.clone(),
            array.clone(),
            Event::open(&name).unwrap(),
        );
        let mut p = Process::start(method, uses_the_kit, kit).unwrap();
        assert_eq!(ours.recv::<u64>().unwrap(), 0xfeed, "{method}");
        ours.send(&41u64).unwrap();
        assert_eq!(ours.recv::<u64>().unwrap(), 42);
        assert_eq!(p.join().unwrap(), ExitStatus::Exited(0), "{method}");
        let got: Vec<u64> = (0..10).map(|_| queue.get().unwrap()).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(value.get().unwrap(), 105);
        assert_eq!(array.to_vec().unwrap(), vec![10, 20, 30]);
        assert!(named.is_set());
        assert!(!lock.locked());
    }
}

fn holds_pipe_end((conn, started): (Connection, Event)) {
    conn.send(&1u64).unwrap();
    started.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A spawned holder of a pipe end registers itself: the parent's end sees EOF when
/// that child is killed, although the parent dropped its own copy long before.
fn eof_when_spawned_holder_dies() {
    for method in METHODS {
        let (ours, theirs) = shmproc::pipe(true).unwrap();
        let started = Event::new().unwrap();
        let mut p = Process::start(method, holds_pipe_end, (theirs, started.clone())).unwrap();
        // `theirs` was moved into start and dropped once the child held its own.
        assert!(started.wait_timeout(Duration::from_secs(60)));
        assert_eq!(ours.recv::<u64>().unwrap(), 1);
        assert!(!ours.poll(Some(Duration::ZERO)).unwrap());
        p.kill().unwrap();
        p.join().unwrap();
        let r = ours.recv::<u64>();
        assert!(
            matches!(r, Err(shmproc::pipe::RecvError::Eof)),
            "{method}: {r:?}"
        );
    }
}

static HELD: Mutex<u64> = Mutex::new(0);

fn touches_the_held_mutex(n: u64) -> i32 {
    // Under fork this would hang: the parent's thread held HELD at the fork, and
    // the forked copy's lock would stay held forever. A spawned or forkserver child
    // has a fresh HELD, and a fresh allocator.
    let mut g = HELD.lock().unwrap();
    *g += n;
    let v: Vec<u64> = (0..1000).collect();
    (v.len() as u64 + *g - n - 1000) as i32
}

/// A parent with 8 busy threads — one holding a std Mutex across every start, the
/// others allocating — starts 20 children with each method; none deadlocks (with
/// `fork`, the children would block on the held Mutex forever).
fn multithreaded_parent() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let _g = HELD.lock().unwrap();
            held_tx.send(()).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
    }
    held_rx.recv().unwrap();
    for t in 0..7 {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v: Vec<u64> = (0..(64 + t * 13)).collect();
                n = n.wrapping_add(v.iter().sum::<u64>());
                drop(std::hint::black_box(format!("{n}")));
            }
        }));
    }
    for method in METHODS {
        let mut children: Vec<Process> = (0..20)
            .map(|i| Process::start(method, touches_the_held_mutex, i).unwrap())
            .collect();
        for p in &mut children {
            assert_eq!(p.join().unwrap(), ExitStatus::Exited(0), "{method}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

/// A forkserver child outlives the thread that asked for it.
fn forkserver_child_outlives_its_thread() {
    let e = Event::new().unwrap();
    let e2 = e.clone();
    let mut p =
        std::thread::spawn(move || Process::start(StartMethod::Forkserver, waits_for, e2).unwrap())
            .join()
            .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(p.is_alive());
    e.set();
    assert_eq!(p.join().unwrap(), ExitStatus::Exited(0));
}

/// Encodes as whatever it holds, decodes as a Lock: a parent that lies about what it
/// sends, to show the child's checks.
type EncodeFn = Box<dyn Fn(&mut Encoder) -> Result<(), HandoffError>>;
struct Forged(EncodeFn);

impl Portable for Forged {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        (self.0)(enc)
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        Lock::decode(dec).map(|_| Forged(Box::new(|_| Ok(()))))
    }
}

fn takes_forged(_: Forged) -> i32 {
    0
}

fn expect_refused(method: StartMethod, f: Forged, says: &str) {
    match Process::start(method, takes_forged, f) {
        Err(StartError::Refused(why)) => {
            assert!(why.contains(says), "{method}: {why:?} should say {says:?}")
        }
        other => panic!("{method}: expected a refusal, got {other:?}"),
    }
}

/// A wrong or forged handle is a clear error, from the child, returned by start.
fn forged_handles_are_refused() {
    for method in METHODS {
        let q = Queue::<u64>::new(4).unwrap();
        expect_refused(
            method,
            Forged(Box::new(move |enc| q.encode(enc))),
            "expected Lock, found Queue",
        );
        expect_refused(
            method,
            Forged(Box::new(|enc| {
                enc.put_bytes(&[9]);
                Ok(())
            })),
            "object handle tag 9",
        );
        let not_a_segment = std::fs::File::open("/proc/self/exe").unwrap();
        expect_refused(
            method,
            Forged(Box::new(move |enc| {
                let i = enc.put_fd(&not_a_segment)?;
                enc.put_bytes(&[0]);
                (i as u64).encode(enc)?;
                enc.put_bytes(&[0]);
                Ok(())
            })),
            "not a shmproc segment",
        );
        expect_refused(
            method,
            Forged(Box::new(|enc| {
                enc.put_bytes(&[0]);
                5u64.encode(enc)?;
                enc.put_bytes(&[0]);
                Ok(())
            })),
            "descriptor 5 missing",
        );
        let lock = Lock::new().unwrap();
        expect_refused(
            method,
            Forged(Box::new(move |enc| {
                lock.encode(enc)?;
                enc.put_bytes(b"extra");
                Ok(())
            })),
            "left over",
        );
    }
}

fn takes_bytes(v: Vec<u8>) -> i32 {
    v.len() as i32
}

/// Arguments too large for a request, or objects that cannot travel, fail the start
/// in the parent; no child is started.
fn bad_arguments_fail_in_the_parent() {
    for method in METHODS {
        let r = Process::start(method, takes_bytes, vec![0u8; 1 << 20]);
        assert!(
            matches!(r, Err(StartError::ArgsTooLarge { bytes, .. }) if bytes > 1 << 20),
            "{r:?}"
        );
        let lock = Lock::new().unwrap();
        let v = Value::with_lock(0u64, &lock).unwrap();
        let r = Process::start(method, |_: Value<u64>| 0, v);
        let msg = r.map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("with_lock"), "{msg}");
        // A small Vec travels.
        let mut p = Process::start(method, takes_bytes, vec![1u8; 1000]).unwrap();
        assert_eq!(p.join().unwrap().code(), 1000 % 256);
    }
}

#[cfg(feature = "serde")]
fn serde_arguments() {
    use shmproc::start::Serde;
    fn total(Serde(v): Serde<Vec<(String, u32)>>) -> i32 {
        v.iter().map(|(s, n)| s.len() as i32 * *n as i32).sum()
    }
    for method in METHODS {
        let arg = Serde(vec![("ab".to_string(), 3), ("xyz".into(), 4)]);
        let mut p = Process::start(method, total, arg).unwrap();
        assert_eq!(p.join().unwrap().code(), 18);
    }
}

/// The Fork method runs the same functions with the same arguments.
fn fork_method_takes_the_same_calls() {
    let q = Queue::<u32>::new(4).unwrap();
    let mut p = Process::start(StartMethod::Fork, reports_pid, q.clone()).unwrap();
    assert_eq!(q.get().unwrap(), p.pid());
    assert!(p.join().unwrap().success());
}

fn square(x: u64) -> u64 {
    x * x
}

fn worker_pid(_: u64) -> u32 {
    std::process::id()
}

fn dies_on_three(x: u64) -> u64 {
    if x == 3 {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    }
    x
}

static INIT_MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn mark() {
    INIT_MARK.store(7, std::sync::atomic::Ordering::Relaxed);
}

fn read_mark(_: u64) -> u64 {
    INIT_MARK.load(std::sync::atomic::Ordering::Relaxed)
}

/// A Pool whose workers are spawned or forkserver children: map in order, the
/// initializer ran in each worker, results come from the workers, a killed worker
/// fails its task and is replaced.
fn pool_with_every_method() {
    for method in METHODS {
        let pool = shmproc::Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(mark)
            .build()
            .unwrap();
        let out = pool.map(square, 0..100u64).unwrap();
        assert_eq!(
            out,
            (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
            "{method}"
        );
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert!(
            pool.map(read_mark, 0..8u64)
                .unwrap()
                .iter()
                .all(|&m| m == 7),
            "{method}"
        );
        let pids = pool.pids();
        for pid in pool.map_chunked(worker_pid, 0..8u64, 1).unwrap() {
            assert!(pids.contains(&pid), "{method}: {pid} not in {pids:?}");
            assert_ne!(pid, std::process::id());
        }
        let r = pool.map_chunked(dies_on_three, 0..6u64, 1);
        assert!(
            matches!(r, Err(shmproc::PoolError::WorkerDied { .. })),
            "{method}: {r:?}"
        );
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81, "{method}");
        pool.close();
        pool.join().unwrap();
    }
}

/// The owner of a forkserver pool killed with SIGKILL: its workers, children of the
/// server and not of the owner, exit on their own (they watch the owner's pidfd).
fn forkserver_workers_exit_with_their_owner() {
    let q = Queue::<u32>::new(8).unwrap();
    let q2 = q.clone();
    let mut owner = Process::spawn(move || {
        let pool = shmproc::Pool::builder()
            .processes(2)
            .start_method(StartMethod::Forkserver)
            .build()
            .unwrap();
        for pid in pool.pids() {
            q2.put(pid).unwrap();
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let workers = [q.get().unwrap(), q.get().unwrap()];
    assert!(workers.iter().all(|&w| shmproc::process::is_alive(w, 0)));
    owner.kill().unwrap();
    owner.join().unwrap();
    for w in workers {
        // A guard against hanging, not a bound on how fast: the watch thread sees
        // the pidfd at once.
        let since = std::time::Instant::now();
        while shmproc::process::is_alive(w, 0) && since.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if shmproc::process::is_alive(w, 0) {
            // Kill the survivors before failing: left alive, they would hold the test
            // harness's output open.
            for w in workers {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &w.to_string()])
                    .status();
            }
            panic!("worker {w} outlived its owner");
        }
    }
}

fn fills_dict_and_list((d, l, n): (shmproc::Dict<u64, u64>, shmproc::List<u64>, u64)) {
    for i in 0..n {
        d.insert(i, i * i).unwrap();
        l.append(i + 1).unwrap();
    }
}

/// A Dict and a List handed to a spawned child are the parent's: what the child
/// writes, the parent reads.
fn dict_and_list_travel() {
    for method in METHODS {
        let d = shmproc::Dict::<u64, u64>::new().unwrap();
        let l = shmproc::List::<u64>::new().unwrap();
        let mut p =
            Process::start(method, fills_dict_and_list, (d.clone(), l.clone(), 100)).unwrap();
        assert!(p.join().unwrap().success(), "{method}");
        assert_eq!(d.len(), 100);
        assert_eq!(d.get(&9).unwrap(), Some(81));
        assert_eq!(l.len(), 100);
        assert_eq!(l.get(99).unwrap(), Some(100));
    }
}

fn holds_lock_forever((lock, held): (Lock, Event)) {
    let g = lock.acquire().unwrap();
    held.set();
    std::mem::forget(g);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A spawned child killed while holding a Lock: the next acquirer gets OwnerDied,
/// as with a forked one.
fn lock_owner_death_is_seen() {
    for method in METHODS {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p =
            Process::start(method, holds_lock_forever, (lock.clone(), held.clone())).unwrap();
        assert!(held.wait_timeout(Duration::from_secs(60)));
        assert_eq!(lock.owner(), Some(p.pid()), "{method}");
        p.kill().unwrap();
        p.join().unwrap();
        let r = lock.acquire();
        assert!(
            matches!(r, Err(shmproc::sync::AcquireError::OwnerDied(_))),
            "{method}: {r:?}"
        );
    }
}

/// The forkserver killed under its children: joining them is an error, not a hang;
/// they can still be killed (through their pidfds); the next start brings up a new
/// server.
fn forkserver_death_is_an_error() {
    let e = Event::new().unwrap();
    let mut a = Process::start(StartMethod::Forkserver, waits_for, e.clone()).unwrap();
    let mut b = Process::start(StartMethod::Forkserver, waits_for, e.clone()).unwrap();
    let server = shmproc::start::forkserver_pid().unwrap();
    let mut killer = Process::spawn(move || {
        let _ = std::process::Command::new("kill")
            .args(["-9", &server.to_string()])
            .status();
    })
    .unwrap();
    killer.join().unwrap();
    let r = a.join();
    assert!(r.is_err(), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("forkserver"));
    assert!(b.is_alive() || b.join().is_err());
    a.kill().unwrap();
    b.kill().unwrap();
    e.set();
    let mut c = Process::start(StartMethod::Forkserver, returns_seven, ()).unwrap();
    assert_eq!(c.join().unwrap().code(), 7);
    assert_ne!(shmproc::start::forkserver_pid(), Some(server));
}

fn main() {
    shmproc::start::init();
    // A process group of our own: if a test fails with children still waiting (for
    // an event the failed test never set), they are killed with the group at the
    // end instead of holding the harness's output open forever.
    // SAFETY: setpgid(0, 0) takes no pointers.
    unsafe {
        libc::setpgid(0, 0);
    }
    let tests: &[(&str, fn())] = &[
        ("exit_codes_and_panics", exit_codes_and_panics),
        ("lifecycle_controls", lifecycle_controls),
        ("objects_travel_as_handles", objects_travel_as_handles),
        ("eof_when_spawned_holder_dies", eof_when_spawned_holder_dies),
        ("multithreaded_parent", multithreaded_parent),
        (
            "forkserver_child_outlives_its_thread",
            forkserver_child_outlives_its_thread,
        ),
        ("forged_handles_are_refused", forged_handles_are_refused),
        (
            "bad_arguments_fail_in_the_parent",
            bad_arguments_fail_in_the_parent,
        ),
        #[cfg(feature = "serde")]
        ("serde_arguments", serde_arguments),
        (
            "fork_method_takes_the_same_calls",
            fork_method_takes_the_same_calls,
        ),
        ("pool_with_every_method", pool_with_every_method),
        ("dict_and_list_travel", dict_and_list_travel),
        ("forkserver_death_is_an_error", forkserver_death_is_an_error),
        ("lock_owner_death_is_seen", lock_owner_death_is_seen),
        (
            "forkserver_workers_exit_with_their_owner",
            forkserver_workers_exit_with_their_owner,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let list = std::env::args().any(|a| a == "--list");
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        if list {
            println!("{name}: test");
            continue;
        }
        ran += 1;
        print!("test {name} ... ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("ok"),
            Err(_) => {
                println!("FAILED");
                failed.push(*name);
            }
        }
    }
    if list {
        return;
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // Every process of the group: children the failed tests left, the
        // forkserver, and this process (cargo reports the signal as a failure).
        // SAFETY: kill(2) takes no pointers.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
        std::process::exit(101);
    }
}
