//! Pipe and Connection across real processes.

mod common;

use common::{TestName, Words, wait_for};
use shmproc::pipe::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, Waitable, pipe_with_capacity, wait,
    wait_any,
};
use shmproc::{Connection, Process, pipe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 16) as u8)
        })
        .collect()
}

#[test]
fn echo_child_objects_bytes_empty_and_large_messages() {
    let (parent, child_end) = pipe(true).unwrap();
    let mut child = Process::spawn_returning(move || -> i32 {
        // Echo everything until EOF.
        loop {
            match child_end.recv_bytes() {
                Ok(m) => {
                    if child_end.send_bytes(&m).is_err() {
                        return 2;
                    }
                }
                Err(RecvError::Eof) => return 0,
                Err(_) => return 3,
            }
        }
    })
    .unwrap();
    parent.send(&[1u64, 2, 3]).unwrap();
    assert_eq!(parent.recv::<[u64; 3]>().unwrap(), [1, 2, 3]);
    parent.send(&-5i32).unwrap();
    assert_eq!(parent.recv::<i32>().unwrap(), -5);
    for msg in [vec![], vec![0u8], pattern(1000, 1), pattern(16 << 20, 2)] {
        parent.send_bytes(&msg).unwrap();
        let back = parent.recv_bytes().unwrap();
        assert!(
            back == msg,
            "echo of {} bytes came back as {} bytes",
            msg.len(),
            back.len()
        );
    }
    // Messages never merge, empty ones included.
    parent.send_bytes(b"").unwrap();
    parent.send_bytes(b"ab").unwrap();
    parent.send_bytes(b"").unwrap();
    assert_eq!(parent.recv_bytes().unwrap(), b"");
    assert_eq!(parent.recv_bytes().unwrap(), b"ab");
    assert_eq!(parent.recv_bytes().unwrap(), b"");
    // A value of the wrong size is an error naming both sizes.
    parent.send(&7u16).unwrap();
    let err = parent.recv::<u64>().unwrap_err();
    assert_eq!(
        err,
        RecvError::WrongSize {
            expected: 8,
            found: 2
        }
    );
    parent.close();
    assert_eq!(child.join().unwrap().code(), 0);
}

#[test]
fn a_hundred_mebibyte_message_round_trips_through_a_small_ring() {
    let (a, b) = pipe_with_capacity(64 * 1024, true).unwrap();
    let msg = pattern(100 << 20, 9);
    let mut child = Process::spawn(|| {
        let m = b.recv_bytes().unwrap();
        b.send_bytes(&m).unwrap();
    })
    .unwrap();
    a.send_bytes(&msg).unwrap();
    let back = a.recv_bytes().unwrap();
    assert!(
        back == msg,
        "100 MiB came back different ({} bytes)",
        back.len()
    );
    assert!(child.join().unwrap().success());
}

#[test]
fn poll_never_consumes_and_never_splits() {
    let (a, b) = pipe(true).unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(!a.poll(Some(timeout)).unwrap());
    assert!(start.elapsed() >= timeout);
    let mut child = Process::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        b.send_bytes(&pattern(600_000, 3)).unwrap(); // several fragments
        b.send_bytes(b"").unwrap();
    })
    .unwrap();
    assert!(a.poll(None).unwrap());
    assert!(a.poll(Some(Duration::ZERO)).unwrap()); // still there
    assert_eq!(a.recv_bytes().unwrap(), pattern(600_000, 3));
    assert!(a.poll(Some(Duration::from_secs(10))).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"");
    child.join().unwrap();
}

#[test]
fn send_bytes_range_checks_like_python() {
    let (a, b) = pipe(true).unwrap();
    let buf = b"0123456789";
    a.send_bytes_range(buf, 2, Some(3)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"234");
    a.send_bytes_range(buf, 7, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"789");
    a.send_bytes_range(buf, 10, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    let msg = |r: Result<(), SendError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(a.send_bytes_range(buf, -1, None)),
        "offset is negative (-1)"
    );
    assert_eq!(
        msg(a.send_bytes_range(buf, 11, None)),
        "offset 11 is beyond the buffer of 10 bytes"
    );
    assert_eq!(
        msg(a.send_bytes_range(buf, 0, Some(-2))),
        "size is negative (-2)"
    );
    assert_eq!(
        msg(a.send_bytes_range(buf, 4, Some(7))),
        "offset 4 + size 7 is beyond the buffer of 10 bytes"
    );
    assert!(
        !b.poll(Some(Duration::ZERO)).unwrap(),
        "a rejected send sent something"
    );
}

