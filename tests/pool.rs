//! Pool with real worker processes.

use shmproc::{Pool, PoolError, Process, Queue};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

fn square(x: u64) -> u64 {
    x * x
}

/// The seed program: `Pool(3).map(getpid, range(5))`.
#[test]
fn seed_program_maps_over_worker_pids() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.map(my_pid, 0..5).unwrap();
    assert_eq!(pids.len(), 5);
    let workers = pool.pids();
    assert_eq!(workers.len(), 3);
    for p in &pids {
        assert_ne!(*p, std::process::id());
        assert!(workers.contains(p), "{p} is not a worker ({workers:?})");
    }
    pool.close();
    pool.join().unwrap();
}

#[test]
fn map_keeps_input_order_with_any_chunksize() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<u64> = (0..1000u64).map(square).collect();
    assert_eq!(pool.map(square, 0..1000).unwrap(), want);
    for chunksize in [1, 3, 7, 100, 999, 1000, 5000] {
        assert_eq!(
            pool.map_chunked(square, 0..1000, chunksize).unwrap(),
            want,
            "chunksize {chunksize}"
        );
    }
    // A closure that captures nothing, of another type.
    let halves = pool.map(|x: u32| f64::from(x) / 2.0, 0..10u32).unwrap();
    assert_eq!(halves[3], 1.5);
    let r = pool.map_async(square, 0..50).unwrap();
    assert_eq!(r.get().unwrap(), want[..50]);
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    let mut a = pool.apply_async(square, 5).unwrap();
    assert_eq!(a.get_timeout(Duration::from_secs(30)).unwrap(), 25);
    assert!(matches!(
        a.get_timeout(Duration::from_secs(1)),
        Err(PoolError::ResultTaken)
    ));
}

#[test]
fn empty_input_from_every_api() {
    let pool = Pool::new(2).unwrap();
    assert!(pool.map(square, std::iter::empty()).unwrap().is_empty());
    assert!(pool.map_chunked(square, Vec::new(), 4).unwrap().is_empty());
    let r = pool.map_async(square, Vec::new()).unwrap();
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert!(r.get().unwrap().is_empty());
    assert_eq!(pool.imap(square, std::iter::empty()).unwrap().count(), 0);
    assert_eq!(pool.imap_unordered(square, Vec::new()).unwrap().count(), 0);
    assert_eq!(pool.imap_chunked(square, Vec::new(), 5).unwrap().count(), 0);
}

#[test]
fn bad_arguments_are_errors() {
    assert!(matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))));
    assert!(matches!(
        Pool::new(1_000_000),
        Err(PoolError::InvalidArgument(_))
    ));
    let e = Pool::builder()
        .processes(1)
        .maxtasksperchild(0)
        .build()
        .unwrap_err();
    assert!(matches!(e, PoolError::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("maxtasksperchild"));
    let pool = Pool::new(1).unwrap();
    assert!(matches!(
        pool.map_chunked(square, 0..3, 0),
        Err(PoolError::InvalidArgument(_))
    ));
    assert!(matches!(
        pool.imap_chunked(square, 0..3, 0),
        Err(PoolError::InvalidArgument(_))
    ));
    // An item too large for a task message.
    let huge = Box::new([[0u64; 4096]; 4]);
    assert!(matches!(
        pool.apply(|x: [[u64; 4096]; 4]| x[0][0], *huge),
        Err(PoolError::InvalidArgument(_))
    ));
    assert!(matches!(pool.join(), Err(PoolError::StillRunning)));
    pool.close();
    assert!(matches!(pool.map(square, 0..3), Err(PoolError::Closed)));
    assert!(matches!(
        pool.apply_async(square, 3),
        Err(PoolError::Closed)
    ));
    pool.join().unwrap();
}

fn panics_on_seven(x: u64) -> u64 {
    if x == 7 {
        panic!("seven is right out");
    }
    x
}

