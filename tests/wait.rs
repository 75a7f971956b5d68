//! The eventcount across real processes and real futexes.

mod common;

use common::{Words, wait_for};
use shmproc::wait::{EventCount, Spin, TimedOut};
use shmproc::{Deadline, Process};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// An eventcount at word 0..2 of `words`, plus condition words after it.
fn event(words: &Words) -> &EventCount {
    // SAFETY: words 0 and 1 (8 bytes, 4-aligned) are used only through this
    // eventcount, in every process.
    unsafe { EventCount::from_ptr((words.at(0) as *const AtomicU32).cast_mut().cast()) }
}

fn nonzero(w: &AtomicU32) -> Option<u32> {
    match w.load(Ordering::SeqCst) {
        0 => None,
        v => Some(v),
    }
}

#[test]
fn timed_wait_returns_timeout_no_earlier_than_its_deadline() {
    let words = Words::new(4);
    let ev = event(&words);
    for timeout in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(100),
    ] {
        let start = Instant::now();
        let r = ev.wait_until(Some(Deadline::after(timeout)), || nonzero(words.at(2)));
        assert_eq!(r, Err(TimedOut));
        assert!(
            start.elapsed() >= timeout,
            "{timeout:?} timed out after {:?}",
            start.elapsed()
        );
    }
    assert_eq!(ev.waiters(), 0);
}

#[test]
fn a_wake_crosses_processes_both_ways() {
    let words = Words::new(4);
    let ev = event(&words);
    // Child wakes a parent that sleeps at once.
    let mut child = Process::spawn(|| {
        wait_for("the parent to sleep", || ev.waiters() == 1);
        words.at(2).store(7, Ordering::SeqCst);
        ev.notify_all();
    })
    .unwrap();
    let got = ev.wait_until_with(
        Spin::NONE,
        Some(Deadline::after(Duration::from_secs(10))),
        || nonzero(words.at(2)),
    );
    assert_eq!(got, Ok(7));
    assert!(child.join().unwrap().success());

    // Parent wakes a sleeping child.
    let mut child = Process::spawn_returning(|| -> i32 {
        let r = ev.wait_until_with(
            Spin::NONE,
            Some(Deadline::after(Duration::from_secs(10))),
            || nonzero(words.at(3)),
        );
        if r == Ok(9) { 0 } else { 1 }
    })
    .unwrap();
    wait_for("the child to sleep", || ev.waiters() == 1);
    words.at(3).store(9, Ordering::SeqCst);
    ev.notify_all();
    assert!(child.join().unwrap().success());
}

#[test]
fn notify_without_waiters_makes_no_syscall() {
    let words = Words::new(4);
    let ev = event(&words);
    let before = shmproc::stats::wake_calls();
    for i in 0..100_000 {
        words.at(2).store(i, Ordering::Relaxed);
        ev.notify_all();
        ev.notify_one();
    }
    assert_eq!(shmproc::stats::wake_calls(), before);

    // With one process asleep, one notify makes exactly one wake syscall.
    let mut child = Process::spawn(|| {
        let _ = ev.wait_until_with(Spin::NONE, None, || nonzero(words.at(3)));
    })
    .unwrap();
    wait_for("the child to sleep", || ev.waiters() == 1);
    words.at(3).store(1, Ordering::SeqCst);
    ev.notify_all();
    assert_eq!(shmproc::stats::wake_calls(), before + 1);
    assert!(child.join().unwrap().success());
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_blocked_process_uses_no_cpu() {
    let words = Words::new(4);
    let ev = event(&words);
    let mut child = Process::spawn(|| {
        // Default spin policy: spins briefly, then sleeps.
        let _ = ev.wait_until(None, || nonzero(words.at(2)));
    })
    .unwrap();
    wait_for("the child to sleep", || ev.waiters() == 1);
    let before = cpu_ticks(child.pid());
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks(child.pid()) - before;
    words.at(2).store(1, Ordering::SeqCst);
    ev.notify_all();
    assert!(child.join().unwrap().success());
    // A busy-waiting child would burn ~50 ticks (100 Hz) in 500 ms; a sleeping one none.
    assert!(
        used <= 5,
        "blocked child used {used} ticks of CPU in 500 ms"
    );
}

extern "C" fn on_usr1(_: libc::c_int) {}

#[test]
fn signals_during_a_wait_do_not_break_it() {
    let words = Words::new(4);
    let ev = event(&words);
    let mut child = Process::spawn_returning(|| -> i32 {
        // SAFETY: installs a handler that does nothing (async-signal-safe), without
        // SA_RESTART so the futex wait really returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        words.at(3).store(1, Ordering::SeqCst);
        let deadline = Deadline::after(Duration::from_secs(20));
        match ev.wait_until_with(Spin::NONE, Some(deadline), || nonzero(words.at(2))) {
            Ok(5) => 0,
            Ok(_) => 2,
            Err(TimedOut) => 3,
        }
    })
    .unwrap();
    wait_for("the child to sleep", || {
        words.at(3).load(Ordering::SeqCst) == 1 && ev.waiters() == 1
    });
    for _ in 0..20 {
        rustix_kill(child.pid(), libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(child.is_alive());
    words.at(2).store(5, Ordering::SeqCst);
    ev.notify_all();
    assert_eq!(child.join().unwrap().code(), 0);
}

fn rustix_kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn notify_all_wakes_every_sleeping_process() {
    let words = Words::new(4);
    let ev = event(&words);
    let mut kids: Vec<Process> = (0..4)
        .map(|_| {
            Process::spawn_returning(|| -> i32 {
                let r = ev.wait_until_with(
                    Spin::NONE,
                    Some(Deadline::after(Duration::from_secs(20))),
                    || nonzero(words.at(2)),
                );
                if r.is_ok() { 0 } else { 1 }
            })
            .unwrap()
        })
        .collect();
    wait_for("four sleepers", || ev.waiters() == 4);
    words.at(2).store(1, Ordering::SeqCst);
    ev.notify_all();
    for k in &mut kids {
        assert_eq!(k.join().unwrap().code(), 0);
    }
    assert_eq!(ev.waiters(), 0);
}

#[test]
fn a_stalled_wait_is_resolved_by_its_stall_check() {
    // Nobody will ever notify: the waiter must find out for itself that the process
    // it waits for is dead.
    let words = Words::new(4);
    let ev = event(&words);
    let mut child = Process::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let pid = child.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        rustix_kill(pid, libc::SIGKILL);
    });
    let mut checks = 0;
    let r = ev.wait_until_checked(
        Spin::DEFAULT,
        Some(Deadline::after(Duration::from_secs(20))),
        || nonzero(words.at(2)),
        || {
            checks += 1;
            (!shmproc::process::is_alive(pid, 0)).then_some(u32::MAX)
        },
    );
    killer.join().unwrap();
    assert_eq!(r, Ok(u32::MAX));
    assert!(checks >= 2, "the first check ran while the child was alive");
    child.join().unwrap();
}
