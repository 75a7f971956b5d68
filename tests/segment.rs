//! Named and anonymous segments across real processes.

mod common;

use common::{TestName, Words, raw_layout, wait_for};
use shmproc::Process;
use shmproc::layout::header::{ElemType, HeaderError, InitState, ObjectKind, ObjectLayout};
use shmproc::segment::{
    Backing, CreateError, CreateOptions, NameError, OpenError, OpenOptions, Segment, validate_name,
};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn word(seg: &Segment, i: usize) -> &AtomicU64 {
    assert!(8 * i < seg.payload_len());
    // SAFETY: in bounds, 8-aligned (payload is 128-aligned), only used atomically.
    unsafe { AtomicU64::from_ptr(seg.payload().as_ptr().add(8 * i).cast()) }
}

fn open_raw(name: &str) -> Result<Segment, OpenError> {
    Segment::open(
        name,
        ObjectKind::Raw,
        ElemType::of::<u64>(),
        OpenOptions::new(),
    )
}

#[test]
fn create_in_parent_open_in_child() {
    let name = TestName::new("xproc");
    let seg = Segment::create(&name, &raw_layout(64), CreateOptions::new(), |p, len| {
        assert_eq!(len, 64);
        // SAFETY: p is the 64-byte payload, ours until the segment is published.
        unsafe { p.as_ptr().cast::<u64>().write(0xfeed) };
    })
    .unwrap();
    let child_name = name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let s = match open_raw(&child_name) {
            Ok(s) => s,
            Err(_) => return 2,
        };
        if word(&s, 0).load(Ordering::SeqCst) != 0xfeed {
            return 3;
        }
        word(&s, 1).store(u64::from(std::process::id()), Ordering::SeqCst);
        0
    })
    .unwrap();
    assert_eq!(child.join().unwrap().code(), 0);
    assert_eq!(word(&seg, 1).load(Ordering::SeqCst), u64::from(child.pid()));
    // The child dropped its handle; the name is still there until the creator drops.
    assert!(std::path::Path::new(&name.path()).exists());
    drop(seg);
    assert!(!std::path::Path::new(&name.path()).exists());
}

#[test]
fn exactly_one_of_racing_creators_wins() {
    const CHILDREN: usize = 6;
    for round in 0..10 {
        let name = TestName::new(&format!("race{round}"));
        let go = Words::new(1);
        let mut kids: Vec<Process> = (0..CHILDREN)
            .map(|_| {
                let name = name.0.clone();
                let go = &go;
                Process::spawn_returning(move || -> i32 {
                    while go.at(0).load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    match Segment::create(&name, &raw_layout(64), CreateOptions::new(), |_, _| {}) {
                        Ok(mut s) => {
                            s.persist();
                            0
                        }
                        Err(CreateError::AlreadyExists { .. }) => 10,
                        Err(_) => 20,
                    }
                })
                .unwrap()
            })
            .collect();
        go.at(0).store(1, Ordering::SeqCst);
        let codes: Vec<i32> = kids.iter_mut().map(|k| k.join().unwrap().code()).collect();
        assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "{codes:?}");
        assert_eq!(
            codes.iter().filter(|&&c| c == 10).count(),
            CHILDREN - 1,
            "{codes:?}"
        );
    }
}

#[test]
fn open_or_create_race_never_sees_a_half_built_object() {
    const CHILDREN: usize = 5;
    let name = TestName::new("ooc");
    let go = Words::new(1);
    let mut kids: Vec<Process> = (0..CHILDREN)
        .map(|_| {
            let name = name.0.clone();
            let go = &go;
            Process::spawn_returning(move || -> i32 {
                while go.at(0).load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                let init = |p: std::ptr::NonNull<u8>, len: usize| {
                    // A slow init: openers must wait for it, not read zeros.
                    std::thread::sleep(Duration::from_millis(30));
                    for i in 0..len / 8 {
                        // SAFETY: in bounds of the payload, ours until published.
                        unsafe { p.as_ptr().cast::<u64>().add(i).write(0xabcd + i as u64) };
                    }
                };
                let opts = OpenOptions::new().timeout(Duration::from_secs(5));
                match Segment::open_or_create(
                    &name,
                    &raw_layout(256),
                    CreateOptions::new(),
                    opts,
                    init,
                ) {
                    Ok((mut s, created)) => {
                        for i in 0..32 {
                            if word(&s, i).load(Ordering::SeqCst) != 0xabcd + i as u64 {
                                return 30;
                            }
                        }
                        if created {
                            s.persist();
                            0
                        } else {
                            1
                        }
                    }
                    Err(_) => 20,
                }
            })
            .unwrap()
        })
        .collect();
    go.at(0).store(1, Ordering::SeqCst);
    let codes: Vec<i32> = kids.iter_mut().map(|k| k.join().unwrap().code()).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|&&c| c == 1).count(),
        CHILDREN - 1,
        "{codes:?}"
    );
}