#[test]
fn a_panicking_task_fails_with_message_and_pid_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    let e = pool.map_chunked(panics_on_seven, 0..20, 2).unwrap_err();
    let PoolError::Panicked { pid, message } = &e else {
        panic!("expected Panicked, got {e}");
    };
    assert!(message.contains("seven is right out"), "{message}");
    assert_ne!(*pid, std::process::id());
    assert!(e.to_string().contains(&pid.to_string()));
    // Still usable, by the same workers.
    assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
    let mut it = pool.imap(panics_on_seven, 5..10).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 5);
    assert_eq!(it.next().unwrap().unwrap(), 6);
    assert!(matches!(it.next(), Some(Err(PoolError::Panicked { .. }))));
    assert_eq!(it.next().unwrap().unwrap(), 8);
    assert_eq!(it.next().unwrap().unwrap(), 9);
    assert!(it.next().is_none());
    drop(it);
    let r = pool.map_async(panics_on_seven, 0..10).unwrap();
    r.wait();
    assert_eq!(r.successful(), Some(false));
    assert!(r.get().is_err());
    pool.close();
    pool.join().unwrap();
}

fn dies_on_three(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: kill(2) on this process; no memory involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    x * 10
}

#[test]
fn a_worker_killed_mid_map_fails_only_its_task_and_is_replaced() {
    let pool = Pool::new(2).unwrap();
    let before = pool.pids();
    let r = pool.map_async_chunked(dies_on_three, 0..10, 1).unwrap();
    let e = r.get().unwrap_err();
    let PoolError::WorkerDied { pid, status } = e else {
        panic!("expected WorkerDied, got {e}");
    };
    assert!(before.contains(&pid));
    assert_eq!(status, shmproc::ExitStatus::Signaled(9));
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&pid), "the dead worker was replaced");
    // Every other task completed: imap shows each result.
    let got: Vec<_> = pool.imap(dies_on_three, 0..10).unwrap().collect();
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u64 * 10),
            Err(PoolError::WorkerDied { status, .. }) => {
                assert_eq!(i, 3);
                assert_eq!(*status, shmproc::ExitStatus::Signaled(9));
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    assert!(got[3].is_err());
    assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_worker_killed_from_outside_is_replaced() {
    let pool = Pool::new(2).unwrap();
    let victim = pool.pids()[0];
    // SAFETY: kill(2) of our own child; no memory involved.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let want: Vec<u64> = (0..100u64).map(square).collect();
    assert_eq!(pool.map_chunked(square, 0..100, 1).unwrap(), want);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.pids().contains(&victim) && Instant::now() < deadline {
        let _ = pool.apply(square, 1);
    }
    assert!(!pool.pids().contains(&victim));
}

#[test]
fn maxtasksperchild_gives_fresh_workers() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let pids = pool.map_chunked(my_pid, 0..8, 1).unwrap();
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "each task in a fresh worker: {pids:?}");
    pool.close();
    pool.join().unwrap();
}

static INIT_RUNS: AtomicUsize = AtomicUsize::new(0);

fn count_init() {
    INIT_RUNS.fetch_add(1, Ordering::Relaxed);
}

fn init_runs(_: u32) -> u64 {
    INIT_RUNS.load(Ordering::Relaxed) as u64
}

#[test]
fn initializer_runs_once_per_worker() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(count_init)
        .build()
        .unwrap();
    // Each worker sees its own counter (its memory is its own after fork): 1 each.
    let runs = pool.map_chunked(init_runs, 0..20, 1).unwrap();
    assert!(runs.iter().all(|&r| r == 1), "{runs:?}");
    assert_eq!(INIT_RUNS.load(Ordering::Relaxed), 0, "not in the parent");
}

fn bad_init() {
    panic!("no config file");
}

#[test]
fn a_panicking_initializer_fails_the_work() {
    let pool = Pool::builder()
        .processes(1)
        .initializer(bad_init)
        .build()
        .unwrap();
    let e = pool.map(square, 0..4).unwrap_err();
    let PoolError::Initializer { message, .. } = &e else {
        panic!("expected Initializer, got {e}");
    };
    assert!(message.contains("no config file"));
    assert!(matches!(
        pool.apply(square, 1),
        Err(PoolError::Initializer { .. })
    ));
}

