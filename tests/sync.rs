//! Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier across real
//! processes.

mod common;

use common::{Children, TestName, Words, join_or_kill, wait_for};
use shmproc::Process;
use shmproc::layout::header::ObjectKind;
use shmproc::segment::{OpenError, OpenOptions, Segment};
use shmproc::sync::{
    AcquireError, Barrier, BoundedSemaphore, BrokenBarrier, Condition, Event, Lock, LockGuard,
    RLock, RLockGuard, ReleaseError, Semaphore, WaitError,
};
use shmproc::value::{AccessError, RawArray, RawValue, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// Sleeps until killed.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kill_after(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    })
}

// ---------------------------------------------------------------------------------
// Lock

#[test]
fn a_lock_held_by_a_child_is_locked_from_the_parent() {
    let lock = Lock::new().unwrap();
    let words = Words::new(2); // 0: the child holds it; 1: the parent says release
    let mut child = Process::spawn_returning(|| -> i32 {
        let Ok(guard) = lock.acquire() else { return 2 };
        words.at(0).store(1, Ordering::SeqCst);
        wait_for("the parent's go", || {
            words.at(1).load(Ordering::SeqCst) == 1
        });
        drop(guard);
        0
    })
    .unwrap();
    wait_for("the child to lock", || {
        words.at(0).load(Ordering::SeqCst) == 1
    });
    assert!(lock.locked());
    assert_eq!(lock.owner(), Some(child.pid()));
    assert!(matches!(lock.try_acquire(), Err(AcquireError::WouldBlock)));
    for timeout in [Duration::ZERO, Duration::from_millis(100)] {
        let start = Instant::now();
        assert!(matches!(
            lock.acquire_timeout(timeout),
            Err(AcquireError::Timeout)
        ));
        assert!(start.elapsed() >= timeout);
    }
    words.at(1).store(1, Ordering::SeqCst);
    // Blocks until the child releases.
    let guard = lock.acquire_timeout(LONG).expect("the child released it");
    assert_eq!(lock.owner(), Some(std::process::id()));
    assert_eq!(join_or_kill(&mut child), 0);
    drop(guard);
    assert!(!lock.locked());
    assert_eq!(lock.release(), Err(ReleaseError::NotLocked));
}