#[test]
fn wrong_kind_and_wrong_element_type_name_both_sides() {
    let name = TestName::new("kind");
    let layout = ObjectLayout {
        kind: ObjectKind::Pipe,
        elem: ElemType::of::<u64>(),
        slot_size: 0,
        capacity: 0,
        payload_size: 128,
    };
    let _seg = Segment::create(&name, &layout, CreateOptions::new(), |_, _| {}).unwrap();
    let err = Segment::open(
        &name,
        ObjectKind::Queue,
        ElemType::of::<u64>(),
        OpenOptions::new(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        OpenError::WrongKind {
            expected: ObjectKind::Queue,
            found: ObjectKind::Pipe,
            ..
        }
    ));
    assert!(
        err.to_string().contains("expected Queue, found Pipe"),
        "{err}"
    );

    let err = Segment::open(
        &name,
        ObjectKind::Pipe,
        ElemType::of::<u32>(),
        OpenOptions::new(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        OpenError::IncompatibleLayout {
            what: "element type",
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("expected u32 (4 bytes, align 4), found u64 (8 bytes, align 8)"),
        "{err}"
    );
}

/// Creates a persisted segment and returns the path of its file for tampering.
fn persisted(name: &TestName) -> String {
    let mut seg = Segment::create(name, &raw_layout(256), CreateOptions::new(), |_, _| {}).unwrap();
    seg.persist();
    name.path()
}

fn patch(path: &str, at: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    data[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).unwrap();
}

fn bad_header(name: &str) -> HeaderError {
    match open_raw(name) {
        Err(OpenError::BadHeader { reason, .. }) => reason,
        other => panic!("expected a bad header, got {other:?}"),
    }
}

#[test]
fn old_version_is_reported_with_both_versions() {
    let name = TestName::new("version");
    let path = persisted(&name);
    patch(&path, 8, &0u32.to_ne_bytes());
    assert_eq!(
        bad_header(&name),
        HeaderError::UnsupportedVersion { found: 0 }
    );
    let msg = open_raw(&name).unwrap_err().to_string();
    assert!(
        msg.contains("layout version 0")
            && msg.contains(&format!(
                "version {}",
                shmproc::layout::header::LAYOUT_VERSION
            )),
        "{msg}"
    );
}

#[test]
fn truncated_file_is_an_error_not_sigbus() {
    let name = TestName::new("trunc");
    let path = persisted(&name);
    let full = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - 64)
        .unwrap();
    assert_eq!(
        bad_header(&name),
        HeaderError::Truncated {
            expected: full,
            found: full - 64
        }
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_eq!(bad_header(&name), HeaderError::TooShort { len: 100 });
}

#[test]
fn corrupt_header_and_foreign_files_are_errors() {
    let name = TestName::new("corrupt");
    let path = persisted(&name);
    patch(&path, 80, &[0xff]); // capacity, covered by the checksum
    assert!(matches!(bad_header(&name), HeaderError::Corrupt(m) if m.contains("checksum")));
    patch(&path, 16, b"XXXX"); // init state nobody writes
    assert!(matches!(
        bad_header(&name),
        HeaderError::NotReady {
            state: InitState::Unknown(_),
            ..
        }
    ));

    let foreign = TestName::new("foreign");
    std::fs::write(foreign.path(), vec![b'x'; 4096]).unwrap();
    assert!(matches!(
        bad_header(&foreign),
        HeaderError::NotShmproc { .. }
    ));
    let msg = open_raw(&foreign).unwrap_err().to_string();
    assert!(msg.contains("not a shmproc segment"), "{msg}");
}

#[test]
fn creator_killed_mid_init_gives_an_error_not_a_hang() {
    let name = TestName::new("midinit");
    let flag = Words::new(1);
    let child_name = name.0.clone();
    let mut child = Process::spawn(|| {
        let _ = Segment::create(
            &child_name,
            &raw_layout(64),
            CreateOptions::new(),
            |_, _| {
                flag.at(0).store(1, Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            },
        );
    })
    .unwrap();
    wait_for("the child to start initializing", || {
        flag.at(0).load(Ordering::SeqCst) == 1
    });

    // While the creator is alive and stuck, an open waits for its timeout, no longer.
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    let err = Segment::open(
        &name,
        ObjectKind::Raw,
        ElemType::of::<u64>(),
        OpenOptions::new().timeout(timeout),
    )
    .unwrap_err();
    assert!(start.elapsed() >= timeout);
    assert!(
        matches!(err, OpenError::NotInitialized { state: InitState::Initializing, creator_pid, .. } if creator_pid == child.pid()),
        "{err:?}"
    );

    child.kill().unwrap();
    assert_eq!(child.join().unwrap().code(), -9);
    let err = Segment::open(
        &name,
        ObjectKind::Raw,
        ElemType::of::<u64>(),
        OpenOptions::new().timeout(Duration::from_secs(30)),
    )
    .unwrap_err();
    assert!(
        matches!(err, OpenError::CreatorDied { pid, .. } if pid == child.pid()),
        "{err:?}"
    );
    assert!(err.to_string().contains("died before finishing"), "{err}");
}

#[test]
fn an_empty_file_someone_holds_times_out_as_not_initialized() {
    let name = TestName::new("empty-held");
    // A creator between shm_open and its header write holds the descriptor.
    let _held = std::fs::File::create(name.path()).unwrap();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let err = Segment::open(
        &name,
        ObjectKind::Raw,
        ElemType::of::<u64>(),
        OpenOptions::new().timeout(timeout),
    )
    .unwrap_err();
    assert!(start.elapsed() >= timeout);
    assert!(
        matches!(
            err,
            OpenError::NotInitialized {
                state: InitState::Empty,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_empty_file_nobody_holds_is_a_dead_creator_at_once() {
    for (tag, bytes) in [("empty-0", 0), ("empty-zeros", 1024)] {
        let name = TestName::new(tag);
        std::fs::write(name.path(), vec![0u8; bytes]).unwrap();
        // The timeout is long: the verdict must come from the scan, not the clock.
        let err = Segment::open(
            &name,
            ObjectKind::Raw,
            ElemType::of::<u64>(),
            OpenOptions::new().timeout(Duration::from_secs(60)),
        )
        .unwrap_err();
        assert!(
            matches!(err, OpenError::CreatorDied { pid: 0, .. }),
            "{bytes} bytes: {err:?}"
        );
        assert!(err.to_string().contains("no process has it open"), "{err}");
    }
}

#[test]
fn a_creator_killed_while_sizing_is_a_dead_creator_at_once() {
    // 256 MiB takes tens of milliseconds to reserve here: the kill lands while the
    // file is empty or being sized (or, rarely, in the init closure, which never ends).
    let name = TestName::new("sizing");
    let child_name = name.0.clone();
    let mut child = Process::spawn(move || {
        let _ = Segment::create(
            &child_name,
            &raw_layout(256 << 20),
            CreateOptions::new(),
            |_, _| loop {
                std::thread::sleep(Duration::from_secs(1));
            },
        );
    })
    .unwrap();
    wait_for("the child to create the file", || {
        std::path::Path::new(&name.path()).exists()
    });
    child.kill().unwrap();
    assert_eq!(child.join().unwrap().code(), -9);
    let len = std::fs::metadata(name.path()).unwrap().len();
    let err = Segment::open(
        &name,
        ObjectKind::Raw,
        ElemType::of::<u64>(),
        OpenOptions::new().timeout(Duration::from_secs(60)),
    )
    .unwrap_err();
    // Either the header named the creator (pid), or the file had none and nobody
    // held it (pid 0); never a wait for the whole timeout.
    assert!(
        matches!(err, OpenError::CreatorDied { pid, .. } if pid == child.pid() || pid == 0),
        "file of {len} bytes: {err:?}"
    );
}

#[test]
fn absurd_sizes_are_refused_before_anything_is_allocated() {
    // 8 TiB: more than this machine can back, by both measures. Refused before the
    // file exists: the test never allocates it.
    let err = shmproc::Array::<u64>::new(1 << 40).unwrap_err();
    match &err {
        CreateError::InsufficientSpace {
            requested,
            available,
            backing: Backing::Memory,
            name: None,
        } => {
            assert!(*requested > 8 << 40 && available < requested, "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains(&requested.to_string()) && text.contains(&available.to_string()),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let name = TestName::new("absurd");
    let err = Segment::create(&name, &raw_layout(1 << 43), CreateOptions::new(), |_, _| {
        unreachable!("never initialized")
    })
    .unwrap_err();
    assert!(
        matches!(err, CreateError::InsufficientSpace { ref name, .. } if name.is_some()),
        "{err:?}"
    );
    assert!(!std::path::Path::new(&name.path()).exists());
    // Sizes that overflow are errors too, never a panic or a wrapped small size.
    let err = Segment::anonymous(&raw_layout(u64::MAX - 8), |_, _| {}).unwrap_err();
    assert!(matches!(err, CreateError::TooLarge { .. }), "{err:?}");
    assert!(shmproc::Array::<u64>::new(usize::MAX).is_err());
    assert!(shmproc::Queue::<u64>::new(usize::MAX).is_err());
    assert!(shmproc::Queue::<[u8; 4096]>::new(1 << 40).is_err());
}

#[test]
fn names_are_validated() {
    assert_eq!(validate_name("/jobs"), Ok("jobs"));
    assert_eq!(validate_name("a.b_c-9"), Ok("a.b_c-9"));
    assert_eq!(validate_name(""), Err(NameError::Empty));
    assert_eq!(validate_name("/"), Err(NameError::Empty));
    assert_eq!(validate_name(".hidden"), Err(NameError::LeadingDot));
    assert_eq!(
        validate_name("a/b"),
        Err(NameError::BadChar { ch: '/', at: 1 })
    );
    assert_eq!(
        validate_name("sp ace"),
        Err(NameError::BadChar { ch: ' ', at: 2 })
    );
    assert_eq!(
        validate_name(&"x".repeat(201)),
        Err(NameError::TooLong { len: 201 })
    );
    let err =
        Segment::create("bad name", &raw_layout(8), CreateOptions::new(), |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("character ' ' at byte 3"), "{err}");
    assert!(matches!(
        open_raw("..").unwrap_err(),
        OpenError::InvalidName(NameError::LeadingDot)
    ));
    assert!(matches!(
        open_raw("shmproc-test-does-not-exist").unwrap_err(),
        OpenError::NotFound { .. }
    ));
    assert!(matches!(
        Segment::remove("shmproc-test-does-not-exist"),
        Err(shmproc::segment::RemoveError::NotFound { .. })
    ));
}

#[test]
fn mode_is_0600_by_default_and_exact_when_asked() {
    let name = TestName::new("mode");
    let seg = Segment::create(&name, &raw_layout(8), CreateOptions::new(), |_, _| {}).unwrap();
    assert_eq!(
        std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(seg);
    let seg = Segment::create(
        &name,
        &raw_layout(8),
        CreateOptions::new().mode(0o666),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o777,
        0o666
    );
    drop(seg);
}

#[test]
fn create_fails_on_an_existing_name_and_persist_keeps_it() {
    let name = TestName::new("persist");
    let mut seg = Segment::create(&name, &raw_layout(8), CreateOptions::new(), |_, _| {}).unwrap();
    let err = Segment::create(&name, &raw_layout(8), CreateOptions::new(), |_, _| {}).unwrap_err();
    assert!(matches!(err, CreateError::AlreadyExists { .. }));
    assert!(err.to_string().contains("already exists"));
    seg.persist();
    drop(seg);
    assert!(open_raw(&name).is_ok());
    Segment::remove(&name).unwrap();
    assert!(matches!(open_raw(&name), Err(OpenError::NotFound { .. })));
}

#[test]
fn creator_never_unlinks_a_newer_segment_of_the_same_name() {
    let name = TestName::new("reuse");
    let first = Segment::create(&name, &raw_layout(8), CreateOptions::new(), |_, _| {}).unwrap();
    Segment::remove(&name).unwrap();
    let second = Segment::create(&name, &raw_layout(16), CreateOptions::new(), |_, _| {}).unwrap();
    drop(first);
    let again = open_raw(&name).unwrap();
    assert_eq!(again.payload_len(), 16);
    drop(again);
    drop(second);
    assert!(matches!(open_raw(&name), Err(OpenError::NotFound { .. })));
}

#[test]
fn anonymous_segment_is_shared_with_children() {
    let seg = Segment::anonymous(&raw_layout(64), |_, _| {}).unwrap();
    assert_eq!(seg.name(), None);
    let mut kids: Vec<Process> = (0..3)
        .map(|i| {
            let seg = &seg;
            Process::spawn(move || {
                word(seg, i).store(100 + i as u64, Ordering::SeqCst);
            })
            .unwrap()
        })
        .collect();
    for k in &mut kids {
        assert!(k.join().unwrap().success());
    }
    for i in 0..3 {
        assert_eq!(word(&seg, i).load(Ordering::SeqCst), 100 + i as u64);
    }
}

#[test]
fn attach_registry_tracks_live_and_dead_openers() {
    let name = TestName::new("attach");
    let seg = Segment::create(&name, &raw_layout(64), CreateOptions::new(), |_, _| {}).unwrap();
    let me = std::process::id();
    assert_eq!(seg.attached(), vec![(me, true)]);
    let child_name = name.0.clone();
    let mut child = Process::spawn(move || {
        let s = open_raw(&child_name).unwrap();
        word(&s, 0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for("the child to open", || {
        word(&seg, 0).load(Ordering::SeqCst) == 1
    });
    let pid = child.pid();
    assert!(seg.attached().contains(&(pid, true)));
    child.kill().unwrap();
    child.join().unwrap();
    assert!(seg.attached().contains(&(pid, false)));
    // A read-only opener does not register.
    let ro = Segment::open_any(&name, OpenOptions::new().read_only(true)).unwrap();
    assert_eq!(seg.attached().len(), 2);
    drop(ro);
}