#[test]
fn imap_over_an_endless_input_keeps_in_flight_bounded() {
    let pool = Pool::new(2).unwrap();
    let pulled = AtomicUsize::new(0);
    let input = (0u64..).inspect(|_| {
        pulled.fetch_add(1, Ordering::Relaxed);
    });
    let mut it = pool.imap(square, input).unwrap();
    let bound = it.max_in_flight() + 1;
    for i in 0..1000u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
        assert!(pulled.load(Ordering::Relaxed) <= i as usize + 1 + bound);
    }
    drop(it);
    assert!(pulled.load(Ordering::Relaxed) <= 1000 + bound);

    // Unordered, chunked: every result once.
    let pulled2 = AtomicUsize::new(0);
    let input = (0u64..).inspect(|_| {
        pulled2.fetch_add(1, Ordering::Relaxed);
    });
    let it = pool.imap_unordered_chunked(square, input, 10).unwrap();
    let bound = (it.max_in_flight() + 1) * 10;
    let mut got: Vec<u64> = it.take(1000).map(|r| r.unwrap()).collect();
    assert!(pulled2.load(Ordering::Relaxed) <= 1000 + bound);
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 1000);
}

#[test]
fn map_async_and_apply_async_handles() {
    let pool = Pool::new(2).unwrap();
    let handles: Vec<_> = (0..20u64)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    let mut big = pool.map_async(square, 0..10_000).unwrap();
    let sum: u64 = handles.into_iter().map(|h| h.get().unwrap()).sum();
    assert_eq!(sum, (0..20u64).map(square).sum());
    assert!(big.wait_timeout(Duration::from_secs(60)));
    assert!(big.ready());
    assert_eq!(big.successful(), Some(true));
    assert_eq!(
        big.get_timeout(Duration::from_secs(1)).unwrap().len(),
        10_000
    );
}

fn sleepy(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    x
}

#[test]
fn get_timeout_times_out_then_succeeds() {
    let pool = Pool::new(1).unwrap();
    let mut r = pool.apply_async(sleepy, 9).unwrap();
    let start = Instant::now();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(20)),
        Err(PoolError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 9);
}

#[test]
fn terminate_fails_unfinished_work_and_drop_stops_the_workers() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let r = pool.map_async_chunked(sleepy, 0..20, 1).unwrap();
    pool.terminate();
    assert!(matches!(r.get(), Err(PoolError::Terminated)));
    assert!(matches!(pool.map(square, 0..2), Err(PoolError::Closed)));
    pool.join().unwrap();
    drop(pool);
    for p in pids {
        assert!(!shmproc::process::is_alive(p, 0));
    }
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    drop(pool);
    for p in pids {
        assert!(!shmproc::process::is_alive(p, 0), "drop reaped {p}");
    }
}

#[test]
fn workers_die_with_their_parent() {
    let pids = Queue::<u32>::new(16).unwrap();
    let mut parent = Process::spawn(|| {
        let pool = Pool::new(3).unwrap();
        assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
        for p in pool.pids() {
            pids.put(p).unwrap();
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let workers: Vec<u32> = (0..3)
        .map(|_| pids.get_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    assert!(workers.iter().all(|&p| shmproc::process::is_alive(p, 0)));
    parent.kill().unwrap();
    parent.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.iter().any(|&p| shmproc::process::is_alive(p, 0)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in workers {
        assert!(
            !shmproc::process::is_alive(p, 0),
            "worker {p} outlived its parent"
        );
    }
}

#[test]
fn a_replacement_forked_while_a_short_lived_thread_waits_outlives_that_thread() {
    let pool = Pool::new(1).unwrap();
    let victim = pool.pids()[0];
    // SAFETY: kill(2) of our own child; no memory involved.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while pool.pids().contains(&victim) && Instant::now() < deadline {
                let _ = pool.apply(square, 2);
            }
        });
    });
    let replacement = pool.pids()[0];
    assert_ne!(replacement, victim);
    // The waiting thread has ended; the replacement must not have died with it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.map_chunked(square, 0..10, 1).unwrap().len(), 10);
    assert_eq!(pool.pids(), [replacement]);
}

fn weighted(x: u32, w: f64) -> f64 {
    f64::from(x) * w
}

#[test]
fn starmap_calls_with_each_pair_in_order() {
    let pool = Pool::new(2).unwrap();
    let pairs: Vec<(u32, f64)> = (0..100).map(|i| (i, 0.5)).collect();
    let got = pool.starmap(weighted, pairs.clone()).unwrap();
    assert_eq!(
        got,
        pairs
            .iter()
            .map(|&(x, w)| weighted(x, w))
            .collect::<Vec<_>>()
    );
    let r = pool
        .starmap_async_chunked(|a: u8, b: u64| u64::from(a) + b, [(1u8, 2u64), (3, 4)], 1)
        .unwrap();
    assert_eq!(r.get().unwrap(), [3, 7]);
    assert!(pool.starmap(weighted, Vec::new()).unwrap().is_empty());
}

