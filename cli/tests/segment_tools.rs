//! `shmproc ls`, `inspect` and `rm` against real segments in /dev/shm.

use shmproc::Process;
use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
use shmproc::segment::{CreateOptions, Segment};
use std::process::Command;

fn shmproc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn layout() -> ObjectLayout {
    ObjectLayout {
        kind: ObjectKind::Queue,
        elem: ElemType::of::<u64>(),
        slot_size: 16,
        capacity: 64,
        payload_size: 2048,
    }
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
        }
    }
}

#[test]
fn ls_inspect_and_rm_stale() {
    let pid = std::process::id();
    let live = format!("shmproc-clitest-{pid}-live");
    let stale = format!("shmproc-clitest-{pid}-stale");
    let foreign = format!("shmproc-clitest-{pid}-foreign");
    let _cleanup = Cleanup(vec![live.clone(), stale.clone(), foreign.clone()]);

    let _live = Segment::create(&live, &layout(), CreateOptions::new(), |_, _| {}).unwrap();
    // A segment whose creator has exited without removing it.
    let child_stale = stale.clone();
    let mut child = Process::spawn(move || {
        let mut s =
            Segment::create(&child_stale, &layout(), CreateOptions::new(), |_, _| {}).unwrap();
        s.persist();
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    std::fs::write(format!("/dev/shm/{foreign}"), vec![7u8; 2000]).unwrap();

    let (ok, out, _) = shmproc(&["ls"]);
    assert!(ok);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_string()
    };
    assert!(
        line(&live).contains("Queue") && line(&live).contains(&format!("{pid} (alive)")),
        "{out}"
    );
    assert!(
        line(&stale).contains(&format!("{} (dead)", child.pid())),
        "{out}"
    );
    assert!(line(&foreign).contains("not a shmproc segment"), "{out}");

    let (ok, out, _) = shmproc(&["inspect", &live]);
    assert!(ok, "{out}");
    assert!(out.contains("kind            Queue"), "{out}");
    assert!(
        out.contains("element         u64 (8 bytes, align 8)"),
        "{out}"
    );
    assert!(out.contains("capacity        64"), "{out}");
    assert!(
        out.contains(&format!("open by         {pid} (alive)")),
        "{out}"
    );

    let (ok, out, _) = shmproc(&["inspect", &foreign]);
    assert!(!ok && out.contains("not a shmproc segment"), "{out}");
    let (ok, _, err) = shmproc(&["inspect", "no/such"]);
    assert!(!ok && err.contains("invalid segment name"), "{err}");

    let (ok, out, _) = shmproc(&["rm", "--stale", "--dry-run"]);
    assert!(
        ok && out.contains(&format!("would remove {stale}")),
        "{out}"
    );
    assert!(!out.contains(&live) && !out.contains(&foreign), "{out}");
    let (ok, out, _) = shmproc(&["rm", "--stale"]);
    assert!(ok && out.contains(&format!("removed {stale}")), "{out}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{stale}")).exists());

    let (ok, _, err) = shmproc(&["rm", &foreign]);
    assert!(!ok && err.contains("not removed"), "{err}");
    assert!(std::path::Path::new(&format!("/dev/shm/{foreign}")).exists());

    let (ok, out, _) = shmproc(&["rm", &live]);
    assert!(ok && out.contains(&format!("removed {live}")), "{out}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{live}")).exists());
}