#[test]
fn a_lock_may_be_released_by_another_process() {
    let lock = Lock::new().unwrap();
    std::mem::forget(lock.acquire().unwrap());
    let mut child = Process::spawn_returning(|| -> i32 {
        match (lock.release(), lock.release()) {
            (Ok(()), Err(ReleaseError::NotLocked)) => 0,
            _ => 1,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert!(!lock.locked());
}

#[test]
fn contended_lock_keeps_a_counter_exact() {
    const KIDS: usize = 4;
    const ROUNDS: u64 = 2_000;
    let lock = Lock::new().unwrap();
    // A plain (non-atomic) read-modify-write, made safe by the lock.
    let counter = RawValue::new(0u64).unwrap();
    let mut kids = Children(
        (0..KIDS)
            .map(|_| {
                Process::spawn_returning(|| -> i32 {
                    for _ in 0..ROUNDS {
                        let Ok(_guard) = lock.acquire_timeout(LONG) else {
                            return 1;
                        };
                        counter.set(counter.get() + 1);
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(kids.join_all(), vec![0; KIDS]);
    assert_eq!(counter.get(), KIDS as u64 * ROUNDS);
    assert!(!lock.locked());
}

#[test]
fn uncontended_acquire_and_release_make_no_syscall() {
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(1).unwrap();
    let event = Event::new().unwrap();
    let cond = Condition::<Lock>::anonymous().unwrap();
    // Counted in a child: its counters are its own, untouched by the other tests
    // running as threads of this process.
    let mut child = Process::spawn_returning(|| -> i32 {
        // The first acquires compute (and cache) this process's and thread's identity.
        drop(lock.acquire());
        drop(rlock.acquire());
        let (wakes, waits) = (shmproc::stats::wake_calls(), shmproc::stats::wait_calls());
        for _ in 0..100_000 {
            let (Ok(a), Ok(b)) = (lock.acquire(), rlock.acquire()) else {
                return 2;
            };
            let Ok(c) = rlock.try_acquire() else { return 3 };
            drop((c, b, a));
            if lock.try_acquire().is_err() {
                return 4;
            }
            sem.acquire();
            if sem.release().is_err() {
                return 5;
            }
            event.set();
            event.clear();
            let Ok(_guard) = cond.acquire() else { return 6 };
            if cond.notify_all() != 0 {
                return 7;
            }
        }
        let made = (
            shmproc::stats::wake_calls() - wakes,
            shmproc::stats::wait_calls() - waits,
        );
        if made == (0, 0) { 0 } else { 1 }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0, "futex calls were made");
}

#[test]
fn a_holder_killed_with_sigkill_gives_the_next_acquirer_owner_died() {
    let lock = Lock::new().unwrap();
    let words = Words::new(1);
    let mut child = Process::spawn(|| {
        let guard = lock.acquire();
        words.at(0).store(1, Ordering::SeqCst);
        let _keep = guard;
        sleep_forever();
    })
    .unwrap();
    wait_for("the child to lock", || {
        words.at(0).load(Ordering::SeqCst) == 1
    });
    // The parent is already waiting when the holder dies.
    let killer = kill_after(child.pid(), Duration::from_millis(100));
    let r = lock.acquire_timeout(LONG);
    killer.join().unwrap();
    let Err(AcquireError::OwnerDied(guard)) = r else {
        panic!("expected OwnerDied, got {r:?}");
    };
    assert_eq!(join_or_kill(&mut child), -9);
    assert!(!guard.is_consistent());
    assert_eq!(lock.owner(), Some(std::process::id()));
    // Released without repair: the duty passes to the next acquirer.
    drop(guard);
    assert!(!lock.is_consistent());
    let Err(AcquireError::OwnerDied(mut guard)) = lock.acquire_timeout(LONG) else {
        panic!("the inconsistent mark was lost");
    };
    guard.mark_consistent();
    assert!(guard.is_consistent());
    drop(guard);
    assert!(lock.acquire().is_ok());
}

#[test]
fn a_dead_holder_is_found_even_by_a_zero_timeout() {
    let lock = Lock::new().unwrap();
    let mut child = Process::spawn(|| std::mem::forget(lock.acquire())).unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert!(lock.locked());
    // try_acquire never looks (no syscall)...
    assert!(matches!(lock.try_acquire(), Err(AcquireError::WouldBlock)));
    // ...a zero timeout does.
    assert!(
        lock.acquire_timeout(Duration::ZERO)
            .is_err_and(|e| e.is_owner_died())
    );
}

// ---------------------------------------------------------------------------------
// RLock

#[test]
fn an_rlock_is_recursive_and_owned_by_one_thread() {
    let lock = RLock::new().unwrap();
    let outer = lock.acquire().unwrap();
    let inner = lock.try_acquire().unwrap();
    assert_eq!(lock.count(), 2);
    assert!(lock.is_owned());
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(!lock.is_owned());
            assert!(matches!(lock.try_acquire(), Err(AcquireError::WouldBlock)));
            assert_eq!(lock.release(), Err(ReleaseError::NotOwner));
        });
    });
    let mut child = Process::spawn_returning(|| -> i32 {
        match (lock.try_acquire().map(drop), lock.release()) {
            (Err(AcquireError::WouldBlock), Err(ReleaseError::NotOwner)) => 0,
            _ => 1,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    drop(inner);
    assert_eq!(lock.count(), 1);
    drop(outer);
    assert!(!lock.locked());
    assert_eq!(lock.release(), Err(ReleaseError::NotLocked));
    // Python-style: acquire, then release by hand.
    std::mem::forget(lock.acquire().unwrap());
    assert_eq!(lock.release(), Ok(()));
    assert!(!lock.locked());
}

#[test]
fn an_rlock_owner_thread_that_exits_is_detected() {
    let lock = RLock::new().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.acquire().unwrap()));
    });
    assert!(lock.locked());
    let r = lock.acquire_timeout(LONG);
    let Err(AcquireError::OwnerDied(mut guard)) = r else {
        panic!("expected OwnerDied, got {r:?}");
    };
    assert_eq!(lock.count(), 1);
    guard.mark_consistent();
    drop(guard);
    assert!(lock.acquire().is_ok());
}

#[test]
fn an_rlock_held_by_a_killed_process_is_taken_over() {
    let lock = RLock::new().unwrap();
    let words = Words::new(1);
    let mut child = Process::spawn(|| {
        let a = lock.acquire();
        let b = lock.acquire();
        words.at(0).store(1, Ordering::SeqCst);
        let _keep = (a, b);
        sleep_forever();
    })
    .unwrap();
    wait_for("the child to lock", || {
        words.at(0).load(Ordering::SeqCst) == 1
    });
    assert_eq!(lock.count(), 2);
    let killer = kill_after(child.pid(), Duration::from_millis(50));
    assert!(lock.acquire_timeout(LONG).is_err_and(|e| e.is_owner_died()));
    killer.join().unwrap();
    assert_eq!(join_or_kill(&mut child), -9);
    assert!(!lock.locked());
}

// ---------------------------------------------------------------------------------
// Semaphore, BoundedSemaphore

#[test]
fn a_semaphore_counts_across_processes() {
    let sem = Semaphore::new(0).unwrap();
    let passed = RawValue::new(0u32).unwrap();
    // A semaphore has no owner to die: its errors need no OwnerDied arm.
    match sem.try_acquire() {
        Err(AcquireError::WouldBlock) => {}
        Ok(()) | Err(AcquireError::Timeout) => panic!("the count is 0"),
    }
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(matches!(
        sem.acquire_timeout(timeout),
        Err(AcquireError::Timeout)
    ));
    assert!(start.elapsed() >= timeout);
    let mut kids = Children(
        (0..4)
            .map(|_| {
                Process::spawn_returning(|| -> i32 {
                    if sem.acquire_timeout(LONG).is_err() {
                        return 1;
                    }
                    passed.fetch_add(1, Ordering::SeqCst);
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    wait_for("four sleepers", || sem.waiters() == 4);
    sem.release_n(2).unwrap();
    wait_for("two to pass", || passed.load(Ordering::SeqCst) == 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        passed.load(Ordering::SeqCst),
        2,
        "a third passed a count of 2"
    );
    assert_eq!(sem.value(), 0);
    sem.release_n(3).unwrap();
    assert_eq!(kids.join_all(), vec![0; 4]);
    assert_eq!(sem.value(), 1);
    // The count cannot overflow.
    let big = Semaphore::new(u32::MAX - 1).unwrap();
    let e = big.release_n(2).unwrap_err();
    assert_eq!((e.value, e.n, e.max), (u32::MAX - 1, 2, u32::MAX));
    assert_eq!(big.value(), u32::MAX - 1);
}

#[test]
fn release_without_a_count_gives_back_one_unit_as_in_python() {
    let sem = Semaphore::new(0).unwrap();
    let bounded = BoundedSemaphore::new(3).unwrap();
    let mut kids = Children(
        (0..3)
            .map(|_| {
                Process::spawn_returning(|| -> i32 {
                    if bounded.acquire_timeout(LONG).is_err() {
                        return 1;
                    }
                    match (sem.release(), bounded.release()) {
                        (Ok(()), Ok(())) => 0,
                        _ => 2,
                    }
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(kids.join_all(), vec![0; 3]);
    assert_eq!(sem.value(), 3, "three releases of one unit each");
    assert_eq!(bounded.value(), 3);
    let e = bounded.release().unwrap_err();
    assert_eq!((e.value, e.n, e.max), (3, 1, 3));
    sem.release_n(0).unwrap();
    assert_eq!(sem.value(), 3);
}

#[test]
fn a_bounded_semaphore_refuses_releases_above_its_initial_value() {
    let name = TestName::new("bsem");
    let sem = BoundedSemaphore::create(&name, 3).unwrap();
    let child_name = name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(sem) = BoundedSemaphore::open(&child_name) else {
            return 2;
        };
        if sem.max_value() != 3 {
            return 3;
        }
        sem.acquire();
        sem.acquire();
        0
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert_eq!(sem.value(), 1);
    let e = sem.release_n(3).unwrap_err();
    assert_eq!((e.value, e.n, e.max), (1, 3, 3));
    assert_eq!(sem.value(), 1);
    sem.release_n(2).unwrap();
    assert_eq!(sem.value(), 3);
    assert!(sem.release().is_err());
    assert!(e.to_string().contains("released too many times"));
    assert!(matches!(
        Semaphore::open(&name),
        Err(OpenError::WrongKind {
            expected: ObjectKind::Semaphore,
            found: ObjectKind::BoundedSemaphore,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------
// Event

#[test]
fn an_event_set_by_a_child_100ms_later_wakes_the_parent() {
    let name = TestName::new("event");
    let event = Event::create(&name).unwrap();
    let child_name = name.0.clone();
    let start = Instant::now();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(event) = Event::open(&child_name) else {
            return 2;
        };
        std::thread::sleep(Duration::from_millis(100));
        event.set();
        0
    })
    .unwrap();
    assert!(event.wait_timeout(LONG));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(event.is_set());
    assert_eq!(join_or_kill(&mut child), 0);
    // Set: waits return at once, and say it is set (Python's `wait()` is `True`).
    assert!(event.wait());
    assert!(event.wait_timeout(Duration::ZERO));
    event.clear();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(!event.wait_timeout(timeout));
    assert!(start.elapsed() >= timeout);
}

#[test]
fn a_set_and_clear_pulse_still_wakes_every_waiter() {
    let event = Event::new().unwrap();
    let mut kids = Children(
        (0..3)
            .map(|_| {
                Process::spawn_returning(|| -> i32 {
                    if event.wait_timeout(LONG) { 0 } else { 1 }
                })
                .unwrap()
            })
            .collect(),
    );
    wait_for("three sleepers", || event.waiters() == 3);
    event.set();
    event.clear();
    assert_eq!(kids.join_all(), vec![0; 3]);
    assert!(!event.is_set());
}

#[test]
fn an_event_wait_returns_true_once_set_as_in_python() {
    let event = Event::new().unwrap();
    let mut kids = Children(
        (0..2)
            .map(|_| {
                Process::spawn_returning(|| -> i32 {
                    if event.wait() { 0 } else { 1 }
                })
                .unwrap()
            })
            .collect(),
    );
    wait_for("two sleepers", || event.waiters() == 2);
    event.set();
    assert_eq!(kids.join_all(), vec![0; 2]);
    assert!(event.wait());
}

// ---------------------------------------------------------------------------------
// Condition

/// What a waiting child reports in its word.
const WAITING: u32 = 0;
const NOTIFIED: u32 = 1;
const TIMED_OUT: u32 = 2;

fn waiter<'a>(cond: &'a Condition, words: &'a Words, i: usize) -> impl FnOnce() -> i32 + 'a {
    move || -> i32 {
        let Ok(mut guard) = cond.acquire() else {
            return 3;
        };
        match cond.wait_timeout(&mut guard, LONG) {
            Ok(true) => words.at(i).store(NOTIFIED, Ordering::SeqCst),
            Ok(false) => words.at(i).store(TIMED_OUT, Ordering::SeqCst),
            Err(_) => return 4,
        }
        0
    }
}

#[test]
fn notify_wakes_exactly_one_of_two_waiters() {
    let cond = Condition::new().unwrap();
    let words = Words::new(2);
    let mut kids = Children(
        (0..2)
            .map(|i| Process::spawn_returning(waiter(&cond, &words, i)).unwrap())
            .collect(),
    );
    wait_for("two waiters", || cond.n_waiting() == 2);
    {
        let _guard = cond.acquire().unwrap();
        assert_eq!(cond.notify(1), 1);
    }
    let state = || {
        (
            words.at(0).load(Ordering::SeqCst),
            words.at(1).load(Ordering::SeqCst),
        )
    };
    wait_for("one to be woken", || {
        state().0 == NOTIFIED || state().1 == NOTIFIED
    });
    std::thread::sleep(Duration::from_millis(200));
    let (a, b) = state();
    assert!(
        (a, b) == (NOTIFIED, WAITING) || (a, b) == (WAITING, NOTIFIED),
        "after notify(1): {a}, {b}"
    );
    assert_eq!(cond.n_waiting(), 1);
    {
        let _guard = cond.acquire().unwrap();
        assert_eq!(cond.notify(5), 1);
    }
    assert_eq!(kids.join_all(), vec![0; 2]);
    assert_eq!(state(), (NOTIFIED, NOTIFIED));
}

#[test]
fn notify_all_wakes_all_six_waiters() {
    let cond = Condition::new().unwrap();
    let words = Words::new(6);
    let mut kids = Children(
        (0..6)
            .map(|i| Process::spawn_returning(waiter(&cond, &words, i)).unwrap())
            .collect(),
    );
    wait_for("six waiters", || cond.n_waiting() == 6);
    {
        let _guard = cond.acquire().unwrap();
        assert_eq!(cond.notify_all(), 6);
    }
    assert_eq!(kids.join_all(), vec![0; 6]);
    for i in 0..6 {
        assert_eq!(words.at(i).load(Ordering::SeqCst), NOTIFIED);
    }
    assert_eq!(cond.n_waiting(), 0);
}

#[test]
fn condition_waits_time_out_no_earlier_than_asked() {
    let cond = Condition::<Lock>::anonymous().unwrap();
    let mut guard = cond.acquire().unwrap();
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(cond.wait_timeout(&mut guard, timeout), Ok(false));
    assert!(start.elapsed() >= timeout);
    assert!(cond.get_lock().locked(), "the lock is held again");
    let start = Instant::now();
    assert_eq!(
        cond.wait_for_timeout(&mut guard, || false, timeout),
        Ok(false)
    );
    assert!(start.elapsed() >= timeout);
    assert_eq!(
        cond.wait_for_timeout(&mut guard, || true, timeout),
        Ok(true)
    );
    assert_eq!(cond.notify(1), 0);
}

#[test]
fn wait_for_sees_a_predicate_made_true_by_a_child() {
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let mut guard = cond.acquire().unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        for step in 1..=3 {
            let Ok(_guard) = cond.acquire_timeout(LONG) else {
                return 1;
            };
            flag.store(step, Ordering::SeqCst);
            cond.notify_all();
        }
        0
    })
    .unwrap();
    let done = cond.wait_for_timeout(&mut guard, || flag.load(Ordering::SeqCst) == 3, LONG);
    assert_eq!(done, Ok(true));
    drop(guard);
    assert_eq!(join_or_kill(&mut child), 0);
}

#[test]
fn an_rlock_condition_restores_the_recursion_count() {
    let cond = Condition::new().unwrap();
    let outer = cond.acquire().unwrap();
    let mut inner = cond.acquire().unwrap();
    assert_eq!(cond.get_lock().count(), 2);
    let mut child = Process::spawn_returning(|| -> i32 {
        // The parent's wait released both levels.
        let Ok(_guard) = cond.acquire_timeout(LONG) else {
            return 1;
        };
        if cond.notify(1) == 1 { 0 } else { 2 }
    })
    .unwrap();
    assert_eq!(cond.wait_timeout(&mut inner, LONG), Ok(true));
    assert_eq!(cond.get_lock().count(), 2);
    drop(inner);
    drop(outer);
    assert!(!cond.get_lock().locked());
    assert_eq!(join_or_kill(&mut child), 0);
}

#[test]
fn waiting_with_another_locks_guard_is_an_error() {
    let a = Condition::<Lock>::anonymous().unwrap();
    let b = Condition::<Lock>::anonymous().unwrap();
    let mut guard = b.acquire().unwrap();
    assert_eq!(
        a.wait_timeout(&mut guard, Duration::from_secs(1)),
        Err(WaitError::NotOwner)
    );
    assert_eq!(a.n_waiting(), 0);
    // A lock released behind the guard's back cannot be waited on either.
    b.get_lock().release().unwrap();
    assert_eq!(
        b.wait_timeout(&mut guard, Duration::from_secs(1)),
        Err(WaitError::NotOwner)
    );
    assert_eq!(b.n_waiting(), 0);
    std::mem::forget(guard);
}

#[test]
fn notify_skips_a_waiter_that_was_killed() {
    let cond = Condition::new().unwrap();
    let words = Words::new(2);
    let mut first = Process::spawn_returning(waiter(&cond, &words, 0)).unwrap();
    wait_for("the first waiter", || cond.n_waiting() == 1);
    let mut second = Process::spawn_returning(waiter(&cond, &words, 1)).unwrap();
    wait_for("the second waiter", || cond.n_waiting() == 2);
    first.kill().unwrap();
    assert_eq!(join_or_kill(&mut first), -9);
    {
        let _guard = cond.acquire().unwrap();
        // The oldest waiter is dead: the notify goes to the live one.
        assert_eq!(cond.notify(1), 1);
    }
    assert_eq!(join_or_kill(&mut second), 0);
    assert_eq!(words.at(1).load(Ordering::SeqCst), NOTIFIED);
    assert_eq!(cond.n_waiting(), 0);
}

#[test]
fn a_condition_lock_holder_killed_while_others_wait() {
    let cond = Condition::<Lock>::anonymous().unwrap();
    let words = Words::new(1);
    let mut guard = cond.acquire().unwrap();
    let mut child = Process::spawn(|| {
        let guard = cond.acquire();
        words.at(0).store(1, Ordering::SeqCst);
        cond.notify(1);
        let _keep = guard;
        sleep_forever();
    })
    .unwrap();
    // Our wait lets the child in; it notifies us and dies holding the lock.
    let pid = child.pid();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            wait_for("the child to hold the lock", || {
                words.at(0).load(Ordering::SeqCst) == 1
            });
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        });
        cond.wait_timeout(&mut guard, LONG)
    });
    assert_eq!(r, Err(WaitError::OwnerDied { notified: true }));
    assert!(!guard.is_consistent());
    guard.mark_consistent();
    drop(guard);
    assert_eq!(join_or_kill(&mut child), -9);
    assert!(cond.try_acquire().is_ok());
}

/// The owner word a lock would hold for the live process `pid`: its pid and the low
/// 32 bits of its start time (`/proc/PID/stat` field 22), as `owner.rs` packs them.
fn owner_word_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let start: u64 = rest
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    (u64::from(start as u32) << 32) | u64::from(pid)
}

/// A child that sleeps until killed, and the owner word naming it.
fn live_sleeper() -> (Children, u64) {
    let sleeper = Process::spawn(|| sleep_forever()).unwrap();
    let word = owner_word_of(sleeper.pid());
    (Children(vec![sleeper]), word)
}

/// A timed condition wait whose lock word is scribbled, mid-wait, to name a live
/// process: the wait returns after its timeout (plus the grace) with NotReacquired,
/// leaving the guard released, for a Condition over `$lock`.
macro_rules! retake_test {
    ($name:ident, $lock:ty, $released:expr) => {
        #[test]
        fn $name() {
            let name = TestName::new("retake");
            let cond = Condition::<$lock>::create(&name).unwrap();
            let (mut sleeper, word) = live_sleeper();
            let timeout = Duration::from_millis(200);
            let mut child = Process::spawn_returning(|| -> i32 {
                let Ok(mut guard) = cond.acquire() else {
                    return 2;
                };
                let start = Instant::now();
                let r = cond.wait_timeout(&mut guard, timeout);
                if r != Err(WaitError::NotReacquired { notified: false }) {
                    return 3;
                }
                if start.elapsed() < timeout + shmproc::sync::RELOCK_GRACE {
                    return 4;
                }
                if guard.is_held() || !($released)(&cond, &guard) {
                    return 5;
                }
                // A released guard cannot be waited with.
                if cond.wait_timeout(&mut guard, timeout) != Err(WaitError::NotOwner) {
                    return 6;
                }
                drop(guard); // releases nothing
                0
            })
            .unwrap();
            wait_for("the child to wait", || cond.n_waiting() == 1);
            assert!(!cond.get_lock().locked(), "the wait released the lock");
            scribble(&name, 0, word);
            // Returning at all (within join_or_kill's 60 s) is the fix.
            assert_eq!(join_or_kill(&mut child), 0);
            // The released guard's drop left the word alone.
            assert_eq!(cond.get_lock().owner(), Some(sleeper.0[0].pid()));
            // Once the process it names dies, the word is a dead holder's.
            sleeper.0[0].kill().unwrap();
            assert_eq!(sleeper.join_all(), vec![-9]);
            assert!(cond.acquire_timeout(LONG).is_err_and(|e| e.is_owner_died()));
        }
    };
}

retake_test!(
    a_timed_lock_condition_wait_returns_when_a_live_process_keeps_the_lock,
    Lock,
    // Data guarded by the lock refuses the released guard.
    |cond: &Condition<Lock>, guard: &LockGuard<'_>| {
        Value::with_lock(0u32, cond.get_lock())
            .is_ok_and(|v| v.get_with(guard) == Err(AccessError::NotHeld))
    }
);
retake_test!(
    a_timed_rlock_condition_wait_returns_when_a_live_process_keeps_the_lock,
    RLock,
    |_: &Condition<RLock>, _: &RLockGuard<'_>| true
);

#[test]
fn a_notifier_that_keeps_the_lock_cannot_stall_a_timed_wait() {
    let cond = Condition::<Lock>::anonymous().unwrap();
    let mut guard = cond.acquire().unwrap();
    // The child takes the lock our wait releases, notifies, and never lets go.
    let mut child = Children(vec![
        Process::spawn(|| {
            let guard = cond.acquire();
            cond.notify(1);
            let _keep = guard;
            sleep_forever();
        })
        .unwrap(),
    ]);
    let start = Instant::now();
    let r = cond.wait_timeout(&mut guard, Duration::from_millis(100));
    assert_eq!(r, Err(WaitError::NotReacquired { notified: true }));
    assert!(start.elapsed() >= shmproc::sync::RELOCK_GRACE);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("could not be taken back")
    );
    assert!(!guard.is_held());
    assert_eq!(cond.get_lock().owner(), Some(child.0[0].pid()));
    drop(guard);
    assert!(
        cond.get_lock().locked(),
        "the released guard's drop released nothing"
    );
    child.0[0].kill().unwrap();
    assert_eq!(child.join_all(), vec![-9]);
}

#[test]
fn outer_rlock_guards_of_a_hold_a_wait_lost_release_nothing_later() {
    let name = TestName::new("retake-outer");
    let cond = Condition::<RLock>::create(&name).unwrap();
    let (mut sleeper, word) = live_sleeper();
    let words = Words::new(2); // 0: the child lost its hold; 1: the lock is free again
    let mut child = Process::spawn_returning(|| -> i32 {
        let (Ok(outer), Ok(mut inner)) = (cond.acquire(), cond.acquire()) else {
            return 2;
        };
        let r = cond.wait_timeout(&mut inner, Duration::from_millis(100));
        if r != Err(WaitError::NotReacquired { notified: false }) {
            return 3;
        }
        // Both levels belonged to the lost hold.
        if inner.is_held() || outer.is_held() {
            return 4;
        }
        words.at(0).store(1, Ordering::SeqCst);
        wait_for("the parent to free the lock", || {
            words.at(1).load(Ordering::SeqCst) == 1
        });
        let Ok(again) = cond.acquire_timeout(LONG) else {
            return 5;
        };
        // The stale guards' drops leave the new hold alone.
        drop(outer);
        drop(inner);
        let lock = cond.get_lock();
        if !again.is_held() || !lock.is_owned() || lock.count() != 1 {
            return 6;
        }
        drop(again);
        if lock.locked() { 7 } else { 0 }
    })
    .unwrap();
    wait_for("the child to wait", || cond.n_waiting() == 1);
    scribble(&name, 0, word);
    wait_for("the child to lose its hold", || {
        words.at(0).load(Ordering::SeqCst) == 1
    });
    scribble(&name, 0, 0);
    words.at(1).store(1, Ordering::SeqCst);
    assert_eq!(join_or_kill(&mut child), 0);
    sleeper.0[0].kill().unwrap();
    assert_eq!(sleeper.join_all(), vec![-9]);
}

#[test]
fn a_timed_acquire_of_a_word_no_holder_can_have_is_owner_died() {
    let (mut sleeper, live) = live_sleeper();
    let words = [
        ("pid 0 with start bits", 0xdead_beef_0000_0000),
        ("pid 0 with the flag and start bits", 0x1234_5678_8000_0000),
        ("a pid above PID_MAX_LIMIT", (1 << 22) + 1),
        ("the largest id", 0x7fff_ffff),
        ("all bits", u64::MAX),
        ("a live pid with another start time", live ^ (0x5a5a << 32)),
    ];
    let lock_name = TestName::new("impossible-lock");
    let lock = Lock::create(&lock_name).unwrap();
    let rlock_name = TestName::new("impossible-rlock");
    let rlock = RLock::create(&rlock_name).unwrap();
    for (what, word) in words {
        scribble(&lock_name, 0, word);
        let r = lock.acquire_timeout(Duration::from_millis(100));
        assert!(r.is_err_and(|e| e.is_owner_died()), "Lock, {what}");
        scribble(&rlock_name, 0, word);
        let r = rlock.acquire_timeout(Duration::from_millis(100));
        assert!(r.is_err_and(|e| e.is_owner_died()), "RLock, {what}");
    }
    scribble(&lock_name, 0, (1 << 22) + 1);
    let e = lock.acquire_timeout(Duration::ZERO).map(drop).unwrap_err();
    assert!(e.to_string().contains("named no running process"), "{e}");
    drop(e);
    // The live process's own word is a real holder: a timeout, not a takeover.
    scribble(&lock_name, 0, live);
    let r = lock.acquire_timeout(Duration::from_millis(50));
    assert!(matches!(r, Err(AcquireError::Timeout)), "{r:?}");
    sleeper.0[0].kill().unwrap();
    assert_eq!(sleeper.join_all(), vec![-9]);
}

// ---------------------------------------------------------------------------------
// Barrier

#[test]
fn a_barrier_keeps_five_processes_in_lockstep_for_1000_passes() {
    const PARTIES: usize = 5;
    const PASSES: u32 = 1_000;
    let reached = RawArray::<u32>::new(PARTIES).unwrap();
    let zeros = RawValue::new(0u32).unwrap();
    let actions = RawValue::new(0u32).unwrap();
    let barrier = Barrier::new(PARTIES).unwrap().with_action({
        let actions = actions.clone();
        move || {
            actions.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut kids = Children(
        (0..PARTIES)
            .map(|me| {
                let (barrier, reached, zeros) = (&barrier, &reached, &zeros);
                Process::spawn_returning(move || -> i32 {
                    for pass in 0..PASSES {
                        reached.store(me, pass, Ordering::SeqCst);
                        let Ok(index) = barrier.wait_timeout(LONG) else {
                            return 2;
                        };
                        if index >= PARTIES {
                            return 3;
                        }
                        if index == 0 {
                            zeros.fetch_add(1, Ordering::SeqCst);
                        }
                        // Everyone reached this pass; nobody is past the next.
                        for other in 0..PARTIES {
                            let at = reached.load(other, Ordering::SeqCst).unwrap_or(u32::MAX);
                            if at < pass || at > pass + 1 {
                                return 4;
                            }
                        }
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(kids.join_all(), vec![0; PARTIES]);
    assert_eq!(zeros.load(Ordering::SeqCst), PASSES, "one index 0 per pass");
    assert_eq!(
        actions.load(Ordering::SeqCst),
        PASSES,
        "one action per pass"
    );
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

#[test]
fn a_timeout_breaks_the_barrier_for_every_waiter_until_reset() {
    let barrier = Barrier::new(3).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        match barrier.wait_timeout(LONG) {
            Err(BrokenBarrier) => 0,
            Ok(_) => 1,
        }
    })
    .unwrap();
    wait_for("the child to wait", || barrier.n_waiting() == 1);
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(barrier.wait_timeout(timeout), Err(BrokenBarrier));
    assert!(start.elapsed() >= timeout);
    assert_eq!(join_or_kill(&mut child), 0);
    assert!(barrier.broken());
    assert_eq!(barrier.wait(), Err(BrokenBarrier));
    barrier.reset();
    assert!(!barrier.broken());
    // A full pass works again, with distinct indices.
    let indices = RawArray::<u32>::new(3).unwrap();
    let mut kids = Children(
        (1..3)
            .map(|i| {
                let (barrier, indices) = (&barrier, &indices);
                Process::spawn_returning(move || -> i32 {
                    match barrier.wait_timeout(LONG) {
                        Ok(index) => {
                            indices.store(i, index as u32, Ordering::SeqCst);
                            0
                        }
                        Err(_) => 1,
                    }
                })
                .unwrap()
            })
            .collect(),
    );
    let mine = barrier.wait_timeout(LONG).unwrap();
    indices.store(0, mine as u32, Ordering::SeqCst);
    assert_eq!(kids.join_all(), vec![0; 2]);
    let mut got = indices.to_vec();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn a_default_timeout_bounds_wait_and_breaks_the_barrier() {
    let timeout = Duration::from_millis(100);
    let barrier = Barrier::new(3).unwrap().with_timeout(timeout);
    assert_eq!(barrier.timeout(), Some(timeout));
    // The child inherits the handle and its default timeout; only two of three
    // parties ever come.
    let mut child = Process::spawn_returning(|| -> i32 {
        let start = Instant::now();
        match barrier.wait() {
            Err(BrokenBarrier) if start.elapsed() >= timeout => 0,
            Err(BrokenBarrier) => 1,
            Ok(_) => 2,
        }
    })
    .unwrap();
    wait_for("the child to wait", || barrier.n_waiting() == 1);
    // A plain wait with a long default: broken by the child's timeout meanwhile.
    let patient = barrier.clone().with_timeout(LONG);
    assert_eq!(patient.wait(), Err(BrokenBarrier));
    assert_eq!(join_or_kill(&mut child), 0);
    // wait_timeout uses its own timeout, not the default.
    barrier.reset();
    let start = Instant::now();
    assert_eq!(
        patient.wait_timeout(Duration::from_millis(20)),
        Err(BrokenBarrier)
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    barrier.reset();
    // A full pass under the default timeout.
    let mut kids = Children(
        (0..2)
            .map(|_| {
                Process::spawn_returning(|| -> i32 { patient.wait().map_or(1, |_| 0) }).unwrap()
            })
            .collect(),
    );
    assert!(patient.wait().is_ok());
    assert_eq!(kids.join_all(), vec![0; 2]);
}

#[test]
fn abort_and_reset_break_every_waiter() {
    let barrier = Barrier::create(&TestName::new("barrier"), 4).unwrap();
    let broken = |b: &Barrier| -> i32 {
        match b.wait_timeout(LONG) {
            Err(BrokenBarrier) => 0,
            Ok(_) => 1,
        }
    };
    let mut kids = Children(
        (0..2)
            .map(|_| Process::spawn_returning(|| broken(&barrier)).unwrap())
            .collect(),
    );
    wait_for("two waiters", || barrier.n_waiting() == 2);
    barrier.abort();
    assert_eq!(kids.join_all(), vec![0; 2]);
    barrier.reset();
    let mut kids = Children(
        (0..3)
            .map(|_| Process::spawn_returning(|| broken(&barrier)).unwrap())
            .collect(),
    );
    wait_for("three waiters", || barrier.n_waiting() == 3);
    barrier.reset();
    assert_eq!(kids.join_all(), vec![0; 3]);
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

#[test]
fn a_panicking_action_breaks_the_barrier() {
    let barrier = Barrier::new(2)
        .unwrap()
        .with_action(|| panic!("action failed"));
    let mut child = Process::spawn_returning(|| -> i32 {
        match barrier.wait_timeout(LONG) {
            Err(BrokenBarrier) => 0,
            Ok(_) => 1,
        }
    })
    .unwrap();
    wait_for("the child to wait", || barrier.n_waiting() == 1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| barrier.wait()));
    assert!(r.is_err(), "the action's panic goes on");
    assert_eq!(join_or_kill(&mut child), 0);
    assert!(barrier.broken());
}

#[test]
fn a_barrier_of_zero_or_too_many_parties_is_an_error_not_a_panic() {
    use shmproc::segment::CreateError;
    use shmproc::sync::MAX_PARTIES;
    // In a child, so a panic (or an abort) would show as its exit code.
    let mut child = Process::spawn_returning(|| -> i32 {
        for parties in [0, MAX_PARTIES + 1, usize::MAX] {
            let Err(CreateError::InvalidArgument(why)) = Barrier::new(parties) else {
                return 1;
            };
            if !why.contains(&format!("1 to {MAX_PARTIES}")) || !why.contains(&parties.to_string())
            {
                return 2;
            }
        }
        if !matches!(
            Barrier::create("shmproc-test-never-made", 0),
            Err(CreateError::InvalidArgument(_))
        ) {
            return 3;
        }
        match (Barrier::new(1), Barrier::new(MAX_PARTIES)) {
            (Ok(one), Ok(_)) if one.wait() == Ok(0) => 0,
            _ => 4,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    let e = Barrier::new(0).unwrap_err();
    assert!(e.to_string().contains("not 0"), "{e}");
}

// ---------------------------------------------------------------------------------
// Names, kinds, layouts

#[test]
fn named_objects_are_shared_by_name_and_check_their_kind() {
    let lock_name = TestName::new("lock");
    let lock = Lock::create(&lock_name).unwrap();
    assert_eq!(lock.name(), Some(&*lock_name.0));
    let child_name = lock_name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(lock) = Lock::open(&child_name) else {
            return 2;
        };
        std::mem::forget(lock.acquire());
        0
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert_eq!(lock.owner(), Some(child.pid()));
    let e = Event::open(&lock_name).unwrap_err();
    assert!(matches!(
        e,
        OpenError::WrongKind {
            expected: ObjectKind::Event,
            found: ObjectKind::Lock,
            ..
        }
    ));
    assert!(e.to_string().contains("expected Event, found Lock"), "{e}");

    let cond_name = TestName::new("cond");
    let _cond = Condition::<Lock>::create(&cond_name).unwrap();
    let e = Condition::<RLock>::open(&cond_name).unwrap_err();
    assert!(
        matches!(
            e,
            OpenError::IncompatibleLayout {
                what: "lock type",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("RLock") && e.to_string().contains("Lock"));
    assert!(Condition::<Lock>::open(&cond_name).is_ok());

    let barrier_name = TestName::new("barrier");
    let _barrier = Barrier::create(&barrier_name, 7).unwrap();
    assert_eq!(Barrier::open(&barrier_name).unwrap().parties(), 7);

    let rlock_name = TestName::new("rlock");
    drop(RLock::create(&rlock_name).unwrap());
    // The creator's drop removed the name.
    assert!(matches!(
        RLock::open(&rlock_name),
        Err(OpenError::NotFound { .. })
    ));
    assert!(!std::path::Path::new(&rlock_name.path()).exists());
}

/// Scribbles `value` on the 8-byte word at `offset` of a named object's payload.
fn scribble(name: &str, offset: usize, value: u64) {
    let seg = Segment::open_any(name, OpenOptions::new()).unwrap();
    assert!(offset + 8 <= seg.payload_len());
    // SAFETY: in bounds, 8-aligned; the objects use the word only atomically.
    unsafe { AtomicU64::from_ptr(seg.payload().as_ptr().add(offset).cast()) }
        .store(value, Ordering::SeqCst);
}

#[test]
fn scribbled_state_is_an_error_or_a_wrong_value_never_a_hang() {
    // A lock word naming nobody, with stray bits: taken over as inconsistent.
    let name = TestName::new("scribble-lock");
    let lock = Lock::create(&name).unwrap();
    scribble(&name, 0, 0xdead_beef_0000_0000);
    assert!(!lock.locked());
    assert!(lock.try_acquire().is_err_and(|e| e.is_owner_died()));
    // A lock word naming a process that does not exist: found dead.
    scribble(&name, 0, 0x7fff_fff0);
    assert!(lock.locked());
    assert!(lock.acquire_timeout(LONG).is_err_and(|e| e.is_owner_died()));

    // A barrier count above its parties: broken, until reset.
    let name = TestName::new("scribble-barrier");
    let barrier = Barrier::create(&name, 2).unwrap();
    scribble(&name, 0, 0xffff << 24);
    assert!(barrier.broken());
    assert_eq!(barrier.wait_timeout(LONG), Err(BrokenBarrier));
    barrier.reset();
    assert!(!barrier.broken());

    // A semaphore count at its limit: a wrong count, and releases refused.
    let name = TestName::new("scribble-sem");
    let sem = Semaphore::create(&name, 0).unwrap();
    scribble(&name, 0, u64::from(u32::MAX));
    assert_eq!(sem.value(), u32::MAX);
    assert!(sem.release().is_err());
    assert!(sem.try_acquire().is_ok());

    // Every condition slot claimed by dead processes and marked waiting.
    let name = TestName::new("scribble-cond");
    let cond = Condition::<Lock>::create(&name).unwrap();
    for slot in 0..64 {
        let at = 384 + 32 * slot;
        scribble(&name, at, 0x7fff_fff0); // claim: a dead "process"
        scribble(&name, at + 16, 1); // state: WAITING
    }
    scribble(&name, 256 + 8, 64); // the waiting count
    let mut guard = cond.acquire().unwrap();
    assert_eq!(cond.notify(1), 0, "dead waiters are skipped");
    let start = Instant::now();
    let timeout = Duration::from_millis(20);
    assert_eq!(cond.wait_timeout(&mut guard, timeout), Ok(false));
    assert!(start.elapsed() >= timeout);
    drop(guard);

    // Inspect reads whatever is there without failing.
    let seg = Segment::open_any(&name, OpenOptions::new().read_only(true)).unwrap();
    assert!(!shmproc::inspect::object_state(&seg).is_empty());
}

#[test]
fn inspect_shows_the_state_of_each_kind() {
    let lock_name = TestName::new("inspect-lock");
    let lock = Lock::create(&lock_name).unwrap();
    let _guard = lock.acquire().unwrap();
    let seg = Segment::open_any(&lock_name, OpenOptions::new().read_only(true)).unwrap();
    let rows = shmproc::inspect::object_state(&seg);
    assert!(rows.contains(&("locked", "yes".to_string())), "{rows:?}");
    let me = format!("{} (alive)", std::process::id());
    assert!(rows.contains(&("owner", me)), "{rows:?}");

    let sem_name = TestName::new("inspect-sem");
    let _sem = BoundedSemaphore::create(&sem_name, 4).unwrap();
    let seg = Segment::open_any(&sem_name, OpenOptions::new().read_only(true)).unwrap();
    let rows = shmproc::inspect::object_state(&seg);
    assert!(rows.contains(&("value", "4".to_string())), "{rows:?}");
    assert!(rows.contains(&("max value", "4".to_string())), "{rows:?}");

    let event_name = TestName::new("inspect-event");
    let event = Event::create(&event_name).unwrap();
    event.set();
    let seg = Segment::open_any(&event_name, OpenOptions::new().read_only(true)).unwrap();
    assert!(shmproc::inspect::object_state(&seg).contains(&("set", "yes".to_string())));

    let barrier_name = TestName::new("inspect-barrier");
    let _barrier = Barrier::create(&barrier_name, 3).unwrap();
    let seg = Segment::open_any(&barrier_name, OpenOptions::new().read_only(true)).unwrap();
    assert!(shmproc::inspect::object_state(&seg).contains(&("parties", "3".to_string())));
}