#[cfg(feature = "serde")]
mod serde_values {
    use super::*;
    use serde::{Deserialize, Serialize, Serializer};

    fn shout(s: String) -> String {
        s.to_uppercase()
    }

    /// Refuses to be encoded when it holds 13.
    #[derive(Debug, Deserialize)]
    struct Picky(u32);

    impl Serialize for Picky {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 == 13 {
                return Err(serde::ser::Error::custom("13 is unlucky"));
            }
            s.serialize_u32(self.0)
        }
    }

    #[test]
    fn map_serde_carries_any_value_and_returns_encoding_errors() {
        let pool = Pool::new(2).unwrap();
        let words: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        assert_eq!(pool.map_serde(shout, words).unwrap(), ["A", "BB", "CCC"]);
        assert_eq!(
            pool.apply_serde(|v: Vec<u32>| v.iter().sum::<u32>(), vec![1, 2, 3])
                .unwrap(),
            6
        );
        assert!(pool.map_serde(shout, Vec::new()).unwrap().is_empty());
        // A result the worker cannot encode: the error reaches the caller.
        let e = pool.map_serde(Picky, 0..20u32).unwrap_err();
        assert!(matches!(e, PoolError::Encoding(_)), "{e}");
        assert!(e.to_string().contains("encoding a result"), "{e}"); // postcard drops custom messages
        // An item this process cannot encode: nothing runs.
        let e = pool
            .map_serde(|p: Picky| p.0, [Picky(1), Picky(13)])
            .unwrap_err();
        assert!(matches!(e, PoolError::Encoding(_)), "{e}");
        // A chunk too large for a message.
        let e = pool
            .map_serde_async_chunked(shout, vec!["x".repeat(100_000)], 1)
            .unwrap_err();
        assert!(matches!(e, PoolError::InvalidArgument(_)), "{e}");
        assert_eq!(pool.map_serde(shout, ["ok".to_string()]).unwrap(), ["OK"]);
    }
}

/// Kills its worker the first time it sees 3 (a marker file, named after the pool's
/// parent, records that it did).
fn dies_once_on_three(x: u64) -> u64 {
    if x == 3 {
        let marker = format!(
            "/tmp/shmproc-test-retry-{}",
            std::os::unix::process::parent_id()
        );
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
        {
            // SAFETY: kill(2) on this process; no memory involved.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
    x * 10
}

#[test]
fn a_pool_built_to_retry_runs_a_killed_workers_task_again() {
    let marker = format!("/tmp/shmproc-test-retry-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    let before = pool.pids();
    let got = pool.map_chunked(dies_once_on_three, 0..10, 1);
    let marker_existed = std::fs::remove_file(&marker).is_ok();
    assert!(marker_existed, "the task never killed its worker");
    assert_eq!(got.unwrap(), (0..10).map(|x| x * 10).collect::<Vec<_>>());
    assert_ne!(pool.pids(), before, "the dead worker was replaced");
    // A task that kills every worker it runs on fails after its retries.
    let r = pool.map_chunked(dies_on_three, 0..6, 1);
    assert!(matches!(r, Err(PoolError::WorkerDied { .. })), "{r:?}");
    assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
    pool.close();
    pool.join().unwrap();
}

fn exits_instead_of_returning() {
    std::process::exit(3);
}

#[test]
fn an_initializer_that_exits_breaks_the_pool_instead_of_respawning_forever() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(exits_instead_of_returning)
        .build()
        .unwrap();
    let e = pool.map(square, 0..4).unwrap_err();
    let PoolError::Initializer { message, .. } = &e else {
        panic!("expected Initializer, got {e}");
    };
    assert!(
        message.contains("before their initializer returned"),
        "{message}"
    );
    assert!(message.contains("exit code 3"), "{message}");
    // Broken for good, like a panicking initializer: later calls fail the same way.
    assert!(matches!(
        pool.apply(square, 2),
        Err(PoolError::Initializer { .. })
    ));
}