#[test]
fn recv_bytes_into_with_offsets_and_buffer_too_short() {
    // 16 KiB ring: fragments of 4080 bytes, so a 5000-byte message spans two and
    // still fits the ring while nobody reads.
    let (a, b) = pipe_with_capacity(16 * 1024, true).unwrap();
    let mut buf = [0u8; 8];
    a.send_bytes(b"abc").unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf, 5).unwrap(), 3);
    assert_eq!(&buf, b"\0\0\0\0\0abc");
    a.send_bytes(b"toolong!!").unwrap();
    match b.recv_bytes_into(&mut buf, 0) {
        Err(RecvError::BufferTooShort(m)) => assert_eq!(m, b"toolong!!"),
        other => panic!("{other:?}"),
    }
    // Nothing was lost: the next message is intact, including a fragmented one.
    let big = pattern(5000, 4);
    a.send_bytes(&big).unwrap();
    match b.recv_bytes_into(&mut buf, 2) {
        Err(RecvError::BufferTooShort(m)) => assert!(m == big),
        other => panic!("{other:?}"),
    }
    let mut large = vec![0u8; 6000];
    a.send_bytes(&big).unwrap();
    assert_eq!(b.recv_bytes_into(&mut large, 1000).unwrap(), 5000);
    assert!(large[1000..] == big[..]);
    assert!(matches!(
        b.recv_bytes_into(&mut buf, 9),
        Err(RecvError::InvalidArgument(_))
    ));
}

#[test]
fn timeout_forms_time_out_and_blocking_forms_share_their_other_errors() {
    let (reader, writer) = pipe_with_capacity(256, false).unwrap();
    // Fill the ring while the reader is alive and not reading: a timed send then
    // waits its whole timeout for room and reports Timeout.
    let mut sent = 0;
    let start = std::time::Instant::now();
    let result = loop {
        match writer.send_bytes_timeout(&[7; 32], Duration::from_millis(20)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1000, "a 256-byte ring took {sent} messages");
    };
    assert_eq!(result, SendTimeoutError::Timeout);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(result.to_string().contains("timed out"));
    assert!(sent > 0);
    for _ in 0..sent {
        assert_eq!(
            reader.recv_bytes_timeout(Duration::from_secs(30)).unwrap(),
            [7; 32]
        );
    }
    let err = reader
        .recv_timeout::<u64>(Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(err, RecvTimeoutError::Timeout);
    assert!(err.to_string().contains("timed out"));
    // What is not a timeout reads as the blocking forms' error does.
    let err = reader
        .send_bytes_timeout(b"x", Duration::from_secs(30))
        .unwrap_err();
    assert_eq!(err, SendTimeoutError::ReceiveOnly);
    assert_eq!(
        err.to_string(),
        reader.send_bytes(b"x").unwrap_err().to_string()
    );
    let err = writer
        .recv_bytes_timeout(Duration::from_secs(30))
        .unwrap_err();
    assert_eq!(err, RecvTimeoutError::SendOnly);
    assert_eq!(
        err.to_string(),
        writer.recv_bytes().unwrap_err().to_string()
    );
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    let (reader, writer) = pipe(false).unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    let err = reader.send_bytes(b"x").unwrap_err();
    assert_eq!(err, SendError::ReceiveOnly);
    assert!(err.to_string().contains("only receives"));
    let err = writer.recv_bytes().unwrap_err();
    assert_eq!(err, RecvError::SendOnly);
    assert!(err.to_string().contains("only sends"));
    let mut child = Process::spawn(move || writer.send(&99u32).unwrap()).unwrap();
    assert_eq!(reader.recv::<u32>().unwrap(), 99);
    child.join().unwrap();
    assert_eq!(reader.recv::<u32>(), Err(RecvError::Eof));
}

#[test]
fn eof_after_the_peer_closes_exits_or_is_killed() {
    // The child sends, then closes explicitly: drained first, then EOF.
    let (a, b) = pipe(true).unwrap();
    let mut child = Process::spawn(move || {
        for i in 0..3u32 {
            b.send(&i).unwrap();
        }
        b.close();
        std::thread::sleep(Duration::from_millis(200));
    })
    .unwrap();
    for i in 0..3u32 {
        assert_eq!(a.recv::<u32>().unwrap(), i);
    }
    assert_eq!(a.recv::<u32>(), Err(RecvError::Eof));
    child.join().unwrap();

    // The child is killed with SIGKILL while holding its end.
    let (a, b) = pipe(true).unwrap();
    let started = Words::new(1);
    let flag = &started;
    let mut child = Process::spawn(move || {
        b.send_bytes(b"last words").unwrap();
        flag.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for("the child to send", || {
        started.at(0).load(Ordering::SeqCst) == 1
    });
    child.kill().unwrap();
    child.join().unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"last words");
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_secs(30)),
        Err(RecvTimeoutError::Eof)
    );
    // And sending to it is a broken pipe.
    let full = vec![0u8; 100_000];
    let mut result = Ok(());
    for _ in 0..100 {
        result = a.send_bytes_timeout(&full, Duration::from_secs(30));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SendTimeoutError::BrokenPipe));

    // The parent closes: the child sees EOF.
    let (a, b) = pipe(true).unwrap();
    let mut child = Process::spawn_returning(move || -> i32 {
        match b.recv_bytes() {
            Err(RecvError::Eof) => 0,
            _ => 1,
        }
    })
    .unwrap();
    a.close();
    assert_eq!(a.send_bytes(b"x"), Err(SendError::Closed));
    assert_eq!(child.join().unwrap().code(), 0);
}

