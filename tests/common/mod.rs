//! Helpers shared by the integration tests: unique names that are always removed.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
use shmproc::segment::Segment;
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique segment name, removed from /dev/shm when dropped (whatever the test left).
pub struct TestName(pub String);

impl TestName {
    pub fn new(tag: &str) -> TestName {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TestName(format!("shmproc-test-{}-{n}-{tag}", std::process::id()))
    }

    pub fn path(&self) -> String {
        format!("/dev/shm/{}", self.0)
    }
}

impl std::ops::Deref for TestName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TestName {
    fn drop(&mut self) {
        let _ = Segment::remove(&self.0);
    }
}

/// A Raw layout with `payload_size` bytes of u64 elements.
pub fn raw_layout(payload_size: u64) -> ObjectLayout {
    ObjectLayout {
        kind: ObjectKind::Raw,
        elem: ElemType::of::<u64>(),
        slot_size: 0,
        capacity: payload_size / 8,
        payload_size,
    }
}

/// An anonymous segment of `n` zeroed u32 words shared with children.
pub struct Words {
    seg: Segment,
}

impl Words {
    pub fn new(n: usize) -> Words {
        let layout = ObjectLayout {
            kind: ObjectKind::Raw,
            elem: ElemType::of::<u32>(),
            slot_size: 0,
            capacity: n as u64,
            payload_size: 4 * n as u64,
        };
        Words {
            seg: Segment::anonymous(&layout, |_, _| {}).unwrap(),
        }
    }

    pub fn at(&self, i: usize) -> &AtomicU32 {
        assert!(i * 4 < self.seg.payload_len());
        // SAFETY: in bounds (checked above), 4-aligned, only used atomically.
        unsafe { AtomicU32::from_ptr(self.seg.payload().as_ptr().add(4 * i).cast()) }
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Spins (with short sleeps) until `f` holds, panicking after 10 s so a broken test
/// fails instead of hanging.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Joins `child`, giving it 60 s; a child still running then is killed and the test
/// fails, so no test hangs on a child. Returns the exit code (minus the signal number
/// for a child killed by a signal).
pub fn join_or_kill(child: &mut shmproc::Process) -> i32 {
    match child
        .join_timeout(std::time::Duration::from_secs(60))
        .unwrap()
    {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.join();
            panic!("child {} did not finish in 60 s; killed it", child.pid());
        }
    }
}

/// Kills the children still running when dropped, so a failing test leaves no
/// process behind.
pub struct Children(pub Vec<shmproc::Process>);

impl Children {
    /// Joins every child (see [`join_or_kill`]) and returns their exit codes.
    pub fn join_all(&mut self) -> Vec<i32> {
        self.0.iter_mut().map(join_or_kill).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if child.is_alive() {
                let _ = child.kill();
                let _ = child.join();
            }
        }
    }
}
