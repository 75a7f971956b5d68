//! Process: fork, exit codes, join with timeout, signals.

mod common;

use common::{Words, wait_for};
use shmproc::{ExitStatus, Process};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn exit_codes_follow_python() {
    assert_eq!(
        Process::spawn(|| {}).unwrap().join().unwrap(),
        ExitStatus::Exited(0)
    );
    assert_eq!(
        Process::spawn_returning(|| 7)
            .unwrap()
            .join()
            .unwrap()
            .code(),
        7
    );
    let failing = Process::spawn_returning(|| -> Result<(), String> { Err("nope".into()) });
    assert_eq!(failing.unwrap().join().unwrap().code(), 1);
    let panicking = Process::spawn(|| panic!("a panic in the child"));
    assert_eq!(panicking.unwrap().join().unwrap(), ExitStatus::Exited(1));
}

#[test]
fn child_pid_is_the_real_pid() {
    let words = Words::new(1);
    let mut child =
        Process::spawn(|| words.at(0).store(std::process::id(), Ordering::SeqCst)).unwrap();
    child.join().unwrap();
    assert_eq!(words.at(0).load(Ordering::SeqCst), child.pid());
}

#[test]
fn join_timeout_terminate_and_kill() {
    let sleeper = || loop {
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut child = Process::spawn(sleeper).unwrap();
    assert!(child.is_alive());
    assert_eq!(child.exitcode(), None);
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(child.join_timeout(timeout).unwrap(), None);
    assert!(start.elapsed() >= timeout);
    child.terminate().unwrap();
    assert_eq!(
        child.join_timeout(Duration::from_secs(10)).unwrap(),
        Some(ExitStatus::Signaled(15))
    );
    assert_eq!(child.exitcode(), Some(-15));
    assert!(!child.is_alive());
    // Signalling a reaped child is a no-op, never a signal to a reused pid.
    child.kill().unwrap();

    let mut child = Process::spawn(sleeper).unwrap();
    child.kill().unwrap();
    assert_eq!(child.join().unwrap().code(), -9);
}

#[test]
fn is_alive_turns_false_when_the_child_exits() {
    let words = Words::new(1);
    let mut child = Process::spawn(|| {
        while words.at(0).load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    assert!(child.is_alive());
    words.at(0).store(1, Ordering::SeqCst);
    wait_for("the child to exit", || !child.is_alive());
    assert_eq!(child.exitcode(), Some(0));
}