#[test]
fn wait_over_four_children() {
    let pipes: Vec<(Connection, Connection)> = (0..4).map(|_| pipe(true).unwrap()).collect();
    let mut kids: Vec<Process> = pipes
        .iter()
        .enumerate()
        .map(|(i, (_, child_end))| {
            Process::spawn(move || {
                std::thread::sleep(Duration::from_millis(10 * (4 - i as u64)));
                child_end.send(&(i as u32)).unwrap();
            })
            .unwrap()
        })
        .collect();
    let ours: Vec<&Connection> = pipes.iter().map(|(p, _)| p).collect();
    let mut got = Vec::new();
    while got.len() < 4 {
        let ready = wait(&ours, Some(Duration::from_secs(30)));
        assert!(!ready.is_empty(), "wait timed out");
        for i in ready {
            if got.contains(&i) {
                continue;
            }
            assert_eq!(ours[i].recv::<u32>().unwrap(), i as u32);
            got.push(i);
        }
    }
    for k in &mut kids {
        assert!(k.join().unwrap().success());
    }
    // With nothing pending, wait times out no earlier than asked.
    let (x, _y) = pipe(true).unwrap();
    let start = Instant::now();
    assert!(wait(&[&x], Some(Duration::from_millis(50))).is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
}

extern "C" fn on_usr1(_: libc::c_int) {}

#[test]
fn a_signal_during_a_blocking_recv_does_not_break_it() {
    let (a, b) = pipe(true).unwrap();
    let armed = Words::new(1);
    let mut child = Process::spawn_returning(|| -> i32 {
        // SAFETY: a do-nothing handler, without SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        armed.at(0).store(1, Ordering::SeqCst);
        match b.recv::<u64>() {
            Ok(77) => 0,
            _ => 1,
        }
    })
    .unwrap();
    wait_for("the child to block", || {
        armed.at(0).load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..10 {
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(child.pid() as libc::pid_t, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(2));
    }
    a.send(&77u64).unwrap();
    assert_eq!(child.join().unwrap().code(), 0);
}

#[test]
fn named_pipe_between_two_processes() {
    let name = TestName::new("pipe");
    let a = Connection::create(&name, 4096, true).unwrap();
    // Nobody opened the other end yet: a receive waits (no premature EOF).
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
    let child_name = name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(b) = Connection::open(&child_name) else {
            return 2;
        };
        let m = b.recv_bytes().unwrap();
        b.send_bytes(&[m, b"!".to_vec()].concat()).unwrap();
        0
    })
    .unwrap();
    a.send_bytes(b"ping").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"ping!");
    assert_eq!(child.join().unwrap().code(), 0);
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_secs(30)),
        Err(RecvTimeoutError::Eof)
    );
    let err = shmproc::Queue::<u8>::open(&name).unwrap_err();
    assert!(
        err.to_string().contains("expected Queue, found Pipe"),
        "{err}"
    );
}

