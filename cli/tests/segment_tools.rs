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

/// `rm --stale` acts on every file in /dev/shm: the tests that run it take turns.
static STALE_SWEEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _turn = STALE_SWEEPS.lock().unwrap_or_else(|e| e.into_inner());
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

/// Files a creator killed right after `shm_open` leaves: 0 bytes, or a header's worth
/// of zeros. They are shown as empty (not foreign), `rm NAME` takes them, and
/// `rm --stale` takes those nobody holds once they are past the grace period.
#[test]
fn empty_files_are_shown_and_removed_honestly() {
    let _turn = STALE_SWEEPS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let old0 = format!("shmproc-clitest-{pid}-empty-old0");
    let oldz = format!("shmproc-clitest-{pid}-empty-oldzeros");
    let fresh = format!("shmproc-clitest-{pid}-empty-fresh");
    let held = format!("shmproc-clitest-{pid}-empty-held");
    let named = format!("shmproc-clitest-{pid}-empty-named");
    let _cleanup = Cleanup(vec![
        old0.clone(),
        oldz.clone(),
        fresh.clone(),
        held.clone(),
        named.clone(),
    ]);
    let path = |n: &str| format!("/dev/shm/{n}");
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let make = |n: &str, len: usize, age_it: bool| {
        std::fs::write(path(n), vec![0u8; len]).unwrap();
        if age_it {
            let f = std::fs::File::options().write(true).open(path(n)).unwrap();
            f.set_modified(long_ago).unwrap();
        }
    };
    make(&old0, 0, true);
    make(&oldz, 1024, true);
    make(&fresh, 0, false);
    make(&held, 0, true);
    make(&named, 0, false);
    // Held open by this (live) process, as a creator holds it before writing.
    let _holder = std::fs::File::open(path(&held)).unwrap();

    let (ok, out, _) = shmproc(&["ls"]);
    assert!(ok, "{out}");
    for n in [&old0, &oldz, &fresh, &held] {
        let line = out.lines().find(|l| l.starts_with(n.as_str())).unwrap();
        assert!(line.contains("empty, no header"), "{line}");
        assert!(!line.contains("not a shmproc"), "{line}");
    }
    let held_line = out.lines().find(|l| l.starts_with(held.as_str())).unwrap();
    assert!(held_line.contains("1 holding"), "{held_line}");
    let (ok, out, _) = shmproc(&["inspect", &old0]);
    assert!(!ok && out.contains("held by nobody"), "{out}");

    let (ok, out, _) = shmproc(&["rm", "--stale"]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("removed {old0}")), "{out}");
    assert!(out.contains(&format!("removed {oldz}")), "{out}");
    assert!(!out.contains(&fresh) && !out.contains(&held), "{out}");
    assert!(std::path::Path::new(&path(&fresh)).exists());
    assert!(std::path::Path::new(&path(&held)).exists());

    // By name: an empty file is removable (the name is free again for create).
    let (ok, out, err) = shmproc(&["rm", &named]);
    assert!(
        ok && out.contains(&format!("removed {named}")),
        "{out} {err}"
    );
    let layout = layout();
    assert!(Segment::create(&named, &layout, CreateOptions::new(), |_, _| {}).is_ok());
}