/// Runs `body` in a child process of its own: the test harness runs tests as threads
/// of one process, and a child another test forks meanwhile would hold copies of this
/// test's pipe ends (as a forked Python child holds copies of its parent's
/// connections), keeping them open.
fn isolated(body: impl FnOnce()) {
    let mut child = Process::spawn(|| {
        // The harness captures this thread's output in memory the child drops:
        // write a failure straight to stderr instead.
        std::panic::set_hook(Box::new(|info| {
            let msg = format!("isolated test: {info}\n");
            // SAFETY: writes `msg`'s bytes, which live across the call, to fd 2.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }));
        body();
    })
    .unwrap();
    assert!(child.join().unwrap().success(), "the isolated test failed");
}

/// In a child that waits to be killed: dies with its parent, so a failing test
/// leaves no process behind.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

#[test]
fn the_first_send_after_the_peer_closed_is_a_broken_pipe() {
    isolated(first_send_after_close);
}

fn first_send_after_close() {
    // The parent closes its end while the child holds the other (and its own unused
    // inherited copy of the parent's end, which does not count): the child's first
    // send fails.
    let (a, b) = pipe(true).unwrap();
    let flags = Words::new(1);
    let mut child = Process::spawn_returning(|| -> i32 {
        die_with_parent();
        b.send(&1u64).unwrap();
        while flags.at(0).load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        match (b.send(&2u64), b.send_bytes(b"more")) {
            (Err(SendError::BrokenPipe), Err(SendError::BrokenPipe)) => 0,
            _ => 1,
        }
    })
    .unwrap();
    assert_eq!(a.recv::<u64>().unwrap(), 1);
    a.close();
    flags.at(0).store(1, Ordering::SeqCst);
    assert_eq!(child.join().unwrap().code(), 0);

    // The child closes its end and stays alive: the parent's first send fails.
    let (a, b) = pipe(true).unwrap();
    a.send(&1u64).unwrap();
    let flags = Words::new(1);
    let f = &flags;
    let mut child = Process::spawn(move || {
        die_with_parent();
        b.close();
        f.at(0).store(1, Ordering::SeqCst);
        while f.at(0).load(Ordering::SeqCst) != 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    wait_for("the child to close", || {
        flags.at(0).load(Ordering::SeqCst) == 1
    });
    assert_eq!(a.send(&2u64), Err(SendError::BrokenPipe));
    assert_eq!(a.send_bytes(&[7; 100]), Err(SendError::BrokenPipe));
    flags.at(0).store(2, Ordering::SeqCst);
    assert!(child.join().unwrap().success());

    // One way: the receiving child exits without closing (its copy is borrowed, so
    // never dropped in the child), and the parent dropped its own copy.
    let (r, w) = pipe(false).unwrap();
    let mut child = Process::spawn(|| {
        let _ = r.poll(Some(Duration::ZERO));
    })
    .unwrap();
    drop(r);
    assert!(child.join().unwrap().success());
    assert_eq!(w.send(&3u32), Err(SendError::BrokenPipe));
}

#[test]
fn a_send_to_a_killed_peer_is_a_broken_pipe_within_liveness_every_sends() {
    isolated(send_after_kill);
}

fn send_after_kill() {
    let (a, b) = pipe(true).unwrap();
    let started = Words::new(1);
    let flag = &started;
    let mut child = Process::spawn(move || {
        die_with_parent();
        let _keep = &b;
        flag.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for("the child to start", || {
        started.at(0).load(Ordering::SeqCst) == 1
    });
    a.send(&0u64).unwrap();
    child.kill().unwrap();
    assert!(!child.join().unwrap().success());
    // 8-byte messages take 32 bytes of the 256 KiB ring: LIVENESS_EVERY of them fit,
    // so the broken pipe comes from the liveness check, not from a full ring. The
    // child never read, so the first check after the kill decides.
    let limit = shmproc::pipe::LIVENESS_EVERY as usize;
    assert!(limit * 32 < shmproc::pipe::DEFAULT_CAPACITY);
    let mut sent = 0;
    let result = loop {
        match a.send(&1u64) {
            Ok(()) if sent <= limit => sent += 1,
            other => break other,
        }
    };
    assert_eq!(result, Err(SendError::BrokenPipe), "after {sent} sends");
    assert!(sent < limit, "{sent} sends succeeded after the kill");
    // And it stays broken.
    assert_eq!(a.send_bytes(b"x"), Err(SendError::BrokenPipe));

    // A child killed after reading: the first liveness check after the kill may
    // still see its reads, the second decides.
    let (a, b) = pipe(true).unwrap();
    let read = Words::new(1);
    let flag = &read;
    let mut child = Process::spawn(move || {
        die_with_parent();
        for _ in 0..700 {
            b.recv::<u64>().unwrap();
        }
        flag.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    for i in 0..700u64 {
        a.send(&i).unwrap();
    }
    wait_for("the child to read", || {
        read.at(0).load(Ordering::SeqCst) == 1
    });
    child.kill().unwrap();
    assert!(!child.join().unwrap().success());
    assert!(2 * limit * 32 < shmproc::pipe::DEFAULT_CAPACITY);
    let mut sent = 0;
    let result = loop {
        match a.send(&1u64) {
            Ok(()) if sent <= 2 * limit => sent += 1,
            other => break other,
        }
    };
    assert_eq!(result, Err(SendError::BrokenPipe), "after {sent} sends");
    assert!(sent < 2 * limit, "{sent} sends succeeded after the kill");
}

#[test]
fn wait_any_sees_a_child_exit_beside_pipes() {
    // A child that exits (after the waiter has gone to sleep) is ready; the pipe,
    // with nothing in it, is not.
    let (ours, theirs) = pipe(true).unwrap();
    let mut child = Process::spawn(|| std::thread::sleep(Duration::from_millis(200))).unwrap();
    let start = Instant::now();
    let ready = wait_any(
        &[Waitable::from(&ours), Waitable::from(&child)],
        Some(Duration::from_secs(60)),
    );
    assert_eq!(ready, [1]);
    assert!(start.elapsed() >= Duration::from_millis(150));
    // Ended but not reaped is ready; so is reaped.
    assert!(child.join().unwrap().success());
    assert_eq!(
        wait_any(&[Waitable::from(&child)], Some(Duration::ZERO)),
        [0]
    );

    // A message is ready while a child still runs.
    let stop = Words::new(1);
    let mut sleeper = Process::spawn(|| {
        while stop.at(0).load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    let mut sender = Process::spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        theirs.send(&5u64).unwrap();
    })
    .unwrap();
    let objects = [Waitable::from(&sleeper), Waitable::from(&ours)];
    assert_eq!(wait_any(&objects, Some(Duration::from_secs(60))), [1]);
    assert_eq!(ours.recv::<u64>().unwrap(), 5);
    assert!(sender.join().unwrap().success());
    // Nothing ready: the timeout is not early.
    let start = Instant::now();
    assert!(wait_any(&objects, Some(Duration::from_millis(50))).is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
    stop.at(0).store(1, Ordering::SeqCst);
    assert_eq!(wait_any(&objects, None), [0]);
    assert!(sleeper.join().unwrap().success());
}
